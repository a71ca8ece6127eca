"""Candidate trees verified in one target pass (Medusa, SpecInfer).

A tree is given in Medusa's "choices" format: one path per node, a tuple of top-k ranks, one
per depth ((0,) is head 1's best token, (0, 1) head 2's second best after it). Row 0 of a
verify pass is the pending token (the root); row i is node i, nodes sorted by depth. Built
once per tree: the ancestor mask (a node attends to the cache, its ancestors and itself),
the depths (position ids = cached length + depth) and the root-to-leaf paths that the
acceptance rules walk (Medusa's retrieval indices). A draft that grows its own tree (EAGLE-2)
runs it through the draft depth by depth: DraftLevel is one depth's mask and positions there.
"""

from dataclasses import dataclass

import torch

from specdec.runtime.cached_model import CachedModel
from specdec.errors import ConfigError


class Tree:
    def __init__(self, choices):
        given = [tuple(c) for c in choices]
        for p in given:
            if not p or any(not isinstance(r, int) or isinstance(r, bool) or r < 0 for r in p):
                raise ConfigError(f"tree path {list(p)}: every path is a non-empty list of top-k ranks >= 0")
        paths = sorted(set(given), key=lambda p: (len(p), p))
        if not paths or len(paths) != len(given):
            raise ConfigError("strategy.tree must list distinct paths, e.g. [[0], [1], [0, 0]]")
        index = {p: i + 1 for i, p in enumerate(paths)}  # row of each node; the root is row 0
        for p in paths:
            if len(p) > 1 and p[:-1] not in index:
                raise ConfigError(f"tree path {list(p)} has no parent {list(p[:-1])}: a tree lists every prefix of its paths")
        self.choices = [list(p) for p in paths]
        self.size = len(paths)  # nodes, the root excluded
        self.depth = max(map(len, paths))
        self.parents = [-1] + [index.get(p[:-1], 0) for p in paths]
        self.depths = [0] + [len(p) for p in paths]
        self.ranks = [p[-1] for p in paths]  # node i + 1 is head depth-1's rank-th token
        self.max_rank = max(self.ranks)
        ancestors = torch.eye(self.size + 1, dtype=torch.bool)
        for row in range(1, self.size + 1):
            ancestors[row] |= ancestors[self.parents[row]]
        self.ancestors = ancestors
        parents_of = set(self.parents)
        leaves = [row for row in range(1, self.size + 1) if row not in parents_of]
        self.leaf_paths = torch.full((len(leaves), self.depth + 1), -1, dtype=torch.long)
        for i, leaf in enumerate(leaves):
            path = ancestors[leaf].nonzero().flatten()  # rows increase with depth: root first
            self.leaf_paths[i, : path.numel()] = path
        self._on_device = {}

    def tensors(self, device) -> dict:
        """The tree's index tensors on `device`, copied there once."""
        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = {
                "hidden": ~self.ancestors.to(device),  # what each row of the tree may not see
                "depths": torch.tensor(self.depths, device=device),
                "parents": torch.tensor(self.parents[1:], device=device),  # each node's parent row
                "heads": torch.tensor(self.depths[1:], device=device) - 1,  # the head that proposes each node
                "ranks": torch.tensor(self.ranks, device=device),
                "leaf_paths": self.leaf_paths.to(device),
            }
        return self._on_device[key]

    def attention_mask(self, cached: int, dtype: torch.dtype, device) -> torch.Tensor:
        """(1, 1, size + 1, cached + size + 1) additive mask: 0 where a row may attend (every cached
        token, its ancestors, itself), the dtype's minimum elsewhere."""
        return additive_mask(cached, self.tensors(device)["hidden"], dtype)

    def position_ids(self, cached: int, device) -> torch.Tensor:
        return (cached + self.tensors(device)["depths"])[None]

    def pruned(self, max_depth: int) -> "Tree":
        """The nodes at depth <= max_depth (when fewer tokens may still be generated)."""
        return Tree([c for c in self.choices if len(c) <= max_depth])


