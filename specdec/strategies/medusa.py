"""Medusa (Cai et al. 2024): heads on the target's last hidden state guess the next tokens;
their top-k choices form a tree that the target verifies in one pass with a tree attention
mask, keeping the longest accepted path (the cache is compacted to that path).

Proposing costs no extra model pass: the hidden state comes from the previous verify pass
(request.target_hidden[-1]). Acceptance: greedy match for greedy decoding (lossless); for sampling,
`typical` (Medusa's typical acceptance, lossy: faster, output no longer the target's exact
distribution) or `exact` (the target draws after every node, lossless).
"""

import torch

from specdec.auto_size import AUTO, acceptance_of, best, check_size, rank_law, tree_speedups
from specdec.errors import ConfigError
from specdec.placement import check_head_beside_embedding
from specdec.runtime.static_step import MODES
from specdec.drafts.medusa_heads import MedusaHeads, top_guesses
from specdec.drafts.public import load_medusa
from specdec.drafts.assets import frequent_token_head
from specdec.strategies.base import Proposal, Request, Strategy, register
from specdec.tree import Tree, best_tree, chain, require_tree_attention
from specdec.verify import typical_acceptance

ACCEPTANCE = ("typical", "exact")
RANKS = 10  # top-k ranks a tree=auto of heads without measured top-k accuracies may use


