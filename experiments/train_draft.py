"""`python -m experiments.train_draft`: distill a small draft from the target on the CPU.

Recipe (self-distillation, as Medusa and EAGLE train on the target's own outputs):
1. data, in two stages (experiments.draft_data, disjoint from every evaluation suite): the
   target first writes `data.passages` everyday texts (news reports, stories, notices), then
   answers `data.prompts` training prompts built from templates, the Python standard library
   and those texts (to summarize, question, rewrite), plus `data.self_written` prompts it
   writes itself (self_written_prompts), greedily, and a `data.sampled_share` of them by
   sampling; every answer it wrote is training data, saved as data.jsonl.
2. draft: the target's config with `train.num_layers` decoder layers, initialized from the
   target layers `train.init_layers`; it shares (and never changes) the target's embedding
   and tied LM head, so only its layers and final norm are trained and shipped.
3. loss: cross-entropy on the target-generated answer tokens. On the greedy answers that is
   exactly "predict the target's greedy choice", which is what greedy acceptance rewards.
   With `train.head_tokens`, over the scores of the answers' most frequent tokens only: what
   the draft computes at inference with draft.head_tokens, and the head is most of a step's cost.
4. checkpoints every `train.checkpoint_every` steps into the work directory; a rerun with the
   same work directory resumes (data generation skips answered prompts, training restarts
   from the last checkpoint). The held-out agreement (draft top-1 == target token) is logged.
5. export: bf16 safetensors + config.json + specdec_draft.json (training config, data hash,
   held-out agreement) + tokens_by_frequency.json (for draft.head_tokens) into `out_dir`,
   loadable by specdec.models.load_trained_draft.
"""

import copy
import hashlib
import json
import logging
import random
import time
from pathlib import Path

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from tqdm import tqdm

from experiments.batch_generate import generate_batch
from experiments.draft_data import (
    check_disjoint,
    evaluation_spans,
    overlaps,
    passage_prompts,
    training_prompts,
)
from experiments.prompts import encode, load_prompts, shipped_suites
from experiments.training import cpu_dtype, optimize, run_entry_point, training_record
from specdec.decoding import eos_ids_of
from specdec.drafts.assets import frequent_token_head, save_token_frequencies
from specdec.drafts.draft_model import new_draft, save_trained_draft
from specdec.models import load_model
from specdec.runtime.prepare import prepare
from specdec.drafts.subset_head import SubsetHead

log = logging.getLogger("experiments.train_draft")


def generate_data(cfg: DictConfig, target, tokenizer, path: Path, states: dict | None = None) -> list[dict]:
    """Answer the passage requests, then every training prompt, with the target; resumes from `path`.
    With `states`, the target's hidden states over the sequences answered now are kept in it (see answer)."""
    done = {}
    if path.exists():
        done = {row["id"]: row for row in map(json.loads, path.read_text().splitlines())}
    evaluation = [m["content"] for suite in shipped_suites() for p in load_prompts(suite=suite) for m in p["messages"]]
    model = answering_model(target, cfg.data.dtype)
    requests = passage_prompts(cfg.data.passages, cfg.seed)
    answer(requests, cfg, model, tokenizer, done, path, sampled_share=1.0, states=states)
    spans = evaluation_spans(evaluation)
    passages = [complete_sentences(tokenizer.decode(done[p["id"]]["answer_ids"], skip_special_tokens=True))
                for p in requests]
    passages = [text for text in passages if len(text) >= 200 and not overlaps(text, spans)]
    made = training_prompts(cfg.data.prompts, cfg.seed, passages)
    prompts = [p for p in made if not overlaps(p["prompt"], spans)]
    if len(prompts) < len(made):  # an instruction and a passage together can meet an evaluation prompt's wording
        log.info("dropped %d training prompts that share a span with an evaluation prompt", len(made) - len(prompts))
    prompts += self_written_prompts(cfg, model, tokenizer, done, path, spans)
    check_disjoint([p["prompt"] for p in prompts], evaluation)
    answer(prompts, cfg, model, tokenizer, done, path, sampled_share=cfg.data.sampled_share, states=states)
    return [done[p["id"]] for p in requests + prompts]


