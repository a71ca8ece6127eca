"""Speculative sampling's acceptance rule in two pieces, and four deliberately wrong variants
of it, so that tests can show they tell a wrong rule from the right one.

A variant maps a batch of verify passes (target logits (..., k+1, V), draft tokens (..., k),
the draft's probabilities (..., k, V)) to (accept, draw): accept[..., i] is the chance of keeping
draft i once the ones before it are kept, draw[..., i, :] what the target's own token is drawn
from after a rejection at i, and draw[..., k, :] after k acceptances (the bonus). One definition
then gives a vectorised sampler (`sample_steps`), an acceptance rule for the Decoder
(`as_decoder_rule`) and the exact law of a step (`step_law`), from which sample sizes are
chosen by computed power. Tokens are drawn by inverse CDF, as vectorised samplers are: a row
that does not sum to one leaves its missing mass to the last token id.
"""

import dataclasses

import torch

from specdec.sampling import SamplingParams, probabilities
from specdec.verify import Verdict


def _at(rows: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return rows.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def _pieces(p, drafts, q, after_rejection):
    """accept = min(1, p(x)/q(x)), where q(x) = 0 keeps x whenever p(x) > 0 (as `r * q < p` does)."""
    p_x, q_x = _at(p[..., :-1, :], drafts), _at(q, drafts)
    accept = torch.where(q_x > 0, p_x / q_x.clamp_min(1e-30), (p_x > 0).float()).clamp(max=1.0)
    return accept, torch.cat([after_rejection, p[..., -1:, :]], dim=-2)


def correct(logits, drafts, q, sampling: SamplingParams):
    """Leviathan et al. 2023: keep x with min(1, p(x)/q(x)); after a rejection draw from the
    residual (p - q)+ divided by its sum (from p itself where it is empty, as specdec.verify)."""
    p = probabilities(logits, sampling)
    residual = (p[..., :-1, :] - q).clamp_min(0.0)
    total = residual.sum(dim=-1, keepdim=True)
    return _pieces(p, drafts, q, torch.where(total > 0, residual / total.clamp_min(1e-30), p[..., :-1, :]))


def row0_q(logits, drafts, q, sampling: SamplingParams):
    """Bug: the draft's row 0 probabilities used at every position."""
    return correct(logits, drafts, q[..., :1, :].expand_as(q), sampling)


def unnormalised_residual(logits, drafts, q, sampling: SamplingParams):
    """Bug: the residual (p - q)+ drawn from as it is, not divided by its sum."""
    p = probabilities(logits, sampling)
    return _pieces(p, drafts, q, (p[..., :-1, :] - q).clamp_min(0.0))


def resample_from_p(logits, drafts, q, sampling: SamplingParams):
    """Bug: after a rejection, the target's token drawn from p instead of the residual."""
    p = probabilities(logits, sampling)
    return _pieces(p, drafts, q, p[..., :-1, :])


def top_p_after(logits, drafts, q, sampling: SamplingParams):
    """Bug: the rule runs on p without top-p, which is applied only to the rows drawn from."""
    accept, draw = correct(logits, drafts, q, dataclasses.replace(sampling, top_p=1.0))
    return accept, probabilities(draw.log(), SamplingParams(1.0, 0, sampling.top_p))


WRONG = [row0_q, unnormalised_residual, resample_from_p, top_p_after]


def sample_steps(variant, logits, drafts, q, sampling: SamplingParams, generator: torch.Generator):
    """One step per batch row (batch dims (B,)): tokens (B, k+1), -1 after the step's last token."""
    accept, draw = variant(logits, drafts, q, sampling)
    batch, k = drafts.shape
    passed = torch.rand(batch, k, generator=generator, device=drafts.device) < accept
    n = passed.long().cumprod(dim=-1).sum(dim=-1)  # drafts kept: the leading run of passes
    rows = draw[torch.arange(batch, device=drafts.device), n]
    u = torch.rand(batch, 1, generator=generator, device=drafts.device)
    token = (rows.cumsum(dim=-1) <= u).sum(dim=-1).clamp(max=rows.shape[-1] - 1)  # inverse CDF
    tokens = torch.cat([drafts, drafts.new_full((batch, 1), -1)], dim=-1)
    tokens[torch.arange(k + 1, device=drafts.device) >= n[:, None]] = -1
    tokens[torch.arange(batch, device=drafts.device), n] = token
    return tokens


def as_decoder_rule(variant):
    """`variant` as an acceptance rule with specdec.verify's signature (one verify pass at a time),
    for a strategy's acceptance_rule."""

    def rule(target_logits, draft_tokens, draft_probs, sampling, generator) -> Verdict:
        q = draft_probs if draft_probs is not None else target_logits.new_zeros(0, target_logits.shape[-1])  # k = 0
        tokens = sample_steps(variant, target_logits[None], draft_tokens[None], q[None], sampling, generator)[0]
        return Verdict(tokens[tokens >= 0].tolist())

    return rule


def step_law(variant, logits, drafts, q, sampling: SamplingParams) -> torch.Tensor:
    """law[..., m, t]: the chance that the step keeps drafts[..., :m] and then draws t, the
    drafts being given; inverse-CDF draws put a row's missing mass on the last token."""
    accept, draw = variant(logits, drafts, q, sampling)
    draw = draw.clone()
    draw[..., -1] += (1.0 - draw.sum(dim=-1)).clamp_min(0.0)
    one = accept.new_ones(*accept.shape[:-1], 1)
    kept = torch.cat([one, accept.cumprod(dim=-1)], dim=-1)  # P(the first m drafts kept)
    stops = torch.cat([1.0 - accept, one], dim=-1)  # P(no more kept | the first m kept)
    return (kept * stops).unsqueeze(-1) * draw
