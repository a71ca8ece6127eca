"""The trainers' batched answers (specdec.training.batch_answers): left-padded rows answer as each
prompt alone does with `transformers`' generate, stop at EOS, and keep the hidden states one
pass over prompt + answer computes (EAGLE's features)."""

import random

import pytest
import torch
from conftest import random_prompt, tiny

from specdec.runtime.prepare import prepare
from specdec.training.batch_answers import generate_batch

PAD = 257


def alone(model, prompt: list[int], max_new_tokens: int, eos: int) -> list[int]:
    out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                         max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos, pad_token_id=PAD)
    return out[0, len(prompt):].tolist()


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt_neox"])
def test_batched_greedy_answers_and_states_equal_each_prompt_alone(arch):
    model = tiny(arch)
    rng = random.Random(1)
    prompts = [random_prompt(rng, 30) for _ in range(6)]
    eos = alone(model, prompts[0], 12, eos=PAD)[5]  # a token the first answer writes: it must end there
    expected = [alone(model, p, 12, eos) for p in prompts]
    for runner in (model, prepare(model)):  # stock and our fused layers
        answers = generate_batch(runner, prompts, 12, {eos}, PAD, keep_states=True)
        assert [tokens for tokens, _ in answers] == expected and expected[0][-1] == eos and len(expected[0]) <= 6
        for prompt, (tokens, states) in zip(prompts, answers):
            with torch.no_grad():  # a reference, not training: autograd would refuse the answers' inference tensors
                whole = model.get_decoder()(input_ids=torch.tensor([prompt + tokens])).last_hidden_state[0]
            assert states.dtype == torch.bfloat16 and states.shape == whole.shape
            assert torch.allclose(states.float(), whole, atol=0.05, rtol=0.02)


def test_sampled_answers_follow_the_seed_and_the_temperature():
    model = tiny("llama")
    prompts = [random_prompt(random.Random(i), 20) for i in range(4)]

    def sampled(seed, temperature, global_seed=7):
        torch.manual_seed(global_seed)
        return [tokens for tokens, states in generate_batch(model, prompts, 10, {256}, PAD, temperature, seed=seed)]

    assert sampled(0, 1.0) == sampled(0, 1.0, global_seed=8) != sampled(1, 1.0)  # the global generator plays no part
    assert sampled(0, 1e-4) == [tokens for tokens, _ in generate_batch(model, prompts, 10, {256}, PAD)]
    assert all(states is None for _, states in generate_batch(model, prompts, 3, {256}, PAD))
