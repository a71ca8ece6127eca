"""`auto` draft lengths and tree sizes: the size with the best predicted speedup on this device.

The prediction of a size is the tokens a step commits on average over what the step costs, in
the target's decode steps (what the baseline pays per token):

    speedup(size) = E[tokens per step] / (draft passes x a draft pass + a verify pass over size + 1 tokens)

The costs are this device's (specdec.runtime.verify_cost: the verify-cost curve, a draft's pass).
E[tokens] comes from the draft's acceptance by depth, shipped with it (`acceptance_by_depth` in
its config: P(the draft's top token at depth d is the target's | the path before it is), measured
on its training recipe's held-out set); drafts without it take DEFAULT_ACCEPTANCE. A chain of
gamma commits 1 + sum_i prod_{j<=i} a_j. A tree needs how often the target's token is the
draft's rank-r guess: Medusa's heads ship it (`topk_accuracy`); for an EAGLE draft rank r > 0 gets
a_d (1 - a_d) / (r + 1)^2 (RANK_LAW). A tree of N nodes is then taken as the best static tree of
N nodes for these chances (specdec.tree.best_tree, Medusa's construction), committing 1 + the sum
of its nodes' path chances. EAGLE-2's dynamic tree picks per step and does at least as well, so
this underestimates big trees a little, alike on every device. Medusa's heads pass is not counted
(one small pass per step whatever the tree); a chain's confidence stop only shortens drafts.
"""

from specdec.errors import ConfigError
from specdec.tree import best_tree

AUTO = "auto"
DEFAULT_ACCEPTANCE = (0.6, 0.5, 0.45)  # drafts shipped without acceptance_by_depth (public checkpoints); the last repeats
MAX_GAMMA = 16  # chains tried by auto: 1..MAX_GAMMA tokens
MAX_NODES = 63  # trees tried by auto: 1..MAX_NODES nodes (a pass of at most 64 tokens, the curve's end)
MAX_DEPTH = 8  # the deepest tree auto builds when its depth is auto too


def check_size(knob: str, value, fix: str = "") -> None:
    """ConfigError unless `value` is `auto` or an integer >= 1."""
    if value == AUTO or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return
    raise ConfigError(f"strategy.{knob} must be auto (the best predicted size on this device) or an integer >= 1 "
                      f"(got {value!r}){fix}")


def acceptance_of(draft) -> list[float]:
    """The acceptance by depth a draft module (its `acceptance_by_depth`, set by its loader) or a
    heads config (its key) was shipped with, else DEFAULT_ACCEPTANCE."""
    measured = draft.get("acceptance_by_depth") if isinstance(draft, dict) else getattr(draft, "acceptance_by_depth", None)
    return list(measured or DEFAULT_ACCEPTANCE)


def at_depth(acceptance: list[float], depth: int) -> float:
    """a_depth (0-based), the last measured one repeating deeper."""
    return acceptance[min(depth, len(acceptance) - 1)]


def chain_tokens(acceptance: list[float], proposed: int) -> float:
    """Tokens a step commits on average when it proposes a chain of `proposed` tokens."""
    total, reach = 1.0, 1.0
    for i in range(proposed):
        reach *= at_depth(acceptance, i) if acceptance else 0.0
        total += reach
    return total


def rank_law(acceptance: list[float], ranks: int, depth: int) -> list[list[float]]:
    """chances[d][r]: the target's token at depth d is the draft's rank-r guess (RANK_LAW past the top one)."""
    return [[a] + [a * (1 - a) / (r + 1) ** 2 for r in range(1, ranks)]
            for a in (at_depth(acceptance, d) for d in range(depth))]


RANK_LAW = "a_d (1 - a_d) / (r + 1)^2"


def tree_tokens(chances: list[list[float]], nodes: int) -> tuple[float, int]:
    """(tokens a step commits on average, depth) of the best static tree of `nodes` nodes."""
    tree, total = best_tree(chances, nodes), 1.0
    for path in tree:
        reach = 1.0
        for depth, rank in enumerate(path):
            reach *= chances[depth][rank]
        total += reach
    return total, max(map(len, tree))


def best(predicted: dict[int, float]) -> int:
    """The size of the best prediction (the smallest one on a tie)."""
    return max(predicted, key=lambda size: (round(predicted[size], 6), -size))


def chain_speedups(acceptance: list[float], verify, draft_pass: float, max_gamma: int = MAX_GAMMA) -> dict:
    """gamma -> predicted speedup of a chain of gamma drafted tokens (gamma draft passes; `verify(k)`
    the cost of a pass over k tokens in decode steps)."""
    return {g: chain_tokens(acceptance, g) / (g * draft_pass + verify(g + 1)) for g in range(1, max_gamma + 1)}


def tree_speedups(chances: list[list[float]], verify, level_pass: float = 0.0,
                  sizes=range(1, MAX_NODES + 1)) -> dict:
    """nodes -> (predicted speedup, depth) of the best tree of that many nodes (for each of `sizes`),
    drafted level by level (one pass of `level_pass` decode steps per level; 0 for Medusa's heads)."""
    out = {}
    for n in sizes:
        tokens, depth = tree_tokens(chances, n)
        out[n] = (tokens / (depth * level_pass + verify(n + 1)), depth)
    return out
