"""`python -m experiments.batch_sweep`: how speculation fares as more requests decode at once.

In one process it loads the target (and the draft) once, builds every runner once (the
baseline, each entry of `matrix`, and the anchors: experiments.run's build_runners), warms
up each (runner, batch size) once, then for each of `batch_sizes` runs `repeats` rounds of
every runner's generate_batch over the same prompts, round-robin, timing each call. Then it
times batched verify passes for the cost model (experiments.batch_cost_model) and writes
batch.json / batch.md, crossover.json and the plots (experiments.batch_report), the margins
where greedy rows left their batch-1 tokens (differences.json) and run_info.json into the
Hydra run directory. It does not resume: a rerun starts over.
"""

import json
import logging
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from experiments.entry_point import tabulate_and_report
from experiments.divergence import first_differences
from experiments.batch_cost_model import (measure_batch_costs, predict_batch_speedup, prefill_share, step_profile,
                                          verify_timers)
from experiments.batch_report import batch_rows, write_batch_report
from experiments.bench import matrix_strategies
from experiments.cost_model import typical_context
from experiments.provenance import write_run_info
from experiments.run import check_cache_config, experiment_prompts, load_runners, new_prefix_cache
from experiments.validate import validate
from specdec.decoding import GenerationConfig, sync
from specdec.io import atomic_write_text
from specdec.models import resolve_device, resolve_dtype

log = logging.getLogger("experiments.batch_sweep")


def batch_sweep(cfg: DictConfig, run_dir: Path) -> str:
    """The sweep of `cfg` into `run_dir`, and its Markdown table; every setting is checked before a
    model loads or a file is written."""
    strategies = matrix_strategies(cfg.matrix)
    validate(cfg, strategies)
    check_cache_config(cfg.cache)
    batch_sizes = sorted(set(cfg.batch_sizes))
    device = resolve_device(cfg.runtime.device)
    dtype = resolve_dtype(cfg.runtime.dtype, device)
    prompts = experiment_prompts(cfg.dataset)
    generation = GenerationConfig(**OmegaConf.to_container(cfg.generation))
    target, tokenizer, runners = load_runners(cfg, device, dtype, strategies, prompts, generation)
    if batch_sizes[-1] > len(prompts):
        log.warning("batch sizes above %d decode all %d prompts at once: raise dataset.limit to fill them",
                    len(prompts), len(prompts))
    run_dir.mkdir(parents=True, exist_ok=True)
    write_run_info(run_dir, cfg, device)

    requests = {"prompts": [p["input_ids"] for p in prompts], "salts": [p.get("salt") for p in prompts],
                "seeds": [cfg.runtime.seed + i for i in range(len(prompts))]}
    if cfg.runtime.warmup:
        warm_up(runners, requests, generation, batch_sizes)
    calls = timed_calls(runners, requests, generation, batch_sizes, cfg, device)
    if generation.sampling.greedy:
        differences = first_differences(calls, target, requests["prompts"])
        atomic_write_text(run_dir / "differences.json", json.dumps(differences, indent=2))
    predictions, costs = cost_model(runners, strategies, calls, batch_sizes, cfg.runtime.kv_cache)
    return write_batch_report(batch_rows(calls, predictions, generation.sampling.greedy), costs, run_dir)


def warm_up(runners: dict, requests: dict, generation: GenerationConfig, batch_sizes: list[int]) -> None:
    """Every runner once at every batch size, on the first prompts, untimed (16 new tokens at most)."""
    warmup = GenerationConfig(**{**vars(generation), "max_new_tokens": min(16, generation.max_new_tokens)})
    for batch in batch_sizes:
        for runner in runners.values():
            runner.generate_batch(**{k: v[:batch] for k, v in requests.items()}, config=warmup, batch_size=batch)


def timed_calls(runners: dict, requests: dict, generation: GenerationConfig, batch_sizes: list[int],
                cfg: DictConfig, device: torch.device) -> list[dict]:
    """For each batch size, `cfg.repeats` rounds of every runner once over all prompts (round-robin,
    so that drift hits every runner alike): {strategy, batch_size, repeat, wall_s, records} per call."""
    calls = []
    rounds = [(batch, repeat) for batch in batch_sizes for repeat in range(cfg.repeats)]
    for batch, repeat in tqdm(rounds, desc="rounds", unit="round"):
        for label, runner in runners.items():
            if getattr(runner, "prefix_cache", None) is not None:  # every call starts from a cold prefix cache
                runner.prefix_cache = new_prefix_cache(cfg.cache)
            sync(device)
            start = time.perf_counter()
            results = runner.generate_batch(**requests, config=generation, batch_size=batch)
            sync(device)
            wall = time.perf_counter() - start
            records = [{**r.metrics.to_dict(), "token_ids": r.token_ids} for r in results]
            calls.append({"strategy": label, "batch_size": batch, "repeat": repeat, "wall_s": wall, "records": records})
    return calls


def cost_model(runners: dict, strategies: dict[str, dict], calls: list[dict], batch_sizes: list[int],
               kv_cache: str) -> tuple[dict[tuple[str, int], float], dict]:
    """((strategy, batch size) -> predicted speedup, the measured costs): each strategy's step profile
    and the baseline's prefill share from the first round at each batch size, verify passes of our
    target timed at every batch size."""
    first = {(c["strategy"], c["batch_size"]): c for c in calls if c["repeat"] == 0}
    profiles = {label: {batch: step_profile(first[label, batch]["records"]) for batch in batch_sizes}
                for label in strategies if label != "baseline"}
    prefill = {batch: prefill_share(first["baseline", batch]["records"], first["baseline", batch]["wall_s"])
               for batch in batch_sizes}
    widths = sorted({1, *(w for by_batch in profiles.values() for p in by_batch.values() for w in p["widths"])})
    context = typical_context(first["baseline", batch_sizes[0]]["records"])
    model = runners["baseline"].target_model  # our prepared target, as the runners run it
    log.info("timing verify passes of widths %s at batch sizes %s after %d tokens", widths, batch_sizes, context)
    verify_ms = measure_batch_costs(lambda batch: verify_timers(model, kv_cache, batch, widths, context), batch_sizes)
    predictions = {("baseline", batch): 1.0 for batch in batch_sizes}
    for label, by_batch in profiles.items():
        for batch, profile in by_batch.items():
            predictions[label, batch] = predict_batch_speedup(profile, verify_ms, batch, prefill[batch])
    return predictions, {"context_tokens": context, "verify_ms": verify_ms, "prefill_share": prefill,
                         "step_profiles": profiles}


@hydra.main(config_path="../configs", config_name="batch_sweep", version_base="1.3")
def main(cfg: DictConfig) -> None:
    tabulate_and_report(batch_sweep, cfg, "batch.json, batch.md, crossover.json and plots")


if __name__ == "__main__":
    main()
