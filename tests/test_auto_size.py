"""`auto` sizes (specdec.auto_size): the predictor on synthetic verify-cost curves, the strategies
that tune by it, and the device's curve kept on disk and timed again when implausible
(specdec.runtime.verify_cost, specdec.runtime.measured, specdec.runtime.timing)."""

import json
import random

import pytest
from conftest import random_eagle, random_prompt, tiny

from specdec import ConfigError, Decoder, GenerationConfig
from specdec.auto_size import chain_speedups, rank_law, tree_speedups
from specdec.drafts.medusa_heads import MedusaHeads
from specdec.runtime import measured, verify_cost
from specdec.runtime.timing import MAX_SPREAD, Budget, Timing, implausible, interleaved
from specdec.runtime.verify_cost import CURVE_FILE, WIDTHS, DeviceCosts
from specdec.strategies import create_strategy

EAGLE = [0.54, 0.49, 0.47]  # the shipped EAGLE draft's acceptance by depth


def cpu_like(k: int) -> float:
    """A 2-core CPU: a pass over 4 tokens costs a decode step, each token past it 2.5% more."""
    return 1.0 + 0.025 * max(0, k - 4)


def gpu_like(k: int) -> float:
    """A GPU: a pass over 64 tokens costs one decode step."""
    return 1.0


def best_of(speedups: dict) -> int:
    return max(speedups, key=lambda n: speedups[n][0] if isinstance(speedups[n], tuple) else speedups[n])


def test_auto_picks_a_small_tree_where_verify_is_expensive_and_a_big_one_where_it_is_free():
    chances = rank_law(EAGLE, 3, 8)
    small, big = (best_of(tree_speedups(chances, curve, level_pass=0.05)) for curve in (cpu_like, gpu_like))
    assert small <= 6 and big >= 12
    steep = best_of(tree_speedups(chances, lambda k: 1.0 + 0.1 * (k - 1), level_pass=0.05))
    assert steep <= small  # the dearer the verify pass, the smaller the tree
    assert tree_speedups(chances, gpu_like)[big][1] > tree_speedups(chances, cpu_like)[small][1]  # and deeper


def test_auto_chains_grow_with_cheap_verify_and_shrink_with_a_dear_draft():
    cheap, dear = chain_speedups(EAGLE, gpu_like, 0.05), chain_speedups(EAGLE, cpu_like, 0.5)
    assert best_of(dear) < best_of(cheap)
    assert best_of(chain_speedups(EAGLE, lambda k: 1.0 + 0.5 * (k - 1), 0.05)) == 1


class SyntheticCosts:
    """What DeviceCosts gives a strategy, from a synthetic curve."""

    def __init__(self, curve, draft: float = 0.05):
        self.verify, self.draft = curve, draft

    def draft_pass(self, module, rows: int = 1) -> float:
        return self.draft


@pytest.mark.parametrize("curve,few", [(cpu_like, True), (gpu_like, False)])
def test_an_auto_eagle_tree_tunes_once_and_stays_lossless(curve, few):
    model = tiny("llama")
    strategy = create_strategy("eagle", target_model=model, draft=random_eagle(model, 0), gamma="auto",
                               tree_nodes="auto", tree_topk=3, stop_below_prob=0)
    sizes = strategy.tune(SyntheticCosts(curve))
    assert sizes["tree_nodes"] == strategy.tree_nodes and sizes["gamma"] == strategy.gamma
    assert (strategy.tree_nodes <= 6) == few and sizes["predicted_speedup"] > 1
    decoder = Decoder(model, strategy)  # tuned already: the Decoder measures nothing
    baseline = Decoder(model, create_strategy("baseline"))
    config = GenerationConfig(max_new_tokens=24)
    for prompt in [random_prompt(random.Random(seed)) for seed in range(3)]:
        assert decoder.generate(prompt, config).token_ids == baseline.generate(prompt, config).token_ids


def test_an_auto_medusa_tree_grows_where_verify_is_cheap_and_stays_lossless():
    model = tiny("llama")
    heads = MedusaHeads(model.config.hidden_size, model.config.vocab_size, 3)  # no measured accuracies: the rank law
    sizes = {}
    for name, curve in (("cpu", cpu_like), ("gpu", gpu_like)):
        strategy = create_strategy("medusa", target_model=model, heads=heads, tree="auto")
        sizes[name] = strategy.tune(SyntheticCosts(curve))
        assert len(strategy.tree.choices) == sizes[name]["tree"] and strategy.tree.depth == sizes[name]["depth"] <= 3
    assert sizes["cpu"]["tree"] < sizes["gpu"]["tree"]
    config = GenerationConfig(max_new_tokens=16)
    prompt = random_prompt(random.Random(5))
    baseline = Decoder(model, create_strategy("baseline")).generate(prompt, config).token_ids
    assert Decoder(model, strategy).generate(prompt, config).token_ids == baseline


def test_bad_sizes_in_the_library_name_the_fix():
    model = tiny("llama")
    with pytest.raises(ConfigError, match="strategy.gamma must be auto .* or an integer >= 1 .got 'big'.; use strategy=baseline"):
        create_strategy("eagle", target_model=model, draft=random_eagle(model, 0), gamma="big")
    with pytest.raises(ConfigError, match="strategy.tree_nodes must be auto .* or an integer >= 1 .got 0.; strategy.tree_nodes=null"):
        create_strategy("eagle", target_model=model, draft=random_eagle(model, 0), gamma=2, tree_nodes=0,
                        stop_below_prob=0)


