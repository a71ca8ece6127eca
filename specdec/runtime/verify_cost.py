"""This device's verify-cost curve: what a target pass over k new tokens costs, in decode steps.

Which draft length or tree size pays depends on it: on a 2-core CPU a pass over 16 tokens costs
about 1.35 decode steps, on a GPU a pass over 64 about one. So `auto` sizes (specdec.auto_size)
read it from here: passes over WIDTHS tokens (others interpolated) after CONTEXT cached tokens,
through the prepared runtime the run uses, timed (specdec.runtime.timing) once per device,
torch, threads, model and layout, and kept on disk (specdec.runtime.measured) like the few-row
product plans. A draft's pass (relative to the target's decode step) is kept the same way.
"""

import hashlib
import logging
from functools import cached_property
from pathlib import Path

import torch

from specdec.placement import execution_device
from specdec.runtime.cached_model import CachedModel
from specdec.runtime.machine import cpu_name
from specdec.runtime.measured import kept
from specdec.runtime.timing import FIRST_RUN, implausible, interleaved, step_timer

log = logging.getLogger(__name__)

CURVE_FILE = "verify_costs.json"  # in specdec's cache directory
CURVE_VERSION = 1
WIDTHS = (1, 2, 3, 4, 5, 6, 8, 12, 16, 24, 32, 48, 64)  # tokens of the passes timed; others interpolated
CONTEXT = 256  # cached tokens before each pass: a typical decode step of the shipped suites
CURVE_SECONDS, DRAFT_SECONDS = 20.0, 5.0  # at most, of the process's first-run timing budget
# Until a quiet moment to time them (specdec.runtime.measured), the safe guesses, which pick small sizes: a
# 2-core CPU's curve (4 tokens cost a decode step, each further one 4% more) and a draft pass of 0.15 steps
DEFAULT_CURVE = {w: round(1 + 0.04 * max(0, w - 4), 4) for w in WIDTHS}
DEFAULT_DRAFT_PASS = 0.15


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def model_key(model: torch.nn.Module) -> str:
    """What a pass's time depends on besides the device: the model (name, size, dtype) and how the
    runtime laid it out (its module classes and whether its forward is compiled)."""
    config = model.config
    parameters = sum(p.numel() for p in model.parameters())
    classes = ",".join(sorted({type(m).__name__ for m in model.modules()}))
    layout = hashlib.sha256(f"{classes} {type(model.forward).__name__}".encode()).hexdigest()[:10]
    name = Path(getattr(config, "_name_or_path", "") or config.model_type).name  # not where it is cached
    return (f"{name} {parameters} "
            f"{next(model.parameters()).dtype} layout {layout}")


def setting_key(device: torch.device, kv_cache: str) -> str:
    return (f"v{CURVE_VERSION} | {device_name(device)} | torch {torch.__version__} | "
            f"{torch.get_num_threads()} threads | {kv_cache}")


def timed_passes(models: dict, widths: dict, seconds: float) -> dict:
    """(name, width) -> Timing of a pass of models[name] (a CachedModel) over `width` tokens after
    CONTEXT cached ones, for each width in widths[name]; timed again once if implausible."""
    timers = {}
    for name, cached in models.items():
        cached.reset()
        cached.forward(torch.randint(0, cached.model.config.vocab_size, (CONTEXT,), device=cached.device))
        timers.update({(name, w): step_timer(cached, w, CONTEXT) for w in widths[name]})
    timed = interleaved(timers, FIRST_RUN.allow(seconds), min_rounds=5)
    if doubtful(timed) and FIRST_RUN.left > 0:
        log.info("timings implausible (busy host?): timing them once more")
        timed = interleaved(timers, FIRST_RUN.allow(seconds), min_rounds=5)
    return timed


def doubtful(timed: dict) -> list:
    """The keys of one model's widths whose timing is implausible (specdec.runtime.timing)."""
    return [w for name in {n for n, _ in timed} for w in implausible({w: t for (n, w), t in timed.items() if n == name})]


class DeviceCosts:
    """A target's pass costs on this device in its decode steps, measured when first asked and kept."""

    def __init__(self, target: torch.nn.Module, kv_cache: str = "preallocated"):
        self.target, self.kv_cache = target, kv_cache

    @cached_property
    def key(self) -> str:
        return f"{setting_key(execution_device(self.target), self.kv_cache)} | {model_key(self.target)}"

    @cached_property
    def curve(self) -> dict:
        """{"relative": {k: a pass over k tokens / a decode step}, "decode_ms", "spread", "plausible"}."""
        return kept(CURVE_FILE, self.key, self._measure_curve, fallback={"relative": DEFAULT_CURVE})

    def _measure_curve(self) -> dict:
        timed = timed_passes({"target": CachedModel(self.target, self.kv_cache)}, {"target": WIDTHS}, CURVE_SECONDS)
        decode = timed["target", 1].best
        return {"relative": {w: round(timed["target", w].best / decode, 4) for w in WIDTHS},
                "decode_ms": round(decode * 1000, 3), "spread": {w: round(timed["target", w].spread, 3) for w in WIDTHS},
                "plausible": not doubtful(timed), "host_load": round(timed["target", 1].load, 3),
                "context_tokens": CONTEXT}

    def verify(self, tokens: int) -> float:
        """A pass over `tokens` tokens in decode steps: the curve, linear between its widths (and past its end)."""
        points = sorted((int(w), c) for w, c in self.curve["relative"].items())
        above = next((i for i, (w, _) in enumerate(points) if w > tokens), len(points) - 1)
        (w0, c0), (w1, c1) = points[max(above - 1, 0)], points[max(above, 1)]
        return c0 + (c1 - c0) * (tokens - w0) / (w1 - w0)

    def draft_pass(self, draft: torch.nn.Module, rows: int = 1) -> float:
        """A pass of `draft` (a causal LM) over `rows` tokens, in the target's decode steps."""
        key = f"{self.key} | draft {model_key(draft)} x {rows}"
        self.curve  # noqa: B018  (the curve first: it matters more, should the budget run short)

        def measure() -> dict:
            models = {"target": CachedModel(self.target, self.kv_cache), "draft": CachedModel(draft, self.kv_cache)}
            timed = timed_passes(models, {"target": (1,), "draft": (rows,)}, DRAFT_SECONDS)
            return {"relative": round(timed["draft", rows].best / timed["target", 1].best, 4),
                    "spread": round(max(t.spread for t in timed.values()), 3), "plausible": not doubtful(timed),
                    "host_load": round(timed["target", 1].load, 3)}

        return kept(CURVE_FILE, key, measure, fallback={"relative": DEFAULT_DRAFT_PASS})["relative"]
