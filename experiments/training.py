"""What the training entry points (train_draft, train_eagle, train_medusa) share: the
optimization loop over a planned list of batches, their CPU dtypes, and running an entry
point from Hydra."""

import functools
import json
import logging
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from experiments.checkpoint import resume, save_checkpoint
from specdec.errors import ConfigError
from specdec.models import resolve_dtype

log = logging.getLogger(__name__)


@functools.cache
def cpu_dtype(name: str, knob: str) -> torch.dtype:
    """The dtype a training knob names, for the CPU; bfloat16 warns (once) where the CPU has no
    bf16 products, since emulating them is slower than float32."""
    dtype = resolve_dtype(name, torch.device("cpu"), knob)
    if dtype == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        log.warning("%s=bfloat16 on a CPU without bf16 matrix products (emulated, slower than float32): "
                    "set %s=float32", knob, knob)
    return dtype


def warmup_cosine(optimizer, total: int, lr: float):
    """A 5% linear warm-up to `lr`, then a cosine decay to 0 at step `total`."""
    warmup = max(1, total // 20)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1, (s + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, s / total))))


def optimize(train_cfg: DictConfig, module: torch.nn.Module, params: list[torch.Tensor], plan: list,
             batch_loss: Callable, checkpoint: Path, saved: Callable[[], dict],
             schedule: Callable = warmup_cosine) -> tuple[int, float]:
    """AdamW over `plan` (one batch per step; `batch_loss(batch)` -> (loss, [top-1 hits per output])),
    the learning rate following `schedule(optimizer, steps, lr)`, clipped gradients, a checkpoint of
    `saved()` every train_cfg.checkpoint_every steps (a rerun resumes from it), stopping at
    train_cfg.time_budget_min: (steps done, minutes spent over all runs)."""
    optimizer = torch.optim.AdamW(params, lr=train_cfg.lr, weight_decay=0.0)
    schedule = schedule(optimizer, len(plan), train_cfg.lr)
    step, spent = resume(checkpoint, module, optimizer, schedule, len(plan))
    module.train()
    start = time.perf_counter() - spent
    with tqdm(total=len(plan), initial=step, desc="training", unit="step") as bar:
        while step < len(plan) and time.perf_counter() - start < train_cfg.time_budget_min * 60:
            loss, hits = batch_loss(plan[step])
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            step += 1
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}", top1="/".join(f"{h.mean().item():.3f}" for h in hits))
            if step % train_cfg.checkpoint_every == 0 or step == len(plan):
                save_checkpoint(checkpoint, saved(), optimizer, schedule, step, time.perf_counter() - start)
    module.eval()
    return step, (time.perf_counter() - start) / 60


def training_record(cfg: DictConfig, data: list[dict], data_sha256: str, data_minutes: float, results: dict) -> dict:
    """What a shipped draft records beside its weights: its target, the whole config, the data's
    hash, size and answering time, and the training's results."""
    return {"target": cfg.model.name_or_path, "config": OmegaConf.to_container(cfg, resolve=True),
            "data_sha256": data_sha256, "data_sequences": len(data),
            "data_answer_tokens": sum(len(r["answer_ids"]) for r in data), "data_minutes": round(data_minutes, 1),
            **results}


def run_entry_point(train: Callable[[DictConfig], dict], cfg: DictConfig, what: str, hidden=("config",)) -> None:
    """Run a training entry point from its Hydra main: a ConfigError exits with status 2 and its
    message (no traceback); else print the record (less `hidden` keys) and where `what` went."""
    try:
        meta = train(cfg)
    except ConfigError as e:
        log.error("%s", e)
        sys.exit(2)
    print(json.dumps({k: v for k, v in meta.items() if k not in hidden}, indent=2))
    print(f"{what} saved in {cfg.out_dir}; run dir {HydraConfig.get().runtime.output_dir}")
