"""docs/results.md is what `python -m experiments.report --results-doc` writes from results/,
and its sections (and the README's headline table) say what the result directories hold."""

import json
from pathlib import Path

import pytest

from experiments.report import main as report
from experiments.results_doc import HEADER, results_doc

REPO = Path(__file__).resolve().parent.parent


def test_the_committed_results_doc_is_what_the_command_writes():
    doc = REPO / "docs" / "results.md"
    assert doc.read_text() == results_doc(REPO / "results", doc), \
        "docs/results.md is stale: regenerate it with python -m experiments.report --results-doc"


def strategy_summary(speedup, mean_accepted, acceptance_rate, tokens_per_s, match) -> dict:
    return {"n_prompts": 3, "new_tokens": 30, "tokens_per_s": tokens_per_s, "speedup": speedup,
            "speedup_per_prompt": {"median": speedup, "p25": speedup - 0.1, "p75": speedup + 0.1},
            "mean_accepted": mean_accepted, "acceptance_rate": acceptance_rate, "ttft_ms": 12.34, "tpot_ms": 20.0,
            "match_baseline": match}


def write_result(directory: Path, info: dict, notes: str | None = None, plots: tuple[str, ...] = ()) -> None:
    directory.mkdir(parents=True)
    summary = {"baseline": strategy_summary(1.0, 1.0, None, 40.0, 1.0),
               "draft": strategy_summary(1.23456, 1.5678, 0.41234, 49.3821, 1.0)}
    (directory / "summary.json").write_text(json.dumps(summary))
    (directory / "run_info.json").write_text(json.dumps(info))
    if notes is not None:
        (directory / "notes.md").write_text(notes)
    for plot in plots:
        (directory / plot).write_bytes(b"\x89PNG")


@pytest.fixture
def results(tmp_path) -> Path:
    """Two result directories (one with notes and plots, one from before runs recorded their
    command and date) and one that is no result (no run_info.json)."""
    root = tmp_path / "results"
    write_result(root / "b_eagle", {"device": "cpu", "device_name": "Some CPU, 2 cores", "date": "2026-11-30 05:18 UTC",
                                    "git_commit": "abc123", "command": "python -m experiments.run dataset.limit=3",
                                    "config": {}},
                 notes="# EAGLE trees on all prompts\n\nTrees beat chains here.\n\n### Why\n\nThe verify pass is cheap.\n",
                 plots=("speedup_vs_gamma.png", "per_position_acceptance.png"))
    write_result(root / "a_old", {"device": "cuda", "device_name": "Some GPU", "git_commit": "def456", "config": {
        "model": {"name_or_path": "tiny-random"}, "strategy": {"name": "draft", "gamma": 4},
        "dataset": {"suite": "embedded", "limit": 2}, "generation": {"max_new_tokens": 8, "temperature": 0.0}}})
    (root / "partial").mkdir()
    (root / "partial" / "summary.json").write_text("{}")
    return root


def test_results_doc_has_one_section_per_result_directory(results, tmp_path):
    doc = tmp_path / "docs" / "results.md"
    doc.parent.mkdir()
    report(["--results-doc", "--results", str(results), "--doc", str(doc)])
    text = doc.read_text()
    assert text.startswith(HEADER) and "python -m experiments.report --results-doc" in text
    old, eagle = text[len(HEADER):].split("\n## ")[1:]
    assert old.startswith("results/a_old\n") and "partial" not in text  # sorted; no notes: the directory's name
    assert "Run directory: [`results/a_old`](../results/a_old)." in old
    assert "Machine: Some GPU (cuda). Date: not recorded. Commit: `def456`." in old
    assert ("Settings: `model=tiny-random strategy.name=draft strategy.gamma=4 dataset.suite=embedded dataset.limit=2 "
            "generation.max_new_tokens=8 generation.temperature=0.0`") in old
    assert eagle.startswith("EAGLE trees on all prompts\n")
    assert "Machine: Some CPU, 2 cores (cpu). Date: 2026-11-30 05:18 UTC. Commit: `abc123`." in eagle
    assert "Command: `python -m experiments.run dataset.limit=3`" in eagle
    assert ("| strategy | speedup | mean_accepted | acceptance_rate | tokens_per_s | ttft_ms | tpot_ms | match_baseline |"
            in eagle)
    assert "| baseline | 1.000 | 1.00 | - | 40.0 | 12.3 | 20.0 | 1.00 |" in eagle
    assert "| draft | 1.235 | 1.57 | 0.412 | 49.4 | 12.3 | 20.0 | 1.00 |" in eagle
    assert "Trees beat chains here.\n\n### Why\n\nThe verify pass is cheap.\n\n" in eagle
    assert eagle.endswith("![per_position_acceptance](../results/b_eagle/per_position_acceptance.png)\n\n"
                          "![speedup_vs_gamma](../results/b_eagle/speedup_vs_gamma.png)\n")
    assert results_doc(results, doc) == text  # the same files give the same doc


