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
    accepted: int  # how many draft tokens are kept, 0..k
    next_token: int  # the target's own token after them


def greedy_match(target_logits, draft_tokens, draft_probs, sampling, generator) -> Verdict:
    """Keep drafts while they equal the target's argmax; the argmax after them is the next token."""
    choices = target_logits.argmax(dim=-1)
    k = draft_tokens.numel()
    agree = (choices[:k] == draft_tokens).cumprod(dim=0)
    n = int(agree.sum().item())
    return Verdict(n, int(choices[n].item()))


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
    keep = (r * q_x < p_x).cumprod(dim=0)
    n = int(keep.sum().item())
    if n == k:
        return Verdict(n, int(sample(p[k], generator).item()))
    if draft_probs is not None:
        residual = (p[n] - draft_probs[n]).clamp_min(0.0)
    else:
        residual = p[n].clone()
        residual[draft_tokens[n]] = 0.0
    if residual.sum() <= 0:  # p == q up to rounding: the residual is empty, p itself is exact
        residual = p[n]
    return Verdict(n, int(sample(residual / residual.sum(), generator).item()))


def default_rule(sampling: SamplingParams):
    return greedy_match if sampling.greedy else rejection_sampling
