"""The entry points end to end with model=tiny-random: `experiments.run` (files, summary,
sweeps, errors), `experiments.cache_bench`, `experiments.profile_step`, `experiments.train_draft`,
`experiments.train_medusa` (and `experiments.medusa_trees` on its heads) and
`experiments.train_eagle` (with resume).

Commands run as `python -m module` would (runpy, `__main__`, their own process, exit status,
stdout and stderr), forked from one process per test worker that imported the entry points once
(tests/fork_server.py), which saves the seconds of imports each start costs. Entry points that no
other test starts as a real `python -m` process start so here once each (`fresh=True`)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from killing import ENV, ForkLauncher

from experiments.bench import with_defaults

REPO = Path(__file__).resolve().parent.parent
SUMMARY_FIELDS = {"n_prompts", "new_tokens", "tokens_per_s", "speedup", "mean_accepted", "acceptance_rate",
                  "ttft_ms", "tpot_ms", "match_baseline"}


ENTRY_POINTS = ("experiments.run", "experiments.bench", "experiments.cache_bench", "experiments.report",
                "experiments.profile_step", "experiments.train_draft", "experiments.train_medusa",
                "experiments.train_eagle", "experiments.medusa_trees", "experiments.device_check")


@pytest.fixture(scope="session")
def entry_points():
    launcher = ForkLauncher(*ENTRY_POINTS)
    yield launcher
    launcher.close()


@pytest.fixture
def run(entry_points):
    """run(*overrides, check, module, fresh): `python -m module [flags] model=tiny-random overrides`;
    fresh=True starts a new interpreter, else a fork of `entry_points`."""

    def run(*overrides, check=True, module="experiments.run", fresh=False):
        flags = [o for o in overrides if o.startswith("-")]  # hydra wants flags before overrides
        command = [module, *flags, "model=tiny-random", *[o for o in overrides if not o.startswith("-")]]
        if fresh:
            result = subprocess.run([sys.executable, "-m", *command], cwd=REPO, env=ENV, capture_output=True, text=True,
                                    timeout=300)
        else:
            result = entry_points.run(command, timeout=300)
        if check:
            assert result.returncode == 0, result.stderr[-3000:]
        return result

    return run


def test_default_strategy_end_to_end(tmp_path, run):
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
    assert info["config"]["strategy"]["gamma"] == "auto" and info["git_commit"] and info["versions"]["torch"]
    chosen = summary["draft"]["auto_sizes"]  # what auto chose on this machine, with its prediction
    assert chosen["gamma"] >= 1 and chosen["predicted_speedup"] > 0 and "auto_sizes" not in summary["hf_generate"]
    fingerprint = json.loads((tmp_path / "fingerprint.json").read_text())  # what a resume must match
    assert fingerprint["settings"]["strategies.draft.gamma"] == "auto" and len(fingerprint["prompts"]) == 3
    assert fingerprint["settings"]["anchors"] == ["hf_generate"] and "dataset.limit" not in fingerprint["settings"]


def test_custom_dataset_sampling_and_baseline_only(tmp_path, run):
    suite = tmp_path / "suite.jsonl"
    suite.write_text('{"prompt": "Hello there", "category": "greet"}\n{"prompt": "Write a loop", "id": "c1"}\n')
    run(f"dataset.path={suite}", "strategy=baseline", "generation.temperature=0.8", "generation.max_new_tokens=6",
        "runtime.kv_cache=preallocated",
        "runtime.device=cpu", "runtime.seed=3", f"hydra.run.dir={tmp_path / 'out'}")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert list(summary) == ["baseline"] and summary["baseline"]["n_prompts"] == 2
    assert summary["baseline"]["match_baseline"] is None  # sampled: token equality means nothing
    assert summary["baseline"]["target_nll"] > 0  # quality: the target's NLL per generated token
    assert set(summary["baseline"]["by_category"]) == {"greet", "all"}


def test_radix_cache_runs_with_and_without(tmp_path, run):
    """Two tenants (the second prompt of each pair is another salt's) on partitioned caches: the
    ideal hit rate counts only sharing within a salt, and the cache reaches it and no more."""
    shared = "You are a careful assistant. Answer briefly and cite the handbook. " * 3
    suite = tmp_path / "shared.jsonl"
    rows = [{"prompt": shared + q, **({"salt": "acme"} if i % 2 else {})}
            for i, q in enumerate(["Hi?", "Why?", "How so?", "When?", "Where?", "Who?"])]
    suite.write_text("".join(json.dumps(row) + "\n" for row in rows))
    run(f"dataset.path={suite}", "strategy=baseline", "cache=radix", "cache.order=longest_prefix",
        "cache.isolation=partitioned", "generation.max_new_tokens=5", "runtime.warmup=1",
        f"hydra.run.dir={tmp_path / 'out'}")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert list(summary) == ["baseline", "baseline+radix"]
    cached = summary["baseline+radix"]
    assert cached["match_baseline"] == 1.0 and summary["baseline"]["hit_rate"] == 0.0
    assert 0 < cached["hit_rate"] <= cached["ideal_hit_rate"] and cached["hit_rate"] >= 0.95 * cached["ideal_hit_rate"]


def test_cache_bench_writes_a_row_a_workload_and_resumes(tmp_path, run):
    out = tmp_path / "out"
    settings = ["workloads=[shared_system,few_shot]", "suites.shared_system.suite=embedded", "suites.shared_system.limit=3",
                "suites.few_shot.suite=embedded", "suites.few_shot.limit=2", "suites.few_shot.max_bytes=1000",
                "generation.max_new_tokens=3", "runtime.warmup=1", f"hydra.run.dir={out}"]
    run(*settings, module="experiments.cache_bench")
    rows = json.loads((out / "cache_bench.json").read_text())
    assert [(r["workload"], r["prompts"], r["match_baseline"]) for r in rows] == [("shared_system", 3, 1.0), ("few_shot", 2, 1.0)]
    records = [json.loads(line) for line in (out / "shared_system" / "results.jsonl").read_text().splitlines()]
    assert all(r["cache_load_ms"] > 0 and r["cache_insert_ms"] > 0 for r in records if r["strategy"] == "baseline+radix")
    assert json.loads((out / "few_shot" / "summary.json").read_text())["baseline+radix"]["cache"]["bytes_in_use"] == 0
    table = (out / "cache_bench.md").read_text()
    run(*settings, module="experiments.cache_bench")  # everything done: the same table again
    assert (out / "cache_bench.md").read_text() == table


@pytest.mark.parametrize("override,message", [
    ("cache.max_bytes=lots", "cache.max_bytes must be a whole number of bytes above 0 (got 'lots')"),
    ("cache.max_bytes=0", "cache.max_bytes must be a whole number of bytes above 0 (got 0)"),
    ("cache.isolation=private", "unknown cache.isolation 'private': use shared or partitioned"),
])
def test_bad_cache_settings_fail_before_any_model_loads(tmp_path, run, override, message):
    result = run("cache=radix", override, "model.name_or_path=/no/such/dir", f"hydra.run.dir={tmp_path}", check=False)
    output = result.stderr + result.stdout
    assert result.returncode == 2 and message in output  # not "cannot load model": nothing was loaded
    assert "Traceback" not in output and "cannot load model" not in output


def test_gamma_sweep(tmp_path, run):
    run("-m", "strategy.gamma=1,3", "dataset.limit=2", "generation.max_new_tokens=8", f"hydra.sweep.dir={tmp_path}")
    summaries = sorted(tmp_path.glob("*/summary.json"))
    assert len(summaries) == 2
    for path in summaries:
        assert json.loads(path.read_text())["draft"]["match_baseline"] == 1.0


@pytest.mark.parametrize("override,message", [
    ("strategy.name=nope", "unknown strategy 'nope'; known strategies: baseline, draft"),
    ("strategy.gamma=0", "strategy.gamma must be auto (the best predicted size on this device) or an integer >= 1"),
    ("generation.max_new_tokens=2000", "exceeds the model's context"),
    ("model.name_or_path=/no/such/dir", "cannot load model"),
    ("dataset=gsm8k", "cannot load the public suite 'openai/gsm8k'"),
    ("dataset=spec_bench", "offline, use dataset=embedded"),
])
def test_bad_input_gives_a_clear_error(tmp_path, run, override, message):
    result = run(override, "dataset.limit=1", f"hydra.run.dir={tmp_path}", check=False)
    assert result.returncode == 2
    assert message in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("runtime", [[], ["runtime.kv_cache=static", "runtime.compile=true"]], ids=["eager", "compiled"])
def test_profile_step_writes_the_step_profile(tmp_path, run, runtime):
    result = run("repeats=3", "warmup=1", "context_tokens=20", "verify_tokens=[2,4]", "host_step_repeats=2", *runtime,
                 f"hydra.run.dir={tmp_path}", module="experiments.profile_step", fresh=True)
    assert "decode step" in result.stdout
    profile = json.loads((tmp_path / "step_profile.json").read_text())
    for key in ("decode_ms", "hf_decode_ms", "linear_floor_ms"):
        assert profile[key] > 0
    assert set(profile["verify_ms"]) == set(profile["hf_verify_ms"]) == {"2", "4"}
    assert set(profile["breakdown_ms"]["ours"]) == {"matrix products", "cache", "attention", "other"}
    host = profile["host_step"]  # whole decode-loop steps, ours against generate's
    assert host["ours"]["ops"] > 0 and host["generate"]["ops"] > 0
    assert host["ratio"]["ops"] == round(host["ours"]["ops"] / host["generate"]["ops"], 3)
    assert "whole decode-loop step" in result.stdout
    assert (tmp_path / "report.txt").read_text() in result.stdout  # the directory can go under results/ as it is
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["command"].startswith("python -m experiments.profile_step") and info["device"] == "cpu"
    assert profile["compiles_after_warmup"] == 0  # compiled steps (and the host step over them) compile at warm-up


def test_train_draft_trains_exports_and_resumes(tmp_path, run):
    args = ["train.init_layers=[0,2]", "data.passages=4", "data.prompts=24", "data.max_new_tokens=6", "data.batch_size=8",
            "train.held_out_share=0.3", "train.checkpoint_every=1", f"work_dir={tmp_path / 'work'}",
            f"out_dir={tmp_path / 'draft'}", f"hydra.run.dir={tmp_path / 'run'}"]
    run(*args, module="experiments.train_draft", fresh=True)
    meta = json.loads((tmp_path / "draft" / "specdec_draft.json").read_text())
    assert meta["steps"] == meta["planned_steps"] > 0 and len(meta["data_sha256"]) == 64
    assert meta["data_sequences"] == 4 + 24 and meta["held_out_top1_after"] is not None
    assert {"config.json", "model.safetensors", "tokens_by_frequency.json"} <= {p.name for p in (tmp_path / "draft").iterdir()}
    answers = tmp_path / "work" / "answers"
    data = {p.name: p.read_bytes() for p in answers.iterdir()}
    again = run(*args, module="experiments.train_draft")  # resumes: no prompt answered twice, no step retrained
    assert {p.name: p.read_bytes() for p in answers.iterdir()} == data and not (tmp_path / "work" / "answers.parts").exists()
    assert "resumed from" in again.stdout + again.stderr
    run("dataset.limit=2", "generation.max_new_tokens=8", f"draft.name_or_path={tmp_path / 'draft'}",
        "draft.head_tokens=64", f"hydra.run.dir={tmp_path / 'eval'}")
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["draft"]["match_baseline"] == 1.0


def train_resume_and_run(run, tmp_path, strategy: str, args: list[str], out, config_file: str, weights_file: str,
                         option: str, fresh: bool, *settings: str) -> tuple[dict, dict]:
    """`experiments.train_<strategy>` end to end: train and export to `out` (its record, its weights
    and token frequencies), rerun to resume, then `strategy=<strategy>` with the exported files
    (`strategy.<option>=out`, and `settings`) on 2 prompts: (the training record, the strategy's summary)."""
    run(*args, module=f"experiments.train_{strategy}", fresh=fresh)
    meta = json.loads((out / config_file).read_text())
    assert meta["steps"] == meta["planned_steps"] > 0 and len(meta["data_sha256"]) == 64
    assert {weights_file, "tokens_by_frequency.json"} <= {p.name for p in out.iterdir()}
    again = run(*args, module=f"experiments.train_{strategy}")
    assert "resumed from" in again.stdout + again.stderr
    run(f"strategy={strategy}", f"strategy.{option}={out}", "strategy.head_tokens=100", "dataset.limit=2",
        "generation.max_new_tokens=10", f"hydra.run.dir={tmp_path / 'eval'}", *settings)
    return meta, json.loads((tmp_path / "eval" / "summary.json").read_text())[strategy]


def test_train_medusa_trains_exports_resumes_and_runs(tmp_path, run):
    args = ["data.passages=2", "data.prompts=16", "data.max_new_tokens=8", "data.batch_size=8", "heads.num_heads=3",
            "train.held_out_share=0.4", "train.epochs=2", "train.batch_positions=32", "train.checkpoint_every=1",
            "train.head_tokens=200", "tree.max_nodes=4", "tree.context_tokens=16",
            f"work_dir={tmp_path / 'work'}", f"out_dir={tmp_path / 'heads'}", f"hydra.run.dir={tmp_path / 'run'}"]
    meta, summary = train_resume_and_run(run, tmp_path, "medusa", args, tmp_path / "heads", "medusa_config.json",
                                         "medusa_heads.safetensors", "heads", True, "strategy.tree=null")  # its default tree
    assert meta["data_sequences"] == 2 * (2 + 16)  # two seeds, as the EAGLE draft's
    assert len(meta["held_out_top1"]) == len(meta["held_out_top5"]) == len(meta["topk_accuracy"]) == 3
    assert 1 <= len(meta["default_tree"]) <= 4 and meta["tree_choice"]["nodes"] == len(meta["default_tree"])
    assert summary["match_baseline"] == 1.0 and len(summary["head_accuracy"]) == 3
    assert summary["acceptance_rate"] is None and summary["per_position_acceptance"]
    # the tree sweep on the same prompts: the default tree is the best tree of its size, so it
    # finds the mean accepted tokens that decoding with it measured
    result = run(f"strategy.heads={tmp_path / 'heads'}", "strategy.head_tokens=100", "dataset.limit=2",
                 "generation.max_new_tokens=10", "sizes=[1,2,3,4]", f"hydra.run.dir={tmp_path / 'trees'}",
                 module="experiments.medusa_trees", fresh=True)
    sweep = json.loads((tmp_path / "trees" / "medusa_trees.json").read_text())
    assert sweep["prompts"] == 2 and "| nodes | depth | mean accepted |" in result.stdout
    default_tree = json.loads((tmp_path / "heads" / "medusa_config.json").read_text())["default_tree"]  # the resume's
    assert sweep["sizes"][str(len(default_tree))]["mean_accepted"] == round(summary["mean_accepted"], 3)
    wrong = run("strategy=draft", f"hydra.run.dir={tmp_path / 'wrong'}", module="experiments.medusa_trees", check=False)
    assert wrong.returncode == 2 and "sweeps Medusa trees: drop strategy=draft" in wrong.stderr + wrong.stdout


def test_train_eagle_trains_exports_resumes_and_runs(tmp_path, run):
    args = ["data.seeds=[0,1]", "data.passages=2", "data.prompts=8", "data.max_new_tokens=8", "data.batch_size=8",
            "train.held_out_share=0.4", "train.epochs=2", "train.batch_tokens=256", "train.checkpoint_every=1",
            "train.head_tokens=200", f"work_dir={tmp_path / 'work'}", f"out_dir={tmp_path / 'eagle'}",
            f"hydra.run.dir={tmp_path / 'run'}"]
    meta, summary = train_resume_and_run(run, tmp_path, "eagle", args, tmp_path / "eagle", "eagle_config.json",
                                         "eagle_draft.safetensors", "draft", fresh=False)  # fresh: test_training_errors
    assert meta["data_sequences"] == 2 * (2 + 8) and len(meta["held_out_top1"]) == 3  # two seeds; unroll 3
    assert summary["match_baseline"] == 1.0 and summary["per_position_acceptance"]


def test_bench_entries_run_what_the_strategy_config_runs():
    """A matrix entry takes its strategy file's settings (Medusa's head_tokens was left at the
    constructor's full head before), its own settings first."""
    assert with_defaults({"name": "medusa"})["head_tokens"] == 8192
    assert with_defaults({"name": "medusa", "head_tokens": None})["head_tokens"] is None
    draft = with_defaults({"name": "draft", "gamma": 2})
    assert draft["gamma"] == 2 and draft["gamma_schedule"] == "constant"
    assert with_defaults({"name": "mine", "k": 1}) == {"name": "mine", "k": 1}  # no config file: as given
    tree = with_defaults({"name": "eagle_tree", "tree_nodes": 8})  # a file over eagle.yaml, as Hydra composes it
    assert (tree["name"], tree["tree_nodes"], tree["gamma"], tree["head_tokens"]) == ("eagle", 8, "auto", 8192)


def test_bench_matrix_with_anchors_report_and_resume(tmp_path, run, entry_points):
    args = ["dataset.limit=3", "generation.max_new_tokens=10", "runtime.warmup=1", "cost_model_max_k=4",
            "matrix=[{name:draft,gamma:2},{name:draft,gamma:3,stop_below_prob:0}]", "anchors=[hf_generate,hf_assisted]",
            f"hydra.run.dir={tmp_path}"]
    run(*args, module="experiments.bench")
    rows = json.loads((tmp_path / "bench.json").read_text())
    # the anchor mirrors gamma and the confidence stop (0.4 from configs/strategy/draft.yaml, or as given)
    strategies = {"baseline", "draft(gamma=2)", "draft(gamma=3,stop_below_prob=0)", "hf_generate",
                  "hf_assisted(gamma=2,stop_below_prob=0.4)", "hf_assisted(gamma=3,stop_below_prob=0)"}
    assert {r["strategy"] for r in rows} == strategies
    assert {r["category"] for r in rows} >= {"all", "chat", "code"}
    for row in rows:
        assert {"tokens_per_s", "speedup", "mean_accepted"} <= set(row) and row["speedup"] > 0
    assisted = [r for r in rows if r["strategy"] == "hf_assisted(gamma=2,stop_below_prob=0.4)" and r["category"] == "all"][0]
    assert assisted["match_baseline"] == 1.0 and assisted["mean_accepted"] >= 1.0  # target passes counted
    costs = json.loads((tmp_path / "cost_model.json").read_text())
    assert set(costs["predicted_speedup"]) == {"draft(gamma=2)", "draft(gamma=3,stop_below_prob=0)"}
    assert set(costs["costs"]["verify_ms"]) == {"1", "2", "3", "4"}
    for name in ("bench.md", "bench.csv", "speedup_vs_gamma.png", "per_position_acceptance.png", "tokens_per_step.png"):
        assert (tmp_path / name).stat().st_size > 0
    results = (tmp_path / "results.jsonl").read_text()
    drafted = [json.loads(line) for line in results.splitlines() if json.loads(line)["strategy"].startswith("draft")]
    assert drafted and all(r["propose_ms"] > 0 for r in drafted)
    again = run(*args, module="experiments.bench")  # resumes: every prompt is done already
    assert (tmp_path / "results.jsonl").read_text() == results and "resuming" in again.stdout + again.stderr
    report = entry_points.run(["experiments.report", str(tmp_path), "--out", str(tmp_path / "r")], timeout=120)
    assert report.returncode == 0, report.stderr
    assert json.loads((tmp_path / "r" / "bench.json").read_text()) == json.loads((tmp_path / "bench.json").read_text())
