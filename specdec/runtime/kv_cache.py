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
    [lo, hi) the running forward adds `new` tokens to."""

    def __init__(self, count: int = 1):
        self.lengths = [0] * count
        self.lo, self.hi, self.new = 0, 1, 0
        self.index = None  # (window rows, new) write positions when the rows' lengths differ

    def begin(self, lo: int, hi: int, new: int, device) -> None:
        """The next forward adds `new` tokens to each row in [lo, hi), after its own length."""
        self.lo, self.hi, self.new = lo, hi, new
        window = self.lengths[lo:hi]
        self.index = None
        if min(window) != max(window):
            self.index = torch.tensor(window, device=device)[:, None] + torch.arange(new, device=device)

    @property
    def start(self) -> int:
        """The window's shortest length (its only one when they are equal)."""
        return min(self.lengths[self.lo : self.hi])

    @property
    def end(self) -> int:
        """Positions attention reads in this window: its longest row's length plus the new tokens."""
        return max(self.lengths[self.lo : self.hi]) + self.new

    def advance(self) -> None:
        for row in range(self.lo, self.hi):
            self.lengths[row] += self.new
        self.new = 0


class PreallocatedLayer(DynamicLayer):
    """`keys` / `values` are views of the window's rows up to its longest length."""

    def __init__(self, chunk: int = CHUNK, rows: Rows | None = None):
        super().__init__()
        self.chunk = chunk
        self.rows = rows if rows is not None else Rows(1)
        self._own_rows = rows is None  # a layer used alone advances its own lengths
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
        if self._own_rows:
            rows.begin(0, 1, key_states.shape[-2], key_states.device)
        end = rows.end
        if end > self._key_buffer.shape[-2]:
            self._grow(end)
        whole = rows.lo == 0 and rows.hi == len(rows.lengths)  # every row: no window slice (one op fewer a layer)
        windows = []
        for buffer, new in ((self._key_buffer, key_states), (self._value_buffer, value_states)):
            window = buffer if whole else buffer[rows.lo : rows.hi]
            if rows.index is None:
                window[..., rows.start : rows.start + rows.new, :].copy_(new)
            else:  # each row at its own length
                window[torch.arange(len(window), device=new.device)[:, None], :, rows.index] = new.transpose(1, 2)
            windows.append(window[..., :end, :])
        self._show(rows.lo, rows.hi)
        if self._own_rows:
            rows.advance()
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

    def _show(self, lo: int, hi: int) -> None:
        self._lo, self._hi = lo, hi

    def row_view(self, row: int) -> None:
        """Point keys / values at one row's positions (what a prefix cache stores)."""
        self._show(row, row + 1)

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
        return self.rows.start

    def crop(self, tokens_to_remove: int) -> None:
        """Roll back a one-row cache: forget the last -tokens_to_remove positions (a pointer move)."""
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative number of tokens to remove")
        if self.is_initialized and tokens_to_remove:
            self.rows.lengths[0] = max(0, self.rows.lengths[0] + tokens_to_remove)

    def keep(self, row: int, start: int, positions: torch.Tensor) -> None:
        """Keep, after row `row`'s first `start` positions, only `positions` (absolute, increasing):
        the accepted path of a candidate tree, gathered to the front in place."""
        end = start + positions.numel()
        for buffer in (self._key_buffer, self._value_buffer):
            buffer[row, :, start:end] = buffer[row].index_select(-2, positions)
        if self._own_rows:
            self.rows.lengths[row] = end

    def move(self, source: int, target: int, length: int) -> None:
        """Copy row `source`'s first `length` positions into row `target`."""
        for buffer in (self._key_buffer, self._value_buffer):
            buffer[target, :, :length] = buffer[source, :, :length]

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
        super().__init__(layers=[PreallocatedLayer(chunk, self.rows) for _ in layer_types])

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.rows.start

    def set_length(self, row: int, length: int) -> None:
        self.rows.lengths[row] = length

    def keep(self, row: int, start: int, positions: torch.Tensor) -> None:
        for layer in self.layers:
            if layer.is_initialized:
                layer.keep(row, start, positions)
        self.rows.lengths[row] = start + positions.numel()

    def move(self, source: int, target: int) -> None:
        length = self.rows.lengths[source]
        for layer in self.layers:
            if layer.is_initialized:
                layer.move(source, target, length)
        self.rows.lengths[target] = length

    def row_view(self, row: int) -> "PreallocatedCache":
        for layer in self.layers:
            if layer.is_initialized:
                layer.row_view(row)
        return self
