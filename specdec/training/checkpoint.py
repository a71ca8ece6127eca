"""Checkpoints of the trainers (draft, EAGLE, Medusa recipes): the trained weights, optimizer,
schedule, step and seconds spent, so that a rerun with the same work directory resumes where
the last one stopped.

A checkpoint holds tensors, numbers and strings only, and is read with torch.load(weights_only=True):
a file holding anything else (which unpickling could turn into running code) is refused unread.
Checkpoints are written atomically, so a torn one means the file was damaged or replaced: resuming
from a checkpoint that cannot be read is a ConfigError (delete it, or use a new work_dir), never a
silent restart that would throw the training done so far away.
"""

import logging
import pickle
from pathlib import Path

import torch

from specdec.errors import ConfigError
from specdec.io import atomic_torch_save

log = logging.getLogger(__name__)


def save_checkpoint(path: Path, weights: dict, optimizer, schedule, step: int, seconds: float) -> None:
    atomic_torch_save({"weights": weights, "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                       "step": step, "seconds": seconds}, path)


def resume(path: Path, model: torch.nn.Module, optimizer, schedule, total_steps: int) -> tuple[int, float]:
    """Load `path` into the model (its saved weights only), optimizer and schedule if it exists:
    (step, seconds spent), or (0, 0.0) for a fresh start."""
    if not path.exists():
        return 0, 0.0
    try:
        state = torch.load(path, weights_only=True)
        model.load_state_dict(state["weights"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        step, seconds = int(state["step"]), float(state["seconds"])
    except pickle.UnpicklingError:
        raise ConfigError(f"refused to resume from {path}: it holds objects other than tensors and numbers, "
                          "which could run code when loaded; delete it, or use a new work_dir") from None
    except (RuntimeError, EOFError, OSError, KeyError, TypeError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else e.__class__.__name__
        raise ConfigError(f"cannot resume from {path} (damaged or not a checkpoint of this trainer: {reason}); "
                          "delete it to train from step 0, or use a new work_dir") from None
    log.info("resumed from %s at step %d of %d", path, step, total_steps)
    return step, seconds
