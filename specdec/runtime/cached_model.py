"""A causal LM bound to the KV cache of one sequence: feed tokens, read logits, roll back.

Target and draft models both go through this class, so cache handling (creation, the
length pointer, rollback after a rejection) is written once.
"""

import inspect

import torch
from transformers import DynamicCache

from specdec.errors import ConfigError
from specdec.runtime.kv_cache import PreallocatedCache

KV_CACHES = {"preallocated": PreallocatedCache, "dynamic": lambda config: DynamicCache(config=config)}


def cache_argument(model: torch.nn.Module) -> str:
    """The name of the forward argument that takes a KV cache: transformers 5.24 renamed
    past_key_values to cache (the old name warns, and goes in 5.40)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class CachedModel:
    """`kv_cache` picks the cache: "preallocated" (specdec.runtime.kv_cache, rollback moves a pointer)
    or "dynamic" (transformers' DynamicCache, for comparison). With `keep_hidden`, every forward
    also keeps `hidden`: the decoder's last hidden states (after the final norm, what the LM head
    reads) at every new position, even when only the last logits are computed; Medusa's heads and
    the EAGLE draft start from them."""

    def __init__(self, model: torch.nn.Module, kv_cache: str = "preallocated", keep_hidden: bool = False):
        if kv_cache not in KV_CACHES:
            raise ConfigError(f"unknown runtime.kv_cache {kv_cache!r}: use {' or '.join(KV_CACHES)}")
        self.model = model
        self.new_cache = KV_CACHES[kv_cache]
        self.device = next(model.parameters()).device
        self.cache = None
        parameters = inspect.signature(model.forward).parameters
        self._can_keep_logits = "logits_to_keep" in parameters
        self._cache_argument = cache_argument(model)
        self.decoder = model.get_decoder() if keep_hidden else None
        if keep_hidden and self.decoder is model:
            raise ConfigError(f"{type(model).__name__} has no separate decoder to read hidden states from")
        self.hidden = None

    @property
    def length(self) -> int:
        """Tokens whose keys and values are in the cache."""
        return 0 if self.cache is None else self.cache.get_seq_length()

    def reset(self) -> None:
        self.cache = self.new_cache(self.model.config)
        self._croppable = self.cache.is_croppable  # asked once here, not at every rollback

    def prefill(self, tokens: list[int], prefix_cache=None) -> tuple[torch.Tensor, int]:
        """Start a new sequence on `tokens`: the last logits (1, V), and how many tokens' KV
        came from the prefix cache (a request's caching.prefix.CacheRequest) instead of being computed."""
        self.reset()
        cached = prefix_cache.load(self, tokens) if prefix_cache is not None else 0
        return self.forward(torch.tensor(tokens[cached:], device=self.device), last_only=True), cached

    def load(self, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Copy a prefix's keys and values (one pair per layer) into the empty cache."""
        for index, (keys, values) in enumerate(layers):
            self.cache.update(keys, values, index)

    @torch.inference_mode()
    def forward(self, tokens: torch.Tensor | None, last_only: bool = False, tree=None,
                embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Append `tokens` (1-D ids), or inputs given as `embeds` (n, d), to the cache; return logits
        (n, V), or (1, V) for the last only. With a `tree` (specdec.tree.Tree), tokens are its root
        and nodes, and each attends to its ancestors only."""
        kwargs = {"logits_to_keep": 1} if last_only and self._can_keep_logits else {}
        if embeds is not None:
            kwargs["inputs_embeds"] = embeds[None]
        else:
            kwargs["input_ids"] = tokens.view(1, -1)
        if tree is not None:
            kwargs.update(attention_mask=tree.attention_mask(self.length, self.model.dtype, self.device),
                          position_ids=tree.position_ids(self.length, self.device))
        hook = self.decoder.register_forward_hook(self._keep_hidden) if self.decoder is not None else None
        try:
            kwargs[self._cache_argument] = self.cache
            out = self.model(use_cache=True, **kwargs)
        finally:
            if hook is not None:
                hook.remove()
        logits = out.logits[0]
        return logits[-1:] if last_only else logits

    def _keep_hidden(self, module, inputs, output) -> None:
        self.hidden = output[0][0]  # (new positions, hidden size)

    def rollback(self, length: int) -> None:
        """Forget every cached token after the first `length`."""
        extra = self.length - length
        if extra < 0:
            raise ValueError(f"cannot roll back to {length} tokens: only {self.length} are cached")
        if extra:
            if not self._croppable:
                raise ConfigError(
                    f"{type(self.model).__name__}'s KV cache cannot be rolled back (sliding-window or "
                    "recurrent layers); speculative strategies need a model with full attention caches"
                )
            self.cache.crop(-extra)

    @torch.inference_mode()
    def keep(self, start: int, rows: list[int]) -> None:
        """Keep, after the first `start` cached tokens, only the tokens at offsets `rows` (increasing)
        of what followed: the accepted path of a verified tree, compacted in place."""
        positions = torch.tensor(rows, device=self.device) + start
        if isinstance(self.cache, PreallocatedCache):
            self.cache.keep(start, positions)
            return
        for layer in self.cache.layers:  # DynamicCache: rebuild each layer's tensors
            layer.keys = torch.cat([layer.keys[..., :start, :], layer.keys.index_select(-2, positions)], dim=-2)
            layer.values = torch.cat([layer.values[..., :start, :], layer.values.index_select(-2, positions)], dim=-2)
