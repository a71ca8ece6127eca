"""`python -m experiments.device_check`: the one command to run whenever a GPU is at hand.

In one process, after a warm-up and interleaved round by round, it measures:
- our decode step and k-token verify passes after `context_tokens` cached tokens: eager (the
  run's runtime.kv_cache), compiled (with `compile`: runtime.compile over the static cache) and,
  on CUDA, captured as CUDA graphs (runtime.cuda_graphs; null elsewhere);
- `transformers`' generate step (a long generate minus a one-token one, per token), eager and,
  with `hf_compile`, with its static cache and torch.compile;
- end to end, for each of `dtypes`: the baseline and every `matrix` strategy on the first
  dataset.limit prompts, through experiments.run's interleaved loop (a run directory per dtype):
  rows {strategy, dtype, tokens_per_s, speedup, mean_accepted, match_baseline};
- each greedy output that left its reference (a strategy: its dtype's baseline; a baseline not
  in float32: the float32 baseline, the lossless reference), with the target's top-two logit
  margin where it left, in that dtype's rounding steps: a near-tie explains it, anything else is a bug.
It writes device_check.json (after each phase, with `complete` false until the end, and each
phase's seconds: a device lent for minutes keeps what ran) and prints a table. `quick=true` runs
the same code on the tiny random model with few prompts and tokens: under a minute on a CPU,
and CI runs it.
"""

import json
import time
from pathlib import Path

import hydra
import torch
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from experiments.bench import matrix_strategies
from experiments.divergence import run_mismatches
from experiments.entry_point import measure_and_report
from experiments.host_overhead import hf_generator, per_token_timer
from experiments.provenance import environment
from experiments.run import experiment_prompts, run_experiment
from experiments.summary import strategy_entries
from experiments.table import markdown
from experiments.validate import POSITIVE_INT, check_value
from specdec.chat import encode
from specdec.errors import ConfigError
from specdec.io import atomic_write_text
from specdec.models import load_model, resolve_device, resolve_dtype
from specdec.runtime.cached_model import CachedModel
from specdec.runtime.prepare import Runtime, prepare
from specdec.runtime.static_cache import BUCKETS
from specdec.runtime.timing import median_ms, step_timer

# what quick=true sets, over the command line's own overrides
QUICK = ["model=tiny-random", "dataset.limit=3", "generation.max_new_tokens=12", "context_tokens=32",
         "verify_tokens=[1,2,4,8]", "repeats=3", "warmup=1", "runtime.warmup=1",
         "matrix=[{name:draft},{name:prompt_lookup}]"]
E2E_COLUMNS = ["strategy", "dtype", "tokens_per_s", "speedup", "mean_accepted", "match_baseline"]


def step_costs(cfg: DictConfig, device: torch.device, dtype: torch.dtype) -> dict:
    """decode_ms / verify_ms of our runtime's variants and hf_decode_ms of generate's, medians of
    `repeats` interleaved rounds after `warmup` untimed ones."""
    stock, _ = load_model(cfg.model.name_or_path, device, dtype)
    context = torch.randint(0, stock.config.vocab_size, (cfg.context_tokens,), device=device)
    layouts = (cfg.runtime.layers, cfg.runtime.linear)
    variants = {"eager": Runtime(*layouts), **({"compiled": Runtime(*layouts, compile=True)} if cfg.compile else {}),
                **({"cuda_graphs": Runtime(*layouts, cuda_graphs=True)} if device.type == "cuda" else {})}
    timers = {}
    for name, runtime in variants.items():
        kv_cache = "static" if runtime.static_steps else cfg.runtime.kv_cache
        ours = CachedModel(prepare(stock, runtime), kv_cache, max_length=cfg.context_tokens + max(BUCKETS[-1], *cfg.verify_tokens))
        ours.reset()
        ours.forward(context)
        timers.update({(name, k): step_timer(ours, k, cfg.context_tokens) for k in cfg.verify_tokens})
    prompt = context[None]
    timers["hf", "eager"] = per_token_timer(hf_generator(stock, prompt), device, 1, cfg.hf_steps + 1)
    if cfg.hf_compile:
        timers["hf", "static_compiled"] = per_token_timer(hf_generator(stock, prompt, cache_implementation="static"),
                                                          device, 1, cfg.hf_steps + 1)
    ms = {key: round(value, 3) for key, value in median_ms(timers, cfg.repeats, cfg.warmup).items()}
    missing = {"cuda_graphs": None} if "cuda_graphs" not in variants else {}
    return {
        "decode_ms": {name: ms[name, 1] for name in variants} | missing,
        "verify_ms": {name: {str(k): ms[name, k] for k in cfg.verify_tokens} for name in variants} | missing,
        "hf_decode_ms": {"generate_eager": ms["hf", "eager"], "static_compiled": ms.get(("hf", "static_compiled"))},
    }


