"""A KV cache made for speculation over a batch of rows (gpt-fast's design behind the
transformers 5.x Cache interface): per-layer buffers (rows, heads, capacity, head dim)
preallocated in large chunks, one length per row that attention reads up to, rollback of a
row by moving its pointer, a tree path kept by gathering inside the row's buffer.
DynamicCache instead copies the whole cache at every step (torch.cat) and crops by slicing.

A forward runs on a window of consecutive rows (`Rows.begin`): a verify pass on every busy
row, a prefill on the one row a new request takes. Rows may hold different lengths; each
writes its new tokens at its own length, and the caller's attention mask (specdec.runtime.
row_mask) hides, per row, the positions it does not own. The pool of rows is what a paged
pool shared with the radix cache would replace: a row is a request's slot.
"""

import torch
from transformers.cache_utils import Cache, DynamicLayer, get_layer_types_and_kwargs

from specdec.errors import ConfigError

CHUNK = 256  # tokens added to a buffer each time it fills up


class Rows:
    """What every layer of one cache shares: each row's length, and the window of rows
    [lo, hi) the running forward adds `new` tokens to, with where it writes them."""

    def __init__(self, count: int = 1):
        self.lengths = [0] * count
        self.lo, self.hi, self.new = 0, 1, 0
        self.start = self.end = 0
        self.whole = True  # the window is every row: layers skip the window slice (one op fewer a layer)
        self.index = None  # (window rows, new) write positions when the rows' lengths differ

    def begin(self, lo: int, hi: int, new: int, device) -> None:
        """The next forward adds `new` tokens to each row in [lo, hi), after its own length.
        Everything the layers need is worked out here once, not once a layer."""
        self.lo, self.hi, self.new = lo, hi, new
        window = self.lengths[lo:hi]
        self.start, self.end = min(window), max(window) + new
        self.whole = lo == 0 and hi == len(self.lengths)
        self.index = None
        if self.start != self.end - new:
            positions = torch.tensor(window, device=device)[:, None] + torch.arange(new, device=device)
            self.index = (torch.arange(hi - lo, device=device)[:, None], positions)

    def advance(self) -> None:
        for row in range(self.lo, self.hi):
            self.lengths[row] += self.new
        self.new = 0


class PreallocatedLayer(DynamicLayer):
    """`keys` / `values` are views of the shown rows up to their longest length; the lengths
    live in the shared `Rows`, which the cache's owner begins and advances around a forward."""

    def __init__(self, rows: Rows, chunk: int = CHUNK):
        super().__init__()
        self.chunk = chunk
        self.rows = rows
        self._key_buffer = self._value_buffer = None
        self._lo, self._hi = 0, 1  # the rows `keys` and `values` show

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        count = len(self.rows.lengths)
        self._key_buffer = key_states.new_empty(count, key_states.shape[1], 0, key_states.shape[-1])
        self._value_buffer = value_states.new_empty(count, value_states.shape[1], 0, value_states.shape[-1])
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        rows = self.rows
        if rows.end > self._key_buffer.shape[-2]:
            self._grow(rows.end)
        windows = []
        for buffer, new in ((self._key_buffer, key_states), (self._value_buffer, value_states)):
            window = buffer if rows.whole else buffer[rows.lo : rows.hi]
            if rows.index is None:
                window[..., rows.start : rows.start + rows.new, :].copy_(new)
            else:  # each row at its own length
                window[rows.index[0], :, rows.index[1]] = new.transpose(1, 2)
            windows.append(window[..., : rows.end, :])
        self._lo, self._hi = rows.lo, rows.hi
        return windows[0], windows[1]

    def _grow(self, needed: int) -> None:
        capacity = -(-needed // self.chunk) * self.chunk
        for name in ("_key_buffer", "_value_buffer"):
            old = getattr(self, name)
            # zeros, not garbage: a row's attention reads (masked) the positions other rows own, and a
            # NaN there would survive the mask (0 * NaN)
            new = old.new_zeros(*old.shape[:-2], capacity, old.shape[-1])
            new[..., : old.shape[-2], :].copy_(old)
            setattr(self, name, new)

    def row_view(self, row: int) -> None:
        """Point keys / values at one row's positions (what a prefix cache stores)."""
        self._lo, self._hi = row, row + 1

    @property
    def keys(self) -> torch.Tensor | None:
        """The shown rows' positions up to the longest one's length (they follow rollbacks)."""
        return self._shown(self._key_buffer)

    @keys.setter
    def keys(self, value) -> None:  # the Cache base class sets None; the view is made from the buffers
        pass

    @property
    def values(self) -> torch.Tensor | None:
        return self._shown(self._value_buffer)

    @values.setter
    def values(self, value) -> None:
        pass

    def _shown(self, buffer: torch.Tensor | None) -> torch.Tensor | None:
        if buffer is None:
            return None
        return buffer[self._lo : self._hi, :, : max(self.rows.lengths[self._lo : self._hi])]

    def get_seq_length(self) -> int:
        return min(self.rows.lengths[self.rows.lo : self.rows.hi])

    def keep(self, row: int, start: int, positions: torch.Tensor) -> None:
        """Keep, after row `row`'s first `start` positions, only `positions` (absolute, increasing):
        the accepted path of a candidate tree, gathered to the front in place."""
        end = start + positions.numel()
        for buffer in (self._key_buffer, self._value_buffer):
            buffer[row, :, start:end] = buffer[row].index_select(-2, positions)

    def reset(self) -> None:
        if self.is_initialized:
            self.rows.lengths = [0] * len(self.rows.lengths)


class PreallocatedCache(Cache):
    """One PreallocatedLayer per decoder layer over `rows` rows; full-attention models only."""

    def __init__(self, config, rows: int = 1, chunk: int = CHUNK):
        layer_types, _ = get_layer_types_and_kwargs(config.get_text_config(decoder=True))
        unsupported = sorted(set(layer_types) - {"full_attention"})
        if unsupported:
            raise ConfigError(f"runtime.kv_cache=preallocated supports full-attention layers only (this model has "
                              f"{', '.join(unsupported)}): use runtime.kv_cache=dynamic")
        self.rows = Rows(rows)
        super().__init__(layers=[PreallocatedLayer(self.rows, chunk) for _ in layer_types])

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return min(self.rows.lengths[self.rows.lo : self.rows.hi])

    def set_length(self, row: int, length: int) -> None:
        self.rows.lengths[row] = length

    def keep(self, row: int, start: int, positions: torch.Tensor) -> None:
        for layer in self.layers:
            if layer.is_initialized:
                layer.keep(row, start, positions)
        self.rows.lengths[row] = start + positions.numel()

    def row_view(self, row: int) -> "PreallocatedCache":
        for layer in self.layers:
            if layer.is_initialized:
                layer.row_view(row)
        return self
