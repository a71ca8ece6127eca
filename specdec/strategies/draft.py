"""Draft-model speculation: a small model proposes `gamma` tokens one by one with its own
KV cache; the target verifies them all in one pass (Leviathan et al. 2023)."""

import torch

from specdec.cached_model import CachedModel
from specdec.errors import ConfigError
from specdec.sampling import probabilities, sample
from specdec.strategies.base import Proposal, Request, Strategy, register


@register
class DraftModel(Strategy):
    name = "draft"
    needs_draft_model = True

    def __init__(self, draft_model, gamma: int = 4):
        if not isinstance(gamma, int) or gamma < 1:
            raise ConfigError(f"strategy.gamma must be an integer >= 1 (got {gamma!r}); use strategy=baseline for no drafting")
        self.gamma = gamma
        self.draft_model = draft_model
        self.draft = None

    def begin(self, request: Request) -> None:
        self.draft = CachedModel(self.draft_model, request.kv_cache)  # empty: the first proposal prefills it

    def propose(self, request: Request, max_tokens: int) -> Proposal:
        k = min(self.gamma, max_tokens)
        if k <= 0:
            return Proposal.empty(request.device)
        logits = self._catch_up(request)
        tokens, probs = [], []
        while True:
            if request.sampling.greedy:
                token = logits.argmax(dim=-1, keepdim=True)
            else:
                q = probabilities(logits, request.sampling)
                token = sample(q, request.generator).view(1)
                probs.append(q)
            tokens.append(token)
            if len(tokens) == k:
                return Proposal(torch.cat(tokens), torch.stack(probs) if probs else None)
            logits = self.draft.forward(token, last_only=True)[-1]

    def _catch_up(self, request: Request) -> torch.Tensor:
        """The draft's logits after the last committed token: a prefill on the first step, else
        a pass over the one or two committed tokens its cache has not seen yet."""
        if self.draft.length == 0:
            return self.draft.prefill(request.tokens, request.prefix_cache)[0][-1]
        unseen = torch.tensor(request.tokens[self.draft.length :], device=request.device)
        return self.draft.forward(unseen, last_only=True)[-1]

    def on_commit(self, request: Request, accepted: int) -> None:
        # the cache holds the old tokens plus all but the last draft; keep what was committed
        self.draft.rollback(min(self.draft.length, len(request.tokens) - 1))
