"""SIGKILL `experiments.run` and `experiments.bench` at random moments (seeded), resume them until
they finish, and compare with an uninterrupted run: the same token ids for every (prompt,
strategy), no record lost or written twice, and valid summaries, whatever moment a kill hit
(start-up, a generation, an append to results.jsonl, the summary, the cost model, the report)."""

import json
import random
import time

from datasets import load_from_disk
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


TRAIN_DRAFT = ["model=tiny-random", "train.init_layers=[0,2]", "data.passages=4", "data.prompts=24",
               "data.max_new_tokens=6", "data.batch_size=8", "train.held_out_share=0.3", "train.checkpoint_every=1",
               "train.epochs=3"]  # 9 steps, each checkpointed: about half the run trains
TRAIN_KILLS = 5


def test_killed_draft_training_resumes_to_the_same_draft(tmp_path):
    """SIGKILL `experiments.train_draft` anywhere (answering prompts, training, exporting); every
    resume goes on from its work directory, and the exported weights equal, bit for bit, those of
    a run never interrupted. Rounds of kills and resumes, each in a fresh directory and each
    checked, until TRAIN_KILLS kills have landed (a round ends when a resumed run finishes
    before its kill)."""
    rng = random.Random(7)
    launcher = ForkLauncher("experiments.train_draft")

    def command(name: str) -> list[str]:
        folder = tmp_path / name
        return ["experiments.train_draft", *TRAIN_DRAFT, f"work_dir={folder / 'work'}", f"out_dir={folder / 'draft'}",
                f"hydra.run.dir={folder / 'run'}"]

    def weights(name: str) -> bytes:
        return (tmp_path / name / "draft" / "model.safetensors").read_bytes()

    def answers(name: str) -> list[dict]:
        return load_from_disk(str(tmp_path / name / "work" / "answers")).to_list()

    log = tmp_path / "train_draft.log"
    landed, rounds = 0, 0
    try:
        began = time.monotonic()
        kill_and_resume(command("reference"), rng, 0, 0, launcher, log)
        span = time.monotonic() - began  # kills land anywhere in an uninterrupted run's time
        while landed < TRAIN_KILLS:
            landed += kill_and_resume(command(f"killed-{rounds}"), rng, TRAIN_KILLS - landed, span, launcher, log)
            assert weights(f"killed-{rounds}") == weights("reference"), f"round {rounds}"
            assert answers(f"killed-{rounds}") == answers("reference"), f"round {rounds}"  # none lost or twice
            rounds += 1
    finally:
        launcher.close()
    assert landed == TRAIN_KILLS
