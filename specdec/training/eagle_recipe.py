"""The EAGLE draft: a feature-level draft trained on the frozen target, on any device
(`python -m experiments.train_eagle`, configs/train_eagle.yaml; the loop: specdec.training.optim).

1. data: the trained draft's (specdec.training.answers): the target's own greedy and sampled
   answers to training prompts disjoint from every evaluation suite, once per seed in
   `data.seeds` (each seed draws other passages and prompts: more data).
2. features (specdec.training.features): the target's last hidden state (the LM head's input)
   at every position of each sequence, mostly kept while answering, stored in the work directory.
3. draft (specdec.drafts.eagle_draft): `fc` over [hidden state at t; embedding of token t + 1], then
   `train.num_layers` decoder layers (EAGLE: one), fresh or copies of target layer
   `train.init_layer`, predicting the hidden state at t + 1. Loss at each answer position:
   cross-entropy against the target's own distribution there (through its LM head,
   restricted to the `train.head_tokens` most frequent answer tokens, as at inference) plus
   `train.feature_weight` times a smooth-L1 regression on the hidden state (EAGLE), with the
   products autocast as `train.mixed_precision` says.
4. unrolled passes (`train.unroll`, the "training-time test" of EAGLE-3): pass s feeds the
   draft's own predicted hidden states of pass s - 1 back in, with the attention pattern it
   sees when drafting token s at inference (true-feature keys up to the last verified
   position, then its own earlier drafts), so drafts past the first are trained as they run.
5. checkpoints every `train.checkpoint_every` steps, resume as the trained draft's; held-out
   agreement (the draft's top-1 equals the target's) logged per drafted position.
6. export: bf16 safetensors + eagle_config.json (training config, data hash, agreement) +
   tokens_by_frequency.json into `out_dir` (specdec.drafts.eagle_draft.load_eagle_draft).
"""

import logging
import random
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from omegaconf import DictConfig
from transformers import DynamicCache

from specdec.runtime.cached_model import cache_argument
from specdec.drafts.eagle_draft import EagleDraft, new_eagle_draft, save_eagle_draft
from specdec.drafts.assets import frequent_token_head, save_token_frequencies
from specdec.drafts.subset_head import SubsetHead
from specdec.training.batches import batches, held_out_ids, sequence
from specdec.training.accelerator import trainer_accelerator
from specdec.training.answer_store import data_digest
from specdec.training.features import seed_dirs, seeded_data
from specdec.training.fingerprint import check_work_dir
from specdec.training.optim import optimize
from specdec.training.record import training_record
from specdec.training.settings import check_settings, check_target_layers
from specdec.training.target import frozen_target

log = logging.getLogger(__name__)
CHECKPOINT = "eagle_checkpoint"  # in work_dir: a folder (specdec.training.checkpoint)


def unrolled_mask(length: int, passes: int, device: torch.device | None = None) -> torch.Tensor:
    """(1, 1, length, passes * length) additive mask of pass `passes` (1-based): the query at
    draft position q sees pass-1 keys up to q - passes + 1 (verified positions) and the key of
    pass r at q - (passes - r) (its own earlier drafts, then itself), as when drafting at inference."""
    q = torch.arange(length, device=device)[:, None]
    j = torch.arange(length, device=device)[None, :]
    blocks = [j <= q - passes + 1] + [j == q - (passes - r) for r in range(2, passes + 1)]
    allowed = torch.cat(blocks, dim=1)
    allowed[:, (passes - 1) * length :].fill_diagonal_(True)  # a row always sees itself (also where q < passes - 1)
    return torch.zeros(allowed.shape, device=device).masked_fill_(~allowed, torch.finfo(torch.float32).min)[None, None]


def unrolled_predictions(draft: EagleDraft, ids: torch.Tensor, states: torch.Tensor, unroll: int,
                         noise: float = 0.0) -> list[torch.Tensor]:
    """Per pass s = 1..unroll, the draft's predicted hidden states (B, M, d) at draft positions
    q < M, from token ids (B, M) (token q + 1 of each sequence) and the target's states (B, M, d)
    (position q): pass 1 reads the true states, pass s the predictions of pass s - 1 one position
    earlier, under unrolled_mask, so that pass s at q is what drafting token s from the verified
    position q - s + 1 computes at inference."""
    width = ids.shape[1]
    positions = torch.arange(width, device=ids.device)[None].expand(len(ids), -1)
    cache = {cache_argument(draft.lm.model): DynamicCache(config=draft.lm.config)}
    inputs, passes = states, []
    for s in range(1, unroll + 1):
        if s > 1:
            inputs = torch.cat([inputs[:, :1], passes[-1][:, :-1]], dim=1)
        noisy = inputs + noise * torch.randn_like(inputs) if noise else inputs
        passes.append(draft.lm.model(inputs_embeds=draft.inputs(noisy, ids), attention_mask=unrolled_mask(width, s, ids.device),
                                     position_ids=positions, use_cache=True, **cache).last_hidden_state)
    return passes


