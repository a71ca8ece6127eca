"""The rows of a batch in flight: which request holds which row of the KV caches, and
how each row's strategy proposes (continuous batching: a freed row takes the next prompt).

A strategy keeps per-request state (a draft's cache, an n-gram table), so each row gets its
own shallow copy of it, sharing its modules, unless the strategy proposes for all rows at
once (`Strategy.proposes_rows`), which keeps its rows' state itself, by row index.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from specdec.errors import ConfigError, is_int
from specdec.metrics import RequestMetrics
from specdec.stopping import StopCriteria
from specdec.strategies.base import Proposal, Request, Strategy

@dataclass
class Slot:
    """A request in a row."""

    index: int  # its place among the prompts of the call
    request: Request
    stop: StopCriteria
    metrics: RequestMetrics
    strategy: Strategy
    started: float = 0.0
    reason: str | None = None  # why it ended, once it has
    released: bool = False

    @property
    def budget(self) -> int:
        """Draft tokens a proposal may hold: one new token is always the target's own."""
        return self.stop.max_new_tokens - (len(self.request.tokens) - self.request.prompt_len) - 1

    def release(self) -> None:
        """Store the request's KV in the prefix cache and unlock what it used (once)."""
        if self.request.prefix_cache is not None and not self.released:
            self.released = True
            self.request.prefix_cache.release(self.request.tokens, self.request.prompt_len)


class Batch:
    def __init__(self, target, strategy: Strategy, size: int):
        self.target, self.strategy, self.size = target, strategy, size
        self.slots: list[Slot | None] = [None] * size

    @property
    def busy(self) -> bool:
        return any(slot is not None for slot in self.slots)

    def free_rows(self) -> list[int]:
        return [row for row, slot in enumerate(self.slots) if slot is None]

    def take(self, row: int, index: int, request: Request, stop: StopCriteria, metrics: RequestMetrics) -> Slot:
        shared = self.size == 1 or self.strategy.proposes_rows
        slot = Slot(index, request, stop, metrics, self.strategy if shared else copy.copy(self.strategy))
        self.slots[row] = slot
        return slot

    def free(self, row: int) -> None:
        self.slots[row] = None

    def busy_slots(self) -> list[Slot]:
        """The requests in flight, in row order."""
        return [slot for slot in self.slots if slot is not None]

    def propose(self, slots: list[Slot]) -> list[Proposal]:
        if self.strategy.proposes_rows:
            return self.strategy.propose_rows([s.request for s in slots], [s.budget for s in slots])
        return [slot.strategy.propose(slot.request, max_tokens=slot.budget) for slot in slots]


def check_batch_size(batch_size) -> None:
    if not is_int(batch_size) or batch_size < 1:
        raise ConfigError(f"generation.batch_size must be an integer >= 1 (got {batch_size!r}): e.g. "
                          "generation.batch_size=8")
