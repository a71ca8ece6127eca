"""`python -m experiments.train_medusa`: Medusa-1 heads on the frozen target, on the CPU.

Recipe:
1. data: the trained-draft recipe (experiments.train_draft.generate_data): the target's own
   greedy and sampled answers to training prompts disjoint from every evaluation suite, once
   per seed in `data.seeds` (experiments.features.seeded_data; the EAGLE draft's recipe, so
   both can train on the same files).
2. features (experiments.features): the input of the target's LM head (its last hidden
   state) at every answer position, kept while the target answers; head k's label there is
   the token k + 2 ahead.
3. heads: `heads.num_heads` heads of `heads.num_layers` residual blocks each, through the
   target's LM head (frozen, shared) restricted to the `train.head_tokens` tokens most
   frequent in the answers; cross-entropy on the target's tokens, head k weighted
   `train.head_decay`**k (as Medusa). Checkpoints and resume as train_draft.
4. held-out accuracy per head: top-1, top-5 and the share of labels at each rank, which
   `specdec.tree.best_tree` turns into sparse trees.
5. default tree: for every tree size up to `tree.max_nodes`, tokens per step (1 + the summed
   chances of the best tree's nodes) over the measured cost of verifying that many tokens;
   the fastest becomes the heads' default tree.
6. export: bf16 safetensors + medusa_config.json (architecture, training record, accuracies,
   default tree, data hash) + tokens_by_frequency.json into `out_dir`.
"""

import logging
import random
from pathlib import Path

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from experiments.cost_model import measure_costs
from experiments.features import data_digest, seeded_data, sequence
from experiments.training import optimize, run_entry_point, training_record
from specdec.drafts.medusa_heads import MedusaHeads, save_medusa_heads
from specdec.drafts.assets import frequent_token_head, save_token_frequencies
from specdec.models import load_model
from specdec.runtime.prepare import prepare
from specdec.drafts.subset_head import SubsetHead
from specdec.tree import best_tree

log = logging.getLogger("experiments.train_medusa")
RANKS = 10  # ranks whose accuracy is recorded for tree building


def answer_positions(rows: list[tuple[dict, torch.Tensor]], num_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden states (N, d), labels (N, K) with -100 past the end) at every answer position of
    the (row, its features) pairs: head k's label at position t is the token t + 2 + k."""
    hidden, labels = [], []
    for row, state in rows:
        seq = sequence(row)
        first = len(row["prompt_ids"]) - 1  # its hidden state gives the first answer token
        hidden.append(state[first : len(seq) - 1])
        ahead = [[seq[t + 2 + k] if t + 2 + k < len(seq) else -100 for k in range(num_heads)]
                 for t in range(first, len(seq) - 1)]
        labels.append(torch.tensor(ahead))
    return torch.cat(hidden), torch.cat(labels)


def head_logits(heads: MedusaHeads, subset: SubsetHead, hidden: torch.Tensor) -> torch.Tensor:
    """(N, K, S) scores over the subset's tokens only (training never builds full-vocabulary rows)."""
    return subset.scores(heads.hidden(hidden.float()))


def accuracy(heads: MedusaHeads, subset: SubsetHead, hidden: torch.Tensor, labels: torch.Tensor) -> dict:
    """Per head: top-1, top-5, and the share of labels at each rank < RANKS (labels outside the subset miss)."""
    ranks = []
    with torch.no_grad():
        for start in range(0, len(hidden), 2048):
            scores = head_logits(heads, subset, hidden[start : start + 2048])
            chunk = labels[start : start + 2048]
            target = subset.columns(chunk)
            rank = (scores > scores.gather(-1, target.clamp_min(0).unsqueeze(-1))).sum(-1)
            rank = torch.where(target >= 0, rank, scores.shape[-1])  # outside the subset: a miss
            ranks.append(torch.where(chunk >= 0, rank, -1))
    ranks = torch.cat(ranks)  # (N, K), -1 where there is no label, >= S when outside the subset
    result = {"top1": [], "top5": [], "topk_accuracy": []}
    for k in range(ranks.shape[1]):
        valid = ranks[:, k][ranks[:, k] >= 0]
        result["top1"].append(round((valid == 0).float().mean().item(), 4))
        result["top5"].append(round((valid < 5).float().mean().item(), 4))
        result["topk_accuracy"].append([round((valid == r).float().mean().item(), 4) for r in range(RANKS)])
    return result


