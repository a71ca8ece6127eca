"""Chi-square tests of speculative sampling whose power is shown: each of four deliberately wrong
acceptance rules (tests/acceptance_variants.py: row 0's q reused, residual not normalised,
resampling from p instead of the residual, top-p applied after the rule instead of before) must
fail at p < 1e-6 where the correct rule passes at p > 1e-3; first on fixed rows, where the law of
a step is known in closed form, then end to end through the Decoder on two architectures with a
draft that is right about half the time. The sample sizes come from the power computed from
the exact wrong laws (tests/exact_laws.py), which the power tests re-check; all seeds are fixed.
"""

import copy
import functools
from collections import Counter

import pytest
import torch
from acceptance_variants import WRONG, as_decoder_rule, correct, sample_steps
from exact_laws import decoding_law, next_logits, speculative_step_law, target_law, variant_step_law
from goodness_of_fit import p_value, power

from specdec import Decoder, GenerationConfig
from specdec.metrics import acceptance_rate
from specdec.sampling import SamplingParams, probabilities
from specdec.strategies import create_strategy
from specdec.tiny import tiny_random_model
from specdec.verify import rejection_sampling

SAMPLING = SamplingParams(temperature=1.0, top_k=0, top_p=0.7)  # top-p < 1, or applying it late is no bug
CONFIG = GenerationConfig(max_new_tokens=4, temperature=1.0, top_p=0.7)
RULES = [correct, *WRONG]


def tv(law: dict, other: dict) -> float:
    return sum(abs(law.get(s, 0.0) - other.get(s, 0.0)) for s in law.keys() | other.keys()) / 2


def counts_of(tokens: torch.Tensor) -> dict:
    """Rows of step tokens (-1 after a step's end) -> outcome -> count."""
    rows, counts = torch.unique(tokens, dim=0, return_counts=True)
    return {tuple(t for t in row if t >= 0): c for row, c in zip(rows.tolist(), counts.tolist())}


# Fixed rows: a target with 4 rows and a draft with 3 over 5 tokens, from seeded logits. At 2,000
# samples the computed power at p < 1e-6 is over 0.99999 for every wrong rule (200 samples would
# give each about 0.999).
FIXED_SAMPLES = 2000
_rows = torch.Generator().manual_seed(0)
FIXED_LOGITS = torch.randn(4, 5, generator=_rows)
FIXED_Q = probabilities(torch.randn(3, 5, generator=_rows), SAMPLING)
FIXED_LAW = speculative_step_law(probabilities(FIXED_LOGITS, SAMPLING), FIXED_Q)


def fixed_drafts(generator: torch.Generator) -> torch.Tensor:
    """(FIXED_SAMPLES, 3) draft tokens, column i drawn from the draft's row i."""
    return torch.multinomial(FIXED_Q, FIXED_SAMPLES, replacement=True, generator=generator).T


@pytest.mark.parametrize("variant", RULES, ids=lambda v: v.__name__)
def test_rule_on_fixed_rows(variant):
    generator = torch.Generator().manual_seed(1)
    drafts = fixed_drafts(generator)
    tokens = sample_steps(variant, FIXED_LOGITS.expand(FIXED_SAMPLES, -1, -1), drafts,
                          FIXED_Q.expand(FIXED_SAMPLES, -1, -1), SAMPLING, generator)
    p = p_value(counts_of(tokens), FIXED_LAW)
    assert p > 1e-3 if variant is correct else p < 1e-6, p


def test_specdec_rule_on_fixed_rows():
    """specdec.verify's rejection sampling itself, one step per call, at the same sample size."""
    generator = torch.Generator().manual_seed(1)
    counts = Counter(tuple(rejection_sampling(FIXED_LOGITS, drafts, FIXED_Q, SAMPLING, generator).tokens)
                     for drafts in fixed_drafts(generator))
    assert p_value(counts, FIXED_LAW) > 1e-3


def test_fixed_rows_sample_size_has_the_stated_power():
    assert tv(variant_step_law(correct, FIXED_LOGITS, FIXED_Q, SAMPLING), FIXED_LAW) < 1e-6  # the law code agrees
    for wrong in WRONG:
        assert power(FIXED_LAW, variant_step_law(wrong, FIXED_LOGITS, FIXED_Q, SAMPLING), FIXED_SAMPLES) > 0.99999


# End to end: 4 new tokens with gamma = 2, so the first step verifies two drafts and row 0's q
# can be misused. 4-token vocabularies, one layer; the target's head is scaled (random weights
# alone give near-uniform laws) and the draft is the target with noise on its head, right about
# half the time. The seeds were searched for (among the first 60) as ones whose computed power at
# 500 samples is over 0.9999 for every wrong rule; 500 Decoder runs take a few seconds per rule.
DECODER_SAMPLES = 500
GAMMA = 2
PROMPT = [0, 1, 2, 3, 1]
SEEDS = {"llama": 54, "gpt_neox": 18}


@functools.cache
def target_and_draft(arch: str):
    target = tiny_random_model(arch, vocab_size=4, seed=SEEDS[arch], hidden_size=16, intermediate_size=32,
                               num_hidden_layers=1, num_attention_heads=2)
    draft = copy.deepcopy(target)
    target_head, draft_head = target.get_output_embeddings().weight, draft.get_output_embeddings().weight
    with torch.no_grad():
        target_head.mul_(8.0)
        noise = torch.randn(draft_head.shape, generator=torch.Generator().manual_seed(SEEDS[arch]))
        draft_head.copy_(target_head + 1.5 * target_head.std() * noise)
    return target, draft


@functools.cache
def exact_law(arch: str) -> dict:
    return target_law(next_logits(target_and_draft(arch)[0], PROMPT), SAMPLING, CONFIG.max_new_tokens)


@pytest.mark.parametrize("arch", SEEDS)
@pytest.mark.parametrize("variant", [None, *WRONG], ids=lambda v: v.__name__ if v else "specdec")
def test_decoder_output_law(arch, variant):
    """variant None: the draft strategy's own rule (specdec.verify), which must pass with about half
    of the drafts kept."""
    target, draft = target_and_draft(arch)
    strategy = create_strategy("draft", draft_model=draft, gamma=GAMMA)
    if variant:
        strategy.acceptance_rule = lambda sampling, tree: as_decoder_rule(variant)
    decoder = Decoder(target, strategy, eos_token_ids=set())
    outs = [decoder.generate(PROMPT, CONFIG, seed=seed) for seed in range(1, DECODER_SAMPLES + 1)]
    p = p_value(Counter(tuple(out.token_ids) for out in outs), exact_law(arch))
    if variant is None:
        rate = acceptance_rate([step for out in outs for step in out.metrics.steps])
        assert p > 1e-3 and 0.3 < rate < 0.7, (p, rate)
    else:
        assert p < 1e-6, p


@pytest.mark.parametrize("arch", SEEDS)
def test_decoder_sample_size_has_the_stated_power(arch):
    target, draft = target_and_draft(arch)
    target_logits, draft_logits = next_logits(target, PROMPT), next_logits(draft, PROMPT)
    law = decoding_law(correct, target_logits, draft_logits, SAMPLING, CONFIG.max_new_tokens, GAMMA)
    assert tv(law, exact_law(arch)) < 1e-6  # the correct rule is lossless, by the law code too
    for wrong in WRONG:
        wrong_law = decoding_law(wrong, target_logits, draft_logits, SAMPLING, CONFIG.max_new_tokens, GAMMA)
        assert power(exact_law(arch), wrong_law, DECODER_SAMPLES) > 0.9999, wrong.__name__
