"""`python -m experiments.bench`: a matrix of strategies by prompt category, side by side with
`transformers`' own generate, assisted generation and prompt lookup, in one process,
interleaved prompt by prompt after a warm-up (experiments.run's loop, with every entry of
`matrix` as a strategy). Then it times the forward passes the cost model needs and writes
bench.json / bench.md / bench.csv, cost_model.json and the plots (experiments.bench_report).
An interrupted bench resumes when rerun with the same hydra.run.dir."""

import json
import logging
import sys
from pathlib import Path

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import MissingConfigException
from omegaconf import DictConfig, OmegaConf

from experiments.cost_model import best_gamma, measure_costs, predict_speedup, typical_context
from experiments.bench_report import overall_table, write_report
from experiments.run import experiment_prompts, run_experiment, strategy_label, strategy_name
from experiments.run_records import load_run
from experiments.validate import check_matrix
from specdec.errors import ConfigError
from specdec.io import atomic_write_text
from experiments.summary import summarize
from specdec.drafts.draft_model import load_draft
from specdec.models import load_model, resolve_device, resolve_dtype
from specdec.placement import Placement
from specdec.runtime.prepare import Runtime, prepare
from specdec.strategies import strategy_class

log = logging.getLogger("experiments.bench")
CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def with_defaults(entry: dict) -> dict:
    """A matrix entry over its strategy's config, so that `{name: medusa}` runs what
    `strategy=medusa` runs (e.g. Medusa's head_tokens) and `{name: eagle_tree}` what
    `strategy=eagle_tree` runs. An entry with `target` (a Strategy subclass by dotted path)
    takes its options as given."""
    if entry.get("target") or "name" not in entry:
        return dict(entry)
    return {"name": entry["name"], **strategy_config(entry["name"]), **{k: v for k, v in entry.items() if k != "name"}}


def matrix_strategies(matrix) -> dict[str, dict]:
    """label -> strategy config, for each entry of the matrix (checked first)."""
    return {strategy_label(strategy_name(o), o): with_defaults(o) for o in check_matrix(matrix)}


def strategy_config(name: str) -> dict:
    """configs/strategy/<name>.yaml as Hydra composes `strategy=<name>` ({} if there is no such file)."""
    def composed() -> dict:
        try:
            return OmegaConf.to_container(compose(config_name=f"strategy/{name}").strategy)
        except MissingConfigException:
            return {}
    if GlobalHydra.instance().is_initialized():  # inside a Hydra app
        return composed()
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        return composed()


def cost_model(cfg: DictConfig, run_dir: Path, strategies: dict[str, dict], prompt_ids: set[str]) -> dict:
    """Measured forward costs, and each strategy's predicted speedup and best gamma (on the records of `prompt_ids`)."""
    records = load_run(run_dir, prompt_ids)
    device = resolve_device(cfg.runtime.device)
    target, tokenizer = load_model(cfg.model.name_or_path, device, resolve_dtype(cfg.runtime.dtype, device),
                                   Placement.of(cfg.model))
    draft = None
    if any(strategy_class(o.get("name"), o.get("target")).needs_draft_model for o in strategies.values()):
        draft = load_draft(cfg.draft.name_or_path, cfg.draft.num_layers, target, tokenizer, device, target.dtype,
                           cfg.draft.get("head_tokens"))
        draft = prepare(draft, Runtime.of(cfg.runtime))
    baseline = records["baseline"]
    context = typical_context(baseline)
    longest = max((p for recs in records.values() for r in recs for p in r["proposed_per_step"]), default=0)
    ours = prepare(target, Runtime.of(cfg.runtime))
    costs = measure_costs(ours, draft, cfg.runtime.kv_cache,
                          context, max(cfg.cost_model_max_k, longest + 1))  # every verify size the run used
    result = {"costs": costs, "predicted_speedup": {}, "best_gamma": {}}
    for label, options in strategies.items():
        recs = records[label]
        summary = summarize(recs, baseline)
        uses_draft = strategy_class(options.get("name"), options.get("target")).needs_draft_model
        acceptance = summary["per_position_acceptance"]
        result["predicted_speedup"][label] = predict_speedup(recs, baseline, acceptance, costs, uses_draft)
        log.info("cost model, %s: predicted speedup %.3f, measured %.3f", label, result["predicted_speedup"][label],
                 summary["speedup"])
        if not any(r.get("depth_per_step") for r in recs):  # a chain: its best fixed length
            result["best_gamma"][label] = best_gamma(recs, baseline, acceptance, costs, uses_draft)
            log.info("cost model, %s: best gamma %d (predicted %.3f)", label, *result["best_gamma"][label])
    return result


@hydra.main(config_path="../configs", config_name="bench", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        strategies = matrix_strategies(cfg.matrix)
        run_experiment(cfg, run_dir, strategies)  # validates every setting first
        prompt_ids = {p["id"] for p in experiment_prompts(cfg.dataset)}  # those of dataset.limit
        costs = cost_model(cfg, run_dir, strategies, prompt_ids)
        atomic_write_text(run_dir / "cost_model.json", json.dumps(costs, indent=2))
    except ConfigError as e:
        log.error("%s", e)
        sys.exit(2)
    rows = write_report([run_dir], run_dir, prompt_ids)
    print(overall_table(rows))
    print(f"bench.json, bench.md, bench.csv and plots in {run_dir}")


if __name__ == "__main__":
    main()
