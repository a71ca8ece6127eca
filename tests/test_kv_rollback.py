"""After every verification step (rejections included), the target's and the draft's KV
caches must equal a fresh prefill of the tokens they are supposed to hold. The draft is right
about half the time, so the steps that keep some drafts and roll back the rest are checked too."""

import random

import pytest
import torch
from conftest import ARCHITECTURES, decode_with, random_prompt, tiny

from specdec import Decoder, GenerationConfig
from specdec.metrics import acceptance_rate
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


class HalfRightDraft(DraftModel):
    """The target's own weights as the draft, knocked off its argmax on a seeded coin flip: each
    draft token is right about 60% of the time, so steps end in full, partial and no acceptance."""

    def __init__(self, model, gamma: int, coin: random.Random):
        super().__init__(model, gamma=gamma)
        self.coin = coin

    def _catch_up(self, requests):
        return self._maybe_wrong(super()._catch_up(requests))

    def _next(self, requests, tokens):
        return self._maybe_wrong(super()._next(requests, tokens))

    def _maybe_wrong(self, logits: torch.Tensor) -> torch.Tensor:
        """(rows, V) logits, each row's argmax knocked out on a coin flip."""
        wrong = torch.tensor([self.coin.random() >= 0.6 for _ in logits])[:, None]
        knocked = logits.scatter(-1, logits.argmax(dim=-1, keepdim=True), float("-inf"))
        return torch.where(wrong, knocked, logits)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_caches_equal_fresh_prefill_after_each_step(arch):
    target = tiny(arch)
    steps = []

    class CheckedDraft(HalfRightDraft):
        def on_commit(self, request, accepted):
            super().on_commit(request, accepted)
            committed = request.tokens[:-1]  # the newest token is not yet in the target cache
            assert_same_cache(decoder.target.cache, fresh_cache(target, committed))
            assert len(committed) - 1 <= self.draft.length <= len(committed)
            assert_same_cache(self.draft.cache, fresh_cache(target, request.tokens[: self.draft.length]))

    rng, coin = random.Random(0), random.Random(1)
    config = GenerationConfig(max_new_tokens=20)
    for gamma in (1, 3, 5):
        for _ in range(2):
            prompt = random_prompt(rng, 20)
            decoder = Decoder(target, CheckedDraft(target, gamma, coin), eos_token_ids=set())
            out = decoder.generate(prompt, config)
            assert out.token_ids == decode_with(target, "baseline", prompt, config, eos=set()).token_ids
            steps += out.metrics.steps
    assert 0.3 < acceptance_rate(steps) < 0.7
    assert sum(0 < s.accepted < s.proposed for s in steps) > 5  # partial acceptance, the case rollback is for
    assert sum(s.accepted == 0 for s in steps) > 5 and sum(s.accepted == s.proposed > 1 for s in steps) > 2


def test_rollback_refuses_to_grow():
    model = CachedModel(tiny("llama"))
    model.reset()
    model.forward(torch.tensor([1, 2, 3]))
    model.rollback(1)
    assert model.length == 1
    with pytest.raises(ValueError):
        model.rollback(2)
