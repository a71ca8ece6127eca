"""Forward passes over a static cache whose shapes depend only on the bucket, eager or compiled.

A compiled step recompiles whenever a shape or a guarded Python value changes; transformers' model
forward reads the cache's lengths on the host and builds masks sized to them. So a pass here runs
the decoder itself over fused layers (specdec.runtime.fused_layers): embeddings, rotary positions,
each layer writing its keys and values at tensor positions, the final norm. Its inputs are tensors
of fixed shapes (ids or input vectors (rows, bucket), the mask over the whole buffer, positions,
write positions) and the buffers themselves, so each bucket compiles once (runtime.compile) or is
captured once as a CUDA graph (runtime.cuda_graphs: torch.compile's "reduce-overhead" mode over
buffers at static addresses). Every bucket is compiled at a cache's first pass of each input kind
(the warm-up), never later; a prefill longer than the largest bucket runs eager. The LM head runs
after, on the positions the caller keeps (the last one of a prefill, all of a verify pass).
"""

import torch

from specdec.errors import ConfigError
from specdec.runtime.fused_layers import FUSABLE, FusedDecoderLayer
from specdec.runtime.row_mask import fixed_row_inputs
from specdec.runtime.static_cache import BUCKETS, StaticCache, bucket

MODES = {"compile": "default", "cuda_graphs": "reduce-overhead"}  # runtime setting -> torch.compile mode


def compile_count() -> int:
    """Graphs dynamo has compiled in this process so far."""
    from torch._dynamo.utils import counters
    return counters["stats"]["unique_graphs"]


class BufferWrites:
    """The KV cache as the fused layers see it in a static pass: `update` writes the new keys and
    values at their positions (rows, bucket) and returns the whole buffers."""

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor], write: torch.Tensor):
        self.keys, self.values, self.write = keys, values, write
        self.rows = torch.arange(write.shape[0], device=write.device)[:, None]

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        keys[self.rows, :, self.write] = key.transpose(1, 2)
        values[self.rows, :, self.write] = value.transpose(1, 2)
        return keys, values


def decoder_pass(lm, inputs: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, write: torch.Tensor,
                 keys: list[torch.Tensor], values: list[torch.Tensor], feature_layers: tuple[int, ...]):
    """The decoder of `lm` over ids (rows, n) or input vectors (rows, n, d): its final hidden states,
    and the inputs of the decoder layers `feature_layers` (EAGLE-3's features)."""
    decoder = lm.model
    hidden = inputs if inputs.is_floating_point() else decoder.embed_tokens(inputs)
    position_embeddings = decoder.rotary_emb(hidden, positions)
    cache, features = BufferWrites(keys, values, write), []
    for index, layer in enumerate(decoder.layers):
        if index in feature_layers:
            features.append(hidden)
        hidden = layer(hidden, attention_mask=mask, position_embeddings=position_embeddings, cache=cache)
    return decoder.norm(hidden), features


class StaticSteps:
    """The passes of one CachedModel over its StaticCache. `lm.static_steps` (set by
    specdec.runtime.prepare) says whether they are compiled ("compile"), captured ("cuda_graphs") or eager."""

    def __init__(self, lm, feature_layers: tuple[int, ...] | None):
        layers = getattr(getattr(lm, "model", None), "layers", [])
        if not layers or not all(isinstance(layer, FusedDecoderLayer) for layer in layers):
            raise ConfigError(f"runtime.kv_cache=static runs fused decoder layers only ({', '.join(FUSABLE)}; "
                              f"{type(lm).__name__} has others): use runtime.layers=fused, or runtime.kv_cache=preallocated")
        self.lm, self.features = lm, tuple(feature_layers or ())
        self.mode = getattr(lm, "static_steps", None)
        if self.mode is not None:
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 256)  # a graph per
            # bucket, model and row count, all of one function: far more than dynamo's default of 8
        self.compiled = None if self.mode is None else torch.compile(decoder_pass, mode=MODES[self.mode], dynamic=False)
        self.warm: set[bool] = set()  # input kinds (vectors or not) whose buckets are compiled

    def new_cache(self, rows: int, capacity: int, device) -> StaticCache:
        cache = StaticCache(self.lm.config, rows, capacity, self.lm.dtype, device)
        if self.mode == "cuda_graphs":
            for buffer in sum(cache.buffers, []):
                torch._dynamo.mark_static_address(buffer)  # graphs write to the buffers, not to copies of them
        self.warm.clear()
        return cache

    def run(self, cache: StaticCache, inputs: torch.Tensor, counts: list[int], trees: list, lo: int):
        """Append each window row's `inputs` ((window, width) ids or (window, width, d) vectors) to rows
        lo, lo + 1, ... (the other rows run padding, kept nowhere); returns their final hidden states
        (window, width, d) and their layers' inputs `feature_layers`, side by side."""
        rows, (window, width) = cache.rows, inputs.shape[:2]
        size = bucket(width)
        if cache.reserve(max(rows.lengths) + max(size, BUCKETS[-1])):
            self.warm.clear()
        vectors = inputs.is_floating_point()
        if self.compiled is not None and vectors not in self.warm:
            self._warm_up(cache, inputs)
            self.warm.add(vectors)
        full = inputs.new_zeros(len(rows.lengths), size, *inputs.shape[2:])
        full[lo : lo + window, :width] = inputs
        idle = [None] * len(rows.lengths)
        every_count, every_tree = list(idle), list(idle)
        every_count[lo : lo + window], every_tree[lo : lo + window] = counts, trees
        every_count = [0 if c is None else c for c in every_count]
        hidden, features = self._pass(cache, full, every_count, width, every_tree)
        rows.window(lo, lo + window, width)
        rows.advance()
        kept = slice(lo, lo + window), slice(0, width)
        return hidden[kept], torch.cat([f[kept] for f in features], dim=-1) if features else None

    def _pass(self, cache: StaticCache, inputs: torch.Tensor, counts: list[int], width: int, trees: list):
        """One pass of inputs (rows, bucket, ...) at every row's length; lengths are not moved."""
        rows, size = cache.rows, inputs.shape[1]
        mask, positions = fixed_row_inputs(rows.tensor, rows.lengths, counts, width, size, trees, cache.capacity,
                                           self.lm.dtype)
        write = rows.tensor[:, None] + torch.arange(size, device=inputs.device)
        step = self.compiled if self.compiled is not None and size <= BUCKETS[-1] else decoder_pass
        if self.mode == "cuda_graphs":
            torch.compiler.cudagraph_mark_step_begin()
        hidden, features = step(self.lm, inputs, mask, positions, write, *cache.buffers, self.features)
        if self.mode == "cuda_graphs":  # the graph's outputs are overwritten by its next replay
            hidden, features = hidden.clone(), [f.clone() for f in features]
        return hidden, features

    def _warm_up(self, cache: StaticCache, like: torch.Tensor) -> None:
        """Compile (or capture) every bucket for inputs like `like`, writing past every row's length
        (where nothing is kept)."""
        count = len(cache.rows.lengths)
        for size in BUCKETS:
            self._pass(cache, like.new_zeros(count, size, *like.shape[2:]), [size] * count, size, [None] * count)
