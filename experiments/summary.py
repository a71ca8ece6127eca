"""Per-run aggregates of results.jsonl records, against the baseline on the same prompts
(docs/design.md defines every field)."""

import statistics

from specdec.metrics import Step, acceptance_rate, per_position_acceptance

RUNTIME = "runtime"  # summary.json's entry on the run itself (compiles_after_warmup), beside the strategies'


def strategy_entries(summary: dict) -> dict:
    """summary.json's strategies, without its runtime entry."""
    return {name: s for name, s in summary.items() if name != RUNTIME}


def _quantiles(values: list[float]) -> dict:
    if len(values) == 1:
        return {"median": values[0], "p25": values[0], "p75": values[0]}
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {"median": q2, "p25": q1, "p75": q3}


def wall_seconds(records: list[dict]) -> float:
    """The time the records took: their requests' one after another, or, for requests decoded
    together (batch_size > 1), their shares of the wall time of the calls they were part of
    (a call's time split by new tokens, so that any subset, a category say, gets its part)."""
    if all(r.get("batch_size", 1) == 1 for r in records):
        return sum(r["total_ms"] for r in records) / 1000
    return sum(r["share_ms"] for r in records) / 1000


def summarize(records: list[dict], baseline: list[dict] | None) -> dict:
    """Aggregate one strategy's results.jsonl records; `baseline` holds the baseline's records
    for the same prompts (same order) and gives speedup and match_baseline."""
    new_tokens = sum(r["new_tokens"] for r in records)
    seconds = wall_seconds(records)
    forwards = sum(r["target_forwards"] for r in records)
    steps = [Step(p, a, d) for r in records for p, a, d in zip(
        r["proposed_per_step"], r["accepted_per_step"], r.get("depth_per_step") or [None] * len(r["proposed_per_step"]))]
    tpots = [r["tpot_ms"] for r in records if r["tpot_ms"] is not None]
    summary = {
        "n_prompts": len(records),
        "batch_size": records[0].get("batch_size", 1) if records else 1,
        "new_tokens": new_tokens,
        "tokens_per_s": new_tokens / seconds,
        "throughput_tok_s": new_tokens / seconds,
        "speedup": None,
        "speedup_per_prompt": None,
        "mean_accepted": new_tokens / forwards if forwards else None,
        "acceptance_rate": acceptance_rate(steps),
        "per_position_acceptance": per_position_acceptance(steps) if any(s.proposed for s in steps) else None,
        "hit_rate": sum(r["cached_prompt_tokens"] for r in records) / sum(r["prompt_tokens"] for r in records),
        "ttft_ms": statistics.median(r["ttft_ms"] for r in records),
        "tpot_ms": statistics.median(tpots) if tpots else None,
        "match_baseline": None,
    }
    scored = [r for r in records if r.get("target_nll") is not None]
    if scored:  # sampling: the target's NLL per generated token (experiments.quality)
        summary["target_nll"] = sum(r["target_nll"] * r["new_tokens"] for r in scored) / sum(r["new_tokens"] for r in scored)
    if records and "head_top1_checked" in records[0]:  # Medusa: share of each head's top-1 guesses that came true
        checked = [sum(c) for c in zip(*(r["head_top1_checked"] for r in records))]
        hits = [sum(h) for h in zip(*(r["head_top1_hits"] for r in records))]
        summary["head_accuracy"] = [h / c if c else None for h, c in zip(hits, checked)]
    if baseline is not None:
        base_tps = sum(r["new_tokens"] for r in baseline) / wall_seconds(baseline)
        summary["speedup"] = summary["tokens_per_s"] / base_tps
        summary["speedup_per_prompt"] = _quantiles(
            [r["tokens_per_s"] / b["tokens_per_s"] for r, b in zip(records, baseline)]
        )
        if all(r.get("greedy") for r in records):
            same = sum(r["token_ids"] == b["token_ids"] for r, b in zip(records, baseline))
            summary["match_baseline"] = same / len(records)
    return summary
