"""Sweeps: a multirun's records carry their settings, `experiments.report` puts every job in
one table with the swept knobs as columns and plots against each knob; end to end on
model=tiny-random with the joblib launcher (configs/hydra/launcher/local_parallel.yaml)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from experiments.settings import strategy_settings
from experiments.sweep_report import override_values, write_sweep_report

REPO = Path(__file__).resolve().parent.parent


def python_m(module: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_joblib_gamma_sweep_and_its_report(tmp_path):
    sweep = tmp_path / "sweep"
    result = python_m("experiments.run", "-m", "hydra/launcher=local_parallel", "model=tiny-random", "strategy=draft",
                      "strategy.gamma=1,2", "dataset.limit=2", "generation.max_new_tokens=8", "runtime.warmup=0",
                      "runtime.threads=1", f"hydra.sweep.dir={sweep}")
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr  # the launcher ran the jobs, two at a time
    jobs = sorted(p.parent for p in sweep.glob("*/results.jsonl"))
    assert len(jobs) == 2
    for gamma, job in zip((1, 2), jobs):
        records = pd.read_json(job / "results.jsonl", lines=True)
        assert set(records["strategy"]) == {"baseline", "draft"} and len(records) == 4
        assert (records["strategy.gamma"] == gamma).all() and (records["strategy.name"] == "draft").all()
        assert (records["generation.max_new_tokens"] == 8).all() and (records["model"] == "tiny-random").all()
        assert (records["dataset"] == "embedded").all() and (records["dataset.limit"] == 2).all()
        assert all(f"strategy.gamma={gamma}" in run for run in records["run"])
        assert all(f"strategy.gamma={gamma}" in overrides for overrides in records["overrides"])
        info = json.loads((job / "run_info.json").read_text())
        assert info["command"].startswith("python -m experiments.run ") and f"strategy.gamma={gamma}" in info["command"]

    report = python_m("experiments.report", str(sweep))
    assert "| run | strategy.gamma | strategy |" in report.stdout
    table = pd.read_csv(sweep / "sweep.csv")
    assert list(table["run"]) == ["strategy.gamma=1"] * 2 + ["strategy.gamma=2"] * 2
    assert list(table["strategy.gamma"]) == [1, 1, 2, 2] and list(table["strategy"]) == ["baseline", "draft"] * 2
    assert (table["n_prompts"] == 2).all() and (table["match_baseline"] == 1.0).all()
    assert (table.loc[table["strategy"] == "baseline", "speedup"] == 1.0).all()
    drafted = table[table["strategy"] == "draft"]  # the plotted line: one point per gamma
    assert drafted["speedup"].notna().all() and (drafted["speedup"] > 0).all() and (drafted["mean_accepted"] >= 1).all()
    assert sorted(drafted["strategy.gamma"]) == [1, 2]
    assert json.loads((sweep / "sweep.json").read_text()) == json.loads(table.to_json(orient="records"))
    for name in ("sweep.md", "speedup_vs_strategy.gamma.png", "mean_accepted_vs_strategy.gamma.png"):
        assert (sweep / name).stat().st_size > 0


def record(strategy: str, prompt: int, total_ms: float, accepted: list[int]) -> dict:
    """A results.jsonl record of 10 greedy tokens: `accepted` drafts per step, one target pass each."""
    new_tokens = 10
    return {"prompt_id": f"p{prompt}", "category": "chat", "strategy": strategy, "greedy": True,
            "prompt_tokens": 20, "cached_prompt_tokens": 0, "new_tokens": new_tokens,
            "target_forwards": len(accepted), "accepted_per_step": accepted,
            "proposed_per_step": [max(accepted)] * len(accepted), "ttft_ms": 5.0, "tpot_ms": total_ms / new_tokens,
            "total_ms": total_ms, "tokens_per_s": new_tokens / total_ms * 1000, "token_ids": list(range(new_tokens))}


def write_job(sweep: Path, number: int, overrides: list[str], gamma: int) -> None:
    """A job directory whose draft runs `gamma` times as fast as its baseline, accepting gamma - 1 per step."""
    job = sweep / f"{number}_job"
    job.mkdir(parents=True)
    (job / "run_info.json").write_text(json.dumps({"overrides": overrides}))
    rows = [record("baseline", p, 100.0, [0] * 10) for p in range(2)]
    rows += [record("draft", p, 100.0 / gamma, [gamma - 1] * (10 // gamma)) for p in range(2)]
    (job / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_report_of_a_two_knob_sweep(tmp_path):
    """gamma x temperature: both are knobs, the common model is not; speedup is against each
    job's own baseline, so each line holds one point per value of its knob."""
    sweep = tmp_path / "multirun"
    grid = [(gamma, temperature) for gamma in (2, 5) for temperature in (0.0, 0.7)]
    for number, (gamma, temperature) in enumerate(grid):
        write_job(sweep, number, ["model=tiny-random", f"strategy.gamma={gamma}", f"generation.temperature={temperature}"],
                  gamma)
    table = write_sweep_report(sweep, tmp_path / "out")
    assert list(table.columns[:4]) == ["run", "generation.temperature", "strategy.gamma", "strategy"]
    assert list(table["run"][::2]) == [f"generation.temperature={t},strategy.gamma={g}" for g, t in grid]
    drafted = table[table["strategy"] == "draft"]
    assert list(drafted["speedup"]) == list(drafted["mean_accepted"]) == [2.0, 2.0, 5.0, 5.0]
    for knob in ("strategy.gamma", "generation.temperature"):
        for metric in ("speedup", "mean_accepted"):
            assert (tmp_path / "out" / f"{metric}_vs_{knob}.png").stat().st_size > 0
    assert (tmp_path / "out" / "sweep.md").read_text().count("\n") == 2 + 8


