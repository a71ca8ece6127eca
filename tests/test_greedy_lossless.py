"""Greedy speculative decoding must be lossless: `draft` == `baseline` == transformers'
generate(do_sample=False), token for token, whatever the draft proposes."""

import random

import pytest
from conftest import ARCHITECTURES, decode_with, hf_greedy, random_prompt, tiny

from specdec import GenerationConfig
from specdec.drafts.draft_model import layer_skip_draft

GAMMAS = (1, 2, 4, 7)


def drafts_for(arch):
    """A draft that is always right (the target itself), one that is sometimes right (its
    first layer), and one that is nearly always wrong (an unrelated random model)."""
    target = tiny(arch)
    return {"self": target, "layer_skip": layer_skip_draft(target, 1), "unrelated": tiny(arch, seed=1)}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_draft_equals_baseline_equals_generate(arch):
    target = tiny(arch)
    drafts = drafts_for(arch)
    rng = random.Random(arch)
    stops = {"eos": 0, "length": 0}
    for trial in range(10):
        prompt = random_prompt(rng)
        config = GenerationConfig(max_new_tokens=rng.randint(1, 40))
        base = decode_with(target, "baseline", prompt, config, eos={target.config.eos_token_id})
        # an EOS that the output really meets: a token taken from the middle of the baseline's output
        eos = base.token_ids[len(base.token_ids) // 2] if trial % 2 else target.config.eos_token_id
        base = decode_with(target, "baseline", prompt, config, eos={eos})
        assert base.token_ids == hf_greedy(target, prompt, config.max_new_tokens, eos)
        stops[base.stop_reason] += 1
        for name, draft in drafts.items():
            for gamma in GAMMAS:
                out = decode_with(target, "draft", prompt, config, eos={eos}, draft_model=draft, gamma=gamma)
                assert out.token_ids == base.token_ids, (name, gamma, prompt)
                assert out.stop_reason == base.stop_reason
    assert stops["eos"] >= 2 and stops["length"] >= 2


@pytest.mark.parametrize("gamma", GAMMAS)
def test_eos_and_max_new_tokens_inside_a_draft(gamma):
    """With a draft that is always right, whole drafts are accepted, so EOS and the token
    budget fall inside an accepted draft; the output must still stop at the same token."""
    target = tiny("llama")
    rng = random.Random(gamma)
    for _ in range(10):
        prompt = random_prompt(rng)
        long = decode_with(target, "baseline", prompt, GenerationConfig(max_new_tokens=30), eos=set())
        for max_new in range(1, 12):
            config = GenerationConfig(max_new_tokens=max_new)
            out = decode_with(target, "draft", prompt, config, eos=set(), draft_model=target, gamma=gamma)
            assert out.token_ids == long.token_ids[:max_new]
            assert out.metrics.new_tokens == max_new
        cut = rng.randint(1, 25)
        eos = long.token_ids[cut]
        expected = long.token_ids[: long.token_ids.index(eos) + 1]
        out = decode_with(target, "draft", prompt, GenerationConfig(max_new_tokens=30), eos={eos}, draft_model=target, gamma=gamma)
        assert out.token_ids == expected and out.stop_reason == "eos"


def test_full_acceptance_metrics():
    """The target as its own draft: every draft token is accepted, tau = gamma + 1 per step."""
    target = tiny("llama")
    out = decode_with(target, "draft", list(range(10)), GenerationConfig(max_new_tokens=31), eos=set(),
                      draft_model=target, gamma=4)
    m = out.metrics
    assert m.acceptance_rate == 1.0
    assert [s.accepted for s in m.steps] == [4] * 6
    assert m.target_forwards == 7 and m.mean_accepted == 31 / 7
