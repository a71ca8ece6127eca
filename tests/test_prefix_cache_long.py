"""Long prompts through the prefix cache on fused layers: a prefill on top of a short cached
prefix takes the causal SDPA kernel (queries padded in front, specdec.runtime.fused_layers), equals
the stock layers' masked prefill, and greedy output with the cache equals the output without;
`min_hit_tokens` turns short hits into fresh prefills."""

import random

import pytest
import torch
import torch.nn.functional as F

from caching.prefix import PrefixCache
from caching.radix import RadixTree
from specdec import Decoder, GenerationConfig
from specdec.runtime import fused_layers
from specdec.runtime.cached_model import CachedModel
from specdec.runtime.prepare import Runtime, prepare
from specdec.strategies import create_strategy
from specdec.tiny import tiny_random_model


def long_prompts(rng: random.Random, shared: int, count: int = 3, length: int = 700) -> list[list[int]]:
    """Prompts that share their first `shared` tokens (a chat template, say), then differ."""
    head = [rng.randrange(256) for _ in range(shared)]
    return [head + [rng.randrange(256) for _ in range(length - shared)] for _ in range(count)]


@pytest.fixture(scope="module")
def models():
    stock = tiny_random_model("llama", max_position_embeddings=2048)
    return stock, prepare(stock, Runtime(linear="stock"))


def kernel_calls(monkeypatch) -> list[tuple[int, int, bool, bool]]:
    """(queries, keys, is_causal, masked) of every SDPA call the fused layers make from now on."""
    calls, sdpa = [], F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, is_causal=False, **kwargs):
        calls.append((q.shape[2], k.shape[2], is_causal, attn_mask is not None))
        return sdpa(q, k, v, attn_mask=attn_mask, is_causal=is_causal, **kwargs)
    monkeypatch.setattr(fused_layers.F, "scaled_dot_product_attention", spy)
    return calls


@pytest.mark.parametrize("kv_cache", ["preallocated", "dynamic"])
def test_prefill_after_a_short_hit_is_causal_and_equals_the_stock_layers(models, kv_cache, monkeypatch):
    stock, fused = models
    tokens = long_prompts(random.Random(1), 0, count=1)[0]
    runs = {name: CachedModel(model, kv_cache) for name, model in (("stock", stock), ("fused", fused))}
    for short, cached in ((40, 660), (500, 200)):  # more new tokens than cached ones, then fewer
        calls = kernel_calls(monkeypatch)
        logits = {}
        for name, run in runs.items():
            run.prefill(tokens[:short])
            logits[name] = run.forward(torch.tensor(tokens[short:]))
        torch.testing.assert_close(logits["fused"], logits["stock"], atol=1e-5, rtol=1e-4)
        padded = cached > short  # padding costs (all)^2 / 2, a mask new x all: the cheaper one runs
        assert calls[-1] == ((700, 700, True, False) if padded else (cached, 700, False, True))
        monkeypatch.undo()


@pytest.mark.parametrize("shared,min_hit,loaded", [(40, 1, 40), (40, 32, 40), (24, 32, 0)])
def test_long_prompts_generate_the_same_with_and_without_the_cache(models, shared, min_hit, loaded, monkeypatch):
    _, fused = models
    stored, insert = [], RadixTree.insert  # (tokens, KV tokens handed over) of every insert

    def spy(tree, tokens, kv, namespace="", start=0):
        stored.append((len(tokens), len(kv)))
        return insert(tree, tokens, kv, namespace, start)
    monkeypatch.setattr(RadixTree, "insert", spy)
    prompts = long_prompts(random.Random(shared), shared)
    config = GenerationConfig(max_new_tokens=8)
    cache = PrefixCache(max_bytes=10**9, min_hit_tokens=min_hit)
    plain = Decoder(fused, create_strategy("baseline"))
    cached = Decoder(fused, create_strategy("baseline"), prefix_cache=cache)
    for index, prompt in enumerate(prompts):
        out = cached.generate(prompt, config)
        assert out.token_ids == plain.generate(prompt, config).token_ids
        assert out.metrics.cached_prompt_tokens == (loaded if index else 0)
        assert out.metrics.cache_load_s > 0 and out.metrics.cache_insert_s > 0
    tree = cache.tree_for("")
    tree.check_invariants()
    # a skipped hit copies out only what the tree lacked: one shared node, one leaf per prompt
    assert stored == [(700, 700)] + [(700, 700 - shared)] * (len(prompts) - 1)
    assert tree.stats["nodes"] == len(prompts) + 1
