"""After every verification step (rejections included), the target's and the draft's KV
caches must equal a fresh prefill of the tokens they are supposed to hold."""

import random

import pytest
import torch
from conftest import ARCHITECTURES, random_prompt, tiny

from specdec import Decoder, GenerationConfig
from specdec.runtime.cached_model import CachedModel
from specdec.strategies.draft import DraftModel


def fresh_cache(model, tokens):
    fresh = CachedModel(model)
    fresh.reset()
    fresh.forward(torch.tensor(tokens))
    return fresh.cache


def assert_same_cache(cache, reference):
    assert cache.get_seq_length() == reference.get_seq_length()
    for layer, ref in zip(cache.layers, reference.layers):
        torch.testing.assert_close(layer.keys, ref.keys, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(layer.values, ref.values, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_caches_equal_fresh_prefill_after_each_step(arch):
    target, draft = tiny(arch), tiny(arch, seed=1)
    checked = {"steps": 0, "rejections": 0}

    class CheckedDraft(DraftModel):
        def on_commit(self, request, accepted):
            super().on_commit(request, accepted)
            committed = request.tokens[:-1]  # the newest token is not yet in the target cache
            assert_same_cache(decoder.target.cache, fresh_cache(target, committed))
            assert len(committed) - 1 <= self.draft.length <= len(committed)
            assert_same_cache(self.draft.cache, fresh_cache(draft, request.tokens[: self.draft.length]))
            checked["steps"] += 1
            checked["rejections"] += accepted < self.gamma

    rng = random.Random(0)
    for gamma in (1, 3, 5):
        decoder = Decoder(target, CheckedDraft(draft, gamma=gamma), eos_token_ids=set())
        decoder.generate(random_prompt(rng, 20), GenerationConfig(max_new_tokens=20))
    assert checked["steps"] > 10 and checked["rejections"] > 5


def test_rollback_refuses_to_grow():
    model = CachedModel(tiny("llama"))
    model.reset()
    model.forward(torch.tensor([1, 2, 3]))
    model.rollback(1)
    assert model.length == 1
    with pytest.raises(ValueError):
        model.rollback(2)
