"""Attention masks and positions for a forward over several rows of different lengths.

Each row appends `width` tokens after its own length (specdec.runtime.kv_cache): its first
`counts[row]` are real (a chain, or a tree's root and nodes), the rest padding. A real token
sees the row's cached positions and, among the new ones, those before it (a chain) or its
ancestors (a tree); never another row's positions past its own length, nor padding. When
every row has the same length and a full chain, plain causal attention is already right and
no mask is built (a single sequence decodes exactly as it always did), and the fused layers
may run lower-right causal attention in its place (specdec.runtime.fused_layers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from specdec.tree import Tree


def row_inputs(lengths: list[int], counts: list[int], width: int, trees: list[Tree | None], dtype: torch.dtype,
               device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(additive attention mask (rows, 1, width, max length + width), position ids (rows, width)),
    or (None, None) where the model's own causal mask and positions are right."""
    if not any(trees) and min(lengths) == max(lengths) and min(counts) == width:
        return None, None
    if len(lengths) == 1:  # one row with a tree: the tree's own mask, as a single sequence has it
        return trees[0].attention_mask(lengths[0], dtype, device), trees[0].position_ids(lengths[0], device)
    if any(tree is not None and not hasattr(tree, "ancestors") for tree in trees):
        return stacked_masks(lengths, counts, width, trees, dtype, device)
    sees, depths = new_token_pattern(width, trees, device)
    start = torch.tensor(lengths, device=device)
    return attention_mask(start, sees, max(lengths) + width, dtype), start[:, None] + depths


def new_token_pattern(width: int, trees: list[Tree | None], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Which new tokens each new token sees (rows, width, width), and their depths (rows, width): a
    chain's causal pattern, or a tree's ancestors (its padding sees only itself)."""
    rows = len(trees)
    sees = torch.ones(width, width, dtype=torch.bool, device=device).tril().repeat(rows, 1, 1)
    depths = torch.arange(width, device=device).repeat(rows, 1)
    for row, tree in enumerate(trees):
        if tree is not None:
            size = tree.size + 1
            sees[row, :size, :size] = tree.ancestors.to(device)
            sees[row, size:] = torch.eye(width, dtype=torch.bool, device=device)[size:]
            depths[row, :size] = tree.tensors(device)["depths"]
    return sees, depths


def attention_mask(start: torch.Tensor, sees: torch.Tensor, columns: int, dtype: torch.dtype) -> torch.Tensor:
    """(rows, 1, width, columns) additive mask: each row's new tokens, written from column start[row]
    on, see the columns before it and the new tokens `sees` lets them."""
    rows, width = sees.shape[:2]
    relative = torch.arange(columns, device=sees.device)[None, :] - start[:, None]  # (rows, columns)
    new = (relative >= 0) & (relative < width)
    seen_new = sees.gather(2, relative.clamp(0, width - 1)[:, None, :].expand(rows, width, -1)) & new[:, None, :]
    visible = (relative < 0)[:, None, :] | seen_new
    mask = torch.zeros(visible.shape, dtype=dtype, device=sees.device).masked_fill_(~visible, torch.finfo(dtype).min)
    return mask[:, None]


def stacked_masks(lengths: list[int], counts: list[int], width: int, shapes: list, dtype: torch.dtype,
                  device) -> tuple[torch.Tensor, torch.Tensor]:
    """Row by row, for inputs that bring their own mask and positions (an EAGLE draft level: its
    nodes see their ancestors among nodes cached before, specdec.tree.DraftLevel); other rows are
    chains. A padding query sees the row's cached positions and itself."""
    rows, end = len(lengths), max(lengths) + width
    mask = torch.full((rows, 1, width, end), torch.finfo(dtype).min, dtype=dtype, device=device)
    positions = torch.zeros(rows, width, dtype=torch.long, device=device)
    for row, (length, count, shape) in enumerate(zip(lengths, counts, shapes)):
        diagonal = torch.arange(width, device=device)
        mask[row, 0, diagonal, length + diagonal] = 0
        mask[row, 0, :, :length] = 0
        if shape is None:
            causal = torch.ones(count, count, dtype=torch.bool, device=device).tril()
            mask[row, 0, :count, length : length + count] = torch.zeros(count, count, dtype=dtype, device=device) \
                .masked_fill_(~causal, torch.finfo(dtype).min)
            positions[row] = length + diagonal
        else:
            mask[row, 0, :count, : length + count] = shape.attention_mask(length, dtype, device)[0, 0]
            own = shape.position_ids(length, device)[0]
            positions[row, :count], positions[row, count:] = own, own[-1]
    return mask, positions


def fixed_row_inputs(start: torch.Tensor, lengths: list[int], counts: list[int], width: int, size: int,
                     trees: list, columns: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """row_inputs in the fixed shape of a static cache (specdec.runtime.static_cache), so that every
    pass of `size` queries has the same shapes: (mask (rows, 1, size, columns), positions (rows, size))
    for `width` new tokens per row padded to `size`, over all `columns` of the buffers. `start` holds
    the rows' lengths on the device (no copy from the host), `lengths` the same on the host."""
    if not any(tree is not None and not hasattr(tree, "ancestors") for tree in trees):
        sees, depths = new_token_pattern(size, trees, start.device)
        return attention_mask(start, sees, columns, dtype), start[:, None] + depths
    small, positions = stacked_masks(lengths, counts, width, trees, dtype, start.device)
    mask = torch.full((len(lengths), 1, size, columns), torch.finfo(dtype).min, dtype=dtype, device=start.device)
    mask[..., :width, : small.shape[-1]] = small
    mask[:, 0, width:, 0] = 0  # a padding query sees one position: its softmax stays defined
    return mask, torch.cat([positions, positions[:, -1:].expand(-1, size - width)], dim=1)
