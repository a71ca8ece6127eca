"""What a result needs to be reproduced: code version, library versions, machine."""

import os
import platform
import sys
from importlib.metadata import version

import torch

from specdec.code_version import git_commit
from specdec.runtime.machine import cpu_name


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def environment(device: torch.device) -> dict:
    return {
        "git_commit": git_commit(),
        "device": str(device),
        "device_name": device_name(device),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": {name: version(name) for name in ("torch", "transformers", "accelerate", "datasets", "hydra-core")},
    }
