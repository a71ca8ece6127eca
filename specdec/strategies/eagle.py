"""EAGLE (Li et al. 2024): draft-model speculation where the draft is one decoder layer on
the target's own hidden states (specdec.drafts.eagle_draft), proposing a chain that the target
verifies in one pass, exactly as `draft` does (greedy match; lossless rejection sampling),
or with `tree_nodes`, EAGLE-2's dynamic tree (Li et al. 2024b), verified as Medusa's trees are.

The draft runs one position behind the tokens: its position t pairs the target's hidden
state at t with token t + 1 and predicts the hidden state at t + 1, whose LM-head scores
propose token t + 2. After each verify pass it catches up on the positions the target just
verified, with the target's true hidden states (request.target_hidden); while drafting it
feeds its own predicted hidden state back in. The draft is ours or a public EAGLE-1/2 or
EAGLE-3 checkpoint (specdec.drafts.public); EAGLE-3's target_hidden is three layers' inputs.
Everything else (gamma, the heuristic schedule, the confidence stop, catching up a fresh row
alone, rollback) is the `draft` strategy's.
"""

import torch
from torch import nn

from specdec.auto_size import AUTO, MAX_DEPTH, MAX_NODES, acceptance_of, best, check_size, rank_law, tree_speedups
from specdec.drafts.public import load_eagle
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
        self.eagle = draft if isinstance(draft, nn.Module) else load_eagle(draft, target_model, head_tokens)
        self.target_features = getattr(self.eagle, "feature_layers", None)  # EAGLE-3 reads three target layers' inputs
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

    def acceptance(self) -> list[float]:
        return acceptance_of(self.eagle)

    def tune(self, costs) -> dict:
        """Chains: the `draft` strategy's. Trees (tree_nodes and/or gamma, its depth, auto): the tree with
        the best predicted speedup for the draft's shipped acceptance by depth and this device's
        costs (specdec.auto_size), a level of tree_topk nodes costing one draft pass."""
        if self.tree_nodes is None or AUTO not in (self.gamma, self.tree_nodes):
            return super().tune(costs)
        chances = rank_law(self.acceptance(), self.tree_topk, MAX_DEPTH if self.gamma == AUTO else self.gamma)
        sizes = range(1, MAX_NODES + 1) if self.tree_nodes == AUTO else [self.tree_nodes]
        speedups = tree_speedups(chances, costs.verify, costs.draft_pass(self.draft_model, self.tree_topk), sizes)
        self.tree_nodes = best({n: speedup for n, (speedup, _) in speedups.items()})
        speedup, depth = speedups[self.tree_nodes]
        self.gamma = depth if self.gamma == AUTO else self.gamma
        self.auto_sizes = {"tree_nodes": self.tree_nodes, "gamma": self.gamma, "predicted_speedup": round(speedup, 3)}
        return self.auto_sizes

    def propose_rows(self, requests: list[Request], max_tokens: list[int]) -> list[Proposal]:
        """Chains: the `draft` strategy's loop. Trees: every row's tree grows level by level, the
        levels of all rows in one draft pass."""
        if self.tree_nodes is None:
            return super().propose_rows(requests, max_tokens)
        depths = [min(self.gamma, m) for m in max_tokens]
        drafting = [r for r, depth in zip(requests, depths) if depth > 0]
        trees = iter(self._propose_trees(drafting, [d for d in depths if d > 0]) if drafting else [])
        return [next(trees) if depth > 0 else Proposal.empty(r.device) for r, depth in zip(requests, depths)]

    def _propose_trees(self, requests: list[Request], depths: list[int]) -> list[Proposal]:
        """EAGLE-2's dynamic trees: a node's score is the draft's joint log-probability of its path.
        Depth by depth, each row's tree_topk best-scored new nodes go through the draft (each sees
        the verified positions and its ancestors; all rows in one pass) and each proposes its
        tree_topk best next tokens, until the tree is its depth deep or no deeper node could make
        the cut. Of all nodes proposed, the tree_nodes best-scored are verified: a node never
        scores above its parent, so they form a tree."""
        logits = self._catch_up(requests)
        growing = [GrowingTree(r, depth, logits[j], self.predicted[r.row]) for j, (r, depth) in enumerate(zip(requests, depths))]
        trees, level = list(growing), 1
        while growing:
            grown = [(g, self._grow(g, level)) for g in growing]
            growing = [g for g, frontier in grown if frontier is not None]
            if not growing:
                break
            frontiers = [frontier for _, frontier in grown if frontier is not None]
            logits = self.draft.forward_some([g.request.row for g in growing], [inputs for inputs, _ in frontiers],
                                             [shape for _, shape in frontiers], embeds=True)
            for j, (g, (inputs, _)) in enumerate(zip(growing, frontiers)):
                g.logits, g.parent_hidden = logits[j, : len(inputs)], self.draft.hidden_rows[j, : len(inputs)]
            level += 1
        return [g.best(self.tree_nodes) for g in trees]

    def _grow(self, g: "GrowingTree", d: int):
        """Score level d of row g's tree; the next frontier's draft inputs and mask (DraftLevel), or
        None when the tree is done."""
        top = g.logits.float().log_softmax(dim=-1).topk(self.tree_topk, dim=-1)
        scores = (g.parent_scores[:, None] + top.values).flatten()
        tokens = top.indices.flatten()
        level = [(s, g.paths[i // self.tree_topk] + (i % self.tree_topk,), t)
                 for i, (s, t) in enumerate(zip(scores.tolist(), tokens.tolist()))]
        g.candidates += level
        if d == g.depth or cannot_enter(g.candidates, self.tree_nodes, max(s for s, _, _ in level)):
            return None
        chosen = scores.topk(min(self.tree_topk, len(level))).indices  # the frontier to run through the draft
        rows = (chosen // self.tree_topk).tolist()
        g.seen = grown_ancestors(g.seen, [g.parent_slots[r] for r in rows])
        inputs = self.eagle.inputs(g.parent_hidden[rows], tokens[chosen])
        g.parent_scores, g.paths = scores[chosen], [level[i][1] for i in chosen.tolist()]
        g.parent_slots = list(range(len(g.seen) - len(rows), len(g.seen)))
        return inputs, DraftLevel(g.seen[-len(rows):], self.verified[g.request.row] + d - 1)

    def _catch_up(self, requests: list[Request]) -> torch.Tensor:
        """The `draft` strategy's catch-up, fed the positions the target verified since the draft's
        last pass (their true hidden states, each with the token that followed it); on a row's first
        step these are the prompt's (its uncached part: rotary positions are relative)."""
        logits = super()._catch_up(requests)
        for r in requests:
            self.verified[r.row] = self.draft.row_length(r.row)
        return logits

    def _first_pass(self, request: Request) -> torch.Tensor:
        return self._later_pass([request])[0]

    def _later_pass(self, requests: list[Request]) -> torch.Tensor:
        inputs = []
        for r in requests:
            first = len(r.tokens) - 1 - len(r.target_hidden)
            inputs.append(self.eagle.inputs(r.target_hidden, torch.tensor(r.tokens[first + 1 :], device=r.device)))
        return self._forward(requests, inputs)

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


class GrowingTree:
    """One row's EAGLE-2 tree while it is drafted: its candidates so far and its frontier."""

    def __init__(self, request: Request, depth: int, logits: torch.Tensor, hidden: torch.Tensor):
        self.request, self.depth = request, depth
        self.logits, self.parent_hidden = logits, hidden  # the frontier's draft scores and hidden states
        self.paths, self.parent_slots = [()], [-1]
        self.parent_scores = torch.zeros(1, device=request.device)
        self.seen = torch.zeros(0, 0, dtype=torch.bool, device=request.device)  # run nodes' ancestors among run nodes
        self.candidates = []  # (score, path, token)

    def best(self, size: int) -> Proposal:
        self.candidates.sort(key=lambda c: (-c[0], len(c[1])))
        best = {path: token for _, path, token in self.candidates[:size]}
        tree = Tree(list(best))
        return Proposal(torch.tensor([best[tuple(p)] for p in tree.choices], device=self.request.device), tree=tree)


def cannot_enter(candidates: list, size: int, best_new: float) -> bool:
    """Whether no deeper node can be among the `size` best-scored: each scores at most its parent,
    so at most `best_new`, and `size` nodes already score above it. Drafting stops there (as the
    chain's confidence stop does, but without changing the tree)."""
    return len(candidates) >= size and sorted((s for s, _, _ in candidates), reverse=True)[size - 1] > best_new


def check_tree_options(target_model, tree_nodes, tree_topk, gamma_schedule: str, stop_below_prob: float) -> None:
    check_size("tree_nodes", tree_nodes, "; strategy.tree_nodes=null drafts a chain")
    if isinstance(tree_topk, bool) or not isinstance(tree_topk, int) or tree_topk < 1:
        raise ConfigError(f"strategy.tree_topk must be an integer >= 1 (got {tree_topk!r})")
    if gamma_schedule != "constant" or stop_below_prob:
        raise ConfigError("strategy.tree_nodes drafts a tree as deep as strategy.gamma; the chain's "
                          "gamma_schedule and stop_below_prob do not apply: set strategy.gamma_schedule=constant "
                          "strategy.stop_below_prob=0 (or use strategy=eagle_tree)")
    require_tree_attention(target_model, "tree drafting", "set strategy.tree_nodes=null for a chain")