def group_loss(draft: EagleDraft, group: list[dict], hidden: list[torch.Tensor], subset: SubsetHead, unroll: int,
               feature_weight: float, noise: float) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The loss over a group of sequences, and per pass the top-1 hits (draft argmax == target argmax)
    at the answer positions: cross-entropy against the target's distribution over the subset's tokens
    plus feature_weight times the smooth-L1 distance to the target's hidden state."""
    seqs = [sequence(r) for r in group]
    width = max(map(len, seqs)) - 1  # draft positions
    device = draft.fc.weight.device
    ids = torch.tensor([s[1:] + [0] * (width + 1 - len(s)) for s in seqs], device=device)
    feats = torch.stack([F.pad(hidden[r["index"]].to(device).float(), (0, 0, 0, width + 1 - len(s)))
                         for r, s in zip(group, seqs)])
    wanted = feats[:, 1:]
    answer = torch.zeros(len(group), width, dtype=torch.bool, device=device)  # the state at q + 1 chose an answer token
    for i, r in enumerate(group):
        answer[i, len(r["prompt_ids"]) - 2 : len(seqs[i]) - 2] = True
    with torch.no_grad():
        target_probs = subset.scores(wanted[answer]).softmax(-1)
        target_top = target_probs.argmax(-1)
    loss, hits = 0.0, []
    for s, predicted in enumerate(unrolled_predictions(draft, ids, feats[:, :-1], unroll, noise), start=1):
        valid = answer.clone()
        valid[:, : s - 1] = False  # pass s at q starts from verified position q - s + 1
        keep = valid[answer]
        scores = subset.scores(predicted[answer])[keep]
        classify = -(target_probs[keep] * scores.log_softmax(-1)).sum(-1).mean()
        loss = loss + classify + feature_weight * F.smooth_l1_loss(predicted[valid], wanted[valid])
        hits.append((scores.argmax(-1) == target_top[keep]).float())
    return loss / unroll, hits


@torch.no_grad()
def agreement(draft, rows, hidden, subset, unroll: int, max_tokens: int) -> list[float] | None:
    """Per drafted position (pass), the share of held-out answer positions where the draft's top-1 is the target's."""
    if not rows:
        return None
    per_pass = [[] for _ in range(unroll)]
    for group in batches(rows, max_tokens, random.Random(0)):
        for s, h in enumerate(group_loss(draft, group, hidden, subset, unroll, 0.0, 0.0)[1]):
            per_pass[s].append(h)
    return [round(torch.cat(h).mean().item(), 4) for h in per_pass]


def train(cfg: DictConfig, accelerator: Accelerator, draft: EagleDraft, rows, held_out, hidden, subset,
          work: Path, data_sha256: str) -> dict:
    """Train the draft's own weights on `rows` (features in `hidden`), from the checkpoint in
    `work` if there is one: the training's results, with the agreement on `held_out`."""
    params = list(draft.own_state().values())
    draft.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    plan = [g for e in range(cfg.train.epochs) for g in batches(rows, cfg.train.batch_tokens, random.Random(cfg.seed + e))]
    checkpoint = work / CHECKPOINT
    unroll = cfg.train.unroll
    before = None if checkpoint.exists() else agreement(draft, held_out, hidden, subset, unroll, cfg.train.batch_tokens)

    def batch_loss(group):  # autocast by the accelerator (train.mixed_precision)
        return group_loss(draft, group, hidden, subset, unroll, cfg.train.feature_weight, cfg.train.noise)

    progress = optimize(cfg.train, accelerator, draft, params, plan, batch_loss, checkpoint, draft.own_state, data_sha256)
    after = agreement(draft, held_out, hidden, subset, unroll, cfg.train.batch_tokens)
    log.info("held-out top-1 agreement per drafted position: %s (before training %s)", after, before)
    return {"steps": progress.steps, "planned_steps": progress.planned, "train_minutes": round(progress.minutes, 1),
            "held_out_sequences": len(held_out), "held_out_top1_before": before, "held_out_top1": after,
            "acceptance_by_depth": after}  # auto sizes (specdec.auto_size): agreement at each depth


def train_eagle(cfg: DictConfig, evaluation: list[str]) -> dict:
    """The whole recipe for configs/train_eagle.yaml's `cfg`, with training prompts sharing no
    span with the `evaluation` texts: the draft exported to cfg.out_dir, and its record."""
    check_settings(cfg, "eagle")
    work, out = Path(cfg.work_dir), Path(cfg.out_dir)
    accelerator = trainer_accelerator(cfg.train)
    with accelerator.main_process_first():  # the main process answers; the others then read its answers
        check_work_dir(cfg, work / CHECKPOINT, seed_dirs(cfg, work), accelerator.num_processes)
        target, tokenizer = frozen_target(cfg, accelerator.device)
        if cfg.train.init_layer is not None:
            check_target_layers("train.init_layer", [cfg.train.init_layer], target)
        data, hidden, data_minutes = seeded_data(cfg, target, tokenizer, evaluation, work)
        out.mkdir(parents=True, exist_ok=True)
        save_token_frequencies([r["answer_ids"] for r in data], target.config.vocab_size, out)
    held_ids = held_out_ids(data, cfg.train.held_out_share, cfg.seed)
    rows = [r for r in data if r["id"] not in held_ids]
    subset = frequent_token_head(target.get_output_embeddings().weight, out, cfg.train.head_tokens)
    draft = new_eagle_draft(target, cfg.train.init_layer, cfg.train.num_layers).to(accelerator.device)
    data_hash = data_digest(list(seed_dirs(cfg, work).values()))
    held_out = [r for r in data if r["id"] in held_ids]
    results = train(cfg, accelerator, draft, rows, held_out, hidden, subset, work, data_hash)
    meta = training_record(cfg, data, data_hash, data_minutes, results)
    if accelerator.is_main_process:
        save_eagle_draft(draft, out, meta)
    return meta