def self_written_prompts(cfg: DictConfig, model, tokenizer, done: dict, path: Path, spans: set[str]) -> list[dict]:
    """`data.self_written` user prompts the target writes itself, sampled from its chat template
    up to the start of a user turn (Magpie, Xu et al. 2024): an instruction-tuned model then writes
    what its users ask, in far more varied topics and wordings than the templates. Only requests it
    finished (EOS) and that share no span with an evaluation prompt are kept."""
    count = cfg.data.self_written
    if not count:
        return []
    if tokenizer.chat_template is None:
        log.warning("data.self_written=%d skipped: the target's tokenizer has no chat template (not an "
                    "instruction-tuned model) to sample user turns from", count)
        return []
    marker = "\x00"  # cut the template where the user's text would start
    template = tokenizer.decode(encode(tokenizer, [{"role": "user", "content": marker}]))
    prefix = tokenizer.encode(template[: template.index(marker)])
    requests = [{"id": f"request-{i}", "category": "request", "input_ids": prefix} for i in range(count)]
    answer(requests, cfg, model, tokenizer, done, path, sampled_share=1.0, temperature=1.0)
    eos = eos_ids_of(model)
    prompts = []
    for r in requests:
        ids = done[r["id"]]["answer_ids"]
        text = tokenizer.decode(ids[:-1], skip_special_tokens=True).strip() if ids and ids[-1] in eos else ""
        if len(text.split()) >= 4 and not overlaps(text, spans):
            prompts.append({"id": f"self-written-{r['id']}", "category": "self-written", "prompt": text})
    log.info("the target wrote %d usable prompts of %d", len(prompts), count)
    return prompts


def complete_sentences(text: str) -> str:
    """The text up to its last full stop (answers are cut at max_new_tokens)."""
    return text[: text.rfind(".") + 1].strip()


def answering_model(target, dtype: str):
    """The target as it writes the training data: in `dtype` (data.dtype), with our fused layers
    and few-row products (a batch of answers is a few rows per step)."""
    dtype = cpu_dtype(dtype, "data.dtype")
    return prepare(target if dtype == target.dtype else copy.deepcopy(target).to(dtype))


def answer(prompts: list[dict], cfg: DictConfig, model, tokenizer, done: dict, path: Path, sampled_share: float,
           temperature: float | None = None, states: dict | None = None) -> None:
    """Batched answers by `model` (answering_model's) to the prompts not in `done` (their "prompt"
    in a user turn, or their "input_ids" as given), appended to `path` and added to `done`; a
    `sampled_share` of them sampled at `temperature` (default data.temperature), the rest greedy.
    With `states`, its last hidden states over each answered sequence are kept in it by prompt
    id (experiments.batch_generate)."""
    rng = random.Random(cfg.seed)
    for p in prompts:
        if "input_ids" not in p:
            p["input_ids"] = encode(tokenizer, [{"role": "user", "content": p["prompt"]}])
        p["sampled"] = rng.random() < sampled_share
    todo = sorted((p for p in prompts if p["id"] not in done), key=lambda p: (p["sampled"], len(p["input_ids"])))
    eos = eos_ids_of(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos)
    with open(path, "a") as out, tqdm(total=len(prompts), initial=len(prompts) - len(todo), desc="answering",
                                      unit="prompt") as bar:
        for start in range(0, len(todo), cfg.data.batch_size):
            batch = todo[start : start + cfg.data.batch_size]
            sampled = batch[0]["sampled"]  # batches never mix: sorted by (sampled, length)
            answers = generate_batch(model, [p["input_ids"] for p in batch], cfg.data.max_new_tokens, eos, pad,
                                     (temperature or cfg.data.temperature) if sampled else None, states is not None)
            for p, (tokens, hidden) in zip(batch, answers):
                record = {"id": p["id"], "category": p["category"], "sampled": sampled,
                          "prompt_ids": p["input_ids"], "answer_ids": tokens}
                done[p["id"]] = record
                out.write(json.dumps(record) + "\n")
                if states is not None:
                    states[p["id"]] = hidden
            out.flush()
            bar.update(len(batch))


def answered_prompts(cfg: DictConfig, target, tokenizer, work: Path, states: dict | None = None
                     ) -> tuple[list[dict], float]:
    """generate_data into work/data.jsonl, and the minutes it took summed over resumed runs
    (an interrupted run's time counts too, unless its process was killed outright; a run that
    found every answer on disk only read them, and its time does not count)."""
    path, spent = work / "data.jsonl", work / "data_seconds.txt"
    seconds = float(spent.read_text()) if spent.exists() else 0.0
    size = path.stat().st_size if path.exists() else 0
    began, finished = time.perf_counter(), False
    try:
        data = generate_data(cfg, target, tokenizer, path, states)
        finished = True
    finally:
        if not finished or not path.exists() or path.stat().st_size != size:
            seconds += time.perf_counter() - began
            spent.write_text(str(seconds))
    return data, seconds / 60


