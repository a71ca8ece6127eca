"""Where specdec keeps files between runs, and which CPU it runs on (measured layouts are per CPU)."""

import os
import platform
from pathlib import Path


def cache_root() -> Path:
    """~/.cache/specdec, or $SPECDEC_CACHE: converted models, measured linear layouts."""
    return Path(os.environ.get("SPECDEC_CACHE", Path.home() / ".cache" / "specdec"))


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
