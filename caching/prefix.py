"""Prefill from the radix cache, for every model a strategy runs (target and draft alike).

A request opens a handle with `PrefixCache.begin(salt)`. Before prefill (`CachedModel.prefill`
calls `handle.load`): match the longest cached prefix of the prompt (at most all but its last
token, so the last one is always computed and gives fresh logits), lock it, and load those KV
segments into the model's cache; the model runs the rest. After the request (`handle.release`):
insert the prompt's KV (and the output's, with `store_output`) and unlock.

Why a handle: the locks and models of a request in flight are the request's, not the cache's.
When they lived in the cache, two interleaved requests released each other's: B's release
stored A's KV under B's tokens (and changed a later greedy argmax), and A's was never stored.
The handle holds them, so any number of requests can be in flight on one cache; the trees
are safe under concurrent use (caching.radix).

Salts and isolation: the salt is per request (a tenant, say; the cache's `salt` is the default
for requests without one). Each model and salt has its own namespace, so a draft never reads
the target's entries and two salts never share any: no cross-tenant hit. With `shared`
isolation all salts still share one byte budget and one LRU, so one tenant's traffic evicts
another's entries, and the other's next latency tells whether its prefix was evicted (a timing
side channel, as vLLM's `cache_salt`, CVE-2025-46570). `partitioned` gives each salt a tree of
its own: its own `max_bytes` budget and LRU, so no tenant can evict another's entries, at the
price of up to `max_bytes` per salt in use.
"""

import threading
import time

import torch

from caching.radix import RadixTree
from caching.store import KVSegment
from specdec.errors import ConfigError

ISOLATIONS = ("shared", "partitioned")


def model_identity(model: torch.nn.Module) -> str:
    """Names the exact weights within this process: two models never share a namespace."""
    config = model.config
    dtype = next(model.parameters()).dtype
    return f"{config._name_or_path or config.model_type}:{config.num_hidden_layers}L:{dtype}:{id(model):x}"


def check_settings(max_bytes, isolation: str, salt, min_hit_tokens=1) -> None:
    """ConfigError, naming the fix, for a budget, isolation, default salt or hit threshold the cache cannot use."""
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
        raise ConfigError(f"cache.max_bytes must be a whole number of bytes above 0 (got {max_bytes!r}): "
                          "e.g. cache.max_bytes=1000000000")
    if isinstance(min_hit_tokens, bool) or not isinstance(min_hit_tokens, int) or min_hit_tokens < 1:
        raise ConfigError(f"cache.min_hit_tokens must be a whole number of tokens, 1 or more (got {min_hit_tokens!r}): "
                          "e.g. cache.min_hit_tokens=32")
    if isolation not in ISOLATIONS:
        raise ConfigError(f"unknown cache.isolation {isolation!r}: use {' or '.join(ISOLATIONS)}")
    check_salt(salt, "cache.salt")


def check_salt(salt, where: str) -> None:
    if not isinstance(salt, str):
        raise ConfigError(f"{where} must be a string (got {type(salt).__name__} {salt!r}): quote it")


class PrefixCache:
    def __init__(self, max_bytes: int, salt: str = "", store_output: bool = False, isolation: str = "shared",
                 min_hit_tokens: int = 1):
        check_settings(max_bytes, isolation, salt, min_hit_tokens)
        self.max_bytes = max_bytes
        # shorter hits are not loaded: the request prefills from scratch. Whether a short hit pays depends
        # on the model and machine; configs/cache/radix.yaml holds the value measured for SmolLM2 here
        self.min_hit_tokens = min_hit_tokens
        self.salt = salt  # for requests that give none
        self.store_output = store_output
        self.isolation = isolation
        self._trees: dict[str, RadixTree] = {}  # "" when shared, else one per salt
        self._trees_lock = threading.Lock()

    def begin(self, salt: str | None = None) -> "CacheRequest":
        """A handle for one request, with `salt` (default: the cache's)."""
        salt = self.salt if salt is None else salt
        check_salt(salt, "a request's salt")
        return CacheRequest(self, salt)

    def tree_for(self, salt: str) -> RadixTree:
        """The tree holding `salt`'s entries: the one tree, or the salt's own when partitioned."""
        key = salt if self.isolation == "partitioned" else ""
        with self._trees_lock:
            if key not in self._trees:
                self._trees[key] = RadixTree(self.max_bytes)
            return self._trees[key]

    def namespace(self, model: torch.nn.Module, salt: str | None = None) -> str:
        return f"{model_identity(model)}|{self.salt if salt is None else salt}"

    @property
    def stats(self) -> dict:
        """The trees' counters summed (caching.radix.RadixTree.stats)."""
        with self._trees_lock:
            per_tree = [tree.stats for tree in self._trees.values()]
        keys = ("queried_tokens", "hit_tokens", "evictions", "bytes_in_use", "nodes")
        total = {key: sum(stats[key] for stats in per_tree) for key in keys}
        total["hit_rate"] = total["hit_tokens"] / total["queried_tokens"] if total["queried_tokens"] else 0.0
        return total


class CacheRequest:
    """One request's use of a PrefixCache: what it locked at prefill, for each of its models,
    until `release`. One per request; never shared between requests."""

    def __init__(self, cache: PrefixCache, salt: str):
        self.cache = cache
        self.salt = salt
        self.tree = cache.tree_for(salt)
        self._held = []  # (cached model, locked node, tokens the tree held at prefill)
        self.load_s = self.insert_s = 0.0  # time spent loading hits and storing new KV, for the metrics

    def load(self, cached_model, tokens: list[int]) -> int:
        """Copy the longest cached prefix of `tokens` (all but the last token at most) into the
        model's empty cache, segment by segment straight into its buffers, locked until `release`;
        returns its length, or 0 for a hit shorter than `min_hit_tokens` (not worth loading)."""
        began = time.perf_counter()
        namespace = self.cache.namespace(cached_model.model, self.salt)
        match = self.tree.match_prefix(tokens[:-1], namespace, lock=True)
        self._held.append((cached_model, match.node, match.length))
        loaded = match.length if match.length >= self.cache.min_hit_tokens else 0
        if loaded:
            cached_model.load([segment.layers for segment in self.tree.segments(match.node)])
        self.load_s += time.perf_counter() - began
        return loaded

    def release(self, tokens: list[int], prompt_len: int) -> None:
        """The request is over: store what its models computed (copying only what the tree
        lacked at prefill), then unlock what they used, even if storing failed."""
        held, self._held = self._held, []
        began = time.perf_counter()
        try:
            for cached_model, node, held_tokens in held:
                length = min(cached_model.length, len(tokens) if self.cache.store_output else prompt_len)
                if length > held_tokens:  # a hit too short to load was computed, but the tree has it already
                    kv = KVSegment.from_cache(cached_model.cache, length, start=held_tokens)
                    namespace = self.cache.namespace(cached_model.model, self.salt)
                    self.tree.insert(tokens[:length], kv, namespace, start=held_tokens)
        finally:
            for _, node, _ in held:
                self.tree.unlock(node)
            self.insert_s += time.perf_counter() - began
