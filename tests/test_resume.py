"""Resuming a run directory (experiments.resume): a rerun with other settings is one ConfigError
line naming the differing keys and the fix, before anything is written; dataset.limit may change;
a torn last line of results.jsonl is dropped and redone; damaged files name the fix. In-process,
through run_experiment, on model=tiny-random."""

import json
import logging

import pytest
from hydra import compose, initialize_config_dir

from experiments import resume
from experiments.prompts import load_prompts
from experiments.run import run_experiment
from specdec import ConfigError

from test_bad_inputs import REPO, one_line

BASE = ["model=tiny-random", "dataset.limit=2", "generation.max_new_tokens=4", "runtime.warmup=0"]


def run(run_dir, *overrides: str) -> dict:
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        return run_experiment(compose("config", overrides=[*BASE, *overrides]), run_dir)


def results(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run directory (2 prompts, baseline and draft), to copy."""
    run_dir = tmp_path_factory.mktemp("finished")
    run(run_dir)
    return run_dir


@pytest.fixture
def run_dir(finished, tmp_path):
    copy = tmp_path / "run"
    copy.mkdir()
    for path in finished.iterdir():
        if path.is_file():
            (copy / path.name).write_bytes(path.read_bytes())
    return copy


@pytest.mark.parametrize("overrides,fragment", [
    ("generation.max_new_tokens=8", "generation.max_new_tokens: 4 -> 8"),
    ("generation.temperature=0.5", "generation.temperature: 0.0 -> 0.5"),
    ("generation.stop_strings=[User:]", 'generation.stop_strings: [] -> ["User:"]'),
    ("strategy.gamma=2", 'strategies.draft.gamma: "auto" -> 2'),
    ("strategy=baseline", 'strategies.draft.gamma: "auto" -> null'),
    ("strategy=prompt_lookup", "strategies.prompt_lookup.max_ngram: null -> 3"),
    ("anchors=[hf_generate]", 'anchors: [] -> ["hf_generate"]'),
    ("runtime.seed=1", "runtime.seed: 0 -> 1"),
    ("runtime.kv_cache=dynamic", 'runtime.kv_cache: "preallocated" -> "dynamic"'),
    ("runtime.dtype=float64", 'runtime.dtype: "torch.float32" -> "torch.float64"'),
    ("runtime.layers=stock", 'runtime.layers: "fused" -> "stock"'),
    ("runtime.linear=stock", 'runtime.linear: "auto" -> "stock"'),
    ("draft.num_layers=2", "draft.num_layers: 1 -> 2"),
    ("cache=radix", 'cache.name: "none" -> "radix"'),
    ("dataset.suite=workloads/no_sharing", 'dataset.suite: "embedded" -> "workloads/no_sharing"'),
    ("dataset.chat_template=false", 'dataset.chat_template: "auto" -> false'),
])
def test_other_settings_are_refused_before_anything_is_written(run_dir, overrides, fragment):
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    with pytest.raises(ConfigError) as caught:
        run(run_dir, *overrides.split())
    message = one_line(str(caught.value))
    assert fragment in message and "resume it with the same settings, or start a new run with hydra.run.dir=" in message
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before  # run_info.json too


def test_other_code_is_refused(run_dir, monkeypatch):
    monkeypatch.setattr(resume, "git_commit", lambda: "another-commit")
    with pytest.raises(ConfigError, match=r"code: .* -> \"another-commit\""):
        run(run_dir)


def test_prompts_changed_under_the_same_ids_are_refused(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "Hello there"}\n{"prompt": "Write a loop"}\n')
    run(tmp_path / "run", f"dataset.path={path}")
    path.write_text('{"prompt": "Hello there"}\n{"prompt": "Write a sort"}\n')
    with pytest.raises(ConfigError, match="other settings \\(the prompts with id 1\\)"):
        run(tmp_path / "run", f"dataset.path={path}")


def test_a_smaller_limit_summarises_the_selected_prompts_and_a_larger_one_continues(run_dir):
    summary = run(run_dir, "dataset.limit=1")
    assert summary["draft"]["n_prompts"] == summary["baseline"]["n_prompts"] == 1
    assert len(results(run_dir)) == 4  # the other prompt's records stay in the file
    summary = run(run_dir, "dataset.limit=3")
    assert summary["draft"]["n_prompts"] == 3 and summary["draft"]["match_baseline"] == 1.0
    ids = [p["id"] for p in load_prompts(limit=3)]
    assert sorted((r["prompt_id"], r["strategy"]) for r in results(run_dir)) == sorted(
        (i, s) for i in ids for s in ("baseline", "draft"))
    assert set(json.loads((run_dir / "fingerprint.json").read_text())["prompts"]) == set(ids)


def test_timing_only_settings_resume(run_dir):
    before = results(run_dir)
    assert run(run_dir, "runtime.warmup=1")["draft"]["n_prompts"] == 2
    assert results(run_dir) == before


def test_a_torn_last_line_is_dropped_and_redone(run_dir, caplog):
    complete = results(run_dir)
    text = (run_dir / "results.jsonl").read_text()
    (run_dir / "results.jsonl").write_text(text[: len(text) - 40])  # the last record half written
    with caplog.at_level(logging.WARNING):
        run(run_dir)
    assert "dropped the torn last line" in caplog.text
    redone = results(run_dir)
    assert [(r["prompt_id"], r["strategy"], r["token_ids"]) for r in redone] == [
        (r["prompt_id"], r["strategy"], r["token_ids"]) for r in complete]


def prepend(text: str):
    return lambda d: (d / "results.jsonl").write_text(text + (d / "results.jsonl").read_text())


@pytest.mark.parametrize("damage,fragment", [
    (prepend("{}\n"), "is a duplicate or of an unknown runner"),
    (prepend("{oops\n"), "line 1 is not JSON"),
    (lambda d: (d / "results.jsonl").write_text((d / "results.jsonl").read_text() * 2), "is a duplicate"),
    (lambda d: (d / "fingerprint.json").unlink(), "has no record of the settings it was made with (fingerprint.json"),
    (lambda d: (d / "fingerprint.json").write_text("{not json"), "fingerprint.json is damaged"),
    (lambda d: (d / "fingerprint.json").write_text("[]"), "fingerprint.json is damaged"),
])
def test_damaged_run_directories_name_the_fix(run_dir, damage, fragment):
    damage(run_dir)
    with pytest.raises(ConfigError) as caught:
        run(run_dir)
    assert fragment in one_line(str(caught.value))


def test_a_resume_whose_device_chooses_other_auto_sizes_is_refused(run_dir):
    fingerprint = json.loads((run_dir / "fingerprint.json").read_text())
    gamma = fingerprint["auto_sizes"]["draft"]["gamma"]  # what strategy.gamma=auto chose when the run started
    assert isinstance(gamma, int) and run(run_dir)["draft"]["auto_sizes"]["gamma"] == gamma  # same device: resumes
    fingerprint["auto_sizes"]["draft"]["gamma"] = gamma + 1  # as if another machine had started it
    (run_dir / "fingerprint.json").write_text(json.dumps(fingerprint))
    before = results(run_dir)
    with pytest.raises(ConfigError) as caught:
        run(run_dir)
    assert f'"gamma": {gamma + 1}' in str(caught.value) and "auto now chooses" in one_line(str(caught.value))
    assert results(run_dir) == before
