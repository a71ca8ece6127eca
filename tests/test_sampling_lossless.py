"""Sampling with `draft` must give exactly the target's distribution (rejection sampling).

On a tiny model with a 4-token vocabulary, the exact joint distribution of the first four
generated tokens is computed by enumeration; thousands of sampled generations are compared
with it by a chi-square test. A deliberately wrong acceptance rule fails the same test.
"""

import itertools

import pytest
import torch
from conftest import random_eagle
from scipy.stats import chisquare

from specdec import Decoder, GenerationConfig
from specdec.drafts.medusa_heads import MedusaHeads
from specdec.sampling import SamplingParams, probabilities, sample
from specdec.strategies import Proposal, Strategy, create_strategy
from specdec.tiny import tiny_random_model
from specdec.verify import Verdict

VOCAB, NEW_TOKENS, SAMPLES = 4, 4, 4000
PROMPT = [0, 1, 2, 3, 1]


def peaky_model(seed: int, scale: float):
    """Random weights give near-uniform next-token laws; a scaled head makes them distinct."""
    model = tiny_random_model("llama", vocab_size=VOCAB, seed=seed, hidden_size=32, intermediate_size=64,
                              num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1)
    with torch.no_grad():
        model.lm_head.weight.mul_(scale)
    return model


TARGET = peaky_model(seed=0, scale=12.0)
DRAFT = peaky_model(seed=1, scale=12.0)


@torch.inference_mode()
def exact_distribution(model, sampling: SamplingParams) -> dict:
    """P(first NEW_TOKENS tokens = s) for every sequence s, by enumerating prefixes."""
    law = {(): 1.0}
    for _ in range(NEW_TOKENS):
        nxt = {}
        for prefix, p in law.items():
            logits = model(torch.tensor([PROMPT + list(prefix)])).logits[0, -1]
            q = probabilities(logits, sampling)
            for t in range(VOCAB):
                nxt[prefix + (t,)] = p * q[t].item()
        law = nxt
    return law


def sample_counts(decoder: Decoder, config: GenerationConfig) -> dict:
    counts = dict.fromkeys(itertools.product(range(VOCAB), repeat=NEW_TOKENS), 0)
    for seed in range(SAMPLES):
        counts[tuple(decoder.generate(PROMPT, config, seed=seed).token_ids)] += 1
    return counts


def p_value(counts: dict, law: dict) -> float:
    """Chi-square goodness of fit, pooling outcomes with expected count < 5 into one bin."""
    observed, expected, rest_o, rest_e = [], [], 0, 0.0
    for seq, p in law.items():
        if p * SAMPLES >= 5:
            observed.append(counts[seq])
            expected.append(p * SAMPLES)
        else:
            rest_o, rest_e = rest_o + counts[seq], rest_e + p * SAMPLES
    observed.append(rest_o)
    expected.append(rest_e)
    total = sum(expected)  # float rounding: make both sum to SAMPLES exactly
    return chisquare(observed, [e * SAMPLES / total for e in expected]).pvalue


def resample_from_target_on_reject(target_logits, draft_tokens, draft_probs, sampling, generator) -> Verdict:
    """A classic bug: after a rejection, sample from p instead of the residual max(p - q, 0)."""
    p = probabilities(target_logits, sampling)
    k = draft_tokens.numel()
    for i in range(k):
        x = draft_tokens[i]
        if torch.rand(1, generator=generator).item() * draft_probs[i, x] >= p[i, x]:
            return Verdict(draft_tokens[:i].tolist() + [int(sample(p[i], generator).item())])
    return Verdict(draft_tokens.tolist() + [int(sample(p[k], generator).item())])


SETTINGS = [SamplingParams(1.0, 0, 1.0), SamplingParams(0.8, 3, 0.9)]


@pytest.mark.parametrize("sampling", SETTINGS, ids=["t1", "t0.8-topk3-topp0.9"])
def test_draft_sampling_matches_target_distribution(sampling):
    config = GenerationConfig(max_new_tokens=NEW_TOKENS, temperature=sampling.temperature,
                              top_k=sampling.top_k, top_p=sampling.top_p)
    law = exact_distribution(TARGET, sampling)
    decoder = Decoder(TARGET, create_strategy("draft", draft_model=DRAFT, gamma=3), eos_token_ids=set())
    assert p_value(sample_counts(decoder, config), law) > 1e-3


