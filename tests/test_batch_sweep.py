"""`python -m experiments.batch_sweep` end to end on model=tiny-random; transformers' statically
batched generate (the hf_generate anchor) against its batch-1 tokens; the table's arithmetic
and the batch cost model on synthetic numbers. No assertion reads a timing."""

import json
import random

import pytest
import torch
from conftest import random_prompt, tiny
from test_cli import entry_points, run  # noqa: F401 (the forking command runner and its fixture)

from experiments.anchors import HFGenerate
from experiments.batch_cost_model import (crossover_batch_size, padded_widths, predict_batch_speedup, prefill_share,
                                          step_profile)
from experiments.batch_report import batch_rows
from specdec import GenerationConfig
from specdec.tiny import byte_tokenizer

ROW_FIELDS = {"strategy", "batch_size", "throughput_tok_s", "tpot_ms", "ttft_ms", "mean_accepted", "speedup",
              "speedup_spread", "predicted_speedup", "match_single", "repeats"}


def test_the_cli_writes_a_row_per_strategy_and_batch_size(tmp_path, run):
    result = run("dataset.limit=3", "generation.max_new_tokens=6", "runtime.warmup=1", "batch_sizes=[1,2]",
                 "repeats=2", "matrix=[{name:draft},{name:prompt_lookup}]", f"hydra.run.dir={tmp_path}",
                 module="experiments.batch_sweep", fresh=True)
    assert "| hf_generate | 2 |" in result.stdout
    rows = json.loads((tmp_path / "batch.json").read_text())
    strategies = ["baseline", "draft", "prompt_lookup", "hf_generate"]
    assert [(r["strategy"], r["batch_size"]) for r in rows] == [(s, b) for b in (1, 2) for s in strategies]
    for row in rows:
        assert ROW_FIELDS <= set(row) and row["repeats"] == 2 and len(row["wall_s"]) == 2
        assert row["throughput_tok_s"] > 0 and 0 <= row["match_single"] <= 1
        low, high = row["speedup_spread"]
        assert low <= row["speedup"] <= high
        if row["strategy"] == "baseline":
            assert row["speedup"] == 1.0 == row["predicted_speedup"] and row["mean_accepted"] == 1.0
        assert (row["predicted_speedup"] is None) == (row["strategy"] == "hf_generate")
    assert all(r["match_single"] == 1.0 for r in rows if r["batch_size"] == 1)  # every repeat decodes alike
    crossover = json.loads((tmp_path / "crossover.json").read_text())
    assert set(crossover["crossover_batch_size"]) == {"draft", "prompt_lookup", "hf_generate"}
    assert set(crossover["verify_ms"]) == {"1", "2"} and crossover["context_tokens"] > 0
    assert all(set(crossover["step_profiles"]["draft"][b]["widths"]) <= set("12345") for b in "12")  # gamma 4
    assert all(0 < crossover["prefill_share"][b] < 1 for b in "12")
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["config"]["batch_sizes"] == [1, 2] and info["command"].startswith("python -m experiments.batch_sweep")
    for name in ("batch.md", "throughput_vs_batch.png", "speedup_vs_batch.png"):
        assert (tmp_path / name).stat().st_size > 0


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt_neox"])
def test_batched_hf_generate_answers_as_batch_one_in_float64(arch):
    """Left padding with an attention mask is exact here: padded keys get zero weight, and in
    float64 the other sums' rounding never flips a greedy token of these models. A row that ends
    early (an EOS, or a stop string) is cut where generate() stopped it, not at the chunk's end."""
    model = tiny(arch, dtype=torch.float64)
    tokenizer = byte_tokenizer()
    rng = random.Random(2)
    prompts = [random_prompt(rng, 30) for _ in range(7)]
    free = HFGenerate(model, tokenizer, {257}).generate(prompts[0], GenerationConfig(max_new_tokens=12)).token_ids
    anchor = HFGenerate(model, tokenizer, {free[len(free) // 2]})  # a token the first answer writes: it ends early
    plain = GenerationConfig(max_new_tokens=12)
    texts = [tokenizer.decode([t]) for r in anchor.generate_batch(prompts, plain) for t in r.token_ids]
    written = [text for text in texts if text.isascii() and text.isalnum()]  # a one-byte character they write
    stopped = GenerationConfig(max_new_tokens=12, stop_strings=[written[0]])
    for config, reason in ((plain, "eos"), (stopped, "stop_string")):
        single = anchor.generate_batch(prompts, config, batch_size=1)
        assert reason in {r.stop_reason for r in single}
        for batch_size in (3, 7):
            batched = anchor.generate_batch(prompts, config, batch_size=batch_size)
            assert [r.token_ids for r in batched] == [r.token_ids for r in single]
            assert [r.stop_reason for r in batched] == [r.stop_reason for r in single]
            assert all(r.metrics.new_tokens == len(r.token_ids) for r in batched)


def call(strategy: str, batch: int, repeat: int, wall: float, outputs: list[list[int]]) -> dict:
    records = [{"new_tokens": len(t), "target_forwards": len(t), "ttft_ms": 1.0, "tpot_ms": 2.0, "token_ids": t}
               for t in outputs]
    return {"strategy": strategy, "batch_size": batch, "repeat": repeat, "wall_s": wall, "records": records}


def test_rows_take_the_median_ratio_per_repeat_and_match_batch_one():
    a, b, c = [1, 2], [3, 4], [5, 6]
    calls = [call("baseline", 1, 0, 1.0, [a, b]), call("x", 1, 0, 0.5, [a, b]),
             call("baseline", 1, 1, 2.0, [a, b]), call("x", 1, 1, 0.5, [a, b]),
             call("baseline", 1, 2, 1.0, [a, b]), call("x", 1, 2, 1.0, [a, b]),
             call("baseline", 2, 0, 1.0, [a, b]), call("x", 2, 0, 2.0, [a, c])]
    rows = {(r["strategy"], r["batch_size"]): r for r in batch_rows(calls, {("x", 2): 0.7}, greedy=True)}
    x1, x2 = rows["x", 1], rows["x", 2]
    assert (x1["speedup"], x1["speedup_spread"], x1["throughput_tok_s"]) == (2.0, [1.0, 4.0], 8.0)
    assert (x2["speedup"], x2["match_single"], x2["predicted_speedup"]) == (0.5, 0.5, 0.7)
    assert rows["baseline", 2]["speedup"] == 1.0 and x1["match_single"] == 1.0 and x1["predicted_speedup"] is None
    assert batch_rows(calls, {}, greedy=False)[0]["match_single"] is None  # sampled: equality means nothing


def test_the_cost_model_finds_the_crossover_on_synthetic_costs():
    """A pass costs a fixed 10 ms plus 1 ms a row-token: speculation's wider pass is free at batch 1
    and dear at 16. Three tokens per 5-wide pass pay while 3 * (10 + B) > 10 + 5 * B, up to B = 10."""
    verify_ms = {b: {w: 10.0 + b * w for w in (1, 5)} for b in (1, 2, 4, 8, 16)}
    profile = {"tokens_per_step": 3.0, "widths": {5: 1.0}, "propose_ms": 0.0}
    speedups = {b: predict_batch_speedup(profile, verify_ms, b) for b in verify_ms}
    assert speedups[1] == pytest.approx(3 * 11 / 15) and speedups[16] == pytest.approx(3 * 26 / 90)
    assert crossover_batch_size(speedups) == 16 and speedups[8] > 1
    slow = {**profile, "propose_ms": 11.0}  # propose() as measured at that batch size
    assert predict_batch_speedup(slow, verify_ms, 8) == pytest.approx(3 * 18 / (50 + 11))
    assert crossover_batch_size({b: predict_batch_speedup(slow, verify_ms, b) for b in verify_ms}) == 8
    # a prefill that is half the baseline's call, the same for every strategy, halves the gain (Amdahl)
    assert predict_batch_speedup(profile, verify_ms, 1, prefill=0.5) == pytest.approx(1 / (0.5 + 0.5 * 15 / 33))
    assert predict_batch_speedup(profile, verify_ms, 16, prefill=1.0) == pytest.approx(1.0)
    assert crossover_batch_size({1: 1.2, 2: 1.0, 4: 0.9}) == 4 and crossover_batch_size({1: 1.1, 8: 1.0}) is None


def test_the_step_profile_reads_the_records():
    records = [{"accepted_per_step": [2, 0], "proposed_per_step": [3, 3], "propose_ms": 4.0},
               {"accepted_per_step": [1], "proposed_per_step": [2], "propose_ms": 2.0}]
    assert step_profile(records) == {"tokens_per_step": 2.0, "widths": {3: 1 / 3, 4: 2 / 3}, "propose_ms": 2.0}
    assert step_profile([{"accepted_per_step": [], "proposed_per_step": [], "propose_ms": 0.0}])["widths"] == {1: 1.0}
    assert prefill_share([{"ttft_ms": 100.0}, {"ttft_ms": 150.0}], wall_s=1.0) == 0.25


def test_a_batched_pass_pads_to_the_longest_of_its_rows_proposals():
    law = padded_widths({1: 0.5, 5: 0.5}, rows=3)  # all three rows short: 1/8
    assert law == pytest.approx({1: 0.125, 5: 0.875}) and padded_widths({2: 0.3, 4: 0.7}, 1) == {2: 0.3, 4: 0.7}
    verify_ms = {3: {1: 10.0, 5: 30.0}}
    profile = {"tokens_per_step": 2.0, "widths": {1: 0.5, 5: 0.5}, "propose_ms": 0.0}
    assert predict_batch_speedup(profile, verify_ms, 3) == pytest.approx(2 * 10 / (0.125 * 10 + 0.875 * 30))
