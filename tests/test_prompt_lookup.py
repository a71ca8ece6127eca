"""`prompt_lookup` must be lossless: greedy output == baseline token for token, and sampled
output follows the target's distribution. Prompts repeat short patterns so that lookups hit
and get accepted; the lookup itself is checked on hand-made sequences."""

import random

import pytest
import torch
from conftest import ARCHITECTURES, baseline_and_eos, decode_with, tiny
from test_sampling_lossless import NEW_TOKENS, PROMPT, SETTINGS, TARGET, exact_distribution, p_value, sample_counts

from specdec import Decoder, GenerationConfig
from specdec.errors import ConfigError
from specdec.sampling import SamplingParams
from specdec.strategies import Request, create_strategy

SETTINGS_GRID = [(1, 1), (1, 4), (2, 10), (3, 10), (4, 3)]  # (max_ngram, num_tokens)


def repetitive_prompt(rng: random.Random) -> list[int]:
    """A random pattern of 2 to 6 bytes repeated, cut at a random length, with an occasional typo."""
    pattern = [rng.randrange(0, 256) for _ in range(rng.randint(2, 6))]
    prompt = (pattern * 12)[: rng.randint(len(pattern) + 1, 40)]
    if rng.random() < 0.5:
        prompt[rng.randrange(len(prompt))] = rng.randrange(0, 256)
    return prompt


def stopped_inside_a_proposal(result) -> bool:
    """Whether the request ended on an accepted proposal token: EOS among the last step's accepted
    drafts (the rest of the verdict is dropped), or max_new_tokens reached by an accepted proposal
    that filled the budget (the loop caps a proposal at the budget minus the target's token)."""
    steps = result.metrics.steps
    if not steps:
        return False
    last = steps[-1]
    committed = result.metrics.new_tokens - 1 - sum(s.accepted + 1 for s in steps[:-1])  # in the last step
    if result.stop_reason == "eos":
        return committed <= last.accepted
    return 0 < last.proposed == last.accepted == committed - 1


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_greedy_prompt_lookup_equals_baseline(arch):
    target = tiny(arch)
    rng = random.Random(arch)
    accepted = 0
    for trial in range(8):
        prompt = repetitive_prompt(rng)
        config = GenerationConfig(max_new_tokens=rng.randint(1, 30))
        base, eos = baseline_and_eos(target, prompt, config, trial)
        for max_ngram, num_tokens in SETTINGS_GRID:
            out = decode_with(target, "prompt_lookup", prompt, config, eos=eos, max_ngram=max_ngram, num_tokens=num_tokens)
            assert out.token_ids == base.token_ids, (max_ngram, num_tokens, prompt)
            assert out.stop_reason == base.stop_reason
            accepted += out.metrics.accepted
    assert accepted > 0, "no lookup was ever accepted: the test proves nothing"


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt_neox"])
def test_eos_and_max_new_tokens_inside_an_accepted_proposal(arch):
    """The prompt ends with the model's own continuation, so its output is mostly looked up."""
    target = tiny(arch)
    rng = random.Random(arch)
    inside = {"length": 0, "eos": 0}
    for _ in range(4):
        prompt = repetitive_prompt(rng)
        prompt += decode_with(target, "baseline", prompt, GenerationConfig(max_new_tokens=30), eos=set()).token_ids
        long = decode_with(target, "baseline", prompt, GenerationConfig(max_new_tokens=30), eos=set())
        for max_new in range(1, 16):
            out = decode_with(target, "prompt_lookup", prompt, GenerationConfig(max_new_tokens=max_new), eos=set(),
                              num_tokens=4)
            assert out.token_ids == long.token_ids[:max_new] and out.metrics.new_tokens == max_new
            inside["length"] += stopped_inside_a_proposal(out)
        for eos in set(long.token_ids):
            expected = long.token_ids[: long.token_ids.index(eos) + 1]
            out = decode_with(target, "prompt_lookup", prompt, GenerationConfig(max_new_tokens=30), eos={eos})
            assert out.token_ids == expected and out.stop_reason == "eos"
            inside["eos"] += stopped_inside_a_proposal(out)
    assert inside["length"] > 0 and inside["eos"] > 0, inside