def train(cfg: DictConfig, heads: MedusaHeads, subset: SubsetHead, hidden, labels, work: Path) -> dict:
    """Batches of positions in a fresh random order each epoch; a one-cycle schedule (as Medusa)."""
    torch.manual_seed(cfg.seed)
    size = cfg.train.batch_positions
    orders = [torch.randperm(len(hidden), generator=torch.Generator().manual_seed(cfg.seed + e))
              for e in range(cfg.train.epochs)]
    plan = [order[start : start + size] for order in orders for start in range(0, len(hidden), size)]
    weights = torch.tensor([cfg.train.head_decay ** k for k in range(heads.num_heads)])

    def batch_loss(batch):
        scores = head_logits(heads, subset, hidden[batch])  # (B, K, S)
        target = subset.columns(labels[batch])
        losses = torch.stack([F.cross_entropy(scores[:, k], target[:, k], ignore_index=-100)
                              for k in range(heads.num_heads)])
        hits = (scores.argmax(-1) == target).float().sum(0) / (target >= 0).float().sum(0).clamp_min(1)
        return (losses.nan_to_num() * weights).sum() / weights.sum(), list(hits)

    def one_cycle(optimizer, total: int, lr: float):
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=total, pct_start=0.05)

    step, minutes = optimize(cfg.train, heads, list(heads.parameters()), plan, batch_loss,
                             work / "medusa_checkpoint.pt", heads.state_dict, schedule=one_cycle)
    return {"steps": step, "planned_steps": len(plan), "train_minutes": round(minutes, 1)}


def default_tree(cfg: DictConfig, target, topk_accuracy: list[list[float]]) -> dict:
    """The tree size with the most tokens per millisecond: expected tokens per step of the best tree
    of each size over the measured cost of a target pass over that many tokens plus the root."""
    costs = measure_costs(prepare(target), None, "preallocated", cfg.tree.context_tokens, cfg.tree.max_nodes + 1)
    speeds = {}
    for size in range(1, cfg.tree.max_nodes + 1):
        tree = best_tree(topk_accuracy, size)
        chances = [torch.tensor([topk_accuracy[d][r] for d, r in enumerate(path)]).prod().item() for path in tree]
        speeds[size] = (1 + sum(chances)) / costs["verify_ms"][size + 1]
    size = max(speeds, key=speeds.get)
    decode_per_ms = 1 / costs["verify_ms"][1]
    return {"default_tree": best_tree(topk_accuracy, size),
            "tree_choice": {"nodes": size, "predicted_speedup": {n: round(s / decode_per_ms, 3) for n, s in speeds.items()},
                            "verify_ms": {k: round(v, 2) for k, v in costs["verify_ms"].items()}}}


def train_medusa(cfg: DictConfig) -> dict:
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    work = Path(cfg.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    target, tokenizer = load_model(cfg.model.name_or_path, torch.device("cpu"), torch.float32)
    target.requires_grad_(False)
    data, states, data_minutes = seeded_data(cfg, target, tokenizer, work)
    rng = random.Random(cfg.seed)
    held_out = {r["id"] for r in data if not r["sampled"] and rng.random() < cfg.train.held_out_share}
    pairs = list(zip(data, states))
    hidden, labels = answer_positions([(r, s) for r, s in pairs if r["id"] not in held_out], cfg.heads.num_heads)
    held_hidden, held_labels = answer_positions([(r, s) for r, s in pairs if r["id"] in held_out], cfg.heads.num_heads)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_token_frequencies([r["answer_ids"] for r in data], target.config.vocab_size, out)
    subset = frequent_token_head(target.get_output_embeddings().weight, out, cfg.train.head_tokens)
    config = target.config.get_text_config()
    heads = MedusaHeads(config.hidden_size, config.vocab_size, cfg.heads.num_heads, cfg.heads.num_layers,
                        shared_lm_head=True)
    before = accuracy(heads, subset, held_hidden, held_labels)
    results = train(cfg, heads, subset, hidden, labels, work)
    after = accuracy(heads, subset, held_hidden, held_labels)
    log.info("held-out top-1 per head %s (before %s), top-5 %s", after["top1"], before["top1"], after["top5"])
    results |= {"train_positions": len(hidden), "held_out_positions": len(held_hidden)}
    meta = {**training_record(cfg, data, data_digest(work, cfg.data.seeds), data_minutes, results),
            "held_out_top1_before": before["top1"], "held_out_top1": after["top1"], "held_out_top5": after["top5"],
            "topk_accuracy": after["topk_accuracy"], **default_tree(cfg, target, after["topk_accuracy"])}
    save_medusa_heads(heads, out, meta)
    return meta


@hydra.main(config_path="../configs", config_name="train_medusa", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_entry_point(train_medusa, cfg, "heads", hidden=("config", "topk_accuracy"))


if __name__ == "__main__":
    main()
