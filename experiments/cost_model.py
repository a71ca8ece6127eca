"""A cost model of speculative decoding: measured acceptance x measured forward costs.

A step that proposes p tokens costs p draft passes plus one target pass over p + 1 tokens,
and commits 1 + sum_{i<=p} prod_{j<=i} a_j tokens on average, where a_j is the measured
per-position acceptance (for a tree: p nodes verified, the sum running over its depth with
the measured per-depth acceptance). A draft model's passes are timed here; a strategy without
one (Medusa's heads and tree, an n-gram lookup) brings the time its propose() took in the run.
Summed over the steps a run really took (so dynamic draft lengths and empty proposals count as
they happened), plus each request's measured prefill, this
predicts the run's speedup over the baseline; with every step at a fixed gamma it predicts
the best gamma. Forward costs are timed in the same process (experiments.profile_step's timer).
"""

import torch

from specdec.auto_size import chain_tokens
from specdec.runtime.cached_model import CachedModel
from specdec.runtime.timing import median_ms, step_timer


def typical_context(baseline: list[dict]) -> int:
    """Cached tokens of a typical decode step of the baseline's records: prompt + half the answer."""
    return round(sum(r["prompt_tokens"] + r["new_tokens"] / 2 for r in baseline) / len(baseline))


def measure_costs(target, draft, kv_cache: str, context_tokens: int, max_k: int, repeats: int = 10) -> dict:
    """Median ms of a target pass over k = 1..max_k new tokens and of one draft token, after
    `context_tokens` cached tokens; interleaved, after one warm-up round."""
    models = {"target": CachedModel(target, kv_cache)}
    if draft is not None:
        models["draft"] = CachedModel(draft, kv_cache)
    for cached in models.values():
        cached.reset()
        cached.forward(torch.randint(0, cached.model.config.vocab_size, (context_tokens,), device=cached.device))
    timers = {("target", k): step_timer(models["target"], k, context_tokens) for k in range(1, max_k + 1)}
    if draft is not None:
        timers["draft", 1] = step_timer(models["draft"], 1, context_tokens)
    ms = median_ms(timers, repeats)
    return {
        "context_tokens": context_tokens,
        "verify_ms": {k: ms["target", k] for k in range(1, max_k + 1)},
        "draft_ms": ms["draft", 1] if draft is not None else 0.0,
    }


def step_ms(proposed: int, costs: dict, draft_ms: float) -> float:
    verify = costs["verify_ms"]
    return proposed * draft_ms + verify[min(proposed + 1, max(verify))]


def predict_speedup(records: list[dict], baseline: list[dict], acceptance: list[float] | None, costs: dict,
                    uses_draft: bool, gamma: int | None = None) -> float:
    """Predicted speedup of a run: with the draft lengths its steps really had, or with
    `gamma` at every step (each request then needs new_tokens / E[tokens per step] steps)."""
    decode = costs["verify_ms"][1]
    draft_ms = costs["draft_ms"] if uses_draft else 0.0
    base_ms = sum(r["ttft_ms"] + (r["new_tokens"] - 1) * decode for r in baseline)
    base_tokens = sum(r["new_tokens"] for r in baseline)
    ours_ms = ours_tokens = 0.0
    for r in records:
        ours_ms += r["ttft_ms"]
        steps = r["proposed_per_step"]
        propose_ms = 0.0 if uses_draft else r.get("propose_ms", 0.0)  # the run's measured time in propose()
        if gamma is None:  # a tree step reaches its depth (per-depth acceptance) and verifies all its nodes
            depths = r.get("depth_per_step") or [None] * len(steps)
            ours_tokens += 1 + sum(chain_tokens(acceptance or [], p if d is None else d) for p, d in zip(steps, depths))
            ours_ms += sum(step_ms(p, costs, draft_ms) for p in steps) + propose_ms
        else:
            ours_tokens += r["new_tokens"]
            step = step_ms(gamma, costs, draft_ms) + propose_ms / max(len(steps), 1)
            ours_ms += (r["new_tokens"] - 1) * step / chain_tokens(acceptance or [], gamma)
    return (ours_tokens / ours_ms) / (base_tokens / base_ms)


def best_gamma(records, baseline, acceptance, costs, uses_draft: bool) -> tuple[int, float]:
    """(gamma, predicted speedup) of the best fixed gamma the measured costs allow."""
    candidates = range(1, max(costs["verify_ms"]))
    return max(((g, predict_speedup(records, baseline, acceptance, costs, uses_draft, g)) for g in candidates),
               key=lambda pair: pair[1])