def batches(rows: list[dict], max_tokens: int, rng: random.Random) -> list[list[dict]]:
    """Groups of similar length holding at most `max_tokens` padded tokens, in random order."""
    rows = sorted(rows, key=lambda r: len(r["prompt_ids"]) + len(r["answer_ids"]))
    groups, group = [], []
    for row in rows:
        length = len(row["prompt_ids"]) + len(row["answer_ids"])
        if group and length * (len(group) + 1) > max_tokens:
            groups.append(group)
            group = []
        group.append(row)
    groups += [group] if group else []
    rng.shuffle(groups)
    return groups


def answer_loss(draft, group: list[dict], pad: int, subset: SubsetHead | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of the draft on the answer tokens of a group, and its top-1 hits; with a
    `subset`, over the scores inference computes with draft.head_tokens (a token outside it is a miss)."""
    seqs = [r["prompt_ids"] + r["answer_ids"] for r in group]
    width = max(map(len, seqs))
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    hidden = draft.model(input_ids=ids, attention_mask=mask).last_hidden_state
    rows, cols, labels = [], [], []
    for i, r in enumerate(group):  # position t predicts token t + 1: only answer tokens are targets
        first = len(r["prompt_ids"]) - 1
        rows += [i] * len(r["answer_ids"])
        cols += range(first, first + len(r["answer_ids"]))
        labels += r["answer_ids"]
    labels = torch.tensor(labels)
    if subset is None:
        logits = draft.lm_head(hidden[rows, cols])
    else:
        logits, labels = subset.scores(hidden[rows, cols]), subset.columns(labels)
    return F.cross_entropy(logits, labels, ignore_index=-100), (logits.argmax(-1) == labels).float()


@torch.no_grad()
def agreement(draft, rows: list[dict], pad: int, max_tokens: int, subset: SubsetHead | None) -> float | None:
    """Share of held-out greedy answer tokens the draft predicts exactly (top-1)."""
    if not rows:
        return None
    hits = torch.cat([answer_loss(draft, g, pad, subset)[1] for g in batches(rows, max_tokens, random.Random(0))])
    return hits.mean().item()


def train(cfg: DictConfig, draft, data: list[dict], pad: int, work: Path, subset: SubsetHead | None) -> dict:
    rng = random.Random(cfg.seed)
    held_out = [r for r in data if not r["sampled"] and rng.random() < cfg.train.held_out_share]
    held_ids = {r["id"] for r in held_out}
    rows = [r for r in data if r["id"] not in held_ids]
    params = [p for p in draft.parameters() if p.requires_grad]
    plan = [g for e in range(cfg.train.epochs) for g in batches(rows, cfg.train.batch_tokens, random.Random(cfg.seed + e))]
    checkpoint = work / "checkpoint.pt"
    before = None if checkpoint.exists() else agreement(draft, held_out, pad, cfg.train.batch_tokens, subset)

    def batch_loss(group):
        loss, hits = answer_loss(draft, group, pad, subset)
        return loss, [hits]

    def trainable() -> dict:
        return {k: v for k, v in draft.state_dict().items() if k.startswith(("model.layers", "model.norm"))}

    step, minutes = optimize(cfg.train, draft, params, plan, batch_loss, checkpoint, trainable)
    after = agreement(draft, held_out, pad, cfg.train.batch_tokens, subset)
    log.info("held-out top-1 agreement with the target: %.3f (before training %s)", after, before)
    return {"steps": step, "planned_steps": len(plan), "train_minutes": round(minutes, 1),
            "held_out_sequences": len(held_out), "held_out_top1_before": before, "held_out_top1_after": after}


def train_draft(cfg: DictConfig) -> dict:
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    work = Path(cfg.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    target, tokenizer = load_model(cfg.model.name_or_path, torch.device("cpu"), torch.float32)
    target.requires_grad_(False)
    data, data_minutes = answered_prompts(cfg, target, tokenizer, work)
    draft = new_draft(target, list(cfg.train.init_layers))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_token_frequencies([r["answer_ids"] for r in data], target.config.vocab_size, out)
    weight = target.get_output_embeddings().weight
    subset = frequent_token_head(weight, out, cfg.train.head_tokens) if cfg.train.head_tokens else None
    results = train(cfg, draft, data, pad, work, subset)
    data_hash = hashlib.sha256((work / "data.jsonl").read_bytes()).hexdigest()
    meta = training_record(cfg, data, data_hash, data_minutes, results)
    save_trained_draft(draft, out, meta)
    return meta


@hydra.main(config_path="../configs", config_name="train_draft", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_entry_point(train_draft, cfg, "draft")


if __name__ == "__main__":
    main()
