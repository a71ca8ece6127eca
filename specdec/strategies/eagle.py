"""EAGLE (Li et al. 2024): draft-model speculation where the draft is one decoder layer on
the target's own hidden states (specdec.eagle_draft), proposing a chain that the target
verifies in one pass, exactly as `draft` does (greedy match; lossless rejection sampling).

The draft runs one position behind the tokens: its position t pairs the target's hidden
state at t with token t + 1 and predicts the hidden state at t + 1, whose LM-head scores
propose token t + 2. After each verify pass it catches up on the positions the target just
verified, with the target's true hidden states (request.target_hidden); while drafting it
feeds its own predicted hidden state back in. Everything else (gamma, the heuristic
schedule, the confidence stop, rollback) is the `draft` strategy's.
"""

import torch

from specdec.eagle_draft import EagleDraft, load_eagle_draft
from specdec.few_row_linear import shared_copy
from specdec.models import Layout
from specdec.strategies.base import Request, register
from specdec.strategies.draft import DraftModel


@register
class Eagle(DraftModel):
    name = "eagle"
    needs_draft_model = False
    needs_target_model = True
    needs_target_hidden = True
    keeps_draft_hidden = True
    builds_modules = True

    def __init__(self, target_model, draft="smollm2-135m-eagle", head_tokens: int | None = None, gamma: int = 3,
                 gamma_schedule: str = "constant", stop_below_prob: float = 0.3, layout: Layout = Layout()):
        stock = draft if isinstance(draft, EagleDraft) else load_eagle_draft(draft, target_model, head_tokens)[0]
        self.eagle = shared_copy(stock)  # what we run: the same weights in the runtime's layout
        self.eagle.lm = layout.model(stock.lm)
        layout.linears(self.eagle.fc)
        super().__init__(self.eagle.lm, gamma, gamma_schedule, stop_below_prob)
        self.verified = 0  # draft positions fed with the target's true hidden states (kept after a step)
        self.predicted = None  # (1, d) the draft's guess of the target's hidden state at its next position

    def _catch_up(self, request: Request) -> torch.Tensor:
        """Feed the positions the target verified since the draft's last pass (their true hidden
        states, each with the token that followed it): the draft's logits for the next token. On the
        first step these are the prompt's (its uncached part: rotary positions are relative)."""
        if self.draft.cache is None:
            self.draft.reset()
        hidden = request.target_hidden
        first = len(request.tokens) - 1 - len(hidden)
        logits = self._forward(hidden, torch.tensor(request.tokens[first + 1 :], device=request.device))
        self.verified = self.draft.length
        return logits

    def _next(self, token: torch.Tensor) -> torch.Tensor:
        return self._forward(self.predicted, token)

    def _forward(self, hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        logits = self.draft.forward(None, last_only=True, embeds=self.eagle.inputs(hidden, tokens))[-1]
        self.predicted = self.draft.hidden[-1:]
        return logits

    def _kept(self, request: Request, accepted: int) -> int:
        # the verified positions; this step's drafts were fed predicted states, and come back with true ones
        return self.verified
