"""Prompt lookup (Saxena 2023; `transformers`' prompt_lookup_num_tokens): no draft model, the
proposal is copied from the request's own tokens. Summaries, edits, code and chat quote their
input, so the tokens that followed the last occurrence of the current n-gram are a cheap guess.

The proposal is deterministic (Proposal.probs is None), so rejection sampling keeps it lossless.
"""

import torch

from specdec.errors import ConfigError
from specdec.strategies.base import Proposal, Request, Strategy, register


@register
class PromptLookup(Strategy):
    name = "prompt_lookup"

    def __init__(self, max_ngram: int = 3, num_tokens: int = 3):
        for key, value in (("max_ngram", max_ngram), ("num_tokens", num_tokens)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"strategy.{key} must be an integer >= 1 (got {value!r})")
        self.max_ngram = max_ngram
        self.num_tokens = num_tokens
        self.latest: list[dict] = []
        self.indexed = 0

    def begin(self, request: Request) -> None:
        # latest[n - 1]: n-gram -> where the tokens after its most recent occurrence start. Tokens are only
        # ever appended, so the tables grow by max_ngram entries per token: a lookup is O(max_ngram), not O(length).
        self.latest = [{} for _ in range(self.max_ngram)]
        self.indexed = 1  # continuation starts below this are in the tables

    def propose(self, request: Request, max_tokens: int) -> Proposal:
        k = min(self.num_tokens, max_tokens)
        if k <= 0:
            return Proposal.empty(request.device)
        tokens = self.lookup(request.tokens, k)
        if not tokens:
            return Proposal.empty(request.device)
        return Proposal(torch.tensor(tokens, device=request.device))

    def lookup(self, tokens: list[int], k: int) -> list[int]:
        """Up to k tokens that followed the most recent earlier occurrence of the longest matching
        suffix n-gram (n = max_ngram down to 1); [] when even the last token never occurred before."""
        length = len(tokens)
        for start in range(self.indexed, length):  # index every n-gram that has at least one token after it
            for n in range(1, min(self.max_ngram, start) + 1):
                self.latest[n - 1][tuple(tokens[start - n : start])] = start
        self.indexed = length
        for n in range(min(self.max_ngram, length - 1), 0, -1):
            start = self.latest[n - 1].get(tuple(tokens[length - n :]))
            if start is not None:
                # When the match is closer than k tokens, the copy overlaps what it produces (as in LZ77):
                # the text since the match repeats, so a loop of period p yields k tokens, not p.
                run = tokens[start : start + k]
                return (run * (k // len(run) + 1))[:k]
        return []
