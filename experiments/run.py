"""`python -m experiments.run`: the baseline and one strategy (plus optional anchors) on the
same prompts, interleaved prompt by prompt after a warm-up; writes results.jsonl,
summary.json and run_info.json into the Hydra run directory and prints the summary table."""

import json
import logging
import sys
import time
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from caching.order import ideal_hit_rate, order_by_longest_prefix
from caching.prefix import PrefixCache, check_settings
from experiments.anchors import ANCHORS
from experiments.prompts import load_prompts
from experiments.provenance import write_run_info
from experiments.public_suites import load_public_prompts
from experiments.quality import target_nll
from experiments.resume import check_auto_sizes, check_fingerprint, fingerprint, previous_records
from experiments.settings import run_settings, strategy_settings
from experiments.table import format_summary
from experiments.validate import validate
from specdec.chat import encode
from specdec.decoding import Decoder, GenerationConfig, eos_ids_of
from specdec.errors import ConfigError
from specdec.io import atomic_write_text
from experiments.summary import summarize
from specdec.drafts.draft_model import load_draft
from specdec.models import load_model, resolve_device, resolve_dtype
from specdec.placement import Placement
from specdec.runtime.prepare import Runtime, prepare_once, prepare_strategy
from specdec.runtime.static_cache import BUCKETS
from specdec.runtime.static_step import compile_count
from specdec.strategies import create_strategy, strategy_class

log = logging.getLogger("experiments.run")
ORDERS = ("fifo", "longest_prefix")


def build_runners(cfg: DictConfig, target, tokenizer, device, dtype, strategies: dict[str, dict],
                  max_length: int | None = None) -> dict:
    """label -> object with .generate(prompt_ids, GenerationConfig, seed), for the baseline
    (first), each of `strategies` (label -> strategy config), their +radix twins with
    cache=radix, and cfg.anchors (an anchor that mirrors a strategy, like hf_assisted for
    draft, runs once per such strategy with its settings). Every module a runner executes is
    prepared once for this machine (specdec.runtime.prepare); `target` stays stock for the anchors.
    `max_length`: a static KV cache's positions per row."""
    classes = {label: strategy_class(o.get("name"), o.get("target")) for label, o in strategies.items()}
    draft = None  # unknown strategies failed above, before a draft model is loaded for nothing
    if any(cls.needs_draft_model for cls in classes.values()):
        draft = load_draft(cfg.draft.name_or_path, cfg.draft.num_layers, target, tokenizer, device, dtype,
                           cfg.draft.get("head_tokens"))
    eos = eos_ids_of(target, tokenizer)
    runtime, prepared = Runtime.of(cfg.runtime), {}
    ours = prepare_once(target, runtime, prepared)

    def decoder(options: dict, prefix_cache=None) -> Decoder:
        strategy = create_strategy(draft_model=draft, target_model=ours, **options)
        prepare_strategy(strategy, runtime, prepared)
        return Decoder(ours, strategy, tokenizer, eos, prefix_cache=prefix_cache, kv_cache=cfg.runtime.kv_cache,
                       max_length=max_length)

    runners = {"baseline": decoder({"name": "baseline"})}
    for label, options in strategies.items():
        if options.get("name") != "baseline":
            runners[label] = decoder(options)
        if cfg.cache.name == "radix":
            runners[f"{label}+radix"] = decoder(options, new_prefix_cache(cfg.cache))
    for anchor in cfg.anchors:  # known, and mirroring a strategy of the run (experiments.validate)
        runners.update(anchor_runners(ANCHORS[anchor], strategies, runners, target, draft, tokenizer, eos))
    return runners


def load_runners(cfg: DictConfig, device, dtype, strategies: dict[str, dict], prompts: list[dict],
                 generation: GenerationConfig) -> tuple:
    """(target, tokenizer, runners) after the run's threads and seed are set; each prompt gets its
    input_ids, checked to fit before any timing."""
    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)
    torch.manual_seed(cfg.runtime.seed)
    target, tokenizer = load_model(cfg.model.name_or_path, device, dtype, Placement.of(cfg.model))
    for p in prompts:
        p["input_ids"] = encode(tokenizer, p["messages"], cfg.dataset.chat_template)
    longest = max((len(p["input_ids"]) for p in prompts), default=0)
    max_length = cfg.runtime.max_length or longest + generation.max_new_tokens + BUCKETS[-1]
    runners = build_runners(cfg, target, tokenizer, device, dtype, strategies, max_length)
    for p in prompts:
        runners["baseline"].check(p["input_ids"], generation)  # every prompt fits, before any timing
    return target, tokenizer, runners


