"""Medusa-1 heads on the frozen target, on any device (`python -m experiments.train_medusa`,
configs/train_medusa.yaml; the loop: specdec.training.optim).

1. data: the EAGLE draft's (specdec.training.features.seeded_data: the trained draft's
   answers once per seed in `data.seeds`, so both can train on the same files), with the
   input of the target's LM head at every answer position; head k's label there is the token
   k + 2 ahead.
2. heads: `heads.num_heads` heads of `heads.num_layers` residual blocks each, through the
   target's LM head (frozen, shared) restricted to the `train.head_tokens` tokens most
   frequent in the answers; cross-entropy on the target's tokens, head k weighted
   `train.head_decay`**k (as Medusa). Checkpoints and resume as the trained draft's.
3. held-out accuracy per head: top-1, top-5 and the share of labels at each rank, which
   `specdec.tree.best_tree` turns into sparse trees.
4. default tree: for every tree size up to `tree.max_nodes`, tokens per step (1 + the summed
   chances of the best tree's nodes) over the measured cost of verifying that many tokens;
   the fastest becomes the heads' default tree.
5. export: bf16 safetensors + medusa_config.json (architecture, training record, accuracies,
   default tree, data hash) + tokens_by_frequency.json into `out_dir`.
"""

import logging
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from omegaconf import DictConfig

from specdec.auto_size import best, tree_speedups
from specdec.drafts.medusa_heads import MedusaHeads, save_medusa_heads
from specdec.drafts.assets import frequent_token_head, save_token_frequencies
from specdec.runtime.prepare import prepare
from specdec.drafts.subset_head import SubsetHead
from specdec.training.accelerator import trainer_accelerator
from specdec.training.answer_store import data_digest
from specdec.training.batches import held_out_ids, sequence
from specdec.training.features import seed_dirs, seeded_data
from specdec.training.fingerprint import check_work_dir
from specdec.training.optim import optimize
from specdec.training.record import training_record
from specdec.training.settings import check_settings
from specdec.training.target import frozen_target
from specdec.tree import best_tree

log = logging.getLogger(__name__)
CHECKPOINT = "medusa_checkpoint"  # in work_dir: a folder (specdec.training.checkpoint)
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
    return subset.scores(heads.hidden(hidden.to(subset.column.device).float()))


def accuracy(heads: MedusaHeads, subset: SubsetHead, hidden: torch.Tensor, labels: torch.Tensor) -> dict:
    """Per head: top-1, top-5, and the share of labels at each rank < RANKS (labels outside the subset miss)."""
    ranks = []
    with torch.no_grad():
        for start in range(0, len(hidden), 2048):
            scores = head_logits(heads, subset, hidden[start : start + 2048])
            chunk = labels[start : start + 2048].to(scores.device)
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


def train(cfg: DictConfig, accelerator: Accelerator, heads: MedusaHeads, subset: SubsetHead, hidden, labels,
          work: Path, data_sha256: str) -> dict:
    """Batches of positions in a fresh random order each epoch; a one-cycle schedule (as Medusa)."""
    torch.manual_seed(cfg.seed)
    size = cfg.train.batch_positions
    orders = [torch.randperm(len(hidden), generator=torch.Generator().manual_seed(cfg.seed + e))
              for e in range(cfg.train.epochs)]
    plan = [order[start : start + size] for order in orders for start in range(0, len(hidden), size)]
    weights = torch.tensor([cfg.train.head_decay ** k for k in range(heads.num_heads)], device=accelerator.device)

    def batch_loss(batch):
        scores = head_logits(heads, subset, hidden[batch])  # (B, K, S)
        target = subset.columns(labels[batch].to(accelerator.device))
        losses = torch.stack([F.cross_entropy(scores[:, k], target[:, k], ignore_index=-100)
                              for k in range(heads.num_heads)])
        hits = (scores.argmax(-1) == target).float().sum(0) / (target >= 0).float().sum(0).clamp_min(1)
        return (losses.nan_to_num() * weights).sum() / weights.sum(), list(hits)

    def one_cycle(optimizer, total: int, lr: float):
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=total, pct_start=0.05)

    progress = optimize(cfg.train, accelerator, heads, list(heads.parameters()), plan, batch_loss,
                        work / CHECKPOINT, heads.state_dict, data_sha256,
                        schedule=one_cycle)
    return {"steps": progress.steps, "planned_steps": progress.planned, "train_minutes": round(progress.minutes, 1)}


