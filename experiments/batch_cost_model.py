"""The cost model at batch sizes: when does speculation stop paying as more rows decode at once?

A batched step verifies B rows of k + 1 tokens in one target pass, where the baseline's step is
a pass over B rows of one token. Speculation wins while the wider pass costs less than the
tokens it commits: at batch size B a strategy's steady-state decode speedup is

    steady = tokens_per_step * decode_ms(B) / (verify_ms(B, width) + propose_ms(B))

with tokens_per_step, the law of its pass widths (proposal + 1; a batch pads every row to the
longest of B, so verify_ms is averaged over that maximum's law) and its propose() time per step
(every row's proposal) measured in the strategy's own run at batch size B, and verify passes timed apart, in the same process, as the decoding loop runs them.
Prefilling a new request's prompt is the same work for every strategy and does not shrink with
B (a compute-bound prefill costs as much in a batch as alone), so it dilutes the speedup as in
Amdahl's law: with `prefill_share` the fraction of the baseline's call spent admitting requests
at batch size B,

    speedup = 1 / (prefill_share + (1 - prefill_share) / steady)

The crossover batch size is the smallest one whose speedup falls below 1.
"""

import time
from collections import Counter
from collections.abc import Callable

import torch

from specdec.runtime.timing import median_ms
from specdec.decoding import sync
from specdec.runtime.cached_model import CachedModel


def pass_timer(run: Callable[[], object], device: torch.device,
               undo: Callable[[], None] | None = None) -> Callable[[], float]:
    """A function timing one call of `run` (any verify pass), then calling `undo` untimed."""
    def timed() -> float:
        sync(device)
        start = time.perf_counter()
        run()
        sync(device)
        elapsed = time.perf_counter() - start
        if undo is not None:
            undo()
        return elapsed

    return timed


def verify_timers(model, kv_cache: str, batch: int, widths: list[int], context: int) -> dict[int, Callable[[], float]]:
    """width -> a timer of the decoding loop's verify pass (CachedModel.forward_some) over `batch`
    rows of `width` new tokens, each row holding `context` random tokens, rolled back to them after
    each pass."""
    cached = CachedModel(model, kv_cache, rows=batch)
    vocab, rows = model.config.vocab_size, list(range(batch))
    for row in rows:
        cached.prefill(torch.randint(0, vocab, (context,)).tolist(), row=row)

    def undo() -> None:
        for row in rows:
            cached.rollback(context, row)

    timers = {}
    for width in widths:
        inputs = [torch.randint(0, vocab, (width,), device=cached.device) for _ in rows]
        timers[width] = pass_timer(lambda inputs=inputs: cached.forward_some(rows, inputs), cached.device, undo)
    return timers


def measure_batch_costs(timers_of: Callable[[int], dict[int, Callable[[], float]]], batch_sizes: list[int],
                        repeats: int = 10) -> dict[int, dict[int, float]]:
    """batch size -> width -> median ms of a verify pass, from timers_of(batch size) (width -> timer),
    interleaved within each batch size (only ratios at one batch size enter a prediction)."""
    return {batch: median_ms(timers_of(batch), repeats) for batch in batch_sizes}


def step_profile(records: list[dict]) -> dict:
    """What the model needs of a strategy's run, from its per-request records: tokens committed per
    verify pass, how often each pass width (proposal + 1) came up and propose() ms per step (a batched
    step's propose() time is on the record of every row that took part in it)."""
    widths = Counter(p + 1 for r in records for p in r["proposed_per_step"])
    steps = sum(widths.values())
    if not steps:  # every request ended at its first token
        return {"tokens_per_step": 1.0, "widths": {1: 1.0}, "propose_ms": 0.0}
    return {"tokens_per_step": sum(a + 1 for r in records for a in r["accepted_per_step"]) / steps,
            "widths": {width: count / steps for width, count in sorted(widths.items())},
            "propose_ms": sum(r["propose_ms"] for r in records) / steps}


def padded_widths(widths: dict[int, float], rows: int) -> dict[int, float]:
    """The law of a batched pass's width: every row pads to the longest of `rows` proposals, drawn
    from `widths` (width -> probability)."""
    law, below = {}, 0.0
    for width, p in sorted(widths.items()):
        law[width] = (below + p) ** rows - below**rows
        below += p
    return law


def prefill_share(records: list[dict], wall_s: float) -> float:
    """The fraction of a call spent admitting requests (each one's prefill and first token, its
    TTFT: admissions run one at a time, between steps)."""
    return min(1.0, sum(r["ttft_ms"] for r in records) / (1000 * wall_s))


def predict_batch_speedup(profile: dict, verify_ms: dict[int, dict[int, float]], batch_size: int,
                          prefill: float = 0.0) -> float:
    """Predicted speedup over the baseline at `batch_size` (the module's formula) from the strategy's
    step profile at that size, verify_ms (batch size -> width -> ms, this size's widths 1 and the
    profile's) and the baseline's prefill share at that size."""
    at = verify_ms[batch_size]
    verify = sum(p * at[width] for width, p in padded_widths(profile["widths"], batch_size).items())
    steady = profile["tokens_per_step"] * at[1] / (verify + profile["propose_ms"])
    return 1 / (prefill + (1 - prefill) / steady)


def crossover_batch_size(speedups: dict[int, float]) -> int | None:
    """The smallest batch size whose speedup is below 1, or None if speculation pays at every one."""
    return next((batch for batch in sorted(speedups) if speedups[batch] < 1), None)