def generate_all(runner, prompts: list[dict], generation: GenerationConfig, seeds: list[int]) -> list:
    """Each prompt's GenerationResult: one at a time, or through generation.batch_size rows at once."""
    if generation.batch_size == 1:
        return [runner.generate(p["input_ids"], generation, seed=seed, salt=p.get("salt")) for p, seed in zip(prompts, seeds)]
    return runner.generate_batch([p["input_ids"] for p in prompts], generation, seeds=seeds,
                                 salts=[p.get("salt") for p in prompts])


def anchor_runners(anchor, strategies: dict[str, dict], runners: dict, target, draft, tokenizer, eos) -> dict:
    """The anchor's runners: one, or one per strategy it mirrors, with that strategy's settings (sizes
    left `auto` as the strategy's runner chose them)."""
    if anchor.mirrors is None:
        return {anchor.name: anchor(target, tokenizer, eos)}
    mirrored = [{**o, **{k: v for k, v in runners[label].strategy.auto_sizes.items() if k in o}}
                for label, o in strategies.items() if o.get("name") == anchor.mirrors]
    return {strategy_label(anchor.name, {k: o[k] for k in anchor.settings if k in o}):
            anchor(target, tokenizer, eos, draft=draft, **o) for o in mirrored}


def strategy_name(options: dict) -> str:
    """A strategy config's name, or for a class given by dotted path (strategy.target) its own."""
    if options.get("name"):
        return options["name"]
    cls = strategy_class(target=options.get("target"))
    return getattr(cls, "name", cls.__name__)


def strategy_label(name: str, options: dict) -> str:
    """`draft(gamma=4)`: a strategy (or anchor) name with the settings that tell runs apart."""
    settings = ",".join(f"{k}={v}" for k, v in options.items() if k != "name" and not (k == "target" and v is None))
    return f"{name}({settings})" if settings else name


def new_prefix_cache(cache_cfg: DictConfig) -> PrefixCache:
    return PrefixCache(cache_cfg.max_bytes, cache_cfg.salt, cache_cfg.store_output, cache_cfg.isolation,
                       cache_cfg.min_hit_tokens)


def check_cache_config(cache_cfg: DictConfig) -> None:
    """ConfigError for a cache setting that cannot work, before any model loads."""
    if cache_cfg.name not in ("none", "radix"):
        raise ConfigError(f"unknown cache {cache_cfg.name!r}: use cache=none or cache=radix")
    if cache_cfg.name == "radix":
        if cache_cfg.order not in ORDERS:
            raise ConfigError(f"unknown cache.order {cache_cfg.order!r}: use one of {', '.join(ORDERS)}")
        check_settings(cache_cfg.max_bytes, cache_cfg.isolation, cache_cfg.salt, cache_cfg.min_hit_tokens)


def prompt_salts(prompts: list[dict], cache_cfg: DictConfig) -> list[str]:
    """Each prompt's salt: its own, else the cache's default."""
    return [cache_cfg.salt if p.get("salt") is None else p["salt"] for p in prompts]


def experiment_prompts(dataset: DictConfig) -> list[dict]:
    """The prompts of the dataset config: a public suite from its hub, else a file or a shipped suite."""
    if dataset.get("hub") and not dataset.path:
        return load_public_prompts(OmegaConf.to_container(dataset.hub), dataset.limit,
                                   HydraConfig.get().runtime.choices.get("dataset", "public"))
    return load_prompts(dataset.path, dataset.limit, dataset.suite)


def preflight(cfg: DictConfig, run_dir: Path, strategies: dict[str, dict]) -> tuple[torch.device, torch.dtype, list]:
    """Every check that needs no model, then the run directory's fingerprint (experiments.resume): bad
    settings, bad prompts and a run directory of other settings fail here, before any model loads
    and before anything is written. Returns the device, the dtype and the prompts."""
    validate(cfg, strategies)
    check_cache_config(cfg.cache)
    device = resolve_device(cfg.runtime.device)
    dtype = resolve_dtype(cfg.runtime.dtype, device)
    prompts = experiment_prompts(cfg.dataset)
    run_dir.mkdir(parents=True, exist_ok=True)  # Hydra's CLI made it; a caller of run_experiment may not have
    check_fingerprint(run_dir, fingerprint(cfg, strategies, prompts, device, dtype))
    return device, dtype, prompts


