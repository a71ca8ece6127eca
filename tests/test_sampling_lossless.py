"""Sampling with `draft` must give exactly the target's distribution (rejection sampling).

On a tiny model with a 4-token vocabulary, the exact joint distribution of the first four
generated tokens is computed by enumeration; thousands of sampled generations are compared
with it by a chi-square test. That such tests catch wrong acceptance rules, and at what sample
size, is shown in test_sampling_power.py.
"""

import itertools

import pytest
import torch
from conftest import random_eagle
from exact_laws import next_logits, target_law
from goodness_of_fit import p_value

from specdec import Decoder, GenerationConfig
from specdec.drafts.medusa_heads import MedusaHeads
from specdec.sampling import SamplingParams
from specdec.strategies import Proposal, Strategy, create_strategy
from specdec.tiny import tiny_random_model

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


def exact_distribution(model, sampling: SamplingParams) -> dict:
    """P(first NEW_TOKENS tokens = s) for every sequence s, by enumerating prefixes."""
    return target_law(next_logits(model, PROMPT), sampling, NEW_TOKENS)


def sample_counts(decoder: Decoder, config: GenerationConfig) -> dict:
    counts = dict.fromkeys(itertools.product(range(VOCAB), repeat=NEW_TOKENS), 0)
    for seed in range(SAMPLES):
        counts[tuple(decoder.generate(PROMPT, config, seed=seed).token_ids)] += 1
    return counts


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
