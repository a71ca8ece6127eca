"""Tenants on one prefix cache: salts keep hits apart; partitioned isolation also keeps one
tenant's traffic from evicting another's entries (the timing side channel of a shared LRU)."""

import random
import re

import pytest
from conftest import tiny

from caching.prefix import PrefixCache
from caching.radix import common_prefix_length
from caching.radix_check import namespace_bytes
from specdec import ConfigError, Decoder, GenerationConfig
from specdec.runtime.cached_model import CachedModel
from specdec.strategies import create_strategy

TENANTS = ("alice", "bob")
BUDGET = 40_000  # about 52 tokens of the tiny model's KV: less than either tenant's traffic needs


def tenant_traffic(isolation: str, salts: dict[str, str], requests: int = 120) -> dict:
    """Both tenants send prompts made of the same few prefixes and random tails. Counts hits,
    cross-tenant hits (more cached tokens than the tenant's own earlier prompts share with the
    prompt) and cross-tenant evictions (the other tenant's bytes shrank during a request)."""
    target = tiny("llama")
    cache, model = PrefixCache(BUDGET, isolation=isolation), CachedModel(target)
    rng = random.Random(0)
    prefixes = [[rng.randrange(256) for _ in range(20)] for _ in range(3)]
    sent = {tenant: [] for tenant in TENANTS}
    counts = {"hits": 0, "cross_hits": 0, "cross_evictions": 0}
    for _ in range(requests):
        tenant = rng.choice(TENANTS)
        other = salts[TENANTS[1 - TENANTS.index(tenant)]]
        prompt = rng.choice(prefixes) + [rng.randrange(256) for _ in range(rng.randint(1, 10))]
        other_bytes = namespace_bytes(cache.tree_for(other), cache.namespace(target, other))
        handle = cache.begin(salts[tenant])
        _, hit = model.prefill(prompt, handle)
        handle.release(prompt, len(prompt))
        own = max((common_prefix_length(prompt[:-1], p) for p in sent[tenant]), default=0)
        sent[tenant].append(prompt)
        counts["hits"] += hit
        counts["cross_hits"] += hit > own
        counts["cross_evictions"] += namespace_bytes(cache.tree_for(other), cache.namespace(target, other)) < other_bytes
    for salt in set(salts.values()):
        cache.tree_for(salt).check_invariants()
    return {**counts, "evictions": cache.stats["evictions"]}


def test_partitioned_tenants_neither_hit_nor_evict_each_other():
    counts = tenant_traffic("partitioned", {tenant: tenant for tenant in TENANTS})
    assert counts["hits"] > 0 and counts["evictions"] > 0  # each tenant's budget was tight, and used
    assert counts["cross_hits"] == 0 and counts["cross_evictions"] == 0


def test_shared_isolation_lets_tenants_evict_each_other():
    counts = tenant_traffic("shared", {tenant: tenant for tenant in TENANTS})
    assert counts["cross_hits"] == 0  # salts alone keep hits apart
    assert counts["cross_evictions"] > 0  # but one LRU: the side channel partitioned closes


def test_one_salt_for_both_shares_hits():
    """The cross-hit count has power: with one salt, the tenants do hit each other's prompts."""
    assert tenant_traffic("partitioned", {tenant: "" for tenant in TENANTS})["cross_hits"] > 0


def test_partitioned_budget_is_per_salt():
    cache = PrefixCache(max_bytes=10**9, isolation="partitioned")
    decoder = Decoder(tiny("llama"), create_strategy("baseline"), prefix_cache=cache)
    for salt in TENANTS:
        decoder.generate(list(range(30)), GenerationConfig(max_new_tokens=2), salt=salt)
    trees = [cache.tree_for(salt) for salt in TENANTS]
    assert trees[0] is not trees[1] and all(t.max_bytes == 10**9 for t in trees)
    assert cache.stats["bytes_in_use"] == sum(t.stats["bytes_in_use"] for t in trees) > 0


@pytest.mark.parametrize("settings,message", [
    ({"max_bytes": 0}, "cache.max_bytes must be a whole number of bytes above 0 (got 0)"),
    ({"max_bytes": "lots"}, "cache.max_bytes must be a whole number of bytes above 0 (got 'lots')"),
    ({"max_bytes": 10**6, "isolation": "private"}, "unknown cache.isolation 'private': use shared or partitioned"),
    ({"max_bytes": 10**6, "min_hit_tokens": 0}, "cache.min_hit_tokens must be a whole number of tokens, 1 or more (got 0)"),
    ({"max_bytes": 10**6, "min_hit_tokens": True}, "cache.min_hit_tokens must be a whole number of tokens, 1 or more (got True)"),
    ({"max_bytes": 10**6, "salt": 7}, "cache.salt must be a string"),
])
def test_bad_cache_settings(settings, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        PrefixCache(**settings)


def test_request_salt_must_be_a_string():
    decoder = Decoder(tiny("llama"), create_strategy("baseline"), prefix_cache=PrefixCache(10**6))
    with pytest.raises(ConfigError, match="a request's salt must be a string"):
        decoder.generate([1, 2, 3], GenerationConfig(max_new_tokens=1), salt=3)
