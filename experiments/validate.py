"""Every setting of experiments.run, experiments.bench and experiments.batch_sweep, checked for
type and range before any model loads: a bad value is one ConfigError line naming the fix (the
CLI's exit status 2), not a traceback from deep inside torch minutes later, nor a silently wrong
run. The strategies' constructors and the loaders keep their own checks for library use; these
come first."""

import inspect
from collections.abc import Callable, Mapping

from omegaconf import DictConfig, OmegaConf

from experiments.anchors import ANCHORS
from experiments.prompts import check_limit
from specdec.auto_size import AUTO
from specdec.decoding import GenerationConfig
from specdec.errors import ConfigError, is_int, is_number
from specdec.models import resolve_device, resolve_dtype
from specdec.drafts.public import check_checkpoint
from specdec.placement import Placement
from specdec.runtime.cached_model import KV_CACHES
from specdec.runtime.prepare import Runtime, check_static
from specdec.strategies import strategy_class
from specdec.strategies.draft import SCHEDULES
from specdec.strategies.medusa import ACCEPTANCE

Check = tuple[Callable[[object], bool], str]  # (accepts a value, what it must be)


def optional(check: Check) -> Check:
    return (lambda v: v is None or check[0](v)), f"{check[1]}, or null"


def one_of(choices) -> Check:
    return (lambda v: v in choices), f"one of {', '.join(map(str, choices))}"


POSITIVE_INT: Check = (lambda v: is_int(v) and v >= 1), "an integer >= 1"
NATURAL: Check = (lambda v: is_int(v) and v >= 0), "an integer >= 0"
PROBABILITY: Check = (lambda v: is_number(v) and 0 <= v <= 1), "a number in [0, 1]"
NON_NEGATIVE: Check = (lambda v: is_number(v) and v >= 0), "a number >= 0"
STRING: Check = (lambda v: isinstance(v, str) and v != ""), "a non-empty string"


SIZE: Check = (lambda v: v == AUTO or POSITIVE_INT[0](v)), "auto (the best predicted size on this device) or an integer >= 1"


def is_tree(value) -> bool:
    """Medusa's strategy.tree: auto, null, a node count, or a non-empty list of non-empty paths of ranks."""
    if value is None or SIZE[0](value):
        return True
    paths = value if isinstance(value, list) else []
    return bool(paths) and all(isinstance(p, list) and p and all(NATURAL[0](r) for r in p) for p in paths)


TREE: Check = is_tree, ("auto (the best tree on this device), null (the heads' default tree), a node count >= 1, "
                        "or a list of paths of top-k ranks like [[0], [1], [0, 0]]")

STRATEGY_OPTIONS: dict[str, Check] = {  # by option name, whichever strategy takes it
    "name": optional(STRING), "target": optional(STRING),
    "gamma": SIZE, "gamma_schedule": one_of(SCHEDULES), "stop_below_prob": PROBABILITY,
    "tree_nodes": optional(SIZE), "tree_topk": POSITIVE_INT, "head_tokens": optional(POSITIVE_INT),
    "draft": STRING, "heads": STRING, "tree": TREE, "acceptance": one_of(ACCEPTANCE),
    "posterior_threshold": PROBABILITY, "posterior_alpha": NON_NEGATIVE,
    "max_ngram": POSITIVE_INT, "num_tokens": POSITIVE_INT,
}
RUNTIME: dict[str, Check] = {  # layers, linear and compile: Runtime's own checks
    "device": STRING, "dtype": STRING, "seed": NATURAL, "warmup": NATURAL, "threads": optional(POSITIVE_INT),
    "kv_cache": one_of(tuple(KV_CACHES)), "max_length": optional(POSITIVE_INT),
}
DRAFT: dict[str, Check] = {"name_or_path": optional(STRING), "num_layers": optional(POSITIVE_INT),
                           "head_tokens": optional(POSITIVE_INT)}
DATASET: dict[str, Check] = {"suite": STRING, "path": optional(STRING),
                             "chat_template": ((lambda v: v in ("auto", True, False)), "auto, true or false")}


def validate(cfg: DictConfig, strategies: dict[str, dict]) -> None:
    """ConfigError for the first setting of `cfg` (and the `strategies`, label -> options) that cannot work."""
    settings = OmegaConf.to_container(cfg, resolve=True)
    check_value("model.name_or_path", settings["model"].get("name_or_path"), STRING)
    check_generation(settings["generation"])
    check_section("runtime", settings["runtime"], RUNTIME)
    Placement.of(settings["model"]).check_runtime(Runtime.of(cfg.runtime))  # device_map, max_memory, ...; layers, linear
    resolve_dtype(cfg.runtime.dtype, resolve_device(cfg.runtime.device))
    check_static(Runtime.of(cfg.runtime), cfg.runtime.kv_cache, resolve_device(cfg.runtime.device))
    check_section("dataset", settings["dataset"], DATASET)
    check_limit(settings["dataset"].get("limit"))
    check_section("draft", settings["draft"], DRAFT)
    for options in strategies.values():
        check_strategy(options)
    check_anchors(settings["anchors"], strategies, settings["generation"].get("batch_size", 1))
    if "cost_model_max_k" in settings:
        check_value("cost_model_max_k", settings["cost_model_max_k"], POSITIVE_INT)
    if "batch_sizes" in settings:  # experiments.batch_sweep
        check_batch_sweep(settings, strategies)


