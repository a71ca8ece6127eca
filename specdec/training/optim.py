"""The optimization loop the trainers share: AdamW over a planned list of batches, with a
learning-rate schedule, clipped gradients, checkpoints and a time budget."""

import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from specdec.training.checkpoint import resume, save_checkpoint


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
