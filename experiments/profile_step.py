"""`python -m experiments.profile_step`: where the time of one decode step and of one verify
pass goes, ours against `transformers`' stock model with its DynamicCache.

In one process, after a warm-up and interleaved round by round, it times a 1-token decode
step and k-token verify passes over `context_tokens` cached tokens (each followed by a
rollback), for our runtime (runtime.kv_cache, runtime.linear, runtime.compile) and for the
stock model, plus every linear layer of the model run once for one row: the floor that
matrix products put under a step. A torch profile of one of our decode steps gives the
breakdown; with compiled steps, `compiles_after_warmup` counts the graphs compiled while timing
(none is the goal). Writes step_profile.json into the Hydra run directory.
"""

import statistics
import time

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from experiments.entry_point import measure_and_report
from experiments.host_overhead import step_costs
from experiments.provenance import environment
from specdec.runtime.cached_model import CachedModel
from specdec.errors import ConfigError
from specdec.models import load_model, resolve_device, resolve_dtype
from specdec.runtime.prepare import LINEAR_LAYOUTS, Runtime, check_static, prepare
from specdec.runtime.static_cache import BUCKETS
from specdec.runtime.static_step import compile_count
from specdec.runtime.timing import step_timer, sync


# torch op name -> part of the step, for the breakdown (by op name, so approximate)
PARTS = {
    "matrix products": ("aten::mm", "aten::addmm", "aten::linear", "aten::matmul", "mkldnn::_linear_pointwise"),
    "cache": ("aten::cat", "aten::copy_", "aten::index_copy_", "aten::slice_scatter", "aten::index_select"),
    "attention": ("aten::_scaled_dot_product", "aten::bmm", "aten::baddbmm", "aten::_softmax", "aten::where"),
}


