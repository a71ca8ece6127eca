"""Request order for a queue of prompts, and the best hit rate any order-preserving cache
could reach: FIFO keeps the queue as it is; `longest_prefix` (SGLang's longest-prefix-match
scheduling) serves next the request that shares the most tokens with those already served."""

from caching.radix import common_prefix_length


def _longest_shared(prompt: list[int], served: list[list[int]]) -> int:
    """Tokens of `prompt` (all but its last, which is always computed) found in an earlier prompt."""
    return min(len(prompt) - 1, max((common_prefix_length(prompt, s) for s in served), default=0))


def order_by_longest_prefix(prompts: list[list[int]]) -> list[int]:
    """Indices of `prompts` in longest-prefix-match order (ties keep queue order)."""
    shared = {i: 0 for i in range(len(prompts))}  # waiting prompt -> tokens shared with one served
    order = []
    while shared:
        best = max(shared, key=lambda i: (shared[i], -i))
        del shared[best]
        order.append(best)
        for i in shared:  # only the newly served prompt can raise a waiting prompt's match
            shared[i] = max(shared[i], _longest_shared(prompts[i], [prompts[best]]))
    return order


def ideal_hit_rate(prompts: list[list[int]]) -> float:
    """Cached prompt tokens / prompt tokens for an unbounded cache serving `prompts` in this order."""
    hits = sum(_longest_shared(p, prompts[:i]) for i, p in enumerate(prompts))
    return hits / sum(len(p) for p in prompts)