def test_results_doc_without_results_is_the_header(tmp_path):
    assert results_doc(tmp_path / "results", tmp_path / "docs" / "results.md") == HEADER


def test_headline_table_of_one_result_directory(results, capsys):
    report(["--headline", str(results / "b_eagle")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"From `{(results / 'b_eagle').as_posix()}`. Machine: Some CPU, 2 cores (cpu).")
    assert lines[1] == "Command: `python -m experiments.run dataset.limit=3`"
    assert lines[3] == ("| strategy | tokens/s | speedup | per-prompt speedup, median [p25, p75] | mean accepted | "
                        "acceptance rate | match |")
    assert lines[5:] == ["| `baseline` | 40.00 | 1.000x | 1.00 [0.90, 1.10] | 1.00 | - | 1.00 |",
                         "| `draft` | 49.38 | 1.235x | 1.23 [1.13, 1.33] | 1.57 | 0.412 | 1.00 |"]


def test_report_wants_one_thing_to_do(tmp_path):
    with pytest.raises(SystemExit) as exit_:
        report(["--results-doc", str(tmp_path)])
    assert exit_.value.code == 2


def test_a_batch_sweep_directory_gets_its_table_and_crossovers(tmp_path):
    root = tmp_path / "results"
    sweep = root / "batch"
    sweep.mkdir(parents=True)
    (sweep / "run_info.json").write_text(json.dumps({"device": "cpu", "device_name": "Some CPU", "git_commit": "abc",
                                                     "command": "python -m experiments.batch_sweep", "config": {}}))
    (sweep / "batch.md").write_text("| strategy | batch_size | speedup |\n|---|---|---|\n| draft | 8 | 0.912 |\n")
    (sweep / "crossover.json").write_text(json.dumps({"crossover_batch_size": {"draft": {"measured": 8, "predicted": 4}}}))
    (sweep / "notes.md").write_text("# Batches\n\nSpeculation stops paying at 8 rows.\n")
    (sweep / "speedup_vs_batch.png").write_bytes(b"\x89PNG")
    text = results_doc(root, tmp_path / "docs" / "results.md")
    assert "## Batches" in text and "| draft | 8 | 0.912 |" in text and "| draft | 8 | 4 |" in text
    assert "Command: `python -m experiments.batch_sweep`" in text and "![speedup_vs_batch](../results/batch/speedup_vs_batch.png)" in text


def test_a_measuring_mains_directory_shows_its_report_as_printed(tmp_path):
    root = tmp_path / "results"
    profile = root / "step_profile"
    profile.mkdir(parents=True)
    (profile / "run_info.json").write_text(json.dumps({"device": "cpu", "device_name": "Some CPU", "git_commit": "abc",
                                                       "command": "python -m experiments.profile_step", "config": {}}))
    (profile / "report.txt").write_text("decode step: ours 23.5 ms\nverify pass (k tokens): k=2: ours 24.0 ms\n")
    (profile / "notes.md").write_text("# One decode step\n\nCompiled steps reach the floor.\n")
    text = results_doc(root, tmp_path / "docs" / "results.md")
    assert "## One decode step" in text and "Command: `python -m experiments.profile_step`" in text
    assert "```text\ndecode step: ours 23.5 ms\nverify pass (k tokens): k=2: ours 24.0 ms\n```" in text
