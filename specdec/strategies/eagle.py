"""EAGLE (Li et al. 2024): draft-model speculation where the draft is one decoder layer on
the target's own hidden states (specdec.drafts.eagle_draft), proposing a chain that the target
verifies in one pass, exactly as `draft` does (greedy match; lossless rejection sampling),
or with `tree_nodes`, EAGLE-2's dynamic tree (Li et al. 2024b), verified as Medusa's trees are.

The draft runs one position behind the tokens: its position t pairs the target's hidden
state at t with token t + 1 and predicts the hidden state at t + 1, whose LM-head scores
propose token t + 2. After each verify pass it catches up on the positions the target just
verified, with the target's true hidden states (request.target_hidden); while drafting it
feeds its own predicted hidden state back in. Everything else (gamma, the heuristic
schedule, the confidence stop, rollback) is the `draft` strategy's.
"""

import torch

from specdec.drafts.eagle_draft import EagleDraft, load_eagle_draft
from specdec.errors import ConfigError
from specdec.strategies.base import Proposal, Request, register
from specdec.strategies.draft import DraftModel
from specdec.tree import DraftLevel, Tree, grown_ancestors, require_tree_attention


@register
class Eagle(DraftModel):
    name = "eagle"
    needs_draft_model = False
    needs_target_model = True
    needs_target_hidden = True
    keeps_draft_hidden = True
    prepared_modules = ("eagle",)

    def __init__(self, target_model, draft="smollm2-135m-eagle", head_tokens: int | None = None, gamma: int = 3,
                 gamma_schedule: str = "constant", stop_below_prob: float = 0.3, tree_nodes: int | None = None,
                 tree_topk: int = 4):
        self.eagle = draft if isinstance(draft, EagleDraft) else load_eagle_draft(draft, target_model, head_tokens)[0]
        self._drafting(gamma, gamma_schedule, stop_below_prob)
        if tree_nodes is not None:
            check_tree_options(target_model, tree_nodes, tree_topk, gamma_schedule, stop_below_prob)
        self.tree_nodes, self.tree_topk = tree_nodes, tree_topk
        self.verified = {}  # per row: draft positions fed with the target's true hidden states (kept after a step)
        self.predicted = {}  # per row: (1, d) the draft's guess of the target's hidden state at its next position

    @property
    def draft_model(self):
        """The draft's decoder (`draft`'s loop runs it); `fc` maps its inputs."""
        return self.eagle.lm

    def propose_rows(self, requests: list[Request], max_tokens: list[int]) -> list[Proposal]:
        """Chains: all rows draft together (the `draft` strategy's loop). Trees: row by row."""
        if self.tree_nodes is None:
            return super().propose_rows(requests, max_tokens)
        return [self._propose_tree(r, min(self.gamma, m)) if min(self.gamma, m) > 0 else Proposal.empty(r.device)
                for r, m in zip(requests, max_tokens)]

    def _propose_tree(self, request: Request, depth: int) -> Proposal:
        """EAGLE-2's dynamic tree: a node's score is the draft's joint log-probability of its path.
        Depth by depth, the tree_topk best-scored new nodes go through the draft in one pass (each
        sees the verified positions and its ancestors) and each proposes its tree_topk best next
        tokens, until the tree is `depth` deep or no deeper node could make the cut. Of all nodes
        proposed, the tree_nodes best-scored are verified: a node never scores above its parent,
        so they form a tree."""
        row = request.row
        logits, parent_hidden = self._catch_up([request])[0], self.predicted[row]
        paths, parent_slots, parent_scores = [()], [-1], torch.zeros(1, device=request.device)
        seen = torch.zeros(0, 0, dtype=torch.bool, device=request.device)  # run nodes' ancestors among run nodes
        candidates = []  # (score, path, token)
        for d in range(1, depth + 1):
            top = logits.float().log_softmax(dim=-1).topk(self.tree_topk, dim=-1)
            scores = (parent_scores[:, None] + top.values).flatten()
            tokens = top.indices.flatten()
            level = [(s, paths[i // self.tree_topk] + (i % self.tree_topk,), t)
                     for i, (s, t) in enumerate(zip(scores.tolist(), tokens.tolist()))]
            candidates += level
            if d == depth or cannot_enter(candidates, self.tree_nodes, max(s for s, _, _ in level)):
                break
            chosen = scores.topk(min(self.tree_topk, len(level))).indices  # the frontier to run through the draft
            rows = (chosen // self.tree_topk).tolist()
            parents = [parent_slots[r] for r in rows]
            seen = grown_ancestors(seen, parents)
            logits = self.draft.forward(None, tree=DraftLevel(seen[-len(rows):], self.verified[row] + d - 1),
                                        embeds=self.eagle.inputs(parent_hidden[rows], tokens[chosen]), row=row)
            parent_hidden, parent_scores = self.draft.hidden, scores[chosen]
            paths = [level[i][1] for i in chosen.tolist()]
            parent_slots = list(range(len(seen) - len(rows), len(seen)))
        candidates.sort(key=lambda c: (-c[0], len(c[1])))
        best = {path: token for _, path, token in candidates[: self.tree_nodes]}
        tree = Tree(list(best))
        return Proposal(torch.tensor([best[tuple(p)] for p in tree.choices], device=request.device), tree=tree)

    def _catch_up(self, requests: list[Request]) -> torch.Tensor:
        """Feed each row the positions the target verified since the draft's last pass (their true
        hidden states, each with the token that followed it), all rows in one pass: the draft's
        logits (rows, V) for each row's next token. On a row's first step these are the prompt's
        (its uncached part: rotary positions are relative)."""
        inputs = []
        for r in requests:
            hidden = r.target_hidden
            first = len(r.tokens) - 1 - len(hidden)
            inputs.append(self.eagle.inputs(hidden, torch.tensor(r.tokens[first + 1 :], device=r.device)))
        logits = self._forward(requests, inputs)
        for r in requests:
            self.verified[r.row] = self.draft.row_length(r.row)
        return logits

    def _next(self, requests: list[Request], tokens: torch.Tensor) -> torch.Tensor:
        hidden = torch.cat([self.predicted[r.row] for r in requests])
        return self._forward(requests, list(self.eagle.inputs(hidden, tokens)[:, None]))

    def _forward(self, requests: list[Request], inputs: list[torch.Tensor]) -> torch.Tensor:
        """Each row's inputs (n, d) through the draft: its last logits (rows, V); each row's predicted
        hidden state is the draft's at its last input."""
        logits = self.draft.forward_some([r.row for r in requests], inputs, last_only=True, embeds=True)
        for j, (r, x) in enumerate(zip(requests, inputs)):
            self.predicted[r.row] = self.draft.hidden_rows[j, len(x) - 1 : len(x)]
        return logits

    def _kept(self, request: Request, accepted: int) -> int:
        # the verified positions; this step's drafts were fed predicted states, and come back with true ones
        return self.verified[request.row]


def cannot_enter(candidates: list, size: int, best_new: float) -> bool:
    """Whether no deeper node can be among the `size` best-scored: each scores at most its parent,
    so at most `best_new`, and `size` nodes already score above it. Drafting stops there (as the
    chain's confidence stop does, but without changing the tree)."""
    return len(candidates) >= size and sorted((s for s, _, _ in candidates), reverse=True)[size - 1] > best_new


def check_tree_options(target_model, tree_nodes, tree_topk, gamma_schedule: str, stop_below_prob: float) -> None:
    for knob, value in (("tree_nodes", tree_nodes), ("tree_topk", tree_topk)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"strategy.{knob} must be an integer >= 1 (got {value!r}); strategy.tree_nodes=null "
                              "drafts a chain")
    if gamma_schedule != "constant" or stop_below_prob:
        raise ConfigError("strategy.tree_nodes drafts a tree as deep as strategy.gamma; the chain's "
                          "gamma_schedule and stop_below_prob do not apply: set strategy.gamma_schedule=constant "
                          "strategy.stop_below_prob=0 (or use strategy=eagle_tree)")
    require_tree_attention(target_model, "tree drafting", "set strategy.tree_nodes=null for a chain")
