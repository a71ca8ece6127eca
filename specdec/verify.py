"""Acceptance rules: given the target's view of a proposal, how many draft tokens to keep
and which token the target adds after them (the correction or the bonus).

Every rule takes the target's logits over [pending token, *draft tokens] (k+1 rows) and
returns a Verdict. Greedy match is lossless for greedy decoding; rejection sampling
(Leviathan et al. 2023, Chen et al. 2023) is lossless for sampling.
"""

from dataclasses import dataclass

import torch

from specdec.sampling import SamplingParams, probabilities, sample


@dataclass(frozen=True)
class Verdict:
    tokens: list[int]  # what to commit: the accepted draft tokens, then the target's own token

    @property
    def accepted(self) -> int:
        return len(self.tokens) - 1


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
