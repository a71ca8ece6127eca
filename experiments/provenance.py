"""What a result needs to be reproduced: code version, library versions, machine, date."""

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

import torch

from specdec.runtime.machine import cpu_name


def git_commit() -> str:
    repo = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


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
