"""Acceptance rules: given the target's view of a proposal, how many draft tokens to keep
and which token the target adds after them (the correction or the bonus).

Every rule takes the target's logits over [pending token, *draft tokens] (k+1 rows) and
returns a Verdict. Greedy match is lossless for greedy decoding; rejection sampling
(Leviathan et al. 2023, Chen et al. 2023) is lossless for sampling. Tree rules walk the
tree's root-to-leaf paths and keep the longest accepted one: greedy match (lossless) and
Medusa's typical acceptance (lossy, for sampling).
"""

from dataclasses import dataclass

import torch

from specdec.sampling import SamplingParams, probabilities, sample


@dataclass(frozen=True)
class Verdict:
    tokens: list[int]  # what to commit: the accepted draft tokens, then the target's own token
    rows: list[int] | None = None  # trees: verify-pass rows of the root and the accepted nodes

    @property
    def accepted(self) -> int:
        return len(self.tokens) - 1

    @property
    def kept_rows(self) -> slice | list[int]:
        """The verify-pass rows whose positions stay in the cache: the pending token's and the accepted drafts'."""
        return self.rows if self.rows is not None else slice(0, self.accepted + 1)


def greedy_match(target_logits, draft_tokens, draft_probs, sampling, generator) -> Verdict:
    """Keep drafts while they equal the target's argmax; the argmax after them is the next token."""
    k = draft_tokens.numel()
    both = torch.cat([target_logits.argmax(dim=-1), draft_tokens]).tolist()  # one device-to-host copy
    choices, drafts = both[: k + 1], both[k + 1 :]
    n = 0
    while n < k and drafts[n] == choices[n]:
        n += 1
    return Verdict(choices[: n + 1])


def rejection_sampling(target_logits, draft_tokens, draft_probs, sampling, generator) -> Verdict:
    """Accept draft token x with probability min(1, p(x)/q(x)); on the first rejection, sample
    from the residual max(p - q, 0). `draft_probs` None means the proposal was deterministic
    (q is one-hot), as for n-gram lookup."""
    p = probabilities(target_logits, sampling)
    k = draft_tokens.numel()
    rows = torch.arange(k, device=p.device)
    p_x = p[rows, draft_tokens]
    q_x = draft_probs[rows, draft_tokens] if draft_probs is not None else torch.ones_like(p_x)
    r = torch.rand(k, generator=generator, device=p.device)
    both = torch.cat([(r * q_x < p_x).long(), draft_tokens]).tolist()  # one device-to-host copy
    passed, drafts = both[:k], both[k:]
    n = passed.index(0) if 0 in passed else k
    if n == k:
        return Verdict(drafts + [int(sample(p[k], generator).item())])
    if draft_probs is not None:
        residual = (p[n] - draft_probs[n]).clamp_min(0.0)
    else:
        residual = p[n].clone()
        residual[drafts[n]] = 0.0
    if residual.sum() <= 0:  # p == q up to rounding: the residual is empty, p itself is exact
        residual = p[n]
    return Verdict(drafts[:n] + [int(sample(residual / residual.sum(), generator).item())])


def default_rule(sampling: SamplingParams):
    return greedy_match if sampling.greedy else rejection_sampling


def _longest_path(tree, node_tokens: torch.Tensor, passed: torch.Tensor, score: torch.Tensor | None = None):
    """The root-to-leaf path whose first n nodes all passed (`passed` and `score` per node) with the
    largest n (ties: highest `score` summed over the accepted nodes, else the first path):
    (its rows, root first; the tokens of its accepted nodes)."""
    paths = tree.tensors(node_tokens.device)["leaf_paths"]  # (leaves, depth + 1) rows, -1 past a leaf
    nodes = paths[:, 1:] - 1  # node index = row - 1
    ok = passed[nodes.clamp_min(0)] & (nodes >= 0)
    kept = ok.long().cumprod(dim=1)
    lengths = kept.sum(dim=1)
    longest = lengths == lengths.max()
    if score is None:
        best = int(longest.long().argmax())  # the first longest path
    else:
        gained = (kept * score[nodes.clamp_min(0)]).sum(dim=1)
        best = int(torch.where(longest, gained, float("-inf")).argmax())
    rows = paths[best, : int(lengths[best]) + 1]
    return rows, node_tokens[rows[1:] - 1]


def _tree_match(choices: torch.Tensor, node_tokens: torch.Tensor, tree) -> Verdict:
    """Keep the longest path whose every node equals the target's choice after its parent
    (siblings differ, so at most one path qualifies); the choice after it comes next."""
    rows, tokens = _longest_path(tree, node_tokens, node_tokens == choices[tree.tensors(choices.device)["parents"]])
    rows = rows.tolist()
    return Verdict(tokens.tolist() + [int(choices[rows[-1]])], rows)


def tree_greedy(target_logits, node_tokens, tree, sampling, generator) -> Verdict:
    """The target's argmax after every row, matched along the tree: the tokens greedy decoding emits."""
    return _tree_match(target_logits.argmax(dim=-1), node_tokens, tree)


def tree_sampling(target_logits, node_tokens, tree, sampling, generator) -> Verdict:
    """Lossless for sampling with a deterministic tree (Medusa's top-k nodes): the target draws
    its token after every row, and a node is kept when it equals its parent's draw. Every
    committed token is then a draw from the target given the tokens before it, as if sampled
    one by one (rejection sampling of one-hot drafts reduces to this)."""
    return _tree_match(sample(probabilities(target_logits, sampling), generator), node_tokens, tree)


def typical_acceptance(posterior_threshold: float, posterior_alpha: float):
    """Medusa's typical acceptance (Cai et al. 2024): a node passes when the target gives it more
    than min(posterior_threshold, posterior_alpha * exp(-entropy)) of its (processed) distribution
    after the parent; the longest passing path wins (ties: the likelier), then the target samples
    the next token. Lossy: the output no longer follows the target's distribution exactly."""

    def rule(target_logits, node_tokens, tree, sampling, generator) -> Verdict:
        p = probabilities(target_logits, sampling)  # (size + 1, V)
        entropy = -(p * p.clamp_min(1e-20).log()).sum(dim=-1)
        threshold = torch.minimum(torch.full_like(entropy, posterior_threshold), posterior_alpha * (-entropy).exp())
        parents = tree.tensors(p.device)["parents"]
        p_node = p[parents, node_tokens]
        rows, tokens = _longest_path(tree, node_tokens, p_node > threshold[parents], p_node.clamp_min(1e-20).log())
        rows = rows.tolist()
        return Verdict(tokens.tolist() + [int(sample(p[rows[-1]], generator).item())], rows)

    return rule
