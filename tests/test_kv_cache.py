"""The preallocated KV cache: the same outputs as DynamicCache, and rollback / path-keep /
copy-in that behave like edits of a plain tensor."""

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ARCHITECTURES, random_prompt, tiny
from specdec import ConfigError, Decoder, GenerationConfig
from specdec.runtime.cached_model import CachedModel
from specdec.runtime.kv_cache import PreallocatedLayer, Rows
from specdec.drafts.draft_model import layer_skip_draft
from specdec.strategies import create_strategy
from specdec.tiny import tiny_random_model


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_strategy_gives_the_same_tokens_with_preallocated_and_dynamic_cache(arch):
    target = tiny(arch)
    rng = random.Random(arch)
    for trial in range(4):
        prompt, config = random_prompt(rng), GenerationConfig(max_new_tokens=rng.randint(5, 40))
        for name, options in [("baseline", {}), ("draft", {"draft_model": layer_skip_draft(target, 1), "gamma": 3}),
                              ("draft", {"draft_model": target, "gamma": 5, "gamma_schedule": "heuristic"}),
                              ("prompt_lookup", {"max_ngram": 2, "num_tokens": 4})]:
            outputs = [Decoder(target, create_strategy(name, **options), eos_token_ids=set(), kv_cache=kind)
                       .generate(prompt, config).token_ids for kind in ("dynamic", "preallocated")]
            assert outputs[0] == outputs[1], (name, trial)


def test_unknown_kv_cache_kind():
    with pytest.raises(ConfigError, match="unknown runtime.kv_cache 'paged'"):
        CachedModel(tiny("llama"), "paged")


def test_sliding_window_models_are_refused_with_the_fix():
    model = tiny_random_model("mistral", sliding_window=8, layer_types=["sliding_attention"] * 3)
    with pytest.raises(ConfigError, match="use runtime.kv_cache=dynamic"):
        CachedModel(model, "preallocated").reset()


operations = st.lists(st.one_of(
    st.tuples(st.just("update"), st.integers(1, 7)),
    st.tuples(st.just("crop"), st.integers(1, 6)),
    st.tuples(st.just("keep"), st.integers(0, 10)),
), min_size=1, max_size=25)


@settings(max_examples=150, deadline=None)
@given(operations, st.integers(0, 2**16))
def test_layer_matches_a_plain_tensor(ops, seed):
    """update appends, crop drops the tail, keep gathers a random increasing subset of the
    tail to the front of it: all checked against torch.cat / slicing / indexing."""
    gen = torch.Generator().manual_seed(seed)
    rows = Rows(1)
    layer, reference = PreallocatedLayer(rows, chunk=4), torch.zeros(1, 2, 0, 3)
    for op, n in ops:
        if op == "update":
            new = torch.randn(1, 2, n, 3, generator=gen)
            rows.begin(0, 1, n, new.device)
            keys, _ = layer.update(new, new * 2)
            rows.advance()
            reference = torch.cat([reference, new], dim=-2)
            assert torch.equal(keys, reference)
        elif op == "crop":  # a rollback: the row's pointer moves back
            rows.lengths[0] = max(0, rows.lengths[0] - n)
            reference = reference[..., : max(0, reference.shape[-2] - n), :]
        elif layer.is_initialized:
            start = min(n, reference.shape[-2])
            tail = torch.arange(start, reference.shape[-2])
            chosen = tail[torch.rand(tail.numel(), generator=gen) < 0.5]
            layer.keep(0, start, chosen)
            rows.lengths[0] = start + chosen.numel()
            reference = torch.cat([reference[..., :start, :], reference.index_select(-2, chosen)], dim=-2)
        if layer.is_initialized:
            assert layer.get_seq_length() == reference.shape[-2]
            assert torch.equal(layer.keys, reference) and torch.equal(layer.values, reference * 2)


def test_copy_in_of_a_prefix_equals_fresh_prefill():
    target = tiny("qwen2")
    fresh = CachedModel(target, "preallocated")
    fresh.prefill(list(range(30)))
    copied = CachedModel(target, "preallocated")
    copied.reset()
    copied.load([[(layer.keys.clone(), layer.values.clone()) for layer in fresh.cache.layers]])
    for model in (fresh, copied):
        model.forward(torch.tensor([7, 8, 9]))
    for a, b in zip(fresh.cache.layers, copied.cache.layers):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)

