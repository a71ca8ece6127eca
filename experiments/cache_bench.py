"""`python -m experiments.cache_bench`: is the prefix cache a big win when prompts share, and
nothing lost when they do not? Runs experiments.run's interleaved loop (baseline without and with
cache=radix) on each workload into <run dir>/<workload>/, then writes cache_bench.json (a row a
workload: TTFT and tokens/s without and with the cache, hit rate against the ideal, cache load and
insert time per request, greedy match) and cache_bench.md."""

import json
import logging
import statistics
from pathlib import Path

import hydra
from omegaconf import DictConfig

from experiments.entry_point import tabulate_and_report
from experiments.provenance import write_run_info
from experiments.run import check_cache_config, run_experiment
from experiments.run_records import load_run
from experiments.table import markdown
from specdec.errors import ConfigError
from specdec.io import atomic_write_text
from specdec.models import resolve_device

log = logging.getLogger("experiments.cache_bench")
FORMATS = {"ttft_ms": ".0f", "ttft_ms_cache": ".0f", "tokens_per_s": ".2f", "tokens_per_s_cache": ".2f",
           "cache_load_ms": ".1f", "cache_insert_ms": ".1f", "match_baseline": ".2f"}
COLUMNS = ["workload", "prompts", "ttft_ms", "ttft_ms_cache", "ttft_ratio", "tokens_per_s", "tokens_per_s_cache",
           "hit_rate", "ideal_hit_rate", "cache_load_ms", "cache_insert_ms", "match_baseline"]


def workload_config(cfg: DictConfig, name: str) -> DictConfig:
    """The run's config with workload `name`'s suite, limit and cache budget."""
    if name not in cfg.suites:
        raise ConfigError(f"unknown workload {name!r} in workloads: use some of {', '.join(cfg.suites)}")
    suite, run = cfg.suites[name], cfg.copy()
    run.dataset.suite, run.dataset.path = suite.suite, None
    run.dataset.limit = suite.limit
    run.cache.max_bytes = cfg.cache.max_bytes if suite.max_bytes is None else suite.max_bytes
    return run


def workload_row(name: str, summary: dict, records: dict) -> dict:
    """One workload's row: the baseline without and with the cache, on the same prompts."""
    plain, cached = summary["baseline"], summary["baseline+radix"]
    with_cache = records["baseline+radix"]
    return {"workload": name, "prompts": plain["n_prompts"],
            "ttft_ms": plain["ttft_ms"], "ttft_ms_cache": cached["ttft_ms"],
            "ttft_ratio": cached["ttft_ms"] / plain["ttft_ms"],
            "tokens_per_s": plain["tokens_per_s"], "tokens_per_s_cache": cached["tokens_per_s"],
            "hit_rate": cached["hit_rate"], "ideal_hit_rate": cached["ideal_hit_rate"],
            "cache_load_ms": statistics.median(r["cache_load_ms"] for r in with_cache),
            "cache_insert_ms": statistics.median(r["cache_insert_ms"] for r in with_cache),
            "match_baseline": cached["match_baseline"]}


def cache_bench(cfg: DictConfig, run_dir: Path) -> str:
    """Run the workloads not done yet into `run_dir` (every workload's name and cache settings
    checked first), then write the table of every workload run there; returns it (Markdown)."""
    runs = {name: workload_config(cfg, name) for name in cfg.workloads}
    for run in runs.values():
        check_cache_config(run.cache)
    for name, run in runs.items():
        log.info("workload %s", name)
        run_experiment(run, run_dir / name)
    rows = []
    for name in cfg.suites:  # every workload run so far into this directory, in the config's order
        if (run_dir / name / "summary.json").exists():
            summary = json.loads((run_dir / name / "summary.json").read_text())
            rows.append(workload_row(name, summary, load_run(run_dir / name)))
    atomic_write_text(run_dir / "cache_bench.json", json.dumps(rows, indent=2))
    table = markdown(rows, COLUMNS, FORMATS)
    atomic_write_text(run_dir / "cache_bench.md", table + "\n")
    write_run_info(run_dir, cfg, resolve_device(cfg.runtime.device))
    return table


@hydra.main(config_path="../configs", config_name="cache_bench", version_base="1.3")
def main(cfg: DictConfig) -> None:
    tabulate_and_report(cache_bench, cfg, "cache_bench.json and cache_bench.md")


if __name__ == "__main__":
    main()
