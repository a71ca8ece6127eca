"""A causal LM bound to the KV cache of its sequences: feed tokens, read logits, roll back.

Target and draft models both go through this class, so cache handling (creation, the
length pointers, rollback after a rejection) is written once. A CachedModel holds `rows`
sequences (a batch's slots); the single-sequence methods work on one row (row 0 by
default), `forward_rows` runs a window of rows in one pass.
"""

import inspect

import torch
from torch.nn.utils.rnn import pad_sequence
from transformers import DynamicCache

from specdec.errors import ConfigError
from specdec.placement import execution_device
from specdec.runtime.kv_cache import PreallocatedCache
from specdec.runtime.row_mask import row_inputs
from specdec.runtime.static_cache import GROWTH
from specdec.runtime.static_step import StaticSteps

KV_CACHES = ("preallocated", "dynamic", "static")


def cache_argument(model: torch.nn.Module) -> str:
    """The name of the forward argument that takes a KV cache: transformers 5.24 renamed
    past_key_values to cache (the old name warns, and goes in 5.40)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class CachedModel:
    """`kv_cache` picks the cache: "preallocated" (specdec.runtime.kv_cache, rollback moves a pointer,
    any number of `rows`), "static" (specdec.runtime.static_cache: the same, in fixed shapes of
    `max_length` positions a row (None: as the first passes need), for compiled steps) or "dynamic"
    (transformers' DynamicCache, one row, for comparison). With
    `keep_hidden`, every forward also keeps `hidden_rows`: the decoder's last hidden states (after the
    final norm, what the LM head reads) at every new position of every row, even when only the last
    logits are computed; Medusa's heads and the EAGLE draft start from them. With `keep_hidden` a tuple
    of layer indices, `hidden_rows` holds those decoder layers' inputs side by side instead (EAGLE-3)."""

    def __init__(self, model: torch.nn.Module, kv_cache: str = "preallocated",
                 keep_hidden: bool | tuple[int, ...] = False, rows: int = 1, max_length: int | None = None):
        if kv_cache not in KV_CACHES:
            raise ConfigError(f"unknown runtime.kv_cache {kv_cache!r}: use {' or '.join(KV_CACHES)}")
        if rows > 1 and kv_cache == "dynamic":
            raise ConfigError("generation.batch_size > 1 needs runtime.kv_cache=preallocated (per-row lengths)")
        self.model = model
        self.kv_cache, self.rows, self.max_length = kv_cache, rows, max_length
        self.device = execution_device(model)  # where a dispatched model (specdec.placement) takes its inputs
        self.cache = None
        parameters = inspect.signature(model.forward).parameters
        self._can_keep_logits = "logits_to_keep" in parameters
        self._cache_argument = cache_argument(model)
        self.decoder = model.get_decoder() if keep_hidden else None
        if keep_hidden and self.decoder is model:
            raise ConfigError(f"{type(model).__name__} has no separate decoder to read hidden states from")
        self.feature_layers = keep_hidden if isinstance(keep_hidden, tuple) else None
        self.hidden_rows = None  # (window rows, new positions, hidden size)
        self.static = StaticSteps(model, self.feature_layers) if kv_cache == "static" else None

    @property
    def hidden(self) -> torch.Tensor:
        """The last forward's hidden states of its first row: (new positions, hidden size)."""
        return None if self.hidden_rows is None else self.hidden_rows[0]

    @property
    def length(self) -> int:
        """Tokens of row 0 whose keys and values are in the cache."""
        return self.row_length(0)

    def row_length(self, row: int) -> int:
        if self.cache is None:
            return 0
        return self.cache.get_seq_length() if self.kv_cache == "dynamic" else self.cache.rows.lengths[row]

    def reset(self) -> None:
        if self.kv_cache == "preallocated":
            self.cache = PreallocatedCache(self.model.config, self.rows)
        elif self.kv_cache == "static":
            self.cache = self.static.new_cache(self.rows, self.max_length or GROWTH, self.device)
        else:
            self.cache = DynamicCache(config=self.model.config)
            self._croppable = self.cache.is_croppable  # asked once here, not at every rollback

    def prefill(self, tokens: list[int], prefix_cache=None, row: int = 0) -> tuple[torch.Tensor, int]:
        """Start a new sequence on `tokens` in `row`: the last logits (1, V), and how many tokens' KV
        came from the prefix cache (a request's caching.prefix.CacheRequest) instead of being computed."""
        if self.cache is None or self.kv_cache == "dynamic":
            self.reset()
        else:
            self.cache.set_length(row, 0)
        cached = prefix_cache.load(self.row(row), tokens) if prefix_cache is not None else 0
        return self.forward(torch.tensor(tokens[cached:], device=self.device), last_only=True, row=row), cached

    def row(self, row: int):
        """Row `row` as a one-sequence model, for a prefix cache to load into and store from."""
        return self if self.kv_cache == "dynamic" else ModelRow(self, row)

    @torch.inference_mode()
    def load(self, segments: list[list[tuple[torch.Tensor, torch.Tensor]]], row: int = 0) -> None:
        """Copy a prefix into the empty `row`: its segments one after another, each given as one
        (keys, values) pair per layer. The preallocated cache takes each segment straight into the
        row's buffers (one copy); transformers' DynamicCache gets them joined."""
        if self.kv_cache == "dynamic":
            segments = [[tuple(torch.cat(parts, dim=-2) for parts in zip(*layer)) for layer in zip(*segments)]]
        for layers in segments:
            if self.kv_cache != "dynamic":
                self.cache.rows.begin(row, row + 1, layers[0][0].shape[-2], self.device)
            for index, (keys, values) in enumerate(layers):
                self.cache.update(keys, values, index)
            if self.kv_cache != "dynamic":
                self.cache.rows.advance()

    def forward(self, tokens: torch.Tensor | None, last_only: bool = False, tree=None,
                embeds: torch.Tensor | None = None, row: int = 0) -> torch.Tensor:
        """Append `tokens` (1-D ids), or inputs given as `embeds` (n, d), to `row`; return logits
        (n, V), or (1, V) for the last only. With a `tree` (specdec.tree.Tree), tokens are its root
        and nodes, and each attends to its ancestors only."""
        width = len(embeds) if embeds is not None else tokens.numel()
        tokens = None if tokens is None else tokens.view(1, -1)
        embeds = None if embeds is None else embeds[None]
        return self.forward_rows(tokens, [width], [tree], last_only, embeds, lo=row)[0]

    @torch.inference_mode()
    def forward_rows(self, tokens: torch.Tensor | None, counts: list[int], trees: list, last_only: bool = False,
                     embeds: torch.Tensor | None = None, lo: int = 0) -> torch.Tensor:
        """Append to each row lo, lo + 1, ... of the window its inputs: `tokens` (rows, width) ids or
        `embeds` (rows, width, d), of which the first counts[row] are real (a chain, or the root and
        nodes of trees[row]) and the rest padding; return logits (rows, width, V), or (rows, 1, V)
        of the last position for `last_only`."""
        width = (embeds if embeds is not None else tokens).shape[1]
        hi = lo + len(counts)
        kwargs = {"logits_to_keep": 1} if last_only and self._can_keep_logits else {}
        kwargs.update({"inputs_embeds": embeds} if embeds is not None else {"input_ids": tokens})
        if self.cache is None:
            self.reset()
        if self.static is not None:
            return self._static_rows(embeds if embeds is not None else tokens, counts, trees, last_only, lo)
        if self.kv_cache == "preallocated":
            lengths = self.cache.rows.lengths[lo:hi]
            self.cache.rows.begin(lo, hi, width, self.device)
        else:
            lengths = [self.cache.get_seq_length()]
        mask, positions = row_inputs(lengths, counts, width, trees, self.model.dtype, self.device)
        if mask is not None:
            kwargs.update(attention_mask=mask, position_ids=positions)
        # the model's own causal mask is right: fused layers may then run lower-right causal attention
        self.cache.plain_causal = mask is None
        hooks, features = self._hooks()
        try:
            kwargs[self._cache_argument] = self.cache
            logits = self.model(use_cache=True, **kwargs).logits
        finally:
            for hook in hooks:
                hook.remove()
        if features:
            self.hidden_rows = torch.cat([f.to(features[0].device) for f in features], dim=-1)
        if self.kv_cache == "preallocated":
            self.cache.rows.advance()
        return logits[:, -1:] if last_only else logits

    def _static_rows(self, inputs: torch.Tensor, counts: list[int], trees: list, last_only: bool,
                     lo: int) -> torch.Tensor:
        """forward_rows over the static cache: the decoder's pass (specdec.runtime.static_step), then the
        LM head on the positions kept."""
        hidden, features = self.static.run(self.cache, inputs, counts, trees, lo)
        if self.decoder is not None:
            self.hidden_rows = features if self.feature_layers is not None else hidden
        return self.model.get_output_embeddings()(hidden[:, -1:] if last_only else hidden)

    def forward_some(self, rows: list[int], inputs: list[torch.Tensor], trees: list | None = None,
                     last_only: bool = False, embeds: bool = False) -> torch.Tensor:
        """Append inputs[i] (1-D ids, or (n, d) inputs with `embeds`) to row rows[i] (increasing) in
        one pass; rows in between that are not given run one padding input, forgotten after. Returns
        logits (len(rows), longest input, V) (padding positions past a row's own inputs are
        meaningless), or with `last_only` (len(rows), V) at each row's last input; `hidden_rows`
        holds the given rows' states."""
        lo, hi = rows[0], rows[-1] + 1
        given = dict(zip(rows, range(len(rows))))
        filler = inputs[0].new_zeros(1, *inputs[0].shape[1:]) if len(rows) < hi - lo else None
        window = [inputs[given[row]] if row in given else filler for row in range(lo, hi)]
        idle = {row: self.row_length(row) for row in range(lo, hi) if row not in given}
        counts = [len(x) for x in window]
        trees = [trees[given[row]] if trees and row in given else None for row in range(lo, hi)]
        padded = window[0][None] if len(window) == 1 else pad_sequence(window, batch_first=True)
        same = min(counts) == max(counts)
        logits = self.forward_rows(None if embeds else padded, counts, trees, last_only and same,
                                   padded if embeds else None, lo=lo)
        for row, length in idle.items():
            self.rollback(length, row)
        picked = [row - lo for row in rows]
        if len(picked) < len(window):
            logits = logits[picked]
            self.hidden_rows = None if self.hidden_rows is None else self.hidden_rows[picked]
        if not last_only:
            return logits
        if same:
            return logits[:, -1]
        last = torch.tensor([len(x) - 1 for x in inputs], device=logits.device)
        return logits[torch.arange(len(rows), device=logits.device), last]

    def _hooks(self) -> tuple[list, list]:
        """Hooks that keep the hidden states asked for, and the list the layers' inputs go to."""
        features = []
        if self.decoder is None:
            return [], features
        if self.feature_layers is None:
            return [self.decoder.register_forward_hook(self._keep_hidden)], features
        def keep_input(module, args, kwargs):
            features.append(args[0] if args else kwargs["hidden_states"])
        layers = self.decoder.layers
        return [layers[i].register_forward_pre_hook(keep_input, with_kwargs=True) for i in self.feature_layers], features

    def _keep_hidden(self, module, inputs, output) -> None:
        self.hidden_rows = output[0]  # (rows, new positions, hidden size)

    def rollback(self, length: int, row: int = 0) -> None:
        """Forget every cached token of `row` after its first `length`."""
        extra = self.row_length(row) - length
        if extra < 0:
            raise ValueError(f"cannot roll back to {length} tokens: only {self.row_length(row)} are cached")
        if self.cache is None:
            return
        if self.kv_cache != "dynamic":
            self.cache.set_length(row, length)
        elif extra:
            if not self._croppable:
                raise ConfigError(
                    f"{type(self.model).__name__}'s KV cache cannot be rolled back (sliding-window or "
                    "recurrent layers); speculative strategies need a model with full attention caches"
                )
            self.cache.crop(-extra)

    @torch.inference_mode()
    def keep(self, start: int, rows: list[int], row: int = 0) -> None:
        """Keep, after the first `start` cached tokens of `row`, only the tokens at offsets `rows`
        (increasing) of what followed: the accepted path of a verified tree, compacted in place."""
        positions = torch.tensor(rows, device=self.device) + start
        if self.kv_cache != "dynamic":
            self.cache.keep(row, start, positions)
            return
        for layer in self.cache.layers:  # DynamicCache: rebuild each layer's tensors
            layer.keys = torch.cat([layer.keys[..., :start, :], layer.keys.index_select(-2, positions)], dim=-2)
            layer.values = torch.cat([layer.values[..., :start, :], layer.values.index_select(-2, positions)], dim=-2)


class ModelRow:
    """One row of a CachedModel, as the one-sequence model a prefix cache loads into and stores from."""

    def __init__(self, cached: CachedModel, row: int):
        self.cached, self.index = cached, row
        self.model = cached.model

    @property
    def length(self) -> int:
        return self.cached.row_length(self.index)

    @property
    def cache(self):
        return self.cached.cache.row_view(self.index)  # its layers' keys and values: this row's positions

    @torch.inference_mode()
    def load(self, segments: list[list[tuple[torch.Tensor, torch.Tensor]]]) -> None:
        self.cached.load(segments, self.index)
