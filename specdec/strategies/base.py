"""The strategy interface and its registry.

A strategy only proposes: given the committed tokens it returns draft tokens (and the
draft's probabilities when it sampled them). The shared loop in `specdec.decoding`
verifies them with one target pass, accepts a prefix, commits, rolls the target cache
back and records metrics; then `on_commit` lets the strategy roll back its own state.
"""

from dataclasses import dataclass
from typing import ClassVar

import torch

from specdec.errors import ConfigError
from specdec.sampling import SamplingParams


@dataclass
class Request:
    """One generation in flight, as strategies see it."""

    tokens: list[int]  # prompt + committed tokens; the last one is not yet in the target's cache
    prompt_len: int
    sampling: SamplingParams
    generator: torch.Generator | None
    device: torch.device
    prefix_cache: object = None  # the request's caching.prefix.CacheRequest when cache=radix; models prefill through it
    kv_cache: str = "preallocated"  # the KV cache kind every model of the request uses
    target_hidden: torch.Tensor | None = None  # (n, hidden size) the target's last hidden states at the n
    # positions its last pass added to its cache (prefill: the prompt's uncached ones; verify: the pending token's
    # and the accepted drafts'), the last one at tokens[-2], from which it chose tokens[-1]; kept only for
    # strategies that ask (needs_target_hidden)


@dataclass
class Proposal:
    tokens: torch.Tensor  # (k,) draft token ids on the model's device; k may be 0
    probs: torch.Tensor | None = None  # (k, V) draft distributions when sampled; None if deterministic
    tree: object = None  # specdec.tree.Tree when the tokens are a tree's nodes (row i + 1 = tokens[i]); None for a chain

    @staticmethod
    def empty(device) -> "Proposal":
        return Proposal(torch.empty(0, dtype=torch.long, device=device))


class Strategy:
    name: ClassVar[str]
    needs_draft_model: ClassVar[bool] = False
    needs_target_model: ClassVar[bool] = False  # given the target model (e.g. to share its LM head)
    needs_target_hidden: ClassVar[bool] = False  # the decoder keeps request.target_hidden up to date
    builds_modules: ClassVar[bool] = False  # given layout= (specdec.models.Layout) for the modules it runs

    def begin(self, request: Request) -> None:
        """A new request starts: reset per-request state (caches, tables)."""

    def propose(self, request: Request, max_tokens: int) -> Proposal:
        """At most `max_tokens` candidate tokens to follow request.tokens."""
        return Proposal.empty(request.device)

    def on_commit(self, request: Request, accepted: int) -> None:
        """request.tokens now holds `accepted` of the proposed tokens plus the target's token."""

    def tree_rule(self, sampling: SamplingParams):
        """The acceptance rule for this strategy's tree proposals (specdec.verify)."""
        raise NotImplementedError(f"strategy {self.name!r} proposed a tree but has no tree acceptance rule")

    def stats(self, request: Request) -> dict:
        """Strategy-specific numbers for the finished request's record (e.g. Medusa's head accuracy)."""
        return {}


STRATEGIES: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    STRATEGIES[cls.name] = cls
    return cls


def create_strategy(name: str, draft_model=None, target_model=None, layout=None, **options) -> Strategy:
    """Build a registered strategy by name with its options (e.g. gamma for `draft`); `layout`
    (the runtime's specdec.models.Layout) goes to strategies that build modules of their own."""
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}; known strategies: {', '.join(sorted(STRATEGIES))}")
    cls = STRATEGIES[name]
    if cls.needs_draft_model:
        if draft_model is None:
            raise ConfigError(f"strategy {name!r} needs a draft model: set draft.name_or_path or draft.num_layers")
        options["draft_model"] = draft_model
    if cls.needs_target_model:
        if target_model is None:
            raise ConfigError(f"strategy {name!r} needs the target model: pass target_model=")
        options["target_model"] = target_model
    if cls.builds_modules and layout is not None:
        options["layout"] = layout
    try:
        return cls(**options)
    except TypeError as e:
        raise ConfigError(f"bad options for strategy {name!r}: {e}") from None
