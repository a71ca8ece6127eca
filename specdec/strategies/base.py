"""The strategy interface, its registry, and strategies by dotted path.

A strategy proposes: given the committed tokens it returns draft tokens (and the draft's
probabilities when it sampled them), and names the acceptance rule its proposals are verified
by. The shared loop in `specdec.decoding` verifies them with one target pass, accepts a prefix
by that rule, commits, rolls the target cache back and records metrics; then `on_commit` lets
the strategy roll back its own state.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

from specdec.errors import ConfigError
from specdec.sampling import SamplingParams
from specdec.verify import default_rule, tree_greedy, tree_sampling

if TYPE_CHECKING:
    from caching.prefix import CacheRequest
    from specdec.tree import Tree


@dataclass
class Request:
    """One generation in flight, as strategies see it."""

    tokens: list[int]  # prompt + committed tokens; the last one is not yet in the target's cache
    prompt_len: int
    sampling: SamplingParams
    generator: torch.Generator | None
    device: torch.device
    prefix_cache: CacheRequest | None = None  # the request's handle on the prefix cache (cache=radix); models prefill through it
    kv_cache: str = "preallocated"  # the KV cache kind every model of the request uses
    row: int = 0  # its row in the batch: in the target's KV cache, and in a strategy's that proposes for all rows
    rows: int = 1  # the batch's rows (a strategy that proposes for all of them sizes its caches by it)
    max_length: int | None = None  # a static KV cache's positions per row (None: grown as needed)
    target_hidden: torch.Tensor | None = None  # (n, hidden size) the target's last hidden states at the n
    # positions its last pass added to its cache (prefill: the prompt's uncached ones; verify: the pending token's
    # and the accepted drafts'), the last one at tokens[-2], from which it chose tokens[-1]; kept only for
    # strategies that ask (needs_target_hidden)


@dataclass
class Proposal:
    tokens: torch.Tensor  # (k,) draft token ids on the model's device; k may be 0
    probs: torch.Tensor | None = None  # (k, V) draft distributions when sampled; None if deterministic
    tree: Tree | None = None  # when the tokens are a tree's nodes (row i + 1 = tokens[i]); None for a chain

    @staticmethod
    def empty(device) -> "Proposal":
        return Proposal(torch.empty(0, dtype=torch.long, device=device))


class Strategy:
    name: ClassVar[str]
    needs_draft_model: ClassVar[bool] = False
    needs_target_model: ClassVar[bool] = False  # given the target model (e.g. to share its LM head)
    needs_target_hidden: ClassVar[bool] = False  # the decoder keeps request.target_hidden up to date
    target_features: tuple[int, ...] | None = None  # with it, target_hidden is these target layers' inputs side
    # by side (EAGLE-3's features) instead of the final hidden state
    proposes_rows: ClassVar[bool] = False  # propose_rows serves every row of a batch (else: one copy per row)
    prepared_modules: ClassVar[tuple[str, ...]] = ()  # attributes holding modules it runs; the runner
    # replaces each by its prepared copy (specdec.runtime.prepare), so strategies never lay modules out

    auto_sizes: dict = {}  # the sizes `auto` chose on this device, with their predicted speedup (set by tune)

    def tune(self, costs) -> dict:
        """Set the sizes given as `auto` by this device's costs (a specdec.runtime.verify_cost.DeviceCosts,
        which measures when first asked), once; the Decoder calls it. Returns auto_sizes."""
        return self.auto_sizes

    def begin(self, request: Request) -> None:
        """A new request starts: reset per-request state (caches, tables)."""

    def propose(self, request: Request, max_tokens: int) -> Proposal:
        """At most `max_tokens` candidate tokens to follow request.tokens."""
        return Proposal.empty(request.device)

    def propose_rows(self, requests: list[Request], max_tokens: list[int]) -> list[Proposal]:
        """With proposes_rows: a proposal for each request of a batch, in one go (e.g. one draft
        pass over every row); request.row names each one's row."""
        raise NotImplementedError

    def on_commit(self, request: Request, accepted: int) -> None:
        """request.tokens now holds `accepted` of the proposed tokens plus the target's token."""

    def acceptance_rule(self, sampling: SamplingParams, tree: bool):
        """The rule (specdec.verify) that verifies this strategy's chain or tree proposals. The
        defaults are lossless: greedy match, or rejection sampling for a chain whose draft sampled
        its tokens; for a tree (a deterministic function of the draft's scores) the target
        draws after every node."""
        if tree:
            return tree_greedy if sampling.greedy else tree_sampling
        return default_rule(sampling)

    def stats(self, request: Request) -> dict:
        """Strategy-specific numbers for the finished request's record (e.g. Medusa's head accuracy)."""
        return {}


def kept_hidden(strategy: Strategy) -> bool | tuple[int, ...]:
    """What the target's CachedModel keeps for request.target_hidden (its `keep_hidden`)."""
    return strategy.needs_target_hidden and (strategy.target_features or True)


STRATEGIES: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    STRATEGIES[cls.name] = cls
    return cls


def strategy_class(name: str | None = None, target: str | None = None) -> type[Strategy]:
    """A registered strategy by `name`, or any Strategy subclass by dotted path (`target`,
    `package.module.ClassName`, importable from PYTHONPATH: Hydra's `_target_` convention)."""
    if target == "???":  # configs/strategy/custom.yaml, left unset
        raise ConfigError("strategy=custom needs strategy.target=package.module.ClassName (your Strategy subclass)")
    if target:
        module_name, _, class_name = str(target).rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), class_name) if module_name else None
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"cannot import strategy.target={target!r} ({e}): give package.module.ClassName "
                              "importable from PYTHONPATH") from None
        if not (isinstance(cls, type) and issubclass(cls, Strategy)):
            raise ConfigError(f"strategy.target={target!r} is not a specdec.strategies.Strategy subclass: "
                              "subclass Strategy and implement propose")
        return cls
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}; known strategies: {', '.join(sorted(STRATEGIES))} "
                          "(or strategy.target=package.module.ClassName)")
    return STRATEGIES[name]


def create_strategy(name: str | None = None, draft_model=None, target_model=None, target: str | None = None,
                    **options) -> Strategy:
    """Build a strategy, registered (`name`) or by dotted path (`target`), with its options
    (e.g. gamma for `draft`); the draft and target models go to those that need them."""
    cls = strategy_class(name, target)
    label = target or name
    if cls.needs_draft_model:
        if draft_model is None:
            raise ConfigError(f"strategy {label!r} needs a draft model: set draft.name_or_path or draft.num_layers")
        options["draft_model"] = draft_model
    if cls.needs_target_model:
        if target_model is None:
            raise ConfigError(f"strategy {label!r} needs the target model: pass target_model=")
        options["target_model"] = target_model
    try:
        return cls(**options)
    except TypeError as e:
        hint = " (start from strategy=custom, so that no built-in strategy's options are passed on)" if target else ""
        raise ConfigError(f"bad options for strategy {label!r}: {e}{hint}") from None
