"""A KV cache of fixed shapes (runtime.kv_cache=static), for compiled steps and CUDA graphs.

The preallocated cache (specdec.runtime.kv_cache) grows its buffers and shows each pass a view up
to the longest row, so every step has new shapes and a compiled step would recompile. Here the
buffers are allocated once at the run's maximum length (prompt + max_new_tokens + the largest
bucket), each row's length is also a tensor on the device (moved in place: no host-device sync),
and a pass attends over the whole buffer, masked to each row's own positions
(specdec.runtime.row_mask.fixed_row_inputs). New tokens are padded to a few BUCKETS, so a decode
step and a verify pass of a given bucket always have the same shapes. Rollback and keeping a tree's
path are the preallocated cache's: a pointer move, a gather inside the row.
"""

import logging

import torch

from specdec.runtime.kv_cache import PreallocatedCache, Rows

log = logging.getLogger(__name__)

BUCKETS = (1, 2, 4, 8, 16, 32, 64)  # query counts a pass is padded to; longer passes (prefills) run as they are
GROWTH = 256  # tokens a cache that must grow grows by at least (a re-allocation, and new shapes)


def bucket(width: int) -> int:
    """The smallest bucket that holds `width` new tokens (above the largest: `width` itself)."""
    return next((size for size in BUCKETS if size >= width), width)


class StaticRows(Rows):
    """Rows whose lengths are also kept in a device tensor, moved by in-place ops as the host's are."""

    def __init__(self, count: int, device):
        super().__init__(count)
        self.tensor = torch.zeros(count, dtype=torch.long, device=device)

    def window(self, lo: int, hi: int, new: int) -> None:
        """The next pass adds `new` tokens to rows [lo, hi) (the static step writes them itself)."""
        self.lo, self.hi, self.new = lo, hi, new

    def advance(self) -> None:
        self.tensor[self.lo : self.hi] += self.new
        super().advance()

    @torch.inference_mode()  # the tensor was made in a pass, under inference mode
    def set(self, row: int, length: int) -> None:
        self.lengths[row] = length
        self.tensor[row] = length


class StaticCache(PreallocatedCache):
    """`rows` rows of `capacity` positions per layer, allocated now (zeros: a masked position must
    not hold a NaN, which would survive the mask)."""

    def __init__(self, config, rows: int, capacity: int, dtype: torch.dtype, device):
        super().__init__(config, rows, chunk=GROWTH)
        self.rows = StaticRows(rows, device)
        text = config.get_text_config(decoder=True)
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        shape = (rows, text.num_key_value_heads, capacity, head_dim)
        for layer in self.layers:
            layer.rows = self.rows
            layer.dtype, layer.device, layer.is_initialized = dtype, device, True
            layer._key_buffer = torch.zeros(shape, dtype=dtype, device=device)
            layer._value_buffer = torch.zeros(shape, dtype=dtype, device=device)

    @property
    def capacity(self) -> int:
        return self.layers[0]._key_buffer.shape[-2]

    @property
    def buffers(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Every layer's key buffer, and every layer's value buffer."""
        return [layer._key_buffer for layer in self.layers], [layer._value_buffer for layer in self.layers]

    def reserve(self, needed: int) -> bool:
        """Make room for `needed` positions per row; whether the buffers had to be re-allocated (then
        every shape changes: compiled steps compile again, which runtime.max_length avoids)."""
        if needed <= self.capacity:
            return False
        log.warning("the static KV cache of %d positions grows to hold %d (compiled steps compile again): set "
                    "runtime.max_length to at least %d", self.capacity, needed, needed)
        for layer in self.layers:
            layer._grow(needed)
        return True

    def set_length(self, row: int, length: int) -> None:
        self.rows.set(row, length)

    def keep(self, row: int, start: int, positions: torch.Tensor) -> None:
        super().keep(row, start, positions)
        self.rows.set(row, start + positions.numel())
