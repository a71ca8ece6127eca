"""What a result needs to be reproduced: code version, library versions, machine, date."""

import json
import os
import platform
import sys
from datetime import datetime, timezone
from importlib.metadata import version

import torch
from omegaconf import DictConfig, OmegaConf

from experiments.settings import invocation
from specdec.code_version import git_commit
from specdec.io import atomic_write_text
from specdec.runtime.machine import cpu_name


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def environment(device: torch.device) -> dict:
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "git_commit": git_commit(),
        "device": str(device),
        "device_name": device_name(device),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": {name: version(name) for name in ("torch", "transformers", "accelerate", "datasets", "hydra-core")},
    }


def write_run_info(run_dir, cfg: DictConfig, device: torch.device) -> None:
    """run_info.json: the resolved config, the command that reruns the run, and environment()."""
    atomic_write_text(run_dir / "run_info.json", json.dumps(
        {"config": OmegaConf.to_container(cfg, resolve=True), **invocation(), **environment(device)}, indent=2))
