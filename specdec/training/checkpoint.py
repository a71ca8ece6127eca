"""Checkpoints of the trainers (draft, EAGLE, Medusa recipes) through accelerate's `save_state` /
`load_state`: the trained weights, optimizer, schedule and random states in a folder, with the
step and seconds spent in progress.json, so that a rerun with the same work directory resumes
where the last one stopped.

Only the trained weights are saved (not the frozen target's tensors a draft borrows), keyed as
the unwrapped module names them, so a run on N processes resumes on M. Every file is read with
torch.load(weights_only=True) or safetensors: one holding other objects (which unpickling could
turn into running code) is refused unread. A folder is written whole under another name, then
swapped in (the previous one kept as <name>.old until the swap is done): a kill at any moment
leaves a whole checkpoint. One that cannot be read is a ConfigError (delete it, or use a new
work_dir), never a silent restart that would throw the training done so far away.
"""

import json
import logging
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

from accelerate import Accelerator
from safetensors import SafetensorError
from safetensors.torch import load_file

from specdec.errors import ConfigError
from specdec.io import atomic_write_text

log = logging.getLogger(__name__)
PROGRESS = "progress.json"  # written last: a folder holding it is whole
WEIGHTS = "model.safetensors"  # accelerate's name for the first model's weights


def keep_trained_weights(accelerator: Accelerator, saved: Callable[[], dict]) -> None:
    """Make save_state write `saved()` (the trained weights) as the model's weights, and load_state
    read them back into those same tensors, every key required."""

    def on_save(models, weights, output_dir):
        weights[:] = [{k: v.detach().contiguous() for k, v in saved().items()}]

    def on_load(models, input_dir):
        stored, wanted = load_file(Path(input_dir) / WEIGHTS), saved()
        if set(stored) != set(wanted):
            raise ValueError(f"its weights are {sorted(stored)[:3]}..., this trainer's {sorted(wanted)[:3]}...")
        for key, tensor in wanted.items():
            tensor.data.copy_(stored[key])
        models.clear()  # loaded here: accelerate skips them

    accelerator.register_save_state_pre_hook(on_save)
    accelerator.register_load_state_pre_hook(on_load)


def save_checkpoint(accelerator: Accelerator, folder: Path, step: int, seconds: float, data_sha256: str) -> None:
    """accelerator.save_state into <folder>.partial, then swapped in as `folder` (every process calls
    it), with the step, the seconds spent and the hash of the data trained on."""
    partial, old = folder.with_name(folder.name + ".partial"), folder.with_name(folder.name + ".old")
    if accelerator.is_main_process and partial.exists():
        shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_text(partial / PROGRESS, json.dumps({"step": step, "seconds": seconds,
                                                                 "data_sha256": data_sha256}))
        if folder.exists():
            if old.exists():
                shutil.rmtree(old)
            folder.rename(old)
        partial.rename(folder)
        if old.exists():
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def resume(accelerator: Accelerator, folder: Path, total_steps: int, data_sha256: str) -> tuple[int, float]:
    """Load the checkpoint in `folder` (or <folder>.old, where a swap was cut short) if there is one:
    (step, seconds spent), or (0, 0.0) for a fresh start. One trained on other data (another
    data hash) is refused."""
    found = next((f for f in (folder, folder.with_name(folder.name + ".old")) if f.exists()), None)
    if found is None:
        return 0, 0.0
    try:
        progress = json.loads((found / PROGRESS).read_text())
        step, seconds, trained_on = int(progress["step"]), float(progress["seconds"]), str(progress["data_sha256"])
        if trained_on == data_sha256:
            accelerator.load_state(str(found))
    except pickle.UnpicklingError:
        raise ConfigError(f"refused to resume from {found}: it holds objects other than tensors and numbers, "
                          "which could run code when loaded; delete it, or use a new work_dir") from None
    except (RuntimeError, EOFError, OSError, KeyError, TypeError, ValueError, SafetensorError) as e:
        reason = str(e).splitlines()[0] if str(e) else e.__class__.__name__
        raise ConfigError(f"cannot resume from {found} (damaged or not a checkpoint of this trainer: {reason}); "
                          "delete it to train from step 0, or use a new work_dir") from None
    if trained_on != data_sha256:
        raise ConfigError(f"{found} was trained on other data (data hash {trained_on[:12]}... -> {data_sha256[:12]}...): "
                          f"use a new work_dir, or delete {found} to train from step 0")
    log.info("resumed from %s at step %d of %d", found, step, total_steps)
    return step, seconds