def default_tree(topk_accuracy: list[list[float]], verify_ms: dict[int, float], max_nodes: int) -> dict:
    """The tree size up to `max_nodes` with the best predicted speedup (specdec.auto_size, as tree=auto
    picks one) for `verify_ms[k]`, the measured cost of a target pass over k tokens on this machine."""
    speedups = tree_speedups(topk_accuracy, lambda k: verify_ms[k] / verify_ms[1], sizes=range(1, max_nodes + 1))
    size = best({n: speedup for n, (speedup, _) in speedups.items()})
    return {"default_tree": best_tree(topk_accuracy, size),
            "tree_choice": {"nodes": size, "predicted_speedup": {n: round(s, 3) for n, (s, _) in speedups.items()},
                            "verify_ms": {k: round(v, 2) for k, v in verify_ms.items()}}}


def train_medusa(cfg: DictConfig, evaluation: list[str],
                 time_verify: Callable[[torch.nn.Module, int, int], dict[int, float]]) -> dict:
    """The whole recipe for configs/train_medusa.yaml's `cfg`, with training prompts sharing no span
    with the `evaluation` texts and the default tree picked by the verify costs `time_verify(model,
    cached tokens, k)` measures (median ms of a pass over 1..k new tokens): the heads exported to
    cfg.out_dir, and their record."""
    check_settings(cfg, "medusa")
    work, out = Path(cfg.work_dir), Path(cfg.out_dir)
    accelerator = trainer_accelerator(cfg.train)
    with accelerator.main_process_first():  # the main process answers; the others then read its answers
        check_work_dir(cfg, work / CHECKPOINT, seed_dirs(cfg, work), accelerator.num_processes)
        target, tokenizer = frozen_target(cfg, accelerator.device)
        data, states, data_minutes = seeded_data(cfg, target, tokenizer, evaluation, work)
        out.mkdir(parents=True, exist_ok=True)
        save_token_frequencies([r["answer_ids"] for r in data], target.config.vocab_size, out)
    held_out = held_out_ids(data, cfg.train.held_out_share, cfg.seed)
    pairs = list(zip(data, states))
    hidden, labels = answer_positions([(r, s) for r, s in pairs if r["id"] not in held_out], cfg.heads.num_heads)
    held_hidden, held_labels = answer_positions([(r, s) for r, s in pairs if r["id"] in held_out], cfg.heads.num_heads)
    subset = frequent_token_head(target.get_output_embeddings().weight, out, cfg.train.head_tokens)
    config = target.config.get_text_config()
    heads = MedusaHeads(config.hidden_size, config.vocab_size, cfg.heads.num_heads, cfg.heads.num_layers,
                        shared_lm_head=True).to(accelerator.device)
    before = accuracy(heads, subset, held_hidden, held_labels)
    data_hash = data_digest(list(seed_dirs(cfg, work).values()))
    results = train(cfg, accelerator, heads, subset, hidden, labels, work, data_hash)
    after = accuracy(heads, subset, held_hidden, held_labels)
    log.info("held-out top-1 per head %s (before %s), top-5 %s", after["top1"], before["top1"], after["top5"])
    results |= {"train_positions": len(hidden), "held_out_positions": len(held_hidden)}
    verify_ms = time_verify(prepare(target), cfg.tree.context_tokens, cfg.tree.max_nodes + 1)
    meta = {**training_record(cfg, data, data_hash, data_minutes, results),
            "held_out_top1_before": before["top1"], "held_out_top1": after["top1"], "held_out_top5": after["top5"],
            "acceptance_by_depth": after["top1"],  # auto sizes (specdec.auto_size)
            "topk_accuracy": after["topk_accuracy"], **default_tree(after["topk_accuracy"], verify_ms, cfg.tree.max_nodes)}
    if accelerator.is_main_process:
        save_medusa_heads(heads, out, meta)
    return meta
