"""Prefill from the radix cache, for every model a strategy runs (target and draft alike).

Before prefill (`CachedModel.prefill` calls `load`): match the longest cached prefix of
the prompt (at most all but its last token, so the last one is always computed and gives
fresh logits) and load those KV segments into the model's cache; the model runs the rest. After the request: insert the prompt's KV
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

    def load(self, cached_model, tokens: list[int]) -> int:
        """Copy the longest cached prefix of `tokens` (all but the last token at most) into the
        model's empty cache, locked until `release`; returns its length."""
        match = self.tree.match_prefix(tokens[:-1], self.namespace(cached_model.model))
        self.tree.lock(match.node)
        self._held.append((cached_model, match.node, match.length))
        if match.length:
            cached_model.load(KVSegment.concat(self.tree.segments(match.node)))
        return match.length

    def release(self, tokens: list[int], prompt_len: int) -> None:
        """The request is over: store what it computed (copying only what the tree lacked at
        prefill), then unlock what it used."""
        for cached_model, node, reused in self._held:
            length = min(cached_model.length, len(tokens) if self.store_output else prompt_len)
            if length > reused:
                kv = KVSegment.from_cache(cached_model.cache, length, start=reused)
                self.tree.insert(tokens[:length], kv, self.namespace(cached_model.model), start=reused)
            self.tree.unlock(node)
        self._held.clear()
