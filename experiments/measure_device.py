"""`python -m experiments.measure_device`: time this device afresh for a run's settings.

A run measures what it needs about the machine once and keeps it (the few-row product plans,
the verify-cost curve, a draft's pass: specdec.runtime.measured); a measurement taken while
other jobs loaded the host is timed again by later runs only when it looked implausible. This
times everything the run of the same overrides would use again (e.g. after moving to a quiet
machine, or after a driver or BLAS update), keeps it for later runs, and prints the sizes that
`auto` now picks. Takes the overrides of experiments.run; writes device_costs.json.
"""

import os

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from experiments.entry_point import measure_and_report
from experiments.run import build_runners, strategy_name
from experiments.validate import validate
from specdec.models import load_model, resolve_device, resolve_dtype
from specdec.placement import Placement
from specdec.runtime.measured import FRESH
from specdec.runtime.timing import FIRST_RUN
from specdec.runtime.verify_cost import DeviceCosts


def measure_device(cfg: DictConfig) -> dict:
    options = OmegaConf.to_container(cfg.strategy)
    strategies = {strategy_name(options): options}
    validate(cfg, strategies)
    os.environ[FRESH] = "1"  # every measurement this process needs is timed again
    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)
    device = resolve_device(cfg.runtime.device)
    dtype = resolve_dtype(cfg.runtime.dtype, device)
    target, tokenizer = load_model(cfg.model.name_or_path, device, dtype, Placement.of(cfg.model))
    budget = FIRST_RUN.left
    runners = build_runners(cfg, target, tokenizer, device, dtype, strategies)  # preparing and tuning measure
    baseline = runners["baseline"]
    curve = DeviceCosts(baseline.target_model, cfg.runtime.kv_cache).curve  # as the runners' tuning read it
    return {"auto_sizes": {name: r.strategy.auto_sizes for name, r in runners.items() if r.strategy.auto_sizes},
            "verify_curve": curve, "timing_seconds": round(budget - FIRST_RUN.left, 1)}


def report(result: dict) -> str:
    curve = result["verify_curve"]
    lines = [f"decode step {curve.get('decode_ms')} ms; a pass over k tokens in decode steps: " +
             ", ".join(f"{k}: {c:.2f}" for k, c in curve["relative"].items()),
             f"plausible: {curve['plausible']} (other processes' share of the CPUs: {curve.get('host_load')}); "
             f"timing took {result['timing_seconds']} s"]
    lines += [f"{name}: auto chose {sizes}" for name, sizes in result["auto_sizes"].items()]
    return "\n".join(lines)


@hydra.main(config_path="../configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    measure_and_report(measure_device, cfg, "device_costs.json", report)


if __name__ == "__main__":
    main()
