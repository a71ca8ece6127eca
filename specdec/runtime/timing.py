"""Timing that a busy host does not fool: interleaved, spaced rounds, with their spread.

Everything this machine measures about itself (the few-row product plans, the verify-cost curve,
a draft's pass) is timed here, because the first run of a new user often shares the machine
with other jobs. Candidates are timed round by round, each round in a rotated order, so that
drift and bursts of other work hit every candidate alike; rounds are spaced by a short pause,
so one burst spans few of them. Each measurement records its spread (interquartile range over
median), and `implausible` flags what must be timed again: a spread too wide, or a wider pass
measured cheaper than a narrower one by more than their spread. All first-run timing of a
process shares one budget (FIRST_RUN, 60 s): later measurements get fewer rounds, never none.
"""

import logging
import os
import statistics
import time
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

MAX_SPREAD = 0.25  # a timing whose quartiles lie further apart than this share of its median is timed again
MAX_LOAD = 0.2  # nor may other processes have used more than this share of our CPUs while it ran
# above this share before timing starts, the host counts as busy and nothing is timed (busy_host);
# SPECDEC_MAX_HOST_LOAD >= 1 times whatever the load (tests on a shared host)
BUSY_LOAD = float(os.environ.get("SPECDEC_MAX_HOST_LOAD", MAX_LOAD))


@dataclass(frozen=True)
class Timing:
    """One candidate's seconds over the rounds: median, best, spread ((p75 - p25) / median), and the
    share of this process's CPUs that other processes used meanwhile (0 where unknown)."""

    median: float
    best: float
    spread: float
    load: float = 0.0

    @staticmethod
    def of(samples: list[float], load: float = 0.0) -> "Timing":
        q = statistics.quantiles(samples, n=4) if len(samples) > 1 else [samples[0]] * 3
        return Timing(q[1], min(samples), (q[2] - q[0]) / q[1] if q[1] > 0 else 0.0, load)


class HostLoad:
    """How busy other processes kept this process's CPUs between start() and share(): their CPU
    time (/proc/stat's busy time of our CPUs less our own) over the wall time of those CPUs. A
    measurement beside them is what the issue calls a busy host: plans chosen there were wrong."""

    def __init__(self):
        self.cpus = {f"cpu{c}" for c in os.sched_getaffinity(0)} if hasattr(os, "sched_getaffinity") else set()
        self.start = self._sample()

    def _sample(self):
        try:
            with open("/proc/stat") as stat:
                busy = sum(sum(int(v) for i, v in enumerate(line.split()[1:9]) if i not in (3, 4))  # less idle, iowait
                           for line in stat if line.split(" ", 1)[0] in self.cpus)
        except (OSError, ValueError):
            return None
        own = os.times()
        return time.perf_counter(), busy / os.sysconf("SC_CLK_TCK"), own.user + own.system

    def share(self) -> float:
        end = self._sample()
        if self.start is None or end is None or not self.cpus or end[0] <= self.start[0]:
            return 0.0
        others = (end[1] - self.start[1]) - (end[2] - self.start[2])
        return max(0.0, others / ((end[0] - self.start[0]) * len(self.cpus)))


class Budget:
    """Seconds of timing a process may still spend on first-run measurements."""

    def __init__(self, seconds: float):
        self.left = seconds

    def allow(self, wanted: float, keep: float = 0.0) -> float:
        """Up to `wanted` seconds, leaving `keep` for what comes later (0 when nothing is left)."""
        return max(0.0, min(wanted, self.left - keep))

    def spend(self, seconds: float) -> None:
        self.left -= seconds


FIRST_RUN = Budget(60.0)  # plans, the verify-cost curve and draft passes measured by one process, together


_probe: tuple[float, float] = (float("-inf"), 0.0)  # (when, share) of the last busy_host probe


