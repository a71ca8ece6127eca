"""Dynamic draft length for `draft`: the heuristic schedule and the confidence stop only change
how many tokens are proposed, so the output stays the baseline's; the recorded proposal
lengths follow the rules exactly."""

import random
from pathlib import Path

import pytest
import torch
from conftest import baseline_and_eos, decode_with, random_prompt, tiny
from test_greedy_lossless import drafts_for
from test_sampling_lossless import (
    DRAFT,
    NEW_TOKENS,
    SETTINGS,
    TARGET,
    exact_distribution,
    p_value,
    sample_counts,
)

from experiments.bench import strategy_config
from specdec import Decoder, GenerationConfig
from specdec.drafts.eagle_draft import EagleDraft
from specdec.errors import ConfigError
from specdec.drafts.medusa_heads import MedusaHeads
from specdec.strategies import create_strategy

VARIANTS = [  # (gamma, gamma_schedule, stop_below_prob)
    (1, "heuristic", 0.0), (4, "heuristic", 0.0), (4, "constant", 0.3), (3, "heuristic", 0.5), (4, "constant", 1.0),
]


def replayed_lengths(result, gamma: int, max_new_tokens: int, schedule: str = "heuristic") -> list[int]:
    """The proposal lengths the schedule gives, replayed on the recorded steps: gamma first; with transformers'
    heuristic +2 after a step whose proposal was accepted whole, else -1 (at least 1); cut to the token budget."""
    length, generated, expected = gamma, 1, []
    for step in result.metrics.steps:
        expected.append(min(length, max_new_tokens - generated - 1))
        if schedule == "heuristic":
            length = length + 2 if step.accepted == step.proposed else max(1, length - 1)
        generated += step.accepted + 1
    return expected


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt_neox", "gemma"])
def test_dynamic_draft_length_equals_baseline(arch):
    target = tiny(arch)
    drafts = drafts_for(arch)
    rng = random.Random(arch)
    for trial in range(4):
        prompt = random_prompt(rng)
        config = GenerationConfig(max_new_tokens=rng.randint(1, 30))
        base, eos = baseline_and_eos(target, prompt, config, trial)
        for name, draft in drafts.items():
            for gamma, schedule, threshold in VARIANTS:
                out = decode_with(target, "draft", prompt, config, eos=eos, draft_model=draft, gamma=gamma,
                                  gamma_schedule=schedule, stop_below_prob=threshold)
                assert out.token_ids == base.token_ids, (name, gamma, schedule, threshold)
                assert out.stop_reason == base.stop_reason


def test_heuristic_grows_by_two_with_an_always_right_draft():
    target = tiny("llama")
    out = decode_with(target, "draft", list(range(10)), GenerationConfig(max_new_tokens=60), eos=set(),
                      draft_model=target, gamma=4, gamma_schedule="heuristic")
    # 1 token from the prefill, then 5 + 7 + 9 + 11 + 13 per step; the last proposal is cut to the budget (13)
    assert out.metrics.to_dict()["proposed_per_step"] == [4, 6, 8, 10, 12, 13]  # as results.jsonl records it


def test_heuristic_shrinks_to_one_with_an_unrelated_draft():
    target = tiny("llama")
    out = decode_with(target, "draft", list(range(10)), GenerationConfig(max_new_tokens=40), eos=set(),
                      draft_model=tiny("llama", seed=1), gamma=5, gamma_schedule="heuristic")
    proposed = [s.proposed for s in out.metrics.steps]
    assert proposed[:5] == [5, 4, 3, 2, 1] and proposed.count(1) > len(proposed) / 2
    assert proposed == replayed_lengths(out, 5, 40)


@pytest.mark.parametrize("draft", ["self", "layer_skip", "unrelated"])
def test_heuristic_lengths_follow_the_rule(draft):
    target = tiny("qwen2")
    rng = random.Random(draft)
    for _ in range(5):
        prompt, max_new = random_prompt(rng), rng.randint(2, 50)
        out = decode_with(target, "draft", prompt, GenerationConfig(max_new_tokens=max_new), eos=set(),
                          draft_model=drafts_for("qwen2")[draft], gamma=3, gamma_schedule="heuristic")
        assert [s.proposed for s in out.metrics.steps] == replayed_lengths(out, 3, max_new)


def test_constant_schedule_keeps_gamma():
    target = tiny("llama")
    out = decode_with(target, "draft", list(range(10)), GenerationConfig(max_new_tokens=40), eos=set(),
                      draft_model=tiny("llama", seed=1), gamma=3)
    assert [s.proposed for s in out.metrics.steps] == replayed_lengths(out, 3, 40, "constant")


