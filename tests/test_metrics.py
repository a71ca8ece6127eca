"""Metric definitions of docs/design.md, on hand-made step records."""

import pytest
import torch
from conftest import tiny

from experiments.cost_model import predict_speedup
from experiments.quality import target_nll
from experiments.summary import summarize
from specdec.metrics import RequestMetrics, Step, per_position_acceptance


def test_per_position_acceptance_is_conditional():
    steps = [Step(4, 4), Step(4, 1), Step(4, 0), Step(2, 2)]
    # position 0: reached 4 times, accepted 3; position 1: reached 3 (n >= 1), accepted 2;
    # position 2: reached by steps proposing > 2 with n >= 2: only Step(4, 4), accepted
    assert per_position_acceptance(steps) == [3 / 4, 2 / 3, 1.0, 1.0]


def test_request_metrics():
    m = RequestMetrics(prompt_tokens=5, new_tokens=9, target_forwards=4, ttft_s=0.1, total_s=0.9,
                       steps=[Step(4, 4), Step(4, 1), Step(4, 0)])
    assert m.mean_accepted == 9 / 4
    assert m.acceptance_rate == 5 / 12
    assert m.tpot_ms == pytest.approx(100.0)
    assert m.tokens_per_s == 10.0
    assert RequestMetrics(prompt_tokens=1, new_tokens=1, target_forwards=1, total_s=1).tpot_ms is None


def _record(tokens, ms, ids, proposed=(), accepted=()):
    return {"new_tokens": tokens, "total_ms": ms, "prompt_tokens": 10, "cached_prompt_tokens": 4, "target_forwards": tokens - sum(accepted), "ttft_ms": 10.0,
            "tpot_ms": 5.0, "tokens_per_s": tokens / ms * 1000, "token_ids": ids, "greedy": True,
            "proposed_per_step": list(proposed), "accepted_per_step": list(accepted)}


def test_summary_against_baseline():
    base = [_record(10, 1000, [1, 2]), _record(10, 1000, [3])]
    spec = [_record(10, 500, [1, 2], [4, 4], [4, 2]), _record(10, 1000, [4], [4], [0])]
    s = summarize(spec, base)
    assert s["speedup"] == pytest.approx((20 / 1.5) / (20 / 2.0))
    assert s["match_baseline"] == 0.5
    assert s["acceptance_rate"] == 6 / 12
    assert s["mean_accepted"] == 20 / (4 + 10)
    assert s["speedup_per_prompt"]["median"] == pytest.approx(1.5)
    assert s["hit_rate"] == 0.4
    assert summarize(base, base)["speedup"] == 1.0 and summarize(base, base)["acceptance_rate"] is None


def test_target_nll_is_the_mean_cross_entropy_of_the_generated_tokens():
    model = tiny("llama")
    prompt, tokens = [3, 1, 4, 1, 5], [9, 2, 6]
    with torch.no_grad():
        logp = model(torch.tensor([prompt + tokens])).logits[0].log_softmax(-1)
    expected = -sum(logp[len(prompt) - 1 + i, t].item() for i, t in enumerate(tokens)) / len(tokens)
    assert abs(target_nll(model, prompt, tokens) - expected) < 1e-4
    assert target_nll(model, prompt, []) is None


def test_cost_model_adds_the_measured_proposal_time_of_strategies_without_a_draft_model():
    costs = {"verify_ms": {1: 10.0, 2: 10.0, 3: 10.0}, "draft_ms": 0.0}
    baseline = [{"ttft_ms": 0.0, "new_tokens": 16}]
    run = {"ttft_ms": 0.0, "new_tokens": 16, "proposed_per_step": [2] * 5}
    free = predict_speedup([{**run, "propose_ms": 0.0}], baseline, [1.0, 1.0], costs, uses_draft=False)
    heads = predict_speedup([{**run, "propose_ms": 25.0}], baseline, [1.0, 1.0], costs, uses_draft=False)
    assert free == pytest.approx((16 / 50) / (16 / 150))  # 5 steps of 3 tokens + 1, each one 10 ms pass
    assert heads == pytest.approx(free * 50 / 75)  # 5 ms of proposing per step
    drafted = predict_speedup([{**run, "propose_ms": 25.0}], baseline, [1.0, 1.0], costs, uses_draft=True)
    assert drafted == pytest.approx(free)  # a draft model's passes are timed by the cost model instead