def busy_host() -> float | None:
    """The share of our CPUs that other processes use (over a 0.2 s look, reused for 5 s) when it is
    above BUSY_LOAD, else None. A measurement should not start then: on a 2-core host so loaded, a
    decode step took 200x its quiet time, and choices timed there were wrong."""
    global _probe
    if time.perf_counter() - _probe[0] > 5:
        load = HostLoad()
        time.sleep(0.2)
        _probe = (time.perf_counter(), load.share())
    return _probe[1] if _probe[1] > BUSY_LOAD else None


def interleaved(timers: dict, seconds: float, min_rounds: int = 3, max_rounds: int = 15,
                budget: Budget = FIRST_RUN, warmup: bool = True) -> dict:
    """key -> Timing of timers[key]() (each returns the seconds it measured) over interleaved, spaced
    rounds after one untimed round (unless the caller warmed them up): at least `min_rounds`, then more while `seconds` last, up to
    `max_rounds` (stopping early once every spread is below MAX_SPREAD); but after any round once
    3 x `seconds` have passed or `budget` is spent (so a slow host gets fewer rounds, at least one).
    The time spent is charged to `budget`."""
    began, load = time.perf_counter(), HostLoad()
    seconds = min(seconds, budget.left)
    keys = list(timers)
    for key in keys if warmup else ():
        timers[key]()
    samples = {key: [] for key in keys}
    for round_ in range(max_rounds):
        start = time.perf_counter()
        for key in keys[round_ % len(keys):] + keys[: round_ % len(keys)]:  # rotated: no key always first
            samples[key].append(timers[key]())
        elapsed = time.perf_counter() - began
        if elapsed >= min(3 * seconds, budget.left) or round_ + 1 >= min_rounds and (elapsed >= seconds or (
                round_ + 1 >= 5 and all(Timing.of(s).spread < MAX_SPREAD for s in samples.values()))):
            break
        time.sleep(min(0.05, (time.perf_counter() - start) / 4))  # spaced: a burst of other work spans few rounds
    budget.spend(time.perf_counter() - began)
    share = load.share()
    return {key: Timing.of(values, share) for key, values in samples.items()}


def implausible(timed: dict[int, Timing], max_spread: float = MAX_SPREAD) -> list[int]:
    """Widths (e.g. tokens of a pass) whose timing cannot be trusted: a spread above `max_spread`,
    other processes busy on our CPUs meanwhile (MAX_LOAD), or a best time below a narrower width's
    by more than the two spreads allow (at least 5%)."""
    bad = {w for w, t in timed.items() if t.spread > max_spread or t.load > MAX_LOAD}
    widths = sorted(timed)
    for i, narrow in enumerate(widths):
        for wide in widths[i + 1:]:
            if timed[wide].best < timed[narrow].best * (1 - max(timed[wide].spread, timed[narrow].spread, 0.05)):
                bad |= {narrow, wide}
    return sorted(bad)


def step_timer(cached, tokens: int, context: int):
    """A function timing one pass of a CachedModel over `tokens` new tokens after `context` cached
    ones (rolled back after each pass)."""
    ids = torch.randint(0, cached.model.config.vocab_size, (tokens,), device=cached.device)

    def run() -> float:
        sync(cached.device)
        start = time.perf_counter()
        cached.forward(ids)
        sync(cached.device)
        elapsed = time.perf_counter() - start
        cached.rollback(context)
        return elapsed

    return run


def median_ms(timers: dict, repeats: int, warmup: int = 1) -> dict:
    """key -> median ms of `repeats` interleaved rounds of timers[key] (each returns its seconds), after
    `warmup` untimed rounds; no budget (experiments that time on purpose)."""
    for _ in range(warmup):
        for timer in timers.values():
            timer()
    timed = interleaved(timers, float("inf"), repeats, repeats, Budget(float("inf")), warmup=False)
    return {key: t.median * 1000 for key, t in timed.items()}


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer reads the time the work really took."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
