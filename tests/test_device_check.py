"""`python -m experiments.device_check quick=true`: the GPU check's own code on the tiny random
model, as CI runs it. No assertion reads a timing's value."""

import json

import torch
from test_cli import entry_points, run  # noqa: F401 (the forking command runner and its fixture)

from experiments.divergence import divergence, run_mismatches
from specdec.tiny import tiny_random_model


def test_quick_mode_writes_every_field(tmp_path, run):
    result = run("quick=true", "repeats=2", "hf_steps=4", f"hydra.run.dir={tmp_path}",
                 module="experiments.device_check", fresh=True)
    assert "| prompt_lookup | bfloat16 |" in result.stdout
    check = json.loads((tmp_path / "device_check.json").read_text())
    assert check["torch"] and check["dtype"] == "float32" and check["quick"] and check["model"] == "tiny-random"
    assert check["complete"] and list(check["seconds"]) == ["step_costs", "e2e_float32", "e2e_bfloat16", "mismatches"]
    assert set(check["verify_ms"]["eager"]) == {"1", "2", "4", "8"} and check["decode_ms"]["eager"] > 0
    assert check["decode_ms"]["cuda_graphs"] is None and check["hf_decode_ms"]["generate_eager"] > 0
    rows = {(r["strategy"], r["dtype"]): r for r in check["e2e"]}
    assert set(rows) == {(s, d) for s in ("baseline", "draft", "prompt_lookup") for d in ("float32", "bfloat16")}
    for (strategy, dtype), row in rows.items():
        assert row["tokens_per_s"] > 0 and 0 <= row["match_baseline"] <= 1
        if dtype == "float32":  # the lossless reference; bfloat16 may round a near-tie the other way
            assert row["match_baseline"] == 1.0
        assert (tmp_path / dtype / "summary.json").exists()
    found = check["mismatches"]  # every output that left its reference, explained by its margin
    assert not [m for m in found if m["dtype"] == "float32"]
    for (strategy, dtype), row in rows.items():
        left = [m for m in found if (m["strategy"], m["dtype"]) == (strategy, dtype) and m["reference"] == "baseline"]
        assert len(left) == round((1 - row["match_baseline"]) * 3)  # quick mode: 3 prompts
    assert all(m["margin"] >= 0 and m["rounding_steps"] >= 0 for m in found)
    assert ("left their reference" in result.stdout) == bool(found)


def test_divergence_finds_the_first_difference_and_its_margin():
    model = tiny_random_model("llama", dtype=torch.bfloat16)
    prompt, reference = [5, 6, 7], [9, 10, 11, 12]
    assert divergence(model, prompt, reference, reference) is None
    where = divergence(model, prompt, [9, 10, 99, 12], reference)
    with torch.no_grad():
        top = model(input_ids=torch.tensor([prompt + reference[:2]])).logits[0, -1].topk(2).values.float()
    assert where["position"] == 2 and where["margin"] == float(top[0] - top[1])
    spacing = 2.0 ** (torch.floor(torch.log2(top[0].abs())).item() - 7)  # bfloat16 keeps 7 fraction bits
    assert where["rounding_steps"] == round(where["margin"] / spacing, 2)
    assert divergence(model, prompt, reference[:2], reference)["position"] == 2  # a shorter output parts at its end


def test_bad_settings_fail_in_one_line_before_a_model_loads(tmp_path, run):
    for override, message in [("verify_tokens=[2,4]", "verify_tokens must include 1"),
                              ("dtypes=[float8]", "unknown dtype 'float8' in dtypes"),
                              ("repeats=0", "repeats must be an integer >= 1")]:
        result = run(override, f"hydra.run.dir={tmp_path}", module="experiments.device_check", check=False)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, override


def test_run_mismatches_compares_strategies_with_their_baseline_and_baselines_with_float32(tmp_path):
    model = tiny_random_model("llama")
    def write(run: str, rows: list[tuple[str, str, list[int]]]) -> None:
        (tmp_path / run).mkdir()
        (tmp_path / run / "results.jsonl").write_text("".join(
            json.dumps({"strategy": s, "prompt_id": p, "token_ids": t, "greedy": True}) + "\n" for s, p, t in rows))
    write("float32", [("baseline", "a", [1, 2, 3]), ("baseline", "b", [4, 5])])
    write("bfloat16", [("baseline", "a", [1, 2, 3]), ("baseline", "b", [4, 6]),
                       ("draft", "a", [1, 7, 3]), ("draft", "b", [4, 6])])
    found = run_mismatches(tmp_path / "bfloat16", model, {"a": [8, 9], "b": [10]}, tmp_path / "float32")
    assert [(m["strategy"], m["reference"], m["prompt_id"], m["position"]) for m in found] == [
        ("baseline", "float32", "b", 1), ("draft", "baseline", "a", 1)]
    assert run_mismatches(tmp_path / "float32", model, {"a": [8, 9], "b": [10]}) == []
