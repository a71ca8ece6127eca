"""A strategy in a user's own file, outside the package, runs by dotted path from the CLI
(run and bench) and from Python: the README's own example, as printed there."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from specdec import ConfigError, Decoder, GenerationConfig
from specdec.strategies import create_strategy
from specdec.tiny import tiny_random_model

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ["model=tiny-random", "dataset.limit=2", "generation.max_new_tokens=12", "runtime.warmup=0",
         "runtime.threads=1"]


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory) -> Path:
    """A folder outside the repository holding the README's my_strategies.py."""
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"<!-- user-strategy: my_strategies.py -->\n```python\n(.*?)```", readme, re.S).group(1)
    assert len(code.splitlines()) <= 25  # the README promises a short, complete strategy
    folder = tmp_path_factory.mktemp("user")
    (folder / "my_strategies.py").write_text(code)
    return folder


def cli(module: str, args: list[str], user_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(user_dir), str(ROOT)])}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=user_dir, env=env, capture_output=True,
                          text=True, timeout=600)


def test_user_strategy_runs_from_the_cli(user_dir, tmp_path):
    out = tmp_path / "run"
    result = cli("experiments.run", [*SMOKE, "strategy=custom", "strategy.target=my_strategies.EchoLookup",
                                     "+strategy.k=4", f"hydra.run.dir={out}"], user_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"baseline", "echo_lookup"}
    assert summary["echo_lookup"]["match_baseline"] == 1.0  # greedy verification keeps it lossless
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert any(sum(r["proposed_per_step"]) for r in records if r["strategy"] == "echo_lookup")


def test_user_strategy_runs_in_the_bench(user_dir, tmp_path):
    out = tmp_path / "bench"
    result = cli("experiments.bench", [*SMOKE, "matrix=[{target: my_strategies.EchoLookup, k: 2}]",
                                       "anchors=[]", "cost_model_max_k=3", f"hydra.run.dir={out}"], user_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads((out / "bench.json").read_text())
    assert any(r["strategy"].startswith("echo_lookup") and r["match_baseline"] == 1.0 for r in rows)


def test_user_strategy_runs_from_python(user_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(user_dir))
    from my_strategies import EchoLookup

    model = tiny_random_model("llama")
    prompt, config = [5, 9, 13, 5, 9, 13, 5], GenerationConfig(max_new_tokens=16)
    expected = Decoder(model, create_strategy("baseline"), eos_token_ids=set()).generate(prompt, config).token_ids
    result = Decoder(model, EchoLookup(k=3), eos_token_ids=set()).generate(prompt, config)
    assert result.token_ids == expected
    assert create_strategy(target="my_strategies.EchoLookup", k=2).k == 2


@pytest.mark.parametrize("target, message", [
    ("my_strategies.Nope", "cannot import strategy.target"),
    ("no_such_module.Thing", "cannot import strategy.target"),
    ("json.dumps", "not a specdec.strategies.Strategy subclass"),
])
def test_bad_targets_are_named(user_dir, monkeypatch, target, message):
    monkeypatch.syspath_prepend(str(user_dir))
    with pytest.raises(ConfigError, match=message):
        create_strategy(target=target)


def test_built_in_options_passed_to_a_user_class_name_the_fix(user_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(user_dir))
    with pytest.raises(ConfigError, match="start from strategy=custom"):
        create_strategy(target="my_strategies.EchoLookup", gamma=2)