@pytest.mark.parametrize("sampling", SETTINGS, ids=["t1", "t0.8-topk3-topp0.9"])
def test_prompt_lookup_sampling_matches_target_distribution(sampling):
    """Every lookup hits here (all 4 tokens occur in the prompt), so most steps verify a proposal."""
    config = GenerationConfig(max_new_tokens=NEW_TOKENS, temperature=sampling.temperature,
                              top_k=sampling.top_k, top_p=sampling.top_p)
    decoder = Decoder(TARGET, create_strategy("prompt_lookup", max_ngram=2, num_tokens=3), eos_token_ids=set())
    accepted = sum(decoder.generate(PROMPT, config, seed=seed).metrics.accepted for seed in range(50))
    assert accepted > 0
    assert p_value(sample_counts(decoder, config), exact_distribution(TARGET, sampling)) > 1e-3


def propose(strategy, tokens: list[int], max_tokens: int = 100) -> list[int]:
    request = Request(list(tokens), 1, SamplingParams(), None, torch.device("cpu"))
    strategy.begin(request)
    return strategy.propose(request, max_tokens).tokens.tolist()


def test_lookup_takes_the_most_recent_match():
    strategy = create_strategy("prompt_lookup", max_ngram=1, num_tokens=2)
    assert propose(strategy, [5, 1, 2, 5, 3, 4, 5]) == [3, 4]


def test_lookup_tries_the_longest_ngram_first():
    # the last 2-gram (7, 5) occurred once, followed by 1 2; the last token 5 alone occurred later, followed by 3
    tokens = [7, 5, 1, 2, 9, 5, 3, 8, 7, 5]
    assert propose(create_strategy("prompt_lookup", max_ngram=2, num_tokens=2), tokens) == [1, 2]
    assert propose(create_strategy("prompt_lookup", max_ngram=1, num_tokens=2), tokens) == [3, 8]
    assert propose(create_strategy("prompt_lookup", max_ngram=3, num_tokens=2), tokens) == [1, 2]  # falls back to n=2


def test_no_match_proposes_nothing():
    strategy = create_strategy("prompt_lookup")
    assert propose(strategy, [1, 2, 3, 4]) == []
    assert propose(strategy, [1]) == []


def test_proposal_is_bounded_by_num_tokens_and_max_tokens():
    tokens = [1, 2, 3, 4, 5, 6, 7, 8, 1]
    assert propose(create_strategy("prompt_lookup", num_tokens=3), tokens) == [2, 3, 4]
    assert propose(create_strategy("prompt_lookup", num_tokens=10), tokens, max_tokens=2) == [2, 3]
    assert propose(create_strategy("prompt_lookup", num_tokens=10), tokens, max_tokens=0) == []


def test_a_close_match_repeats_the_loop():
    """The match 3 tokens back: the copy overlaps itself and continues the period-3 loop."""
    assert propose(create_strategy("prompt_lookup", max_ngram=2, num_tokens=7), [9, 1, 2, 3, 1, 2, 3]) == [1, 2, 3, 1, 2, 3, 1]
    assert propose(create_strategy("prompt_lookup", max_ngram=3, num_tokens=4), [4, 4, 4]) == [4, 4, 4, 4]


def test_tables_follow_the_growing_request():
    """The index is built incrementally across steps; a new request starts from scratch."""
    strategy = create_strategy("prompt_lookup", max_ngram=2, num_tokens=2)
    request = Request([1, 2, 3], 3, SamplingParams(), None, torch.device("cpu"))
    strategy.begin(request)
    assert strategy.propose(request, 10).tokens.tolist() == []
    request.tokens += [4, 2]
    assert strategy.propose(request, 10).tokens.tolist() == [3, 4]
    request.tokens += [3, 9, 2, 3]
    assert strategy.propose(request, 10).tokens.tolist() == [9, 2]
    assert propose(strategy, [4, 2, 3]) == []


@pytest.mark.parametrize("options,message", [
    ({"max_ngram": 0}, "strategy.max_ngram must be an integer >= 1"),
    ({"max_ngram": 2.5}, "strategy.max_ngram must be an integer >= 1"),
    ({"num_tokens": 0}, "strategy.num_tokens must be an integer >= 1"),
    ({"num_tokens": "10"}, "strategy.num_tokens must be an integer >= 1"),
    ({"num_tokens": True}, "strategy.num_tokens must be an integer >= 1"),
    ({"gamma": 3}, "bad options for strategy 'prompt_lookup'"),
])
def test_bad_options_name_the_fix(options, message):
    with pytest.raises(ConfigError, match=message):
        create_strategy("prompt_lookup", **options)
