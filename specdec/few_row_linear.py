"""Linear layers laid out for the few rows that decoding feeds them on a CPU.

A decode step multiplies every weight by 1 row and a verify pass by a few. On the CPU,
`F.linear` sends 1 row to a matrix-vector kernel and 2 to 32 rows to a layout that runs
at a fraction of the memory bandwidth, while `W @ x.T` over 2 or more columns runs a
matrix-matrix kernel at full speed (SmolLM2-135M, every linear once, 2 cores: 1 row
31.6 ms with `F.linear`, 16.5 ms as `W @ [x, x].T`; 4 rows 48.0 ms against 17.8 ms).
`few_row_linears(model)` returns a copy of the model that shares every weight and whose
`nn.Linear` layers take that route; the model you passed is left as it was, so the
switch is reversible by using the original (`runtime.linear=stock`).
"""

import copy

import torch
import torch.nn.functional as F
from torch import nn

MAX_ROWS = 32  # measured: W @ x.T is as fast or faster than F.linear up to here, slower at 64


class FewRowLinear(nn.Linear):
    """nn.Linear whose CPU products over at most MAX_ROWS rows run as `W @ x.T`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        if x.device.type != "cpu" or rows > MAX_ROWS:
            return F.linear(x, self.weight, self.bias)
        flat = x.reshape(rows, self.in_features).contiguous()  # rows in memory order: the fast kernel's layout
        if rows == 1:
            flat = flat.repeat(2, 1)  # two columns take the matrix-matrix kernel: twice as fast as one
        out = (self.weight @ flat.T).T[:rows]
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)


def shared_copy(model: nn.Module) -> nn.Module:
    """A copy of `model`'s modules that shares every parameter and buffer with it."""
    shared = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    return copy.deepcopy(model, memo=shared)


def few_row_linears(model: nn.Module) -> nn.Module:
    """A copy of `model` sharing its parameters and buffers, with FewRowLinear layers."""
    fast = shared_copy(model)
    for module in fast.modules():
        if type(module) is nn.Linear:
            module.__class__ = FewRowLinear
    return fast

