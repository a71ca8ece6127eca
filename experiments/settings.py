"""The settings a run's records carry as columns (results.jsonl), and the command that
reproduces the run (run_info.json): rows from many runs, a multirun's jobs or run
directories side by side, then load into one table with no join against configs."""

import shlex

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf


def prefixed(prefix: str, options: dict) -> dict:
    """`{"gamma": 4}` -> `{"strategy.gamma": 4}`: one column per option, named as its override."""
    return {f"{prefix}.{key}": value for key, value in options.items()}


def run_settings(cfg: DictConfig) -> dict:
    """Columns every record of the run shares: model, dataset (its file, else its config name),
    dataset.limit, generation.<field>, and inside a multirun the job's `run` label (its
    overrides as Hydra names its directory, e.g. `strategy.gamma=2`) and `overrides` (the list)."""
    hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else None  # None: called outside a Hydra app
    choice = hydra_cfg.runtime.choices.get("dataset") if hydra_cfg is not None else cfg.dataset.get("suite")
    settings = {"model": cfg.model.name_or_path,
                "dataset": cfg.dataset.path or choice,
                "dataset.limit": cfg.dataset.limit,
                **prefixed("generation", OmegaConf.to_container(cfg.generation))}
    if hydra_cfg is not None and hydra_cfg.mode == RunMode.MULTIRUN:
        settings.update(run=hydra_cfg.job.override_dirname, overrides=list(hydra_cfg.overrides.task))
    return settings


def strategy_settings(runners: dict, strategies: dict[str, dict]) -> dict[str, dict]:
    """runner label -> its `strategy.<option>` columns: the options of the strategy it runs (a
    +radix twin: its strategy's); the baseline and the anchors take those of the run's
    strategy when the run has one (experiments.run), none beside a matrix (experiments.bench)."""
    own = {label: prefixed("strategy", options) for label, options in strategies.items()}
    shared = next(iter(own.values())) if len(own) == 1 else {}
    return {name: own.get(name.removesuffix("+radix"), shared) for name in runners}


def invocation() -> dict:
    """The command line that reruns this run (one job of a multirun: its own overrides), and
    those overrides (none when called outside a Hydra app, e.g. from Python)."""
    if not HydraConfig.initialized():
        return {"command": None, "overrides": []}
    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    command = " ".join(["python", "-m", f"experiments.{hydra_cfg.job.name}", *map(shlex.quote, overrides)])
    return {"command": command, "overrides": overrides}