def test_a_swept_strategy_group_keeps_the_strategy_column(tmp_path):
    for number, name in enumerate(("draft", "eagle")):
        write_job(tmp_path / "multirun", number, [f"strategy={name}"], 2)
    table = write_sweep_report(tmp_path / "multirun", tmp_path / "multirun")
    assert list(table["strategy_config"]) == ["draft", "draft", "eagle", "eagle"]
    assert list(table["strategy"]) == ["baseline", "draft"] * 2 and list(table["run"][::2]) == ["strategy=draft", "strategy=eagle"]
    assert (tmp_path / "multirun" / "speedup_vs_strategy_config.png").stat().st_size > 0


def test_override_values_are_typed_as_yaml_reads_them():
    assert override_values(["strategy.gamma=2", "generation.temperature=0.7", "strategy=draft", "dataset.limit=null",
                            "+anchors=[hf_generate]", "~cache.salt"]) == {
        "strategy.gamma": 2, "generation.temperature": 0.7, "strategy": "draft", "dataset.limit": None,
        "anchors": "[hf_generate]", "cache.salt": None}


def test_strategy_columns_of_each_runner():
    """experiments.run (one strategy): every runner carries its options; experiments.bench (a
    matrix): each strategy and its +radix twin their own, the baseline and anchors none."""
    one = strategy_settings({"baseline": 0, "draft": 0, "draft+radix": 0, "hf_generate": 0},
                            {"draft": {"name": "draft", "gamma": 4}})
    assert all(columns == {"strategy.name": "draft", "strategy.gamma": 4} for columns in one.values())
    matrix = strategy_settings({"baseline": 0, "draft(gamma=2)": 0, "draft(gamma=3)+radix": 0, "hf_generate": 0},
                               {"draft(gamma=2)": {"name": "draft", "gamma": 2}, "draft(gamma=3)": {"name": "draft", "gamma": 3}})
    assert matrix["baseline"] == matrix["hf_generate"] == {}
    assert matrix["draft(gamma=2)"]["strategy.gamma"] == 2 and matrix["draft(gamma=3)+radix"]["strategy.gamma"] == 3
