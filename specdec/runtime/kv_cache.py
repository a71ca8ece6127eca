"""A KV cache made for speculation (gpt-fast's design behind the transformers 5.x Cache
interface): per-layer buffers preallocated in large chunks, a length pointer that attention
reads up to, rollback by moving the pointer, a tree path kept by gathering inside the
buffer. DynamicCache instead copies the whole cache at every step (torch.cat) and crops
by slicing."""

import torch
from transformers.cache_utils import Cache, DynamicLayer, get_layer_types_and_kwargs

from specdec.errors import ConfigError

CHUNK = 256  # tokens added to a buffer each time it fills up


class PreallocatedLayer(DynamicLayer):
    """`keys` / `values` are views of the first `length` positions of larger buffers."""

    def __init__(self, chunk: int = CHUNK):
        super().__init__()
        self.chunk = chunk
        self.length = 0
        self._key_buffer = self._value_buffer = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self._key_buffer = key_states.new_empty(*key_states.shape[:-2], 0, key_states.shape[-1])
        self._value_buffer = value_states.new_empty(*value_states.shape[:-2], 0, value_states.shape[-1])
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self._key_buffer.shape[-2]:
            self._grow(end)
        self._key_buffer[..., self.length : end, :].copy_(key_states)
        self._value_buffer[..., self.length : end, :].copy_(value_states)
        self._set_length(end)
        return self.keys, self.values

    def _grow(self, needed: int) -> None:
        capacity = -(-needed // self.chunk) * self.chunk
        for name in ("_key_buffer", "_value_buffer"):
            old = getattr(self, name)
            new = old.new_empty(*old.shape[:-2], capacity, old.shape[-1])
            new[..., : self.length, :].copy_(old[..., : self.length, :])
            setattr(self, name, new)

    def _set_length(self, length: int) -> None:
        self.length = length
        self.keys = self._key_buffer[..., :length, :]
        self.values = self._value_buffer[..., :length, :]

    def get_seq_length(self) -> int:
        return self.length

    def crop(self, tokens_to_remove: int) -> None:
        """Roll back: forget the last -tokens_to_remove positions (a pointer move, no copy)."""
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative number of tokens to remove")
        if self.is_initialized and tokens_to_remove:
            self._set_length(max(0, self.length + tokens_to_remove))

    def keep(self, start: int, positions: torch.Tensor) -> None:
        """Keep, after the first `start` positions, only `positions` (absolute, increasing): the
        accepted path of a candidate tree, gathered to the front in place."""
        end = start + positions.numel()
        for buffer in (self._key_buffer, self._value_buffer):
            buffer[..., start:end, :] = buffer.index_select(-2, positions)
        self._set_length(end)

    def reset(self) -> None:
        if self.is_initialized:
            self._set_length(0)


class PreallocatedCache(Cache):
    """One PreallocatedLayer per decoder layer; only full-attention models are supported."""

    def __init__(self, config, chunk: int = CHUNK):
        layer_types, _ = get_layer_types_and_kwargs(config.get_text_config(decoder=True))
        unsupported = sorted(set(layer_types) - {"full_attention"})
        if unsupported:
            raise ConfigError(f"runtime.kv_cache=preallocated supports full-attention layers only (this model has "
                              f"{', '.join(unsupported)}): use runtime.kv_cache=dynamic")
        super().__init__(layers=[PreallocatedLayer(chunk) for _ in layer_types])

    def keep(self, start: int, positions: torch.Tensor) -> None:
        for layer in self.layers:
            layer.keep(start, positions)
