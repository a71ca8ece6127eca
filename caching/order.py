"""Request order for a queue of prompts, and the best hit rate any order-preserving cache
could reach: FIFO keeps the queue as it is; `longest_prefix` (SGLang's longest-prefix-match
scheduling) serves next the request that shares the most tokens with those already served.
With `salts` (one a prompt), prompts share tokens only with prompts of the same salt, as in
the cache (caching.prefix)."""

from caching.radix import common_prefix_length


def _longest_shared(prompt: list[int], served: list[list[int]]) -> int:
    """Tokens of `prompt` (all but its last, which is always computed) found in an earlier prompt."""
    return min(len(prompt) - 1, max((common_prefix_length(prompt, s) for s in served), default=0))


def order_by_longest_prefix(prompts: list[list[int]], salts: list | None = None) -> list[int]:
    """Indices of `prompts` in longest-prefix-match order (ties keep queue order)."""
    salts = salts or [None] * len(prompts)
    shared = {i: 0 for i in range(len(prompts))}  # waiting prompt -> tokens shared with one served
    order = []
    while shared:
        best = max(shared, key=lambda i: (shared[i], -i))
        del shared[best]
        order.append(best)
        for i in shared:  # only the newly served prompt can raise a waiting prompt's match
            if salts[i] == salts[best]:
                shared[i] = max(shared[i], _longest_shared(prompts[i], [prompts[best]]))
    return order


def ideal_hit_rate(prompts: list[list[int]], salts: list | None = None, min_hit_tokens: int = 1) -> float:
    """Cached prompt tokens / prompt tokens for an unbounded cache serving `prompts` in this order
    that loads hits of `min_hit_tokens` or more."""
    salts = salts or [None] * len(prompts)
    shared = [_longest_shared(p, [q for q, salt in zip(prompts[:i], salts) if salt == salts[i]])
              for i, p in enumerate(prompts)]
    hits = sum(length for length in shared if length >= min_hit_tokens)
    return hits / sum(len(p) for p in prompts)