def end_to_end(cfg: DictConfig, dtype_name: str, run_dir: Path) -> list[dict]:
    """The baseline and the matrix in `dtype_name`, as experiments.run runs them, in run_dir."""
    run_cfg = cfg.copy()
    with open_dict(run_cfg):
        run_cfg.runtime.dtype = dtype_name
    summary = run_experiment(run_cfg, run_dir, matrix_strategies(cfg.matrix))
    return [{"strategy": name, "dtype": dtype_name, **{k: s[k] for k in E2E_COLUMNS[2:]}}
            for name, s in strategy_entries(summary).items()]


def mismatches(cfg: DictConfig, run_dir: Path, device: torch.device) -> list[dict]:
    """Every greedy output of the end-to-end runs that left its reference, with its margin."""
    found = []
    for name in cfg.dtypes:
        target, tokenizer = load_model(cfg.model.name_or_path, device, resolve_dtype(name, device))
        prompts = {p["id"]: encode(tokenizer, p["messages"], cfg.dataset.chat_template)
                   for p in experiment_prompts(cfg.dataset)}
        reference = run_dir / "float32" if name != "float32" and "float32" in cfg.dtypes else None
        found += [{"dtype": name, **m} for m in run_mismatches(run_dir / name, target, prompts, reference)]
    return found


def check(cfg: DictConfig) -> None:
    for knob in ("context_tokens", "repeats", "hf_steps"):
        check_value(knob, cfg[knob], POSITIVE_INT)
    if not list(cfg.verify_tokens) or any(not isinstance(k, int) or k < 1 for k in cfg.verify_tokens):
        raise ConfigError(f"verify_tokens must be a list of integers >= 1 (got {list(cfg.verify_tokens)}): "
                          "e.g. verify_tokens=[1,2,4,8]")
    if 1 not in cfg.verify_tokens:
        raise ConfigError("verify_tokens must include 1 (the decode step): e.g. verify_tokens=[1,2,4,8]")
    for name in cfg.dtypes:
        if name not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"unknown dtype {name!r} in dtypes: use float32, bfloat16 or float16")


def device_check(cfg: DictConfig) -> dict:
    if cfg.quick:
        cfg = compose(config_name="device_check", overrides=[*HydraConfig.get().overrides.task, *QUICK])
    check(cfg)
    matrix_strategies(cfg.matrix)  # a bad matrix fails before any model loads
    device = resolve_device(cfg.runtime.device)
    dtype = resolve_dtype(cfg.runtime.dtype, device)
    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    result = {"device": environment(device).get("device_name", str(device)), "torch": torch.__version__,
              "dtype": str(dtype).removeprefix("torch."), "model": cfg.model.name_or_path, "quick": cfg.quick,
              "context_tokens": cfg.context_tokens, "complete": False, "seconds": {}, "e2e": [],
              "environment": environment(device)}
    phases = {"step_costs": lambda: result.update(step_costs(cfg, device, dtype)),
              **{f"e2e_{name}": lambda name=name: result["e2e"].extend(end_to_end(cfg, name, run_dir / name))
                 for name in cfg.dtypes},
              "mismatches": lambda: result.update(mismatches=mismatches(cfg, run_dir, device))}
    for phase, measure in phases.items():  # each phase saved as it ends: a device lent for minutes keeps what ran
        began = time.perf_counter()
        measure()
        result["seconds"][phase] = round(time.perf_counter() - began, 1)
        atomic_write_text(run_dir / "device_check.json", json.dumps(result, indent=2))
    return {**result, "complete": True}


def report(result: dict) -> str:
    decode = ", ".join(f"{name} {ms} ms" for name, ms in result["decode_ms"].items() if ms is not None)
    hf = ", ".join(f"{name} {ms} ms" for name, ms in result["hf_decode_ms"].items() if ms is not None)
    verify = "; ".join(f"{name}: " + ", ".join(f"k={k} {ms} ms" for k, ms in by_k.items())
                       for name, by_k in result["verify_ms"].items() if by_k is not None)
    return (f"{result['device']} ({result['dtype']}, torch {result['torch']}, {result['model']})\n"
            f"decode step: ours {decode}; transformers generate {hf}\nverify passes: {verify}\n\n"
            + markdown(result["e2e"], E2E_COLUMNS, {"tokens_per_s": ".2f"}) + "\n" + mismatch_report(result["mismatches"]))


def mismatch_report(found: list[dict]) -> str:
    if not found:
        return "every greedy output equals its reference"
    lines = []
    for dtype in dict.fromkeys(m["dtype"] for m in found):
        ours = sorted((m for m in found if m["dtype"] == dtype), key=lambda m: m["margin"])
        middle, top = ours[len(ours) // 2], ours[-1]
        lines.append(f"{dtype}: {len(ours)} outputs left their reference; top-two logit margin where they left: median "
                     f"{middle['margin']:.3g} ({middle['rounding_steps']} rounding steps), largest {top['margin']:.3g} "
                     f"({top['rounding_steps']} steps, {top['strategy']} on {top['prompt_id']})")
    return "\n".join(lines)


@hydra.main(config_path="../configs", config_name="device_check", version_base="1.3")
def main(cfg: DictConfig) -> None:
    measure_and_report(device_check, cfg, "device_check.json", report)


if __name__ == "__main__":
    main()
