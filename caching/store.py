"""KV segments: the keys and values of a run of tokens, for every layer of one model, kept
on the model's device. They are what the radix tree's nodes hold; the tree's byte budget
(`cache.max_bytes`) bounds their total size."""

import torch


class KVSegment:
    def __init__(self, layers: list[tuple[torch.Tensor, torch.Tensor]]):
        self.layers = layers  # per layer (keys, values), each (1, kv_heads, tokens, head_dim)

    def __len__(self) -> int:
        return self.layers[0][0].shape[-2]

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes + v.nbytes for k, v in self.layers)

    def split(self, at: int) -> tuple["KVSegment", "KVSegment"]:
        """The first `at` tokens and the rest, each in memory of its own (so freeing one frees it)."""
        head = [(k[..., :at, :].clone(), v[..., :at, :].clone()) for k, v in self.layers]
        tail = [(k[..., at:, :].clone(), v[..., at:, :].clone()) for k, v in self.layers]
        return KVSegment(head), KVSegment(tail)

    @staticmethod
    def from_cache(cache, end: int, start: int = 0) -> "KVSegment":
        """A copy of positions start..end-1 of a transformers cache."""
        return KVSegment([(layer.keys[..., start:end, :].clone(), layer.values[..., start:end, :].clone())
                          for layer in cache.layers])
