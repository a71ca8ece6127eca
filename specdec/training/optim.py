"""The optimization loop the trainers share, on `accelerate`: AdamW over a planned list of
micro-batches, with a learning-rate schedule, gradient accumulation, clipped gradients, data
parallel processes, checkpoints and a time budget."""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from omegaconf import DictConfig
from tqdm import tqdm

from specdec.training.checkpoint import keep_trained_weights, resume, save_checkpoint


def warmup_cosine(optimizer, total: int, lr: float):
    """A 5% linear warm-up to `lr`, then a cosine decay to 0 at step `total`."""
    warmup = max(1, total // 20)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1, (s + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, s / total))))


class Trainee(torch.nn.Module):
    """The trained module with its loss as forward: what accelerate wraps (data parallel, autocast)."""

    def __init__(self, module: torch.nn.Module, batch_loss: Callable):
        super().__init__()
        self.module, self.batch_loss = module, batch_loss

    def forward(self, batch):
        return self.batch_loss(batch)


@dataclass
class Progress:
    steps: int  # optimizer steps done, over all runs
    planned: int  # optimizer steps the plan holds
    minutes: float  # spent training, over all runs
    losses: list[float]  # this run's loss per step, averaged over its micro-batches and processes


def optimize(train_cfg: DictConfig, accelerator: Accelerator, module: torch.nn.Module, params: list[torch.Tensor],
             plan: list, batch_loss: Callable, checkpoint: Path, saved: Callable[[], dict], data_sha256: str,
             schedule: Callable = warmup_cosine) -> Progress:
    """AdamW over `plan` (micro-batches; `batch_loss(batch)` -> (loss, [top-1 hits per output])):
    each optimizer step takes grad_accum * num_processes of them in order, process r the r-th of
    every num_processes (the tail that fills no step is left out). The learning rate follows
    `schedule(optimizer, steps, lr)`; gradients are clipped; a checkpoint of the optimizer and
    `saved()` (the trained weights) goes to the `checkpoint` folder every train_cfg.checkpoint_every
    steps (a rerun resumes from it, unless the data's hash is no longer `data_sha256`); training
    stops at train_cfg.time_budget_min."""
    share, rank = accelerator.gradient_accumulation_steps, accelerator.process_index
    per_step = share * accelerator.num_processes
    total = len(plan) // per_step
    optimizer = torch.optim.AdamW(params, lr=train_cfg.lr, weight_decay=0.0)
    trainee, optimizer, scheduler = accelerator.prepare(Trainee(module, batch_loss), optimizer,
                                                        schedule(optimizer, total, train_cfg.lr))
    keep_trained_weights(accelerator, saved)
    step, spent = resume(accelerator, checkpoint, total, data_sha256)
    trainee.train()
    start, losses = time.perf_counter() - spent, []
    with tqdm(total=total, initial=step, desc="training", unit="step",
              disable=not accelerator.is_local_main_process) as bar:
        while step < total and not out_of_time(accelerator, start, train_cfg.time_budget_min):
            mean = torch.zeros((), device=accelerator.device)
            for micro in range(share):
                with accelerator.accumulate(trainee):
                    loss, hits = trainee(plan[step * per_step + micro * accelerator.num_processes + rank])
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(params, 1.0)
                    optimizer.step()  # accelerate's: a step only where gradients sync (the last micro-batch)
                    if accelerator.sync_gradients:
                        scheduler.step()
                    optimizer.zero_grad()
                mean += loss.detach().float() / share
            losses.append(accelerator.reduce(mean, "mean").item())
            step += 1
            bar.update()
            bar.set_postfix(loss=f"{losses[-1]:.3f}", top1="/".join(f"{h.mean().item():.3f}" for h in hits))
            if step % train_cfg.checkpoint_every == 0 or step == total:
                save_checkpoint(accelerator, checkpoint, step, time.perf_counter() - start, data_sha256)
    module.eval()
    return Progress(step, total, (time.perf_counter() - start) / 60, losses)


def out_of_time(accelerator: Accelerator, start: float, budget_min: float) -> bool:
    """Whether any process has spent the time budget: every process stops at the same step."""
    spent = torch.tensor([time.perf_counter() - start >= budget_min * 60], device=accelerator.device)
    return bool(accelerator.reduce(spent.int(), "sum").item())