@dataclass
class DraftLevel:
    """One depth of a draft tree in one draft pass, given to CachedModel.forward as a tree: its
    rows sit at one position and see the cached verified positions, their ancestors among the
    nodes run before (the last columns of `seen`) and themselves."""

    seen: torch.Tensor  # (rows, run nodes incl. these rows) bool
    position: int

    def attention_mask(self, cached: int, dtype: torch.dtype, device) -> torch.Tensor:
        return additive_mask(cached, ~self.seen, dtype)

    def position_ids(self, cached: int, device) -> torch.Tensor:
        return torch.full((1, len(self.seen)), self.position, device=device)


def additive_mask(cached: int, blocked: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(1, 1, rows, cached + rows) additive mask for `rows` new tokens after `cached` ones: 0 where
    a row may attend, the dtype's minimum where `blocked` (rows, last columns) says it may not;
    the columns before those are always visible."""
    rows, tail = blocked.shape
    mask = torch.zeros(1, 1, rows, cached + rows, dtype=dtype, device=blocked.device)
    mask[0, 0, :, cached + rows - tail :].masked_fill_(blocked, torch.finfo(dtype).min)
    return mask


def grown_ancestors(seen: torch.Tensor, parents: list[int]) -> torch.Tensor:
    """The (n, n) ancestors-or-self matrix of the nodes run so far, grown by new nodes with the given
    parents (-1: the root, not a run node)."""
    n, m = len(seen), len(parents)
    grown = torch.zeros(n + m, n + m, dtype=torch.bool, device=seen.device)
    grown[:n, :n] = seen
    for i, parent in enumerate(parents):
        if parent >= 0:
            grown[n + i, :n] = seen[parent]
        grown[n + i, n + i] = True
    return grown


def chain(depth: int) -> list[list[int]]:
    """The tree of one path: each head's best token."""
    return [[0] * d for d in range(1, depth + 1)]


def best_tree(accuracies: list[list[float]], size: int) -> list[list[int]]:
    """The `size` nodes with the highest chance to be accepted, as Medusa builds its sparse trees:
    a path's chance is the product of its heads' top-k accuracies (accuracies[head][rank]). A child's
    chance is never above its parent's, so the best nodes always form a tree."""
    frontier = [((r,), acc) for r, acc in enumerate(accuracies[0])]
    chosen = []
    while frontier and len(chosen) < size:
        frontier.sort(key=lambda node: (-node[1], len(node[0]), node[0]))
        path, chance = frontier.pop(0)
        chosen.append(list(path))
        if len(path) < len(accuracies):
            frontier += [(path + (r,), chance * acc) for r, acc in enumerate(accuracies[len(path)])]
    return chosen


def supports_tree_attention(model) -> bool:
    """Whether the model honours a 4D attention mask and position ids: a node verified in a tree
    beside a sibling gets the logits of its own path run as a plain sequence."""
    tree = Tree([[0], [1]])
    ids = [t % model.config.get_text_config().vocab_size for t in range(1, 7)]
    as_tree, as_chain = CachedModel(model, "dynamic"), CachedModel(model, "dynamic")
    as_tree.prefill(ids[:3])
    as_chain.prefill(ids[:4])
    try:  # root ids[3], then two siblings: ids[4] and ids[5]
        logits = as_tree.forward(torch.tensor(ids[3:], device=as_tree.device), tree=tree)
    except Exception:  # noqa: BLE001 - a model that rejects the mask does not support trees
        return False
    alone = as_chain.forward(torch.tensor(ids[5:], device=as_chain.device))[0].float()
    # equal up to float rounding (different kernels for different row counts); an ignored mask is off by far more
    return (logits[2].float() - alone).abs().max().item() <= 1e-3 * (1 + alone.abs().max().item())


def require_tree_attention(model, needs: str, fix: str) -> None:
    """A ConfigError naming `fix` unless the model honours tree masks (supports_tree_attention)."""
    if not supports_tree_attention(model):
        raise ConfigError(f"{type(model).__name__} does not honour a 4D attention mask with position ids, "
                          f"which {needs} needs: {fix}")
