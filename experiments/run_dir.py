"""A Hydra callback (configs/config.yaml, hydra.callbacks) that makes sure the run directory can
be written before Hydra creates it: a hydra.run.dir under a read-only path, a file or a missing
mount is one line and exit status 2, not Hydra's traceback from mkdir."""

import os
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, read_write


class CheckRunDir(Callback):
    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        with read_write(config.hydra.run):  # resolved once: ${now:...} could name another second for Hydra
            config.hydra.run.dir = check_writable(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        with read_write(config.hydra.sweep):
            config.hydra.sweep.dir = check_writable(config.hydra.sweep.dir, "hydra.sweep.dir")


def check_writable(directory: str, knob: str) -> str:
    """Create `directory` and write a file in it; on failure, print why and exit with status 2."""
    path = Path(directory)
    probe = path / f".write-test-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        print(f"Error: cannot write the run directory {directory} ({e.strerror or e}): choose a writable one with "
              f"{knob}=<directory>", file=sys.stderr)
        sys.exit(2)
    return directory
