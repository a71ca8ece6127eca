"""Exact laws, by enumeration, for tests that compare sampled tokens with them: the target's
own law of its first tokens, the law of one speculative step on fixed rows (closed form, and
under any rule of acceptance_variants), and the law of the Decoder's output under such a rule.

An outcome is a tuple of token ids; a law maps outcomes to probabilities."""

import functools
import itertools

import torch
from acceptance_variants import step_law

from specdec.sampling import SamplingParams, probabilities


def next_logits(model, prompt: list[int]):
    """context (tuple of new tokens) -> the model's next-token logits after prompt + context."""

    @functools.cache
    def logits(context: tuple) -> torch.Tensor:
        with torch.inference_mode():
            return model(torch.tensor([prompt + list(context)])).logits[0, -1].float()

    return logits


def target_law(logits, sampling: SamplingParams, new_tokens: int) -> dict:
    """P(first new_tokens tokens = s) for every s, sampling from the target token by token."""
    law = {(): 1.0}
    for _ in range(new_tokens):
        law = {s + (t,): p * q for s, p in law.items()
               for t, q in enumerate(probabilities(logits(s), sampling).tolist())}
    return law


def speculative_step_law(p: torch.Tensor, q: torch.Tensor) -> dict:
    """One step of speculative sampling on fixed rows (target p (k+1, V), draft q (k, V), drafts
    drawn from q), in closed form: keeping x at row i happens with min(p_i, q_i)(x), a rejection
    at row m followed by t with (p_m - q_m)+(t), and t after k kept drafts with p_k(t)."""
    kept, stop = torch.minimum(p[:-1], q), torch.cat([(p[:-1] - q).clamp_min(0.0), p[-1:]])
    law = {}
    for m in range(p.shape[0]):
        for drafts in itertools.product(range(p.shape[1]), repeat=m):
            before = float(torch.prod(torch.stack([kept[i, x] for i, x in enumerate(drafts)]))) if m else 1.0
            law.update({drafts + (t,): before * w for t, w in enumerate(stop[m].tolist())})
    return law


def _drafts(vocab: int, k: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(vocab), repeat=k)), dtype=torch.long).view(vocab**k, k)


def _add_steps(law: dict, prefix: tuple, weight: float, drafts: torch.Tensor, steps: torch.Tensor) -> None:
    """law[prefix + drafts[j, :m] + (t,)] += weight * steps[j, m, t] for every j, m, t."""
    for (j, m, t), w in zip(steps.nonzero().tolist(), steps[steps > 0].tolist()):
        outcome = prefix + tuple(drafts[j, :m].tolist()) + (t,)
        law[outcome] = law.get(outcome, 0.0) + weight * w


def variant_step_law(variant, p_logits: torch.Tensor, q: torch.Tensor, sampling: SamplingParams) -> dict:
    """The law of one step of `variant` on fixed rows (target logits (k+1, V), draft q (k, V))."""
    k, vocab = q.shape
    drafts = _drafts(vocab, k)
    chance_of_drafts = q[torch.arange(k), drafts].prod(dim=-1)
    steps = step_law(variant, p_logits.expand(len(drafts), -1, -1), drafts, q.expand(len(drafts), -1, -1), sampling)
    law = {}
    _add_steps(law, (), 1.0, drafts, steps * chance_of_drafts[:, None, None])
    return law


def decoding_law(variant, target_logits, draft_logits, sampling: SamplingParams, new_tokens: int, gamma: int) -> dict:
    """The law of the first new_tokens tokens of the Decoder running the draft strategy at this
    gamma with `variant` as its acceptance rule: the first token from the target, then steps of
    k = min(gamma, tokens left - 1) drafts, as specdec.decoding and the draft strategy do."""
    law = {}

    def walk(committed: tuple, chance: float) -> None:
        if len(committed) == new_tokens:
            law[committed] = law.get(committed, 0.0) + chance
            return
        k = min(gamma, new_tokens - len(committed) - 1)
        drafts = _drafts(target_logits(committed).numel(), k)
        contexts = [[committed + tuple(d[:i].tolist()) for i in range(k + 1)] for d in drafts]
        p = torch.stack([torch.stack([target_logits(c) for c in row]) for row in contexts])
        q = torch.stack([torch.stack([probabilities(draft_logits(c), sampling) for c in row[:k]])
                         if k else p.new_zeros(0, p.shape[-1]) for row in contexts])
        chance_of_drafts = q.gather(-1, drafts[..., None])[..., 0].prod(dim=-1)
        steps = step_law(variant, p, drafts, q, sampling) * chance_of_drafts[:, None, None]
        outcomes = {}
        _add_steps(outcomes, committed, chance, drafts, steps)
        for outcome, w in outcomes.items():
            walk(outcome, w)

    for t, w in enumerate(probabilities(target_logits(()), sampling).tolist()):
        if w > 0:
            walk((t,), w)
    return law
