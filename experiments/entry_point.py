"""The body of a Hydra main that measures and reports (experiments.profile_step,
experiments.medusa_trees): one JSON file in the run directory, a printed report, and a
ConfigError as one line and exit status 2 instead of a traceback."""

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from specdec.errors import ConfigError
from specdec.io import atomic_write_text

log = logging.getLogger(__name__)


def measure_and_report(measure: Callable[[DictConfig], dict], cfg: DictConfig, filename: str,
                       report: Callable[[dict], str]) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        result = measure(cfg)
    except ConfigError as e:
        log.error("%s", e)
        sys.exit(2)
    atomic_write_text(run_dir / filename, json.dumps(result, indent=2))
    print(report(result))
    print(f"\n{filename} in {run_dir}")
