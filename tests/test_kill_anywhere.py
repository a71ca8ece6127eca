"""SIGKILL `experiments.run` and `experiments.bench` at random moments (seeded), resume them until
they finish, and compare with an uninterrupted run: the same token ids for every (prompt,
strategy), no record lost or written twice, and valid summaries, whatever moment a kill hit
(start-up, a generation, an append to results.jsonl, the summary, the cost model, the report)."""

import json
import random
import time

from killing import ForkLauncher, kill_and_resume

TINY = ["model=tiny-random", "dataset.limit=3", "generation.max_new_tokens=8", "runtime.warmup=0", "runtime.threads=1"]
COMMANDS = {  # module -> (its arguments, kills)
    "experiments.run": (TINY + ["anchors=[hf_generate]"], 10),
    "experiments.bench": (TINY + ["matrix=[{name:draft,gamma:2},{name:prompt_lookup}]", "anchors=[hf_generate]",
                                  "cost_model_max_k=3"], 10),
}


def records(run_dir) -> dict:
    """(prompt, strategy) -> token ids, from results.jsonl, asserting that no line is torn or repeated."""
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    keyed = {(r["prompt_id"], r["strategy"]): r["token_ids"] for r in rows}
    assert len(keyed) == len(rows), "a record was written twice"
    return keyed


def assert_same_outcome(run_dir, reference, bench: bool) -> None:
    assert records(run_dir) == records(reference)
    summary, expected = (json.loads((d / "summary.json").read_text()) for d in (run_dir, reference))
    assert {k: v["n_prompts"] for k, v in summary.items()} == {k: v["n_prompts"] for k, v in expected.items()}
    assert all(v["match_baseline"] == 1.0 for v in summary.values())
    if bench:
        rows, expected_rows = (json.loads((d / "bench.json").read_text()) for d in (run_dir, reference))
        assert [(r["strategy"], r["category"]) for r in rows] == [(r["strategy"], r["category"]) for r in expected_rows]
        costs = json.loads((run_dir / "cost_model.json").read_text())
        assert set(costs["predicted_speedup"]) == {"draft(gamma=2)", "prompt_lookup"}


def test_killed_runs_and_benches_resume_to_the_uninterrupted_outcome(tmp_path):
    rng = random.Random(23)
    launcher = ForkLauncher(*COMMANDS)
    total = 0
    try:
        for module, (args, kills) in COMMANDS.items():
            log = tmp_path / f"{module}.log"
            reference = tmp_path / f"{module}-reference"
            kill_and_resume([module, *args, f"hydra.run.dir={reference}"], rng, 0, 0, launcher, log)
            began = time.monotonic()  # a second uninterrupted run, warm (the first may time products, once)
            kill_and_resume([module, *args, f"hydra.run.dir={tmp_path / module}"], rng, 0, 0, launcher, log)
            span = time.monotonic() - began  # kills land anywhere in an uninterrupted run's time
            assert_same_outcome(tmp_path / module, reference, bench=module == "experiments.bench")
            landed, rounds = 0, 0
            while landed < kills:
                run_dir = tmp_path / f"{module}-{rounds}"
                landed += kill_and_resume([module, *args, f"hydra.run.dir={run_dir}"], rng, kills - landed, span,
                                          launcher, log)
                assert_same_outcome(run_dir, reference, bench=module == "experiments.bench")
                rounds += 1
            total += landed
    finally:
        launcher.close()
    assert total >= 20
