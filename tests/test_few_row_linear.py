"""runtime.linear=auto|few_rows: the same products as nn.Linear whatever product a layer
picks, on a weight-sharing copy that leaves the original model stock, and the same greedy
tokens end to end."""

import json
import random
import threading
import time

import pytest
import torch
import torch.nn.functional as F
from conftest import ARCHITECTURES, random_prompt, tiny

from specdec import ConfigError, Decoder, GenerationConfig
from specdec.runtime import few_row_linear
from specdec.runtime.few_row_linear import (COPIED, LADDER, MAX_ROWS, PRODUCTS, FewRowLinear, few_row_linears, measured_plan,
                                    product, shared_copy, weight_copies, weight_copy)
from specdec.drafts.draft_model import layer_skip_draft
from specdec.runtime.prepare import Runtime, prepare
from specdec.runtime import measured
from specdec.runtime.timing import Budget, Timing
from specdec.strategies import create_strategy


@pytest.mark.parametrize("plan", [None, *PRODUCTS])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rows", [1, 2, 3, 5, MAX_ROWS, MAX_ROWS + 1, 150])
def test_same_products_as_nn_linear(rows, bias, plan):
    torch.manual_seed(rows)
    linear = torch.nn.Linear(48, 80, bias=bias)
    fast = few_row_linears(torch.nn.Sequential(linear))[0]
    assert isinstance(fast, FewRowLinear)
    copies = weight_copies([linear.weight.detach()], COPIED)
    if plan in COPIED and plan not in copies:
        pytest.skip(f"this torch lacks the {plan} product")  # auto never plans it there
    fast.plan = None if plan is None else (plan,) * MAX_ROWS
    fast.copies = {method: laid_out[0] for method, laid_out in copies.items()}
    for shape in [(rows, 48), (1, rows, 48), (rows, 1, 48)]:
        x = torch.randn(shape)
        out = fast(x)
        assert out.shape == (*shape[:-1], 80)
        torch.testing.assert_close(out, F.linear(x, linear.weight, linear.bias), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("plan", PRODUCTS)
def test_compiled_steps_run_the_planned_product(plan):
    """Under torch.compile every product gives the eager result, and oneDNN's, which inductor cannot
    run on weights packed outside it, is one opaque op instead of a stock product."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(48, 80)
    fast = few_row_linears(torch.nn.Sequential(linear))[0]
    copies = weight_copies([linear.weight.detach()], COPIED)
    if plan in COPIED and plan not in copies:
        pytest.skip(f"this torch lacks the {plan} product")
    fast.plan, fast.copies = (plan,) * MAX_ROWS, {method: laid_out[0] for method, laid_out in copies.items()}
    torch._dynamo.reset()  # FewRowLinear.forward's graphs of other tests count towards dynamo's recompile limit
    graphs = []

    def backend(graph, example_inputs):
        graphs.append(graph)
        return graph.forward

    for rows in (1, 5):
        x = torch.randn(1, rows, 48)
        with torch.inference_mode():
            traced = torch.compile(fast, backend=backend, dynamic=False, fullgraph=True)(x)
            inductor = torch.compile(fast, dynamic=False, fullgraph=True)(x)
        torch.testing.assert_close(traced, fast(x), rtol=0, atol=0)
        torch.testing.assert_close(inductor, fast(x), rtol=1e-5, atol=1e-5)
    calls = [str(n.target) for g in graphs for n in g.graph.nodes if n.op == "call_function"]
    assert (calls.count("specdec.packed_product") == 2) == (plan == "packed")
    assert plan != "packed" or not any("linear" in c for c in calls), calls


def test_copy_shares_weights_and_leaves_the_original_stock():
    model = tiny("llama")
    fast = prepare(model, Runtime(linear="few_rows", layers="stock"))  # fused layers: tests/test_fused_layers.py
    assert all(type(m) is not FewRowLinear for m in model.modules())
    assert any(type(m) is FewRowLinear for m in fast.modules())
    assert fast.state_dict().keys() == model.state_dict().keys()
    for (name, a), (_, b) in zip(model.named_parameters(), fast.named_parameters()):
        assert a is b, name
    tied = [m.get_output_embeddings().weight is m.get_input_embeddings().weight for m in (model, fast)]
    assert tied[0] == tied[1]
    stock = prepare(model, Runtime(linear="stock"))
    assert stock is not model and all(type(m) is not FewRowLinear for m in stock.modules())


def test_processes_timing_the_same_shape_at_once_time_it_once(tmp_path, monkeypatch):
    """Two at once (test workers, sweep jobs) on one plans file: one times the shape, the other
    waits and takes its plan; plans of other shapes already in the file stay."""
    monkeypatch.setenv("SPECDEC_CACHE", str(tmp_path))
    other = {"plan": ["linear"] * MAX_ROWS, "plausible": True}
    (tmp_path / few_row_linear.PLANS_FILE).write_text(json.dumps({"another shape": other}))
    timed, start = [], threading.Barrier(2)

    def fastest(weights, copies, rows, seconds):
        timed.append(rows)
        time.sleep(0.01)  # both would be timing now, were there no lock
        return PRODUCTS[len(timed) % len(PRODUCTS)], Timing(1e-3 * rows, 1e-3 * rows, 0.01)

    monkeypatch.setattr(few_row_linear, "_fastest", fastest)
    weights, plans = [torch.randn(24, 40)], []

    def measure():
        start.wait()
        plans.append(measured_plan(weights))

    threads = [threading.Thread(target=measure) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(timed) == len(LADDER) and plans[0] == plans[1]
    kept = json.loads((tmp_path / few_row_linear.PLANS_FILE).read_text())
    assert kept["another shape"] == other and list(plans[0]) in [entry["plan"] for entry in kept.values()]
    assert [p.name for p in tmp_path.iterdir() if p.suffix not in (".json", ".lock")] == []  # no temporary left


def test_implausible_plan_timings_are_timed_again_and_the_budget_bounds_them(tmp_path, monkeypatch):
    """Rung timings that cannot be right (more rows measured far cheaper than fewer, as a busy host
    makes them) are timed once more; still wrong, the plan is kept as implausible, so the next
    process times it again. With the first-run budget spent, nothing is timed: no plan."""
    monkeypatch.setenv("SPECDEC_CACHE", str(tmp_path))
    timed = []

    def fastest(weights, copies, rows, seconds):
        timed.append(rows)
        return "columns", Timing(1e-3 / rows, 1e-3 / rows, 0.01)  # wider, cheaper: implausible

    monkeypatch.setattr(few_row_linear, "_fastest", fastest)
    monkeypatch.setattr(few_row_linear, "FIRST_RUN", Budget(100.0))
    weights = [torch.randn(24, 40)]
    assert measured_plan(weights) == ("columns",) * MAX_ROWS
    assert len(timed) == 2 * len(LADDER)  # every rung, then every implausible one again
    entry = next(iter(json.loads((tmp_path / few_row_linear.PLANS_FILE).read_text()).values()))
    assert not entry["plausible"] and entry["spread"]["1"] == 0.01 and entry["tries"] == 1
    monkeypatch.setattr(measured, "_measured_here", set())  # a new process
    measured_plan(weights)
    assert len(timed) == 4 * len(LADDER)
    monkeypatch.setattr(measured, "_measured_here", set())
    monkeypatch.setattr(few_row_linear, "FIRST_RUN", Budget(0.0))
    for _ in range(measured.TRIES):  # an incomplete plan is timed again however often that happened
        monkeypatch.setattr(measured, "_measured_here", set())
        assert measured_plan(weights) is None and len(timed) == 4 * len(LADDER)
    monkeypatch.setattr(measured, "_measured_here", set())
    monkeypatch.setattr(few_row_linear, "FIRST_RUN", Budget(100.0))
    measured_plan(weights)
    assert len(timed) == 6 * len(LADDER)


def test_auto_follows_the_plan_measured_for_each_shape():
    model = tiny("llama")
    fast = prepare(model, Runtime(linear="auto"))
    layers = [m for m in fast.modules() if isinstance(m, FewRowLinear)]
    assert layers
    for m in layers:
        assert len(m.plan) == MAX_ROWS and set(m.plan) <= set(PRODUCTS)
        assert set(m.copies) == set(COPIED) & set(m.plan)  # a copy only where the plan uses it
        same_shape = [other.plan for other in layers if other.weight.shape == m.weight.shape]
        assert all(plan == m.plan for plan in same_shape)
        if "transposed" in m.copies:
            assert torch.equal(m.copies["transposed"], m.weight.t())
        x = torch.randn(3, m.in_features)
        for method in m.copies:  # each copy multiplies as the weight does
            torch.testing.assert_close(product(method, x, m.weight, m.bias, m.copies[method]),
                                       F.linear(x, m.weight, m.bias), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch has no oneDNN")
def test_a_laid_out_copy_can_be_copied_again():
    """The oneDNN copies of the weights cannot be deep-copied: shared_copy shares them too."""
    fast = prepare(tiny("llama"), Runtime(linear="few_rows"))
    layers = [m for m in fast.modules() if isinstance(m, FewRowLinear)]
    for m in layers:
        m.plan, m.copies = ("packed",) * MAX_ROWS, {"packed": weight_copy("packed", m.weight.detach())}
    again = shared_copy(fast)
    copied = [m for m in again.modules() if isinstance(m, FewRowLinear)]
    assert all(a.copies["packed"] is b.copies["packed"] for a, b in zip(layers, copied))
    ids = torch.tensor([[1, 2, 3]])
    with torch.inference_mode():
        torch.testing.assert_close(again(ids).logits, fast(ids).logits)


def test_unknown_layout_names_the_choices():
    with pytest.raises(ConfigError, match="unknown runtime.linear 'fast'.*few_rows or stock"):
        prepare(tiny("llama"), Runtime(linear="fast"))


@pytest.mark.parametrize("layout", ["auto", "few_rows"])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_same_greedy_tokens_as_the_stock_layout(arch, layout):
    target = tiny(arch)
    fast = prepare(target, Runtime(linear=layout))
    rng = random.Random(arch)
    for trial in range(4):
        prompt, config = random_prompt(rng), GenerationConfig(max_new_tokens=rng.randint(5, 40))
        for name, stock_options, fast_options in [
            ("baseline", {}, {}),
            ("draft", {"draft_model": layer_skip_draft(target, 1), "gamma": 3},
             {"draft_model": prepare(layer_skip_draft(target, 1), Runtime(linear=layout)), "gamma": 3}),
        ]:
            outputs = [Decoder(model, create_strategy(name, **options), eos_token_ids=set()).generate(prompt, config)
                       for model, options in [(target, stock_options), (fast, fast_options)]]
            assert outputs[0].token_ids == outputs[1].token_ids, (name, trial)