def test_a_threshold_of_one_stops_after_the_first_token():
    target = tiny("llama")
    out = decode_with(target, "draft", list(range(10)), GenerationConfig(max_new_tokens=21), eos=set(),
                      draft_model=target, gamma=6, stop_below_prob=1.0)
    assert [s.proposed for s in out.metrics.steps] == [1] * 10


@torch.inference_mode()
def test_confidence_stop_keeps_the_unsure_token():
    """The target as its own draft accepts every proposal, so its tokens are the output: each proposal
    must run up to and including the first token whose probability is below the threshold."""
    target, gamma, max_new = tiny("gpt_neox"), 6, 40
    prompt = list(range(20, 30))
    base = decode_with(target, "baseline", prompt, GenerationConfig(max_new_tokens=max_new), eos=set())
    logits = target(torch.tensor([prompt + base.token_ids])).logits[0, len(prompt) - 1 : -1]
    confidence = logits.softmax(dim=-1).max(dim=-1).values.tolist()  # of each output token, given what came before
    ranked = sorted(confidence)
    threshold = (ranked[len(ranked) // 2] + ranked[len(ranked) // 2 + 1]) / 2  # a median far from every value
    out = decode_with(target, "draft", prompt, GenerationConfig(max_new_tokens=max_new), eos=set(),
                      draft_model=target, gamma=gamma, stop_below_prob=threshold)
    assert out.token_ids == base.token_ids
    position, expected = 1, []  # output token 0 comes from the prefill
    for _ in out.metrics.steps:
        length = 0
        while length < min(gamma, max_new - position - 1):
            length += 1
            if confidence[position + length - 1] < threshold:
                break
        expected.append(length)
        position += length + 1
    assert [s.proposed for s in out.metrics.steps] == expected
    assert 1 in expected and max(expected) > 1


def test_dynamic_draft_length_keeps_the_sampling_distribution():
    """The length depends only on the draft's own samples, so rejection sampling stays exact."""
    sampling = SETTINGS[1]
    config = GenerationConfig(max_new_tokens=NEW_TOKENS, temperature=sampling.temperature, top_k=sampling.top_k,
                              top_p=sampling.top_p)
    strategy = create_strategy("draft", draft_model=DRAFT, gamma=2, gamma_schedule="heuristic", stop_below_prob=0.6)
    decoder = Decoder(TARGET, strategy, eos_token_ids=set())
    assert p_value(sample_counts(decoder, config), exact_distribution(TARGET, sampling)) > 1e-3


@pytest.mark.parametrize("options,message", [
    ({"gamma_schedule": "linear"}, "strategy.gamma_schedule must be one of constant, heuristic"),
    ({"gamma_schedule": None}, "strategy.gamma_schedule must be one of constant, heuristic"),
    ({"stop_below_prob": -0.1}, r"strategy.stop_below_prob must be a probability in \[0, 1\], 0 to switch it off"),
    ({"stop_below_prob": 1.5}, r"strategy.stop_below_prob must be a probability in \[0, 1\]"),
    ({"stop_below_prob": "0.5"}, r"strategy.stop_below_prob must be a probability in \[0, 1\]"),
    ({"stop_below_prob": True}, r"strategy.stop_below_prob must be a probability in \[0, 1\]"),
])
def test_bad_schedule_options_name_the_valid_values(options, message):
    with pytest.raises(ConfigError, match=message):
        create_strategy("draft", draft_model=tiny("llama"), **options)


def test_config_files_build_their_strategies():
    """configs/strategy/*.yaml hold exactly the options the constructors take (over the files
    their defaults lists name, as Hydra composes them)."""
    target = tiny("llama")
    for path in sorted(Path(__file__).parent.parent.glob("configs/strategy/*.yaml")):
        if path.stem == "custom":  # a user's class by dotted path: tests/test_user_strategy.py
            continue
        options = strategy_config(path.stem)
        if options["name"] == "medusa":  # the shipped heads fit SmolLM2-135M, not the tiny model
            options.update(heads=MedusaHeads(target.config.hidden_size, target.config.vocab_size), head_tokens=None)
        if options["name"] == "eagle":  # so does the shipped EAGLE draft
            options.update(draft=EagleDraft(target), head_tokens=None)
        create_strategy(options.pop("name"), draft_model=target, target_model=target, **options)
