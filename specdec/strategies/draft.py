"""Draft-model speculation: a small model proposes `gamma` tokens one by one with its own
KV cache; the target verifies them all in one pass (Leviathan et al. 2023).

The draft length can follow `transformers`' assisted-generation heuristic (grow while whole
drafts are accepted, shrink otherwise) and stop early when the draft is unsure of a token:
both only change how many tokens are proposed, so verification stays lossless."""

import torch

from specdec.runtime.cached_model import CachedModel
from specdec.errors import ConfigError
from specdec.sampling import probabilities, sample
from specdec.strategies.base import Proposal, Request, Strategy, register

SCHEDULES = ("constant", "heuristic")


@register
class DraftModel(Strategy):
    name = "draft"
    needs_draft_model = True
    keeps_draft_hidden = False  # whether the draft's cache keeps its hidden states (EAGLE feeds them back)
    prepared_modules = ("draft_model",)

    def __init__(self, draft_model, gamma: int = 4, gamma_schedule: str = "constant", stop_below_prob: float = 0.0):
        self.draft_model = draft_model
        self._drafting(gamma, gamma_schedule, stop_below_prob)

    def _drafting(self, gamma: int, gamma_schedule: str, stop_below_prob: float) -> None:
        """Check and set how many tokens to draft, and when to stop early."""
        if not isinstance(gamma, int) or gamma < 1:
            raise ConfigError(f"strategy.gamma must be an integer >= 1 (got {gamma!r}); use strategy=baseline for no drafting")
        if gamma_schedule not in SCHEDULES:
            raise ConfigError(f"strategy.gamma_schedule must be one of {', '.join(SCHEDULES)} (got {gamma_schedule!r})")
        if isinstance(stop_below_prob, bool) or not isinstance(stop_below_prob, (int, float)) or not 0 <= stop_below_prob <= 1:
            raise ConfigError(f"strategy.stop_below_prob must be a probability in [0, 1], 0 to switch it off "
                              f"(got {stop_below_prob!r})")
        self.gamma = gamma
        self.gamma_schedule = gamma_schedule
        self.stop_below_prob = float(stop_below_prob)
        self.draft = None
        self.length = gamma  # this request's draft length, moved by the schedule
        self.proposed = 0  # tokens in the last proposal

    def begin(self, request: Request) -> None:
        # empty: the first proposal prefills it
        self.draft = CachedModel(self.draft_model, request.kv_cache, keep_hidden=self.keeps_draft_hidden)
        self.length = self.gamma  # every request starts at gamma (transformers' "heuristic_transient")

    def propose(self, request: Request, max_tokens: int) -> Proposal:
        k = min(self.length, max_tokens)
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
            if len(tokens) == k or (self.stop_below_prob and self._unsure(logits, probs, token, request)):
                self.proposed = len(tokens)
                return Proposal(torch.cat(tokens), torch.stack(probs) if probs else None)
            logits = self._next(token)

    def _unsure(self, logits, probs, token, request: Request) -> bool:
        """Whether the draft gave the token it just chose less than stop_below_prob: its softmax for
        greedy decoding, its processed (temperature/top-k/top-p) probability when sampling. The token
        is still proposed, as transformers' ConfidenceCriteria does (it stops after appending)."""
        q = logits.float().softmax(dim=-1) if request.sampling.greedy else probs[-1]
        return q[token].item() < self.stop_below_prob

    def _catch_up(self, request: Request) -> torch.Tensor:
        """The draft's logits after the last committed token: a prefill on the first step, else
        a pass over the one or two committed tokens its cache has not seen yet."""
        if self.draft.length == 0:
            return self.draft.prefill(request.tokens, request.prefix_cache)[0][-1]
        unseen = torch.tensor(request.tokens[self.draft.length :], device=request.device)
        return self.draft.forward(unseen, last_only=True)[-1]

    def _next(self, token: torch.Tensor) -> torch.Tensor:
        """The draft's logits after its own latest token."""
        return self.draft.forward(token, last_only=True)[-1]

    def on_commit(self, request: Request, accepted: int) -> None:
        self.draft.rollback(self._kept(request, accepted))
        if self.gamma_schedule == "heuristic":  # as transformers: grow by 2 after a fully accepted draft
            self.length = self.length + 2 if accepted == self.proposed else max(1, self.length - 1)

    def _kept(self, request: Request, accepted: int) -> int:
        """How much of the draft's cache stays after a step: it holds the old tokens plus all but
        the last draft, of which the committed ones stay."""
        return min(self.draft.length, len(request.tokens) - 1)
