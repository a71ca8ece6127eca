"""The trained draft: a small draft model distilled from the target on any device
(`python -m experiments.train_draft`, configs/train_draft.yaml; the loop: specdec.training.optim).

1. data: the target's own answers (specdec.training.answers), saved as a datasets.Dataset in
   work_dir/answers (specdec.training.answer_store).
2. draft: the target's config with len(`train.init_layers`) decoder layers, initialized from
   those target layers; it shares (and never changes) the target's embedding and tied LM
   head, so only its layers and final norm are trained and shipped.
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

import logging
import random
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from omegaconf import DictConfig

from specdec.drafts.assets import frequent_token_head, save_token_frequencies
from specdec.drafts.draft_model import new_draft, save_trained_draft
from specdec.drafts.subset_head import SubsetHead
from specdec.training.accelerator import trainer_accelerator
from specdec.training.answer_store import data_digest
from specdec.training.answers import answered_prompts
from specdec.training.batches import batches, held_out_ids
from specdec.training.fingerprint import check_work_dir
from specdec.training.optim import optimize
from specdec.training.record import training_record
from specdec.training.settings import check_settings, check_target_layers
from specdec.training.target import frozen_target

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint"  # in work_dir: a folder (specdec.training.checkpoint)


def answer_loss(draft, group: list[dict], pad: int, subset: SubsetHead | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of the draft on the answer tokens of a group, and its top-1 hits; with a
    `subset`, over the scores inference computes with draft.head_tokens (a token outside it is a miss)."""
    seqs = [r["prompt_ids"] + r["answer_ids"] for r in group]
    width = max(map(len, seqs))
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=draft.device)
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=draft.device)
    hidden = draft.model(input_ids=ids, attention_mask=mask).last_hidden_state
    rows, cols, labels = [], [], []
    for i, r in enumerate(group):  # position t predicts token t + 1: only answer tokens are targets
        first = len(r["prompt_ids"]) - 1
        rows += [i] * len(r["answer_ids"])
        cols += range(first, first + len(r["answer_ids"]))
        labels += r["answer_ids"]
    labels = torch.tensor(labels, device=draft.device)
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


def train(cfg: DictConfig, accelerator: Accelerator, draft, data: list[dict], pad: int, work: Path,
          subset: SubsetHead | None, data_sha256: str) -> dict:
    """Train the draft's layers on `data` less a held-out share of its greedy answers, from the
    checkpoint in `work` if there is one: the training's results."""
    held_ids = held_out_ids(data, cfg.train.held_out_share, cfg.seed)
    held_out = [r for r in data if r["id"] in held_ids]
    rows = [r for r in data if r["id"] not in held_ids]
    params = [p for p in draft.parameters() if p.requires_grad]
    plan = [g for e in range(cfg.train.epochs) for g in batches(rows, cfg.train.batch_tokens, random.Random(cfg.seed + e))]
    checkpoint = work / CHECKPOINT
    before = None if checkpoint.exists() else agreement(draft, held_out, pad, cfg.train.batch_tokens, subset)

    def batch_loss(group):
        loss, hits = answer_loss(draft, group, pad, subset)
        return loss, [hits]

    def trainable() -> dict:
        return {k: v for k, v in draft.state_dict().items() if k.startswith(("model.layers", "model.norm"))}

    progress = optimize(cfg.train, accelerator, draft, params, plan, batch_loss, checkpoint, trainable, data_sha256)
    after = agreement(draft, held_out, pad, cfg.train.batch_tokens, subset)
    log.info("held-out top-1 agreement with the target: %.3f (before training %s)", after, before)
    return {"steps": progress.steps, "planned_steps": progress.planned, "train_minutes": round(progress.minutes, 1),
            "held_out_sequences": len(held_out), "held_out_top1_before": before, "held_out_top1_after": after,
            "acceptance_by_depth": [after]}  # auto sizes (specdec.auto_size): a draft on true tokens, alike at every depth


def train_draft(cfg: DictConfig, evaluation: list[str]) -> dict:
    """The whole recipe for configs/train_draft.yaml's `cfg`, with training prompts sharing no
    span with the `evaluation` texts: the draft exported to cfg.out_dir, and its record."""
    check_settings(cfg, "draft")
    work, out = Path(cfg.work_dir), Path(cfg.out_dir)
    accelerator = trainer_accelerator(cfg.train)
    with accelerator.main_process_first():  # the main process answers; the others then read its answers
        check_work_dir(cfg, work / CHECKPOINT, {cfg.seed: work}, accelerator.num_processes)
        target, tokenizer = frozen_target(cfg, accelerator.device)
        check_target_layers("train.init_layers", list(cfg.train.init_layers), target)
        data, data_minutes = answered_prompts(cfg, target, tokenizer, evaluation, work)
        out.mkdir(parents=True, exist_ok=True)
        save_token_frequencies([r["answer_ids"] for r in data], target.config.vocab_size, out)
    draft = new_draft(target, list(cfg.train.init_layers)).to(accelerator.device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    weight = target.get_output_embeddings().weight
    subset = frequent_token_head(weight, out, cfg.train.head_tokens) if cfg.train.head_tokens else None
    data_hash = data_digest([work])
    results = train(cfg, accelerator, draft, data, pad, work, subset, data_hash)
    meta = training_record(cfg, data, data_hash, data_minutes, results)
    if accelerator.is_main_process:
        save_trained_draft(draft, out, meta)
    return meta