def linear_floor_timer(model: torch.nn.Module, rows: int):
    """A function timing every linear layer of `model` (as laid out by specdec.runtime.prepare) once over `rows` rows."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    inputs = [torch.randn(rows, m.in_features, device=device, dtype=dtype) for m in linears]

    @torch.inference_mode()
    def run() -> float:
        sync(device)
        start = time.perf_counter()
        for linear, x in zip(linears, inputs):
            linear(x)
        sync(device)
        return time.perf_counter() - start

    return run


def breakdown(cached: CachedModel, context: int, repeats: int = 10) -> dict:
    """Milliseconds per decode step spent in each of PARTS, by the torch profiler."""
    timer = step_timer(cached, 1, context)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            timer()
    parts = dict.fromkeys([*PARTS, "other"], 0.0)
    for event in prof.key_averages():
        part = next((p for p, prefixes in PARTS.items() if event.key.startswith(prefixes)), "other")
        parts[part] += event.self_cpu_time_total / 1000 / repeats
    return {part: round(ms, 2) for part, ms in parts.items()}


def summary(samples: list[float]) -> dict:
    ms = sorted(s * 1000 for s in samples)
    q = statistics.quantiles(ms, n=4) if len(ms) > 1 else [ms[0]] * 3
    return {"median": round(q[1], 3), "p25": round(q[0], 3), "p75": round(q[2], 3)}


def profile_step(cfg: DictConfig) -> dict:
    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)
    ks = list(cfg.verify_tokens)
    if cfg.context_tokens < 1 or cfg.repeats < 2 or not ks or min(ks) < 1 or not 0 <= cfg.host_step_repeats != 1:
        raise ConfigError("context_tokens >= 1, repeats >= 2, host_step_repeats 0 or >= 2 and verify_tokens a "
                          "non-empty list of integers >= 1")
    device = resolve_device(cfg.runtime.device)
    check_static(Runtime.of(cfg.runtime), cfg.runtime.kv_cache, device)
    torch.manual_seed(cfg.runtime.seed)
    stock, _ = load_model(cfg.model.name_or_path, device, resolve_dtype(cfg.runtime.dtype, device))
    context = torch.randint(0, stock.config.vocab_size, (cfg.context_tokens,), device=device)
    room = cfg.runtime.max_length or cfg.context_tokens + BUCKETS[-1]  # a static cache's positions per row
    ours = CachedModel(prepare(stock, Runtime.of(cfg.runtime)), cfg.runtime.kv_cache, max_length=room)
    hf = CachedModel(stock, "dynamic")
    for cached in (ours, hf):
        cached.reset()
        cached.forward(context)

    timers = {("ours", k): step_timer(ours, k, cfg.context_tokens) for k in [1, *ks]}
    timers.update({("hf", k): step_timer(hf, k, cfg.context_tokens) for k in [1, *ks]})
    # the floor of the issue: the stock model's linear layers, in each layout; and our model's own (fused) ones
    timers.update({("floor", layout): linear_floor_timer(prepare(stock, Runtime(linear=layout, layers="stock")), 1)
                   for layout in LINEAR_LAYOUTS})
    timers["floor", "ours"] = linear_floor_timer(ours.model, 1)
    for timer in timers.values():
        for _ in range(cfg.warmup):
            timer()
    samples = {key: [] for key in timers}
    compiled_before = compile_count()
    for _ in tqdm(range(cfg.repeats), desc="rounds", unit="round"):
        for key, timer in timers.items():  # interleaved: drift hits every measurement alike
            samples[key].append(timer())
    stats = {key: summary(values) for key, values in samples.items()}
    compiles = compile_count() - compiled_before
    floors = {layout: stats["floor", layout]["median"] for layout in LINEAR_LAYOUTS}
    return {
        "decode_ms": stats["ours", 1]["median"],
        "verify_ms": {str(k): stats["ours", k]["median"] for k in ks},
        "hf_decode_ms": stats["hf", 1]["median"],
        "hf_verify_ms": {str(k): stats["hf", k]["median"] for k in ks},
        "linear_floor_ms": min(floors.values()),
        "linear_floor_ms_by_layout": floors,
        "linear_floor_ms_ours": stats["floor", "ours"]["median"],  # our model's linears (q/k/v, gate/up fused)
        "spread_ms": {f"{who}_{k}": s for (who, k), s in stats.items()},
        "compiles_after_warmup": compiles,
        "breakdown_ms": {"ours": breakdown(ours, cfg.context_tokens), "hf": breakdown(hf, cfg.context_tokens)},
        "host_step": step_costs(stock, ours.model, device, cfg.host_step_repeats, kv_cache=cfg.runtime.kv_cache,
                                max_length=room) if cfg.host_step_repeats else None,
        "context_tokens": cfg.context_tokens,
        "repeats": cfg.repeats,
        "runtime": OmegaConf.to_container(cfg.runtime),
        "environment": environment(resolve_device(cfg.runtime.device)),
    }


def report(profile: dict) -> str:
    d, floor = profile["decode_ms"], profile["linear_floor_ms"]
    lines = [
        f"decode step: ours {d:.1f} ms, transformers {profile['hf_decode_ms']:.1f} ms "
        f"(x{profile['hf_decode_ms'] / d:.2f}); linear floor {floor:.1f} ms (decode / floor = {d / floor:.2f}; "
        f"our model's own linears {profile['linear_floor_ms_ours']:.1f} ms); "
        f"{profile['compiles_after_warmup']} compilations after the warm-up",
        "verify pass (k tokens): " + ", ".join(
            f"k={k}: ours {ms:.1f} ms ({ms / d:.2f}x decode), transformers {profile['hf_verify_ms'][k]:.1f} ms"
            for k, ms in profile["verify_ms"].items()),
    ]
    host = profile["host_step"]
    if host:
        lines.append(f"whole decode-loop step: ours {host['ours']['step_ms']:.3f} ms and {host['ours']['ops']:.0f} "
                     f"torch ops, generate {host['generate']['step_ms']:.3f} ms and {host['generate']['ops']:.0f} ops "
                     f"(ours / generate: time {host['ratio']['step_ms']:.2f}, ops {host['ratio']['ops']:.2f})")
    for who, parts in profile["breakdown_ms"].items():
        lines.append(f"breakdown of a decode step, {who} (ms): " + ", ".join(f"{p} {ms}" for p, ms in parts.items()))
    return "\n".join(lines)


@hydra.main(config_path="../configs", config_name="profile_step", version_base="1.3")
def main(cfg: DictConfig) -> None:
    measure_and_report(profile_step, cfg, "step_profile.json", report)


if __name__ == "__main__":
    main()
