"""What a work directory was started with, so that a rerun resumes only what the same settings
and code would have made (before, a run with other data settings carried on with the old answers
and checkpoint, and nothing said so until the data hash at export).

Each data directory (the draft's work_dir, EAGLE's and Medusa's work_dir/seed-N, which the two
may share) records what its answers and features depend on in data_fingerprint.json: the
target, the data seed, data.* and the code's git commit. Each trainer records what its
checkpoint depends on beside it (<checkpoint>_fingerprint.json): the target, seed, data.*,
train.* and heads.*, less the knobs a resumed run may change (train.time_budget_min,
train.checkpoint_every), and the commit; tree.* is left out, as Medusa's default tree is picked
afresh by every run. A fingerprint is written at the start while the files it guards do not
exist yet; once they do, a rerun with other settings is a ConfigError naming the keys.
"""

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from specdec.code_version import git_commit
from specdec.errors import ConfigError
from specdec.fingerprint import differences, flat
from specdec.io import atomic_write_text
from specdec.training.answer_store import ANSWERS, PARTS
from specdec.training.features import FEATURES

SECTIONS = ("model", "seed", "data", "train", "heads")  # what a trainer's results depend on
RESUMABLE = ("train.time_budget_min", "train.checkpoint_every")  # a rerun may change these and resume



def settings(cfg: DictConfig, sections, code: str) -> dict:
    """The dotted settings of `sections` in `cfg` (those it has), with the code's version, as JSON has them."""
    tree = OmegaConf.to_container(cfg, resolve=True)
    return json.loads(json.dumps({**flat({name: tree[name] for name in sections if name in tree}), "code": code}))


def check_work_dir(cfg: DictConfig, checkpoint: Path, data_dirs: dict[int, Path], processes: int = 1) -> None:
    """Record, or check against what is recorded, the fingerprints of each data directory in
    `data_dirs` (by data seed) and of the trainer whose checkpoint is `checkpoint`, trained by
    `processes` data-parallel processes (each takes its share of every step's batches)."""
    code = git_commit()
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    for seed, directory in data_dirs.items():
        directory.mkdir(parents=True, exist_ok=True)
        data = settings(cfg, ("model", "data"), code) | {"seed": seed}
        data.pop("data.seeds", None)  # one directory holds one seed's data
        guard(directory / "data_fingerprint.json", data, [directory / ANSWERS, directory / PARTS, directory / FEATURES],
              f"use a new work_dir, or delete {directory} to answer again")
    trained = {k: v for k, v in settings(cfg, SECTIONS, code).items() if k not in RESUMABLE} | {"processes": processes}
    guard(checkpoint.with_name(f"{checkpoint.stem}_fingerprint.json"), trained,
          [checkpoint, checkpoint.with_name(checkpoint.name + ".old")],
          f"use a new work_dir, or delete {checkpoint} to train from step 0")


def guard(path: Path, current: dict, guarded: list[Path], fix: str) -> None:
    """Write `current` to `path` while none of `guarded` exists; else require it to equal what `path` holds."""
    made = [p for p in guarded if p.exists()]
    if not made:
        atomic_write_text(path, json.dumps(current, indent=1))
        return
    if not path.exists():
        raise ConfigError(f"{made[0]} has no record of the settings it was made with ({path.name}; an older "
                          f"version wrote it): {fix}")
    try:
        recorded = json.loads(path.read_text())
    except ValueError:
        raise ConfigError(f"{path} is not JSON: {fix}") from None
    differ = differences(recorded, current)
    if differ:
        raise ConfigError(f"{made[0]} was made with other settings ({'; '.join(differ)}): {fix}")

