"""`python -m experiments.device_check quick=true`: the GPU check's own code on the tiny random
model, as CI runs it. No assertion reads a timing's value."""

import json

from test_cli import entry_points, run  # noqa: F401 (the forking command runner and its fixture)


def test_quick_mode_writes_every_field(tmp_path, run):
    result = run("quick=true", "repeats=2", "hf_steps=4", f"hydra.run.dir={tmp_path}",
                 module="experiments.device_check", fresh=True)
    assert "| prompt_lookup | bfloat16 |" in result.stdout
    check = json.loads((tmp_path / "device_check.json").read_text())
    assert check["torch"] and check["dtype"] == "float32" and check["quick"] and check["model"] == "tiny-random"
    assert set(check["verify_ms"]["eager"]) == {"1", "2", "4", "8"} and check["decode_ms"]["eager"] > 0
    assert check["decode_ms"]["cuda_graphs"] is None and check["hf_decode_ms"]["generate_eager"] > 0
    rows = {(r["strategy"], r["dtype"]): r for r in check["e2e"]}
    assert set(rows) == {(s, d) for s in ("baseline", "draft", "prompt_lookup") for d in ("float32", "bfloat16")}
    for (strategy, dtype), row in rows.items():
        assert row["tokens_per_s"] > 0 and 0 <= row["match_baseline"] <= 1
        if dtype == "float32":  # the lossless reference; bfloat16 may round a near-tie the other way
            assert row["match_baseline"] == 1.0
        assert (tmp_path / dtype / "summary.json").exists()


def test_bad_settings_fail_in_one_line_before_a_model_loads(tmp_path, run):
    for override, message in [("verify_tokens=[2,4]", "verify_tokens must include 1"),
                              ("dtypes=[float8]", "unknown dtype 'float8' in dtypes"),
                              ("repeats=0", "repeats must be an integer >= 1")]:
        result = run(override, f"hydra.run.dir={tmp_path}", module="experiments.device_check", check=False)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, override
