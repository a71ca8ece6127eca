"""`python -m experiments.run` end to end with model=tiny-random: files, summary, sweeps, errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SUMMARY_FIELDS = {"n_prompts", "new_tokens", "tokens_per_s", "speedup", "mean_accepted", "acceptance_rate",
                  "ttft_ms", "tpot_ms", "match_baseline"}


def run(*overrides, check=True):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    flags = [o for o in overrides if o.startswith("-")]  # hydra wants flags before overrides
    overrides = [o for o in overrides if not o.startswith("-")]
    result = subprocess.run([sys.executable, "-m", "experiments.run", *flags, "model=tiny-random", *overrides],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_default_strategy_end_to_end(tmp_path):
    result = run("dataset.limit=3", "generation.max_new_tokens=12", f"hydra.run.dir={tmp_path}",
                 "anchors=[hf_generate]")
    assert "baseline" in result.stdout and "draft" in result.stdout and "hf_generate" in result.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary) == {"baseline", "draft", "hf_generate"}
    for entry in summary.values():
        assert SUMMARY_FIELDS <= set(entry)
    assert summary["baseline"]["speedup"] == 1.0 and summary["baseline"]["mean_accepted"] == 1.0
    assert summary["draft"]["match_baseline"] == 1.0 and summary["hf_generate"]["match_baseline"] == 1.0
    assert summary["draft"]["acceptance_rate"] is not None
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(records) == 9 and {r["strategy"] for r in records} == set(summary)
    assert all(r["new_tokens"] == len(r["token_ids"]) <= 12 for r in records)
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["config"]["strategy"]["gamma"] == 4 and info["git_commit"] and info["versions"]["torch"]


def test_custom_dataset_sampling_and_baseline_only(tmp_path):
    suite = tmp_path / "suite.jsonl"
    suite.write_text('{"prompt": "Hello there", "category": "greet"}\n{"prompt": "Write a loop", "id": "c1"}\n')
    run(f"dataset.path={suite}", "strategy=baseline", "generation.temperature=0.8", "generation.max_new_tokens=6",
        "runtime.kv_cache=preallocated",
        "runtime.device=cpu", "runtime.seed=3", f"hydra.run.dir={tmp_path / 'out'}")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert list(summary) == ["baseline"] and summary["baseline"]["n_prompts"] == 2
    assert summary["baseline"]["match_baseline"] is None  # sampled: token equality means nothing
    assert set(summary["baseline"]["by_category"]) == {"greet", "all"}


def test_radix_cache_runs_with_and_without(tmp_path):
    shared = "You are a careful assistant. Answer briefly and cite the handbook. " * 3
    suite = tmp_path / "shared.jsonl"
    suite.write_text("".join(json.dumps({"prompt": shared + q}) + "\n" for q in ["Hi?", "Why?", "How so?", "When?"]))
    run(f"dataset.path={suite}", "strategy=baseline", "cache=radix", "cache.order=longest_prefix",
        "generation.max_new_tokens=5", "runtime.warmup=1", f"hydra.run.dir={tmp_path / 'out'}")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert list(summary) == ["baseline", "baseline+radix"]
    cached = summary["baseline+radix"]
    assert cached["match_baseline"] == 1.0 and summary["baseline"]["hit_rate"] == 0.0
    assert 0 < cached["hit_rate"] <= cached["ideal_hit_rate"] and cached["hit_rate"] >= 0.95 * cached["ideal_hit_rate"]


def test_gamma_sweep(tmp_path):
    run("-m", "strategy.gamma=1,3", "dataset.limit=2", "generation.max_new_tokens=8", f"hydra.sweep.dir={tmp_path}")
    summaries = sorted(tmp_path.glob("*/summary.json"))
    assert len(summaries) == 2
    for path in summaries:
        assert json.loads(path.read_text())["draft"]["match_baseline"] == 1.0


@pytest.mark.parametrize("override,message", [
    ("strategy.name=nope", "unknown strategy 'nope'; known strategies: baseline, draft"),
    ("strategy.gamma=0", "strategy.gamma must be an integer >= 1"),
    ("generation.max_new_tokens=2000", "exceeds the model's context"),
    ("model.name_or_path=/no/such/dir", "cannot load model"),
    ("dataset=gsm8k", "cannot load the public suite 'openai/gsm8k'"),
    ("dataset=spec_bench", "offline, use dataset=embedded"),
])
def test_bad_input_gives_a_clear_error(tmp_path, override, message):
    result = run(override, "dataset.limit=1", f"hydra.run.dir={tmp_path}", check=False)
    assert result.returncode == 2
    assert message in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
