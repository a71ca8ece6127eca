"""The radix prefix cache changes where prompt KV comes from, never what is generated."""

import random
import threading

import pytest
import torch

from caching.order import ideal_hit_rate, order_by_longest_prefix
from caching.prefix import PrefixCache
from caching.store import KVSegment
from conftest import tiny
from specdec import Decoder, GenerationConfig
from specdec.runtime.cached_model import CachedModel
from specdec.drafts.draft_model import layer_skip_draft
from specdec.strategies import create_strategy


def shared_prefix_workload(rng: random.Random, groups=3, per_group=4) -> list[list[int]]:
    """Groups of prompts sharing a long random prefix, then different short tails, shuffled."""
    prompts = []
    for _ in range(groups):
        prefix = [rng.randrange(256) for _ in range(rng.randint(20, 60))]
        prompts += [prefix + [rng.randrange(256) for _ in range(rng.randint(1, 10))] for _ in range(per_group)]
    rng.shuffle(prompts)
    return prompts


def joined(segments: list[KVSegment]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer (keys, values) of the segments one after the other."""
    return [tuple(torch.cat(parts, dim=-2) for parts in zip(*layer)) for layer in zip(*(s.layers for s in segments))]


def test_segment_split_round_trip():
    model = CachedModel(tiny("llama"))
    model.reset()
    model.forward(torch.arange(10))
    whole = KVSegment.from_cache(model.cache, 10)
    head, tail = whole.split(4)
    assert (len(head), len(tail)) == (4, 6) and head.nbytes + tail.nbytes == whole.nbytes
    for (k, v), (k_ref, v_ref) in zip(joined([head, tail]), whole.layers):
        assert torch.equal(k, k_ref) and torch.equal(v, v_ref)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt_neox"])
def test_cached_prefill_equals_fresh_prefill(arch):
    target = tiny(arch)
    cache = PrefixCache(max_bytes=10**9)
    first, second = list(range(40)), list(range(30)) + [200, 201, 202]
    plain = CachedModel(target)
    for tokens in (first, second):
        cached, handle = CachedModel(target), cache.begin()
        logits, hit = cached.prefill(tokens, handle)
        handle.release(tokens, len(tokens))
        fresh_logits, _ = plain.prefill(tokens)
        torch.testing.assert_close(logits, fresh_logits, atol=1e-5, rtol=1e-4)
        for layer, ref in zip(cached.cache.layers, plain.cache.layers):
            torch.testing.assert_close(layer.keys, ref.keys, atol=1e-5, rtol=1e-4)
    assert hit == 30


@pytest.mark.parametrize("budget", [10**9, 60_000], ids=["roomy", "evicting"])
def test_generation_with_cache_equals_without(budget):
    target = tiny("llama")
    draft = layer_skip_draft(target, 1)
    prompts = shared_prefix_workload(random.Random(budget))
    config = GenerationConfig(max_new_tokens=12)
    for name, options in [("baseline", {}), ("draft", {"draft_model": draft, "gamma": 3})]:
        prefix_cache = PrefixCache(max_bytes=budget)
        plain = Decoder(target, create_strategy(name, **options))
        cached = Decoder(target, create_strategy(name, **options), prefix_cache=prefix_cache)
        hits = 0
        for prompt in prompts:
            out = cached.generate(prompt, config)
            assert out.token_ids == plain.generate(prompt, config).token_ids
            hits += out.metrics.cached_prompt_tokens
            prefix_cache.tree_for("").check_invariants()
            assert prefix_cache.stats["bytes_in_use"] <= budget
        assert hits > 0
        if budget < 10**9:
            assert prefix_cache.stats["evictions"] > 0
        # the draft model keeps entries of its own: two namespaces
        assert len(prefix_cache.tree_for("")._namespaces) == (1 if name == "baseline" else 2)


def test_locks_are_released_even_when_generation_fails():
    target = tiny("llama")
    cache = PrefixCache(max_bytes=10**9)

    class Broken(type(create_strategy("baseline"))):
        def propose(self, request, max_tokens):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        Decoder(target, Broken(), prefix_cache=cache).generate(list(range(20)), GenerationConfig(max_new_tokens=5))
    assert cache.tree_for("").root.lock_count == 0
    assert cache.tree_for("").match_prefix(list(range(20)), cache.namespace(target)).length == 20  # still stored


def test_salts_keep_tenants_apart():
    decoder = Decoder(tiny("llama"), create_strategy("baseline"), prefix_cache=PrefixCache(max_bytes=10**9))
    config = GenerationConfig(max_new_tokens=2)
    decoder.generate(list(range(30)), config, salt="alice")
    assert decoder.generate(list(range(30)), config, salt="bob").metrics.cached_prompt_tokens == 0
    assert decoder.generate(list(range(30)), config, salt="alice").metrics.cached_prompt_tokens == 29


def test_interleaved_requests_store_their_own_kv():
    """Request B starts and ends while request A is in flight on the same cache. Each must
    store its own KV under its own tokens: later requests extending either prompt hit the
    cache and decode exactly as without it."""
    target = tiny("llama")
    cache = PrefixCache(max_bytes=10**9)
    config = GenerationConfig(max_new_tokens=8)
    rng = random.Random(1)
    a, b = [rng.randrange(256) for _ in range(30)], [rng.randrange(256) for _ in range(24)]
    inner = Decoder(target, create_strategy("baseline"), prefix_cache=cache)

    class Interleaving(type(create_strategy("baseline"))):
        def begin(self, request):
            self.first_step = True

        def propose(self, request, max_tokens):
            if self.first_step:  # A holds its prefill's locks; B runs to the end meanwhile
                self.first_step = False
                inner.generate(b, config)
            return super().propose(request, max_tokens)

    plain = Decoder(target, create_strategy("baseline"))
    assert Decoder(target, Interleaving(), prefix_cache=cache).generate(a, config).token_ids == \
        plain.generate(a, config).token_ids
    assert cache.tree_for("").root.lock_count == 0
    for prompt in (b, a):  # the KV stored under each prompt is that prompt's own
        fresh = CachedModel(target)
        fresh.prefill(prompt)
        match = cache.tree_for("").match_prefix(prompt, cache.namespace(target))
        assert match.length == len(prompt)
        for (keys, _), layer in zip(joined(cache.tree_for("").segments(match.node)), fresh.cache.layers):
            torch.testing.assert_close(keys, layer.keys[..., : len(prompt), :], atol=1e-5, rtol=1e-4)
    for stored, more in ((a, [5, 6]), (b, [7])):
        out = inner.generate(stored + more, config)
        assert out.metrics.cached_prompt_tokens == len(stored)
        assert out.token_ids == plain.generate(stored + more, config).token_ids


def test_longest_prefix_order_and_ideal_hit_rate():
    a, b = [1, 2, 3, 4, 5], [9, 9, 9, 9]
    prompts = [a + [6], b + [1], a + [7], b + [2]]
    assert order_by_longest_prefix(prompts) == [0, 2, 1, 3]
    # FIFO: prompt 2 reuses 5 tokens of prompt 0, prompt 3 reuses 4 of prompt 1
    assert ideal_hit_rate(prompts) == pytest.approx(9 / 22)
    salts = ["x", "x", "y", "x"]  # prompt 2 is another tenant's: it shares nothing
    assert order_by_longest_prefix(prompts, salts) == [0, 1, 3, 2]
    assert ideal_hit_rate(prompts, salts) == pytest.approx(4 / 22)


def test_requests_on_threads_share_one_cache():
    """Requests in flight at once on one cache (two decoders, two threads) decode as without it."""
    target = tiny("llama")
    cache = PrefixCache(max_bytes=60_000)
    config = GenerationConfig(max_new_tokens=6)
    prompts = shared_prefix_workload(random.Random(7), groups=2, per_group=6)
    expected = [Decoder(target, create_strategy("baseline")).generate(p, config).token_ids for p in prompts]
    outputs, errors = {}, []

    def serve(indices):
        decoder = Decoder(target, create_strategy("baseline"), prefix_cache=cache)
        try:
            for i in indices:
                outputs[i] = decoder.generate(prompts[i], config)
        except Exception as e:  # noqa: BLE001  (reported by the main thread)
            errors.append(e)

    threads = [threading.Thread(target=serve, args=(range(k, len(prompts), 2),)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert [outputs[i].token_ids for i in range(len(prompts))] == expected
    assert sum(out.metrics.cached_prompt_tokens for out in outputs.values()) > 0
    cache.tree_for("").check_invariants()
    assert cache.tree_for("").root.lock_count == 0