@register
class Medusa(Strategy):
    name = "medusa"
    needs_target_model = True
    needs_target_hidden = True
    proposes_rows = True
    prepared_modules = ("heads", "lm_head")

    def __init__(self, target_model, heads="smollm2-135m-medusa", tree=None, acceptance: str = "typical",
                 posterior_threshold: float = 0.09, posterior_alpha: float = 0.3, head_tokens: int | None = None):
        if acceptance not in ACCEPTANCE:
            raise ConfigError(f"strategy.acceptance must be one of {', '.join(ACCEPTANCE)} (got {acceptance!r})")
        require_tree_attention(target_model, "tree verification",
                               "use a strategy with chain drafts (draft, prompt_lookup)")
        check_head_beside_embedding(target_model, "strategy=medusa")
        if isinstance(heads, MedusaHeads):
            self.heads, config = heads, {}
        else:
            self.heads, config = load_medusa(heads, target_model)
        self.heads_config = config  # the heads' training record (medusa_config.json): default tree, accuracies
        self.tree = tree if tree == AUTO else Tree(self.tree_choices(tree))  # auto: set by tune
        if tree != AUTO and self.tree.depth > self.heads.num_heads:
            raise ConfigError(f"strategy.tree is {self.tree.depth} deep but there are {self.heads.num_heads} Medusa heads")
        self.lm_head = self._lm_head(target_model, head_tokens, config)
        self.acceptance = acceptance
        self.typical = typical_acceptance(posterior_threshold, posterior_alpha)
        self.pruned: dict[int, Tree] = {}
        self.guesses: dict[int, list[tuple[int, torch.Tensor]]] = {}  # per row: (position, heads' top-1 guesses)
        self.compiled, self.rows = None, 0  # the heads' compiled pass, over this many rows (_top_guesses)

    def tree_choices(self, tree) -> list[list[int]]:
        """strategy.tree as paths: a list of paths as given; an int N: the best N-node tree for the
        heads' measured top-k accuracy; None: the heads' default tree (else a chain as deep as
        there are heads)."""
        config = self.heads_config
        if tree is None:
            return config.get("default_tree") or chain(self.heads.num_heads)
        if isinstance(tree, int) and not isinstance(tree, bool):
            if "topk_accuracy" not in config:
                raise ConfigError("strategy.tree=N needs heads with measured top-k accuracies (medusa_config.json "
                                  "'topk_accuracy', written by experiments.train_medusa): give a list of paths, "
                                  "or strategy.tree=auto")
            check_size("tree", tree, ", or a list of paths")
            return best_tree(config["topk_accuracy"], tree)
        if isinstance(tree, str):
            raise ConfigError(f"strategy.tree must be auto, null, a number of nodes or a list of paths (got {tree!r})")
        return [list(path) for path in tree]

    def tune(self, costs) -> dict:
        """tree=auto: the best tree for this device's verify costs (specdec.auto_size) and the heads'
        measured top-k accuracies (heads without them: their acceptance by depth and the rank law)."""
        if self.tree != AUTO:
            return self.auto_sizes
        chances = self.heads_config.get("topk_accuracy") or rank_law(acceptance_of(self.heads_config), RANKS,
                                                                     self.heads.num_heads)
        speedups = tree_speedups(chances, costs.verify)
        nodes = best({n: speedup for n, (speedup, _) in speedups.items()})
        self.tree = Tree(best_tree(chances, nodes))
        self.auto_sizes = {"tree": nodes, "depth": self.tree.depth, "predicted_speedup": round(speedups[nodes][0], 3)}
        return self.auto_sizes

    def _lm_head(self, target_model, head_tokens: int | None, config: dict):
        """The target's LM head, or its `head_tokens` most frequent tokens only (specdec.drafts.subset_head);
        heads with projections of their own (Medusa-1's) do not use it."""
        head = target_model.get_output_embeddings()
        if not head_tokens or self.heads.projections is not None:
            return head
        if "directory" not in config:
            raise ConfigError("strategy.head_tokens needs heads loaded from a directory with tokens_by_frequency.json")
        return frequent_token_head(head.weight, config["directory"], head_tokens)

    def begin(self, request: Request) -> None:
        self.guesses[request.row] = []

    def propose(self, request: Request, max_tokens: int) -> Proposal:
        return self.propose_rows([request], [max_tokens])[0]

    @torch.inference_mode()
    def propose_rows(self, requests: list[Request], max_tokens: list[int]) -> list[Proposal]:
        """The heads of every row in one pass over their last hidden states; each row's tree is cut
        to its own token budget."""
        trees = [None if m <= 0 else self.tree if self.tree.depth <= m else self._pruned(m) for m in max_tokens]
        live = [i for i, tree in enumerate(trees) if tree is not None]
        proposals = [Proposal.empty(r.device) for r in requests]
        if not live:
            return proposals
        depth, ranks = max(trees[i].depth for i in live), max(trees[i].max_rank for i in live) + 1
        hidden = torch.stack([requests[i].target_hidden[-1] for i in live])
        top = self._top_guesses(hidden, depth, ranks)  # (rows, depth, ranks)
        for j, i in enumerate(live):
            tree, request = trees[i], requests[i]
            self.guesses[request.row].append((len(request.tokens), top[j, : tree.depth, 0]))  # head k: tokens[len + k]
            index = tree.tensors(top.device)
            proposals[i] = Proposal(top[j][index["heads"], index["ranks"]], tree=tree)
        return proposals

    def _top_guesses(self, hidden: torch.Tensor, depth: int, ranks: int) -> torch.Tensor:
        """The heads' `ranks` best tokens at each of the first `depth` heads. Under compiled steps
        (runtime.compile or cuda_graphs, which prepare sets on the heads) one graph serves the run:
        always the full tree's depth and ranks, over as many rows as the run has had (padded), so
        that a tree cut short near the end of a generation or a finished row compiles nothing new."""
        mode = getattr(self.heads, "static_steps", None)
        if mode is None:
            return top_guesses(self.heads, self.lm_head, hidden, depth, ranks)
        if self.compiled is None:
            self.compiled = torch.compile(top_guesses, mode=MODES[mode], dynamic=False)
        self.rows = max(self.rows, len(hidden))
        padded = hidden.new_zeros(self.rows, hidden.shape[-1])
        padded[: len(hidden)] = hidden
        if mode == "cuda_graphs":
            torch.compiler.cudagraph_mark_step_begin()
        top = self.compiled(self.heads, self.lm_head, padded, self.tree.depth, self.tree.max_rank + 1)
        return top[: len(hidden), :depth, :ranks].clone()  # a graph's output is overwritten by its next replay

    def _pruned(self, depth: int) -> Tree:
        if depth not in self.pruned:
            self.pruned[depth] = self.tree.pruned(depth)
        return self.pruned[depth]

    def acceptance_rule(self, sampling, tree: bool):
        if sampling.greedy or self.acceptance == "exact":
            return super().acceptance_rule(sampling, tree)
        return self.typical  # lossy: Medusa's typical acceptance

    def stats(self, request: Request) -> dict:
        """Each head's top-1 guesses checked against the tokens that were finally generated (only the
        heads the tree uses are run, so a depth-1 tree measures head 1 only)."""
        hits, checked = [0] * self.heads.num_heads, [0] * self.heads.num_heads  # heads a tree never used: 0 checked
        guesses = self.guesses.get(request.row, [])
        if guesses:
            for start, row in zip([s for s, _ in guesses], [g.tolist() for _, g in guesses]):
                for k, token in enumerate(row):
                    if start + k < len(request.tokens):
                        checked[k] += 1
                        hits[k] += token == request.tokens[start + k]
        return {"head_top1_hits": hits, "head_top1_checked": checked}