def run_experiment(cfg: DictConfig, run_dir: Path, strategies: dict[str, dict] | None = None) -> dict:
    """Run the baseline, `strategies` (label -> strategy config; default cfg.strategy) and the
    anchors on the prompts; a run directory with results.jsonl already in it is resumed. Every
    record carries the run's settings as columns (experiments.settings)."""
    if strategies is None:
        options = OmegaConf.to_container(cfg.strategy)
        strategies = {strategy_name(options): options}
    device, dtype, prompts = preflight(cfg, run_dir, strategies)
    generation = GenerationConfig(**OmegaConf.to_container(cfg.generation))
    target, tokenizer, runners = load_runners(cfg, device, dtype, strategies, prompts, generation)
    check_auto_sizes(run_dir, {name: getattr(getattr(r, "strategy", None), "auto_sizes", {}) for name, r in runners.items()})
    if cfg.cache.name == "radix" and cfg.cache.order == "longest_prefix":
        order = order_by_longest_prefix([p["input_ids"] for p in prompts], prompt_salts(prompts, cfg.cache))
        prompts = [prompts[i] for i in order]

    write_run_info(run_dir, cfg, device)
    shared, own = run_settings(cfg), strategy_settings(runners, strategies)

    records = previous_records(run_dir, [p["id"] for p in prompts], runners)
    done = {(r["prompt_id"], name) for name, recs in records.items() for r in recs}
    if len(done) < len(prompts) * len(runners):  # no warm-up when a resumed run has nothing left to time
        warmup = GenerationConfig(**{**vars(generation), "max_new_tokens": min(16, generation.max_new_tokens)})
        for runner in runners.values():
            if cfg.runtime.warmup:
                generate_all(runner, prompts[: cfg.runtime.warmup], warmup, [cfg.runtime.seed] * cfg.runtime.warmup)
        for runner in runners.values():  # measure with a cold prefix cache, not one warmed by the warm-up
            if getattr(runner, "prefix_cache", None) is not None:
                runner.prefix_cache = new_prefix_cache(cfg.cache)
    compiled_before = compile_count()

    batch_size = generation.batch_size
    indexed = list(enumerate(prompts))  # prompt i runs with seed runtime.seed + i
    calls = [[item] for item in indexed] if batch_size == 1 else [indexed]  # one by one, or all through the rows
    with open(run_dir / "results.jsonl", "a") as out:
        for call, group in enumerate(tqdm(calls, desc="prompts" if batch_size == 1 else "batches", unit="call")):
            for name, runner in runners.items():  # interleaved, so machine drift hits every strategy alike
                todo = [(i, p) for i, p in group if (p["id"], name) not in done]
                if not todo:
                    continue
                began = time.perf_counter()
                results = generate_all(runner, [p for _, p in todo], generation, [cfg.runtime.seed + i for i, _ in todo])
                call_ms = 1000 * (time.perf_counter() - began)
                call_tokens = max(1, sum(len(r.token_ids) for r in results))
                for (i, p), result in zip(todo, results):
                    record = {
                        "prompt_id": p["id"], "category": p["category"], "strategy": name, **own[name], **shared,
                        "greedy": generation.sampling.greedy, "stop_reason": result.stop_reason,
                        **result.metrics.to_dict(),
                        "batch_size": batch_size, "call": call, "call_ms": call_ms,
                        "share_ms": call_ms * len(result.token_ids) / call_tokens,
                        "token_ids": result.token_ids,
                        "text": tokenizer.decode(result.token_ids, skip_special_tokens=True),
                    }
                    if not generation.sampling.greedy:  # quality, after the timed generation
                        record["target_nll"] = target_nll(target, p["input_ids"], result.token_ids)
                    records[name].append(record)
                    out.write(json.dumps(record) + "\n")
                out.flush()

    order = {p["id"]: i for i, p in enumerate(prompts)}
    for recs in records.values():  # prompt order, so that every strategy lines up with the baseline
        recs.sort(key=lambda r: order[r["prompt_id"]])
    summary = {name: summarize(recs, records["baseline"]) for name, recs in records.items()}
    for name, recs in records.items():
        categories = sorted({r["category"] for r in recs})
        summary[name]["by_category"] = {
            c: summarize([r for r in recs if r["category"] == c], [r for r in records["baseline"] if r["category"] == c])
            for c in categories
        }
    for name, runner in runners.items():
        if getattr(getattr(runner, "strategy", None), "auto_sizes", None):  # what `auto` chose on this device
            summary[name]["auto_sizes"] = runner.strategy.auto_sizes
        if name.endswith("+radix"):
            summary[name]["ideal_hit_rate"] = ideal_hit_rate([p["input_ids"] for p in prompts],
                                                             prompt_salts(prompts, cfg.cache), cfg.cache.min_hit_tokens)
            summary[name]["cache"] = runners[name].prefix_cache.stats
    if Runtime.of(cfg.runtime).static_steps:
        summary["runtime"] = {"compiles_after_warmup": compile_count() - compiled_before}
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
    return summary


@hydra.main(config_path="../configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        summary = run_experiment(cfg, run_dir)
    except ConfigError as e:
        log.error("%s", e)
        sys.exit(2)
    print(format_summary(summary))
    print(f"\nresults in {run_dir}")


if __name__ == "__main__":
    main()
