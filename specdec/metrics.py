"""Per-step records -> per-request metrics, as docs/design.md defines them (per-run aggregates:
experiments.summary)."""

from dataclasses import dataclass, field


@dataclass
class Step:
    proposed: int  # draft tokens sent to verification (a tree's nodes)
    accepted: int  # draft tokens the acceptance rule kept
    depth: int | None = None  # a tree's depth; None for a chain (whose depth is `proposed`)

    @property
    def reach(self) -> int:
        """How many positions ahead the proposal reached."""
        return self.proposed if self.depth is None else self.depth


@dataclass
class RequestMetrics:
    prompt_tokens: int
    cached_prompt_tokens: int = 0  # prompt tokens whose KV came from the prefix cache
    new_tokens: int = 0
    target_forwards: int = 0
    ttft_s: float = 0.0
    total_s: float = 0.0
    propose_s: float = 0.0  # time inside the strategy's propose(): drafting, heads, lookups (host time on CUDA)
    cache_load_s: float = 0.0  # prefix cache: matching and loading the hit (inside ttft; host time on CUDA)
    cache_insert_s: float = 0.0  # prefix cache: storing the request's new KV at its end (inside total)
    steps: list[Step] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # the strategy's own numbers (Strategy.stats)

    @property
    def mean_accepted(self) -> float:
        return self.new_tokens / self.target_forwards

    @property
    def proposed(self) -> int:
        return sum(s.proposed for s in self.steps)

    @property
    def accepted(self) -> int:
        return sum(s.accepted for s in self.steps)

    @property
    def acceptance_rate(self) -> float | None:
        """Chains only: a tree's nodes are alternatives, so accepted / proposed would mean nothing."""
        return acceptance_rate(self.steps)

    @property
    def tpot_ms(self) -> float | None:
        if self.new_tokens < 2:
            return None
        return 1000 * (self.total_s - self.ttft_s) / (self.new_tokens - 1)

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.total_s

    def to_dict(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "cached_prompt_tokens": self.cached_prompt_tokens,
            "new_tokens": self.new_tokens,
            "target_forwards": self.target_forwards,
            "mean_accepted": self.mean_accepted,
            "acceptance_rate": self.acceptance_rate,
            "per_position_acceptance": per_position_acceptance(self.steps),
            "accepted_per_step": [s.accepted for s in self.steps],
            "proposed_per_step": [s.proposed for s in self.steps],
            **({"depth_per_step": [s.depth for s in self.steps]} if any(s.depth for s in self.steps) else {}),
            "ttft_ms": 1000 * self.ttft_s,
            "tpot_ms": self.tpot_ms,
            "total_ms": 1000 * self.total_s,
            "propose_ms": 1000 * self.propose_s,
            "cache_load_ms": 1000 * self.cache_load_s,
            "cache_insert_ms": 1000 * self.cache_insert_s,
            "tokens_per_s": self.tokens_per_s,
            **self.extra,
        }


def acceptance_rate(steps: list[Step]) -> float | None:
    proposed = sum(s.proposed for s in steps)
    if not proposed or any(s.depth is not None for s in steps):
        return None
    return sum(s.accepted for s in steps) / proposed


def per_position_acceptance(steps: list[Step]) -> list[float]:
    """Entry i: P(draft token i accepted | every draft token before i accepted); for trees, the
    acceptance of depth i + 1 given the depths above it were accepted."""
    depth = max((s.reach for s in steps), default=0)
    rates = []
    for i in range(depth):
        reached = [s for s in steps if s.reach > i and s.accepted >= i]
        if not reached:
            break
        rates.append(sum(s.accepted > i for s in reached) / len(reached))
    return rates