def timings(best: dict, spread: float = 0.01, load: float = 0.0) -> dict:
    return {("target", w): Timing(b, b, spread, load) for w, b in best.items()}


def fake_passes(monkeypatch, *answers):
    """verify_cost.timed_passes answering each call with the next of `answers` (width -> seconds)."""
    calls = []

    def timed(models, widths, seconds):
        calls.append(widths)
        return answers[min(len(calls), len(answers)) - 1]

    monkeypatch.setattr(verify_cost, "timed_passes", timed)
    return calls


def new_process(monkeypatch):
    monkeypatch.setattr(measured, "_measured_here", set())


CALM = timings({w: 0.01 * (1 + w / 64) for w in WIDTHS})
BUSY = timings({w: 0.01 * (1 + w / 64) for w in WIDTHS}, load=0.9)  # other processes used 90% of our CPUs
WRONG = timings({w: 0.01 * (2 if w < 8 else 1) for w in WIDTHS})  # wider passes cheaper than a decode step


def test_the_curve_is_measured_once_and_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECDEC_CACHE", str(tmp_path))
    calls = fake_passes(monkeypatch, CALM)
    model = tiny("llama")
    first = DeviceCosts(model).curve
    new_process(monkeypatch)
    again = DeviceCosts(model)
    assert again.curve == first and len(calls) == 1
    assert again.verify(1) == 1.0 and again.verify(64) == pytest.approx(2 / (1 + 1 / 64), rel=1e-3)
    assert again.verify(40) == pytest.approx((again.verify(32) + again.verify(48)) / 2, rel=1e-3)  # between widths
    kept = json.loads((tmp_path / CURVE_FILE).read_text())
    assert list(kept) == [again.key] and kept[again.key]["plausible"] and kept[again.key]["tries"] == 1


@pytest.mark.parametrize("doubtful", [BUSY, WRONG], ids=["busy host", "wider pass cheaper"])
def test_an_implausible_curve_is_timed_again_by_the_next_runs(tmp_path, monkeypatch, doubtful):
    monkeypatch.setenv("SPECDEC_CACHE", str(tmp_path))
    calls = fake_passes(monkeypatch, doubtful, CALM)
    model = tiny("llama")
    assert not DeviceCosts(model).curve["plausible"]
    new_process(monkeypatch)
    curve = DeviceCosts(model).curve
    assert len(calls) == 2 and curve["plausible"] and curve["tries"] == 2
    assert curve == DeviceCosts(model).curve


def test_a_host_always_busy_is_trusted_after_a_few_tries(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECDEC_CACHE", str(tmp_path))
    calls = fake_passes(monkeypatch, BUSY)
    for _ in range(measured.TRIES + 2):
        new_process(monkeypatch)
        DeviceCosts(tiny("llama")).curve
    assert len(calls) == measured.TRIES


def test_remeasure_times_again_once_per_process(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECDEC_CACHE", str(tmp_path))
    calls = fake_passes(monkeypatch, CALM)
    DeviceCosts(tiny("llama")).curve
    new_process(monkeypatch)
    monkeypatch.setenv(measured.FRESH, "1")
    for _ in range(2):
        DeviceCosts(tiny("llama")).curve
    assert len(calls) == 2


def test_a_busy_host_times_nothing_and_a_later_run_measures(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECDEC_CACHE", str(tmp_path))
    calls = fake_passes(monkeypatch, CALM)
    monkeypatch.setattr(measured, "busy_host", lambda: 0.9)
    costs = DeviceCosts(tiny("llama"))
    assert costs.curve["relative"] == verify_cost.DEFAULT_CURVE and not costs.curve["complete"]
    assert costs.draft_pass(tiny("llama")) == verify_cost.DEFAULT_DRAFT_PASS
    assert calls == [] and not (tmp_path / CURVE_FILE).exists()
    monkeypatch.setattr(measured, "busy_host", lambda: None)
    assert DeviceCosts(tiny("llama")).curve["plausible"] and len(calls) == 1


def test_implausible_timings():
    calm = {w: Timing(t, t, 0.02) for w, t in {1: 1.0, 2: 1.01, 4: 0.99, 16: 1.3}.items()}
    assert implausible(calm) == []  # 4 rows a hair under 2 rows: within the spread
    assert implausible({**calm, 16: Timing(0.5, 0.5, 0.02)}) == [1, 2, 4, 16]
    assert implausible({**calm, 2: Timing(1.0, 1.0, MAX_SPREAD + 0.1)}) == [2]
    assert implausible({w: Timing(t.median, t.best, t.spread, load=0.5) for w, t in calm.items()}) == [1, 2, 4, 16]


def test_timing_stops_at_its_budget():
    budget, calls = Budget(0.0), []
    timed = interleaved({"a": lambda: calls.append(1) or 0.001}, seconds=10, min_rounds=5, budget=budget)
    assert len(calls) == 2 and timed["a"].best == 0.001  # the warm-up and one round
    spacious = Budget(100.0)
    interleaved({"a": lambda: 0.001, "b": lambda: 0.002}, seconds=10, min_rounds=3, max_rounds=4, budget=spacious)
    assert 0 < 100.0 - spacious.left < 10
