"""Every setting of the trainers, checked before any model loads: a bad one is a one-line
ConfigError naming the setting and what it takes (before, train.checkpoint_every=0 failed on a
division by zero after the answering, and a train.init_layers past the target's depth only
after the data was made). The layers a setting names are checked as soon as the target is
loaded (check_target_layers), before any data is made."""

from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from specdec.errors import ConfigError
from specdec.models import DTYPES
from specdec.training.accelerator import PRECISIONS

ABSENT = object()


@dataclass(frozen=True)
class Number:
    """An integer (kind=int) or any number (kind=float) within the given bounds, or null if `null`."""

    kind: type
    low: float | None = None  # value >= low
    above: float | None = None  # value > above
    high: float | None = None  # value <= high
    below: float | None = None  # value < below
    null: bool = False

    def accepts(self, value) -> bool:
        if value is None:
            return self.null
        if isinstance(value, bool) or not isinstance(value, int if self.kind is int else (int, float)):
            return False
        return ((self.low is None or value >= self.low) and (self.above is None or value > self.above)
                and (self.high is None or value <= self.high) and (self.below is None or value < self.below))

    def __str__(self) -> str:
        bounds = [f"{sign} {bound}" for sign, bound in ((">=", self.low), (">", self.above), ("<=", self.high),
                                                        ("<", self.below)) if bound is not None]
        return f"{'an integer' if self.kind is int else 'a number'} {' and '.join(bounds)}" + (" or null" * self.null)


@dataclass(frozen=True)
class Integers:
    """A non-empty list of integers >= 0, all different if `distinct`."""

    distinct: bool = False

    def accepts(self, value) -> bool:
        return (isinstance(value, list) and bool(value) and all(Number(int, low=0).accepts(v) for v in value)
                and (not self.distinct or len(set(value)) == len(value)))

    def __str__(self) -> str:
        return f"a non-empty list of {'different ' * self.distinct}integers >= 0"


@dataclass(frozen=True)
class Choice:
    options: tuple[str, ...]

    def accepts(self, value) -> bool:
        return value in self.options

    def __str__(self) -> str:
        return "one of " + ", ".join(self.options)


@dataclass(frozen=True)
class Text:
    def accepts(self, value) -> bool:
        return isinstance(value, str) and bool(value.strip())

    def __str__(self) -> str:
        return "a non-empty string"


DTYPE = Choice(("auto", *DTYPES))
COMMON = {
    "seed": Number(int, low=0), "threads": Number(int, low=1, null=True), "work_dir": Text(), "out_dir": Text(),
    "model.name_or_path": Text(),
    "data.passages": Number(int, low=0), "data.prompts": Number(int, low=1), "data.self_written": Number(int, low=0),
    "data.max_new_tokens": Number(int, low=1), "data.batch_size": Number(int, low=1),
    "data.sampled_share": Number(float, low=0, high=1), "data.temperature": Number(float, above=0), "data.dtype": DTYPE,
    "train.head_tokens": Number(int, low=1, null=True), "train.lr": Number(float, above=0),
    "train.epochs": Number(int, low=1), "train.held_out_share": Number(float, low=0, below=1),
    "train.checkpoint_every": Number(int, low=1), "train.time_budget_min": Number(float, above=0),
    "train.mixed_precision": Choice(PRECISIONS), "train.grad_accum": Number(int, low=1),
}
SEEDED = {**COMMON, "data.seeds": Integers(distinct=True)}  # EAGLE's and Medusa's data: one set per seed
RULES = {
    "draft": {**COMMON, "train.init_layers": Integers(), "train.batch_tokens": Number(int, low=1)},
    "eagle": {**SEEDED, "train.num_layers": Number(int, low=1), "train.init_layer": Number(int, low=0, null=True),
              "train.unroll": Number(int, low=1), "train.feature_weight": Number(float, low=0),
              "train.noise": Number(float, low=0), "train.batch_tokens": Number(int, low=1)},
    "medusa": {**SEEDED, "heads.num_heads": Number(int, low=1), "heads.num_layers": Number(int, low=1),
               "train.batch_positions": Number(int, low=1), "train.head_decay": Number(float, above=0),
               "tree.max_nodes": Number(int, low=1), "tree.context_tokens": Number(int, low=1)},
}


def check_settings(cfg: DictConfig, trainer: str) -> None:
    """Raise a ConfigError for the first setting of `trainer` ("draft", "eagle" or "medusa") that is
    missing or outside what it takes."""
    for key, rule in RULES[trainer].items():
        value = OmegaConf.select(cfg, key, default=ABSENT)
        if value is ABSENT:
            raise ConfigError(f"{key} is missing from the config: set {key} to {rule}")
        value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        if not rule.accepts(value):
            raise ConfigError(f"{key}={value!r} is invalid: set it to {rule}")


def check_target_layers(key: str, layers: list[int], target) -> None:
    """The target layers a setting names exist: known once the target is loaded, before any data is made."""
    total = target.config.get_text_config().num_hidden_layers
    if any(layer >= total for layer in layers):
        raise ConfigError(f"{key}={layers} names a layer the target lacks: give layers in [0, {total - 1}]")
