"""`python -m experiments.medusa_trees`: tokens per step of Medusa trees of many sizes, from the
baseline's greedy answers, without decoding once per tree.

Under greedy decoding, a Medusa step at a verified position accepts the longest tree path whose
ranks are the heads' ranks, there, of the target's own next tokens. So one target pass over
each prompt and its greedy answer, and the heads' rank of every true future token, give the
mean accepted tokens of any tree: a sweep over sizes takes seconds on the CPU where decoding
with a 256-node tree (257 tokens verified a step) takes an hour for the default suite. Each
size is `strategy.tree=N`: the best N-node tree for the heads' measured accuracies. The result
equals what decoding measures (tests/test_medusa.py); speed still needs experiments.bench.
Writes medusa_trees.json into the Hydra run directory and prints a table.
"""

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from experiments.entry_point import measure_and_report
from experiments.run import experiment_prompts
from specdec.chat import encode
from specdec.decoding import Decoder, GenerationConfig, eos_ids_of
from specdec.errors import ConfigError
from specdec.models import load_model, resolve_device, resolve_dtype
from specdec.runtime.prepare import Runtime, prepare, prepare_strategy
from specdec.strategies import create_strategy


@torch.inference_mode()
def answer_ranks(strategy, target, prompt: list[int], answer: list[int]) -> torch.Tensor:
    """(len(answer), K): row t is the verified position that produced answer[t]; entry k is head
    k's rank there of answer[t + 1 + k] (0: its top guess), past the answer's end a rank no tree has."""
    tokens = torch.tensor([prompt + answer], device=target.device)
    hidden = target.get_decoder()(input_ids=tokens).last_hidden_state[0, len(prompt) - 1 : -1]
    scores = strategy.heads(hidden, strategy.lm_head).float()  # (n, K, V), as propose() scores them
    n, heads, vocab = scores.shape
    padded = torch.tensor(answer[1:] + [-1] * heads, device=scores.device)
    ahead = padded.unfold(0, heads, 1)[:n]  # row t: answer[t + 1 : t + 1 + heads], -1 past the end
    true_score = scores.gather(-1, ahead.clamp_min(0).unsqueeze(-1))
    ranks = (scores > true_score).sum(-1)
    return torch.where(ahead >= 0, ranks, vocab).cpu()


def accepted_per_pass(ranks: torch.Tensor, tree: list[list[int]], max_new_tokens: int) -> list[int]:
    """Drafted tokens each greedy verify pass accepts over one answer (decoding's
    accepted_per_step): the longest tree path whose ranks are the heads' ranks of the answer's
    next tokens, no deeper than the token budget leaves room for (the pass's own bonus token
    included), nor past the answer's end. The prefill gives answer[0]; a pass commits its
    accepted tokens and then the target's next one, unless the answer ended with them (an EOS)."""
    nodes, tree_depth = {tuple(path) for path in tree}, max(map(len, tree))
    passes, t = [], 0  # t: the answer token pending as the root, committed by the previous pass
    while t < len(ranks) - 1:
        depth = min(tree_depth, max_new_tokens - t - 2, len(ranks) - 1 - t)
        path = ()
        while len(path) < depth and path + (int(ranks[t, len(path)]),) in nodes:
            path += (int(ranks[t, len(path)]),)
        passes.append(len(path))
        t += len(path) + 1
    return passes


def sweep(cfg: DictConfig) -> dict:
    """Greedy baseline answers for the prompts, then per tree size the mean accepted tokens
    (new tokens over target passes, as decoding reports it), overall and by category."""
    if cfg.strategy.name != "medusa":
        raise ConfigError(f"experiments.medusa_trees sweeps Medusa trees: drop strategy={cfg.strategy.name}")
    generation = GenerationConfig(**OmegaConf.to_container(cfg.generation))
    if not generation.sampling.greedy:
        raise ConfigError("experiments.medusa_trees needs greedy decoding: drop generation=sampling")
    device = resolve_device(cfg.runtime.device)
    target, tokenizer = load_model(cfg.model.name_or_path, device, resolve_dtype(cfg.runtime.dtype, device))
    ours = prepare(target, Runtime.of(cfg.runtime))
    options = {k: v for k, v in OmegaConf.to_container(cfg.strategy).items() if k not in ("name", "tree")}

    scorer = prepare_strategy(create_strategy("medusa", target_model=ours, **options), Runtime.of(cfg.runtime))
    baseline = Decoder(ours, create_strategy("baseline"), tokenizer, eos_ids_of(target, tokenizer),
                       kv_cache=cfg.runtime.kv_cache)
    answers = []
    for p in tqdm(experiment_prompts(cfg.dataset), desc="answers", unit="prompt"):
        prompt = encode(tokenizer, p["messages"], cfg.dataset.chat_template)
        baseline.check(prompt, generation)
        answer = baseline.generate(prompt, generation).token_ids
        answers.append((p["category"], answer, answer_ranks(scorer, target, prompt, answer)))
    sizes = {}
    for size in cfg.sizes:
        tree = scorer.tree_choices(size)  # what strategy=medusa strategy.tree=N runs
        by_category = {}  # category -> (new tokens, target passes: the prefill and each verify pass)
        for category, answer, ranks in answers:
            tokens, passes = by_category.get(category, (0, 0))
            verified = accepted_per_pass(ranks, tree, generation.max_new_tokens)
            by_category[category] = (tokens + len(answer), passes + 1 + len(verified))
        tokens, passes = map(sum, zip(*by_category.values()))
        sizes[size] = {"mean_accepted": round(tokens / passes, 3), "depth": max(map(len, tree)),
                       "by_category": {c: round(t / n, 3) for c, (t, n) in sorted(by_category.items())}}
    return {"heads": cfg.strategy.heads, "prompts": len(answers), "sizes": sizes}


def table(result: dict) -> str:
    categories = list(next(iter(result["sizes"].values()))["by_category"])
    lines = ["| nodes | depth | mean accepted | " + " | ".join(categories) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in categories) + " |"]
    for size, row in result["sizes"].items():
        lines.append(f"| {size} | {row['depth']} | {row['mean_accepted']:.3f} | "
                     + " | ".join(f"{row['by_category'][c]:.2f}" for c in categories) + " |")
    return "\n".join(lines)


@hydra.main(config_path="../configs", config_name="medusa_trees", version_base="1.3")
def main(cfg: DictConfig) -> None:
    measure_and_report(sweep, cfg, "medusa_trees.json", table)


if __name__ == "__main__":
    main()
