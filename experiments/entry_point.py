"""The bodies of the Hydra mains: a ConfigError becomes one line and exit status 2 instead of a
traceback. Measuring mains (experiments.profile_step, experiments.device_check, ...) write one
JSON file in the run directory, the report they print (report.txt) and run_info.json, so that the
directory can be committed under results/ as it is; training mains (experiments.train_*) print the
trained record."""

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
import torch
from omegaconf import DictConfig

from experiments.provenance import write_run_info
from specdec.errors import ConfigError
from specdec.io import atomic_write_text
from specdec.models import resolve_device

log = logging.getLogger(__name__)
REPORT = "report.txt"  # a measuring main's printed report, beside its JSON


def checked(work: Callable[[DictConfig], dict], cfg: DictConfig) -> dict:
    """work(cfg), or on a ConfigError its message and exit status 2."""
    try:
        return work(cfg)
    except ConfigError as e:
        log.error("%s", e)
        sys.exit(2)


def measure_and_report(measure: Callable[[DictConfig], dict], cfg: DictConfig, filename: str,
                       report: Callable[[dict], str]) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    result = checked(measure, cfg)
    atomic_write_text(run_dir / filename, json.dumps(result, indent=2))
    text = report(result)
    atomic_write_text(run_dir / REPORT, text + "\n")
    device = resolve_device(cfg.runtime.device) if "runtime" in cfg else torch.device("cpu")
    write_run_info(run_dir, cfg, device)
    print(text)
    print(f"\n{filename} in {run_dir}")


def tabulate_and_report(tabulate: Callable[[DictConfig, Path], str], cfg: DictConfig, written: str) -> None:
    """For mains that write their own files into the run directory: print the table tabulate(cfg,
    run_dir) returns, and which files (`written`) went where."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    print(checked(lambda settings: tabulate(settings, run_dir), cfg))
    print(f"\n{written} in {run_dir}")


def train_and_report(train: Callable[[DictConfig], dict], cfg: DictConfig, what: str, hidden=("config",)) -> None:
    """Run a trainer; print its record (less `hidden` keys) and where `what` went."""
    meta = checked(train, cfg)
    print(json.dumps({k: v for k, v in meta.items() if k not in hidden}, indent=2))
    print(f"{what} saved in {cfg.out_dir}; run dir {HydraConfig.get().runtime.output_dir}")
