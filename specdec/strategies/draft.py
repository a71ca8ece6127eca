"""Draft-model speculation: a small model proposes `gamma` tokens one by one with its own
KV cache; the target verifies them all in one pass (Leviathan et al. 2023).

The draft length can follow `transformers`' assisted-generation heuristic (grow while whole
drafts are accepted, shrink otherwise) and stop early when the draft is unsure of a token:
both only change how many tokens are proposed, so verification stays lossless."""

import torch

from specdec.auto_size import AUTO, acceptance_of, best, chain_speedups, check_size
from specdec.runtime.cached_model import CachedModel
from specdec.errors import ConfigError
from specdec.sampling import probabilities, sample
from specdec.strategies.base import Proposal, Request, Strategy, register

SCHEDULES = ("constant", "heuristic")


@register
class DraftModel(Strategy):
    name = "draft"
    needs_draft_model = True
    proposes_rows = True
    keeps_draft_hidden = False  # whether the draft's cache keeps its hidden states (EAGLE feeds them back)
    prepared_modules = ("draft_model",)

    def __init__(self, draft_model, gamma: int = 4, gamma_schedule: str = "constant", stop_below_prob: float = 0.0):
        self.draft_model = draft_model
        self._drafting(gamma, gamma_schedule, stop_below_prob)

    def _drafting(self, gamma: int, gamma_schedule: str, stop_below_prob: float) -> None:
        """Check and set how many tokens to draft, and when to stop early."""
        check_size("gamma", gamma, "; use strategy=baseline for no drafting")
        if gamma_schedule not in SCHEDULES:
            raise ConfigError(f"strategy.gamma_schedule must be one of {', '.join(SCHEDULES)} (got {gamma_schedule!r})")
        if isinstance(stop_below_prob, bool) or not isinstance(stop_below_prob, (int, float)) or not 0 <= stop_below_prob <= 1:
            raise ConfigError(f"strategy.stop_below_prob must be a probability in [0, 1], 0 to switch it off "
                              f"(got {stop_below_prob!r})")
        self.gamma = gamma
        self.gamma_schedule = gamma_schedule
        self.stop_below_prob = float(stop_below_prob)
        self.draft = None  # a CachedModel with a row per row of the batch
        self.length = {}  # per row: this request's draft length, moved by the schedule
        self.proposed = {}  # per row: tokens in its last proposal

    def acceptance(self) -> list[float]:
        """The draft's shipped acceptance by depth (specdec.auto_size)."""
        return acceptance_of(self.draft_model)

    def tune(self, costs) -> dict:
        """gamma=auto: the chain with the best predicted speedup (specdec.auto_size) for the draft's
        shipped acceptance and this device's costs."""
        if self.gamma != AUTO:
            return self.auto_sizes
        speedups = chain_speedups(self.acceptance(), costs.verify, costs.draft_pass(self.draft_model))
        self.gamma = best(speedups)
        self.auto_sizes = {"gamma": self.gamma, "predicted_speedup": round(speedups[self.gamma], 3)}
        return self.auto_sizes

    def begin(self, request: Request) -> None:
        draft = self.draft
        if draft is None or draft.rows != request.rows or draft.kv_cache != request.kv_cache or draft.kv_cache == "dynamic":
            self.draft = CachedModel(self.draft_model, request.kv_cache, self.keeps_draft_hidden, request.rows,
                                     request.max_length)
        else:
            self.draft.rollback(0, request.row)  # empty: the first proposal prefills it
        self.length[request.row] = self.gamma  # every request starts at gamma (transformers' "heuristic_transient")

    def propose(self, request: Request, max_tokens: int) -> Proposal:
        return self.propose_rows([request], [max_tokens])[0]

    def propose_rows(self, requests: list[Request], max_tokens: list[int]) -> list[Proposal]:
        """Every row drafts its chain token by token, all rows in one draft pass per token; a row
        stops at its own length, budget or confidence stop."""
        wanted = {r.row: min(self.length[r.row], m) for r, m in zip(requests, max_tokens)}
        drafting = [i for i, r in enumerate(requests) if wanted[r.row] > 0]
        proposals = [Proposal.empty(r.device) for r in requests]
        if not drafting:
            return proposals
        going = [requests[i] for i in drafting]
        logits = self._catch_up(going)
        tokens, probs = {r.row: [] for r in going}, {r.row: [] for r in going}
        while True:
            if going[0].sampling.greedy:
                chosen = logits.argmax(dim=-1)
            else:
                q = probabilities(logits, going[0].sampling)
                chosen = torch.cat([sample(q[j], r.generator).view(1) for j, r in enumerate(going)])
                for j, r in enumerate(going):
                    probs[r.row].append(q[j])
            unsure = self._unsure(logits, chosen, probs, going) if self.stop_below_prob else [False] * len(going)
            still = []
            for j, r in enumerate(going):
                tokens[r.row].append(chosen[j : j + 1])
                if len(tokens[r.row]) < wanted[r.row] and not unsure[j]:
                    still.append(j)
            if not still:
                break
            going = [going[j] for j in still]
            logits = self._next(going, chosen[still])
        for i in drafting:
            row = requests[i].row
            self.proposed[row] = len(tokens[row])
            proposals[i] = Proposal(torch.cat(tokens[row]), torch.stack(probs[row]) if probs[row] else None)
        return proposals

    def _unsure(self, logits, chosen, probs, requests: list[Request]) -> list[bool]:
        """Whether the draft gave each row's chosen token less than stop_below_prob: its softmax for
        greedy decoding, its processed (temperature/top-k/top-p) probability when sampling. The token
        is still proposed, as transformers' ConfidenceCriteria does (it stops after appending)."""
        q = logits.float().softmax(dim=-1) if requests[0].sampling.greedy else torch.stack(
            [probs[r.row][-1] for r in requests])
        return (q[torch.arange(len(requests), device=q.device), chosen] < self.stop_below_prob).tolist()

    def _catch_up(self, requests: list[Request]) -> torch.Tensor:
        """Each row's draft logits after its last committed token (rows, V). A row's first step (its
        draft cache is empty) runs alone: in the other rows' pass of a few tokens it would pad every
        row to its prompt's length. The other rows catch up together."""
        logits = [None] * len(requests)
        fresh = [j for j, r in enumerate(requests) if self.draft.row_length(r.row) == 0]
        for j in fresh:
            logits[j] = self._first_pass(requests[j])
        rest = [j for j in range(len(requests)) if logits[j] is None]
        if rest:
            for j, row_logits in zip(rest, self._later_pass([requests[j] for j in rest])):
                logits[j] = row_logits
        return torch.stack(logits)

    def _first_pass(self, request: Request) -> torch.Tensor:
        """The draft's prefill of the prompt (through the prefix cache): its last logits (V,)."""
        return self.draft.prefill(request.tokens, request.prefix_cache, row=request.row)[0][-1]

    def _later_pass(self, requests: list[Request]) -> torch.Tensor:
        """One pass over every row's one or two committed tokens its cache has not seen yet: (rows, V)."""
        unseen = [torch.tensor(r.tokens[self.draft.row_length(r.row):], device=r.device) for r in requests]
        return self.draft.forward_some([r.row for r in requests], unseen, last_only=True)

    def _next(self, requests: list[Request], tokens: torch.Tensor) -> torch.Tensor:
        """The draft's logits (rows, V) after each row's own latest token."""
        return self.draft.forward_some([r.row for r in requests], list(tokens.view(-1, 1)), last_only=True)

    def on_commit(self, request: Request, accepted: int) -> None:
        row = request.row
        self.draft.rollback(self._kept(request, accepted), row)
        if self.gamma_schedule == "heuristic":  # as transformers: grow by 2 after a fully accepted draft
            self.length[row] = self.length[row] + 2 if accepted == self.proposed[row] else max(1, self.length[row] - 1)

    def _kept(self, request: Request, accepted: int) -> int:
        """How much of the draft's cache stays after a step: it holds the old tokens plus all but
        the last draft, of which the committed ones stay."""
        return min(self.draft.row_length(request.row), len(request.tokens) - 1)