def check_batch_sweep(settings: dict, strategies: dict[str, dict]) -> None:
    """batch_sizes (which replace generation.batch_size), repeats, and what batches need: the
    preallocated KV cache and anchors that decode several prompts at once."""
    sizes = settings["batch_sizes"]
    if not isinstance(sizes, list) or not sizes or not all(POSITIVE_INT[0](b) for b in sizes):
        raise ConfigError(f"batch_sizes must be a non-empty list of integers >= 1 (got {sizes!r}): "
                          "e.g. batch_sizes=[1,2,4,8]")
    check_value("repeats", settings["repeats"], POSITIVE_INT)
    if settings["generation"].get("batch_size", 1) != 1:
        raise ConfigError("experiments.batch_sweep sets the batch size from batch_sizes: drop generation.batch_size")
    if max(sizes) > 1 and settings["runtime"]["kv_cache"] == "dynamic":
        raise ConfigError("batch sizes above 1 need runtime.kv_cache=preallocated (per-row lengths): drop "
                          "runtime.kv_cache=dynamic, or use batch_sizes=[1]")
    check_anchors(settings["anchors"], strategies, max(sizes))


def check_generation(generation: dict) -> None:
    try:
        config = GenerationConfig(**generation)
    except TypeError as e:
        raise ConfigError(f"bad generation settings ({e}): generation takes "
                          f"{', '.join(inspect.signature(GenerationConfig).parameters)}") from None
    config.validate()


def check_section(section: str, values: dict, checks: dict[str, Check]) -> None:
    for key, check in checks.items():
        if key in values:
            check_value(f"{section}.{key}", values[key], check)


def check_value(knob: str, value, check: Check) -> None:
    accepts, expected = check
    if not accepts(value):
        raise ConfigError(f"{knob} must be {expected} (got {value!r})")


def check_strategy(options: dict) -> None:
    """No option the strategy's constructor does not take, and a built-in strategy's options of the right types."""
    if options.get("target") == "???":
        raise ConfigError("strategy=custom needs strategy.target=package.module.ClassName (a Strategy subclass)")
    cls = strategy_class(options.get("name"), options.get("target"))
    parameters = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    for key, value in options.items():
        if key not in parameters and key not in ("name", "target") and not takes_any:
            known = sorted(set(parameters) - {"self", "draft_model", "target_model"})
            raise ConfigError(f"strategy {options.get('name') or options.get('target')} has no option {key!r}; it "
                              f"takes {', '.join(known) or 'none'}: drop strategy.{key}")
        if key in STRATEGY_OPTIONS and not options.get("target"):  # a custom strategy's options are its own
            check_value(f"strategy.{key}", value, STRATEGY_OPTIONS[key])
    for knob, strategy in (("draft", "eagle"), ("heads", "medusa")):  # checkpoints: present, of a layout it takes
        if knob in options and not options.get("target"):
            check_checkpoint(options[knob], strategy)


def check_anchors(anchors, strategies: dict[str, dict], batch_size: int = 1) -> None:
    if not isinstance(anchors, list):
        raise ConfigError(f"anchors must be a list (got {anchors!r}): e.g. anchors=[hf_generate], or anchors=[]")
    names = {options.get("name") for options in strategies.values()}
    for anchor in anchors:
        if anchor not in ANCHORS:
            raise ConfigError(f"unknown anchor {anchor!r}; known anchors: {', '.join(sorted(ANCHORS))}")
        mirrors = ANCHORS[anchor].mirrors
        if mirrors is not None and mirrors not in names:
            raise ConfigError(f"anchor {anchor} mirrors strategy {mirrors!r}: run it too (strategy={mirrors}), "
                              f"or drop {anchor} from anchors")
        if batch_size != 1 and mirrors is not None:
            raise ConfigError(f"anchor {anchor} decodes one sequence at a time (transformers' assisted generation "
                              "and prompt lookup do not batch): drop it from anchors, or decode one request at a time")


def check_matrix(matrix) -> list[dict]:
    """experiments.bench's matrix as a list of strategy configs (each a mapping with a name or target)."""
    entries = OmegaConf.to_container(matrix) if OmegaConf.is_config(matrix) else matrix
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"matrix must be a non-empty list of strategies (got {entries!r}): "
                          "e.g. matrix='[{name: draft, gamma: 4}]'")
    for entry in entries:
        if not isinstance(entry, Mapping) or not (entry.get("name") or entry.get("target")):
            raise ConfigError(f"matrix entry {entry!r} is not a strategy: give a mapping with a name, "
                              "e.g. {name: draft, gamma: 4}")
    return entries
