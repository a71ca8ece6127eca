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
        self.draft = CachedModel(draft_model)

    def begin(self, request: Request) -> None:
        self.draft.reset()

    def propose(self, request: Request, max_tokens: int) -> Proposal:
        k = min(self.gamma, max_tokens)
        if k <= 0:
            return Proposal.empty(request.device)
        # the draft cache lags the committed tokens by one or two: feed those first
        feed = torch.tensor(request.tokens[self.draft.length :], device=request.device)
        tokens, probs = [], []
        for _ in range(k):
            logits = self.draft.forward(feed, last_only=True)[-1]
            if request.sampling.greedy:
                token = logits.argmax(dim=-1, keepdim=True)
            else:
                q = probabilities(logits, request.sampling)
                token = sample(q, request.generator).view(1)
                probs.append(q)
            tokens.append(token)
            feed = token
        return Proposal(torch.cat(tokens), torch.stack(probs) if probs else None)

    def on_commit(self, request: Request, accepted: int) -> None:
        # the cache holds the old tokens plus all but the last draft; keep what was committed
        self.draft.rollback(min(self.draft.length, len(request.tokens) - 1))
