"""Checkpoints of the trainers (draft, EAGLE, Medusa recipes): the trained weights,
optimizer, schedule, step and seconds spent, so that a rerun with the same work directory
resumes where the last one stopped."""

import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def save_checkpoint(path: Path, weights: dict, optimizer, schedule, step: int, seconds: float) -> None:
    torch.save({"weights": weights, "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                "step": step, "seconds": seconds}, path)


def resume(path: Path, model: torch.nn.Module, optimizer, schedule, total_steps: int) -> tuple[int, float]:
    """Load `path` into the model (its saved weights only), optimizer and schedule if it exists:
    (step, seconds spent), or (0, 0.0) for a fresh start."""
    if not path.exists():
        return 0, 0.0
    state = torch.load(path, weights_only=False)
    model.load_state_dict(state["weights"], strict=False)
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    log.info("resumed from %s at step %d of %d", path, state["step"], total_steps)
    return state["step"], state["seconds"]
