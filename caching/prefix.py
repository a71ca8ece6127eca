"""Prefill from the radix cache, for every model a strategy runs (target and draft alike).

Before prefill: match the longest cached prefix of the prompt (at most all but its last
token, so the last one is always computed and gives fresh logits), load those KV segments
into the model's cache and run only the rest. After the request: insert the prompt's KV
(and the output's, with `store_output`) and release the locks taken at prefill.

Each model has its own namespace (its identity plus an optional salt), so a draft never
reads the target's entries and two tenants with different salts never share any.
"""

import torch

from caching.radix import RadixTree
from caching.store import KVSegment


def model_identity(model: torch.nn.Module) -> str:
    """Names the exact weights within this process: two models never share a namespace."""
    config = model.config
    dtype = next(model.parameters()).dtype
    return f"{config._name_or_path or config.model_type}:{config.num_hidden_layers}L:{dtype}:{id(model):x}"


class PrefixCache:
    def __init__(self, max_bytes: int, salt: str = "", store_output: bool = False):
        self.tree = RadixTree(max_bytes)
        self.salt = salt
        self.store_output = store_output
        self._held = []  # (cached model, locked node) of the request in flight

    def namespace(self, model: torch.nn.Module) -> str:
        return f"{model_identity(model)}|{self.salt}"

    def prefill(self, cached_model, tokens: list[int]) -> tuple[torch.Tensor, int]:
        """Start `cached_model` on `tokens`; returns the last logits (1, V) and how many tokens came from the cache."""
        match = self.tree.match_prefix(tokens[:-1], self.namespace(cached_model.model))
        self.tree.lock(match.node)
        self._held.append((cached_model, match.node))
        cached_model.reset()
        if match.length:
            cached_model.load(KVSegment.concat(self.tree.segments(match.node)))
        rest = torch.tensor(tokens[match.length :], device=cached_model.device)
        return cached_model.forward(rest, last_only=True), match.length

    def release(self, tokens: list[int], prompt_len: int) -> None:
        """The request is over: store what it computed, then unlock what it used."""
        for cached_model, node in self._held:
            length = min(cached_model.length, len(tokens) if self.store_output else prompt_len)
            kv = KVSegment.from_cache(cached_model.cache, length)
            self.tree.insert(tokens[:length], kv, self.namespace(cached_model.model))
            self.tree.unlock(node)
        self._held.clear()
