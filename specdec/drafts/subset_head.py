"""A draft LM head over the target's most frequent tokens only (as FR-Spec does).

The head is the largest cost of a small draft: for SmolLM2-135M it is 28M of the 38M
weights a 3-layer draft reads per token. Scoring only the `k` tokens the target emits
most often reads k/V of it. The logits keep the full vocabulary's shape, with -inf
outside the subset, so a strategy sees an ordinary draft that simply never proposes a
rare token; verification stays lossless because the target still scores every token.
"""

import torch
from torch import nn


class SubsetHead(nn.Module):
    """Logits (..., V) for the tokens `token_ids` (rows of `weight`), -inf elsewhere. With
    `vocab_size`, `weight` holds the subset's own rows, one per token id (EAGLE-3's draft vocabulary)."""

    def __init__(self, weight: torch.Tensor, token_ids: list[int] | torch.Tensor, vocab_size: int | None = None):
        super().__init__()
        self.vocab_size = vocab_size or weight.shape[0]
        self.register_buffer("token_ids", torch.as_tensor(token_ids, device=weight.device), persistent=False)
        self.scores = nn.Linear(weight.shape[1], len(token_ids), bias=False, device=weight.device, dtype=weight.dtype)
        rows = weight if vocab_size else weight[self.token_ids]
        self.scores.weight = nn.Parameter(rows.clone(), requires_grad=False)
        column = torch.full((self.vocab_size,), -100, dtype=torch.long, device=weight.device)
        column[self.token_ids] = torch.arange(len(token_ids), device=weight.device)
        self.register_buffer("column", column, persistent=False)  # token id -> its column in `scores`, or -100

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        scores = self.scores(hidden)
        logits = scores.new_full((*scores.shape[:-1], self.vocab_size), float("-inf"))
        return logits.index_copy_(-1, self.token_ids, scores)

    def columns(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Token ids -> their columns in `scores`, -100 (cross_entropy's ignore_index) for a token
        outside the subset or a missing one (< 0): for training on the subset's scores only."""
        return torch.where(token_ids >= 0, self.column[token_ids.clamp_min(0)], -100)