@pytest.mark.parametrize("sampling", SETTINGS, ids=["t1", "t0.8-topk3-topp0.9"])
def test_eagle_sampling_matches_target_distribution(sampling):
    """The EAGLE draft samples its chain from its own processed distribution; rejection sampling
    against the target's keeps the output law the target's."""
    config = GenerationConfig(max_new_tokens=NEW_TOKENS, temperature=sampling.temperature,
                              top_k=sampling.top_k, top_p=sampling.top_p)
    strategy = create_strategy("eagle", target_model=TARGET, draft=random_eagle(TARGET, 0), gamma=3)
    decoder = Decoder(TARGET, strategy, eos_token_ids=set())
    assert p_value(sample_counts(decoder, config), exact_distribution(TARGET, sampling)) > 1e-3


@pytest.mark.parametrize("sampling", SETTINGS, ids=["t1", "t0.8-topk3-topp0.9"])
def test_eagle_tree_sampling_matches_target_distribution(sampling):
    """EAGLE-2's dynamic tree is a deterministic function of the draft's scores, so the target
    drawing after every node (tree_sampling) keeps the output law the target's."""
    config = GenerationConfig(max_new_tokens=NEW_TOKENS, temperature=sampling.temperature,
                              top_k=sampling.top_k, top_p=sampling.top_p)
    strategy = create_strategy("eagle", target_model=TARGET, draft=random_eagle(TARGET, 0), gamma=3,
                               stop_below_prob=0, tree_nodes=6, tree_topk=2)
    decoder = Decoder(TARGET, strategy, eos_token_ids=set())
    assert p_value(sample_counts(decoder, config), exact_distribution(TARGET, sampling)) > 1e-3


def test_wrong_acceptance_rule_is_caught():
    sampling = SETTINGS[0]
    config = GenerationConfig(max_new_tokens=NEW_TOKENS, temperature=1.0)
    law = exact_distribution(TARGET, sampling)
    strategy = create_strategy("draft", draft_model=DRAFT, gamma=3)
    strategy.acceptance_rule = lambda sampling, tree: resample_from_target_on_reject
    wrong = Decoder(TARGET, strategy, eos_token_ids=set())
    assert p_value(sample_counts(wrong, config), law) < 1e-6


def test_baseline_sampling_matches_target_distribution():
    """The harness itself: plain sampling must pass, so a failure above is the rule's fault."""
    config = GenerationConfig(max_new_tokens=NEW_TOKENS, temperature=1.0)
    decoder = Decoder(TARGET, create_strategy("baseline"), eos_token_ids=set())
    assert p_value(sample_counts(decoder, config), exact_distribution(TARGET, SETTINGS[0])) > 1e-3


class RepeatLast(Strategy):
    """A deterministic proposer (like n-gram lookup): guesses the last token repeats."""

    name = "repeat_last_test"

    def propose(self, request, max_tokens):
        return Proposal(torch.full((min(2, max_tokens),), request.tokens[-1], device=request.device))


def test_deterministic_proposals_keep_the_target_distribution():
    """probs=None proposals take the one-hot branch of rejection sampling."""
    config = GenerationConfig(max_new_tokens=NEW_TOKENS, temperature=1.0)
    decoder = Decoder(TARGET, RepeatLast(), eos_token_ids=set())
    assert p_value(sample_counts(decoder, config), exact_distribution(TARGET, SETTINGS[0])) > 1e-3


@pytest.mark.parametrize("sampling", SETTINGS, ids=["t1", "t0.8-topk3-topp0.9"])
def test_medusa_exact_acceptance_matches_target_distribution(sampling):
    """Tree verification with `acceptance=exact`: the target draws after every node and a node
    is kept when it equals its parent's draw; random heads, a tree two wide and three deep."""
    config = GenerationConfig(max_new_tokens=NEW_TOKENS, temperature=sampling.temperature,
                              top_k=sampling.top_k, top_p=sampling.top_p)
    heads = MedusaHeads(TARGET.config.hidden_size, VOCAB, num_heads=3)
    with torch.no_grad():
        for p in heads.parameters():
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    strategy = create_strategy("medusa", target_model=TARGET, heads=heads, acceptance="exact",
                               tree=[[0], [1], [0, 0], [1, 0], [0, 1], [0, 0, 0]])
    decoder = Decoder(TARGET, strategy, eos_token_ids=set())
    assert p_value(sample_counts(decoder, config), exact_distribution(TARGET, sampling)) > 1e-3
