"""Linear layers laid out for the few rows that decoding feeds them on a CPU.

A decode step multiplies every weight by 1 row and a verify pass by a few. Which kernel runs
fastest for so few rows depends on the CPU and its BLAS, the matrix shape and the row count.
On some CPUs `F.linear` sends one row to a matrix-vector kernel and a few rows to a slow
path, while `W @ x.T` over two or more columns runs near memory bandwidth (so one row is best
padded to two); on others `F.linear` is already at memory speed, or `x @ W.T` with W.T stored
contiguous wins from 4 rows; oneDNN (torch's mkldnn backend) multiplies by a weight stored
once in its own blocked layout near the CPU's peak for any row count. docs/results.md has
the measurements.

So the layout is chosen by measurement: `runtime.linear=auto` times the candidate products
for every weight shape at a ladder of row counts, once per CPU (kept on disk), over all the model's
weights of that shape in a row (as a forward pass streams them), and each layer then
dispatches on the number of rows it is given (above the ladder's top, a prefill, the top's
choice). `few_rows` always takes `W @ x.T` and `stock` keeps
`nn.Linear`. Every layout returns the same products up to float rounding; `specdec.runtime.prepare`
applies them to a copy of the model that shares its weights, so the model you passed stays
as it was.
"""

import contextlib
import copy
import json
import logging
import time

import torch
import torch.nn.functional as F
from torch import nn

from specdec.io import atomic_write_text
from specdec.runtime.machine import cache_root, cpu_name

try:
    import fcntl
except ImportError:  # Windows: no lock; a shape timed twice at once is timed twice, the last plan kept
    fcntl = None

log = logging.getLogger(__name__)

MAX_ROWS = 64  # the ladder's top: more rows take its plan's product (no plan: F.linear)
LADDER = (1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 24, 32, 64)  # row counts timed by `auto`; others use the rung below
# F.linear; W @ x.T; W @ [x, last row of x].T (one column more: 1 row as 2, 3 as 4 take faster
# kernels on AMD); x @ W.T with W.T stored contiguous (a copy of W); oneDNN's product with W
# stored in oneDNN's blocked layout (a copy of W; where torch has oneDNN)
PRODUCTS = ("linear", "columns", "padded", "transposed", "packed")
COPIED = ("transposed", "packed")  # the products that run on a copy of the weight, laid out for them


def weight_copy(method: str, weight: torch.Tensor) -> torch.Tensor | None:
    """The copy of `weight` that `method` multiplies by (None: the weight itself), or a
    RuntimeError where this torch or dtype lacks it."""
    if method == "transposed":
        return weight.t().contiguous()
    if method == "packed":
        if not torch.backends.mkldnn.is_available():
            raise RuntimeError("this torch has no oneDNN (mkldnn)")
        return torch.ops.mkldnn._reorder_linear_weight(weight)
    return None


def product(method: str, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
            laid_out: torch.Tensor | None = None) -> torch.Tensor:
    """x (rows, in) @ weight.T + bias by one of PRODUCTS (`laid_out`: weight_copy(method, weight))."""
    if method == "linear":
        return F.linear(x, weight, bias)
    if method == "transposed":
        return torch.addmm(bias, x, laid_out) if bias is not None else x @ laid_out
    if method == "packed":
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), laid_out, bias, "none", [], "")
    rows = x.shape[0]
    flat = x.contiguous()  # rows in memory order: the fast kernel's layout
    if method == "padded":
        flat = torch.cat([flat, flat[-1:]])  # cat: 1 us (repeat: 5)
    out = (weight @ flat.T).T[:rows]
    # row-major, as F.linear returns it: a column-major q, k or v sends attention to its slow path
    return out + bias if bias is not None else out.contiguous()


class FewRowLinear(nn.Linear):
    """nn.Linear whose CPU products follow `plan` (one PRODUCTS entry per row count 1..MAX_ROWS,
    the last also for more rows); no plan means `W @ x.T` (padded to two columns for 1 row) up
    to MAX_ROWS rows and F.linear above."""

    plan: tuple[str, ...] | None = None
    copies: dict[str, torch.Tensor] | None = None  # weight_copy for each COPIED product the plan uses

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        if x.device.type != "cpu" or (rows > MAX_ROWS and not self.plan):
            return F.linear(x, self.weight, self.bias)
        method = self.plan[min(rows, MAX_ROWS) - 1] if self.plan else "padded" if rows == 1 else "columns"
        if method == "packed" and torch.compiler.is_compiling():
            method = "linear"  # inductor lowers oneDNN's product only over weights it packed itself
        laid_out = self.copies.get(method) if self.copies else None
        out = product(method, x.reshape(rows, self.in_features), self.weight, self.bias, laid_out)
        return out.reshape(*x.shape[:-1], self.out_features)


PLANS_FILE = "linear_plans.json"  # in specdec's cache directory: measured once per CPU, torch and shape
PLANS_VERSION = 5  # part of each plan's key: plans timed by older code are timed again


def measured_plan(weights: list[torch.Tensor]) -> tuple[str, ...]:
    """The fastest product for each row count 1..MAX_ROWS over these same-shaped weights, run
    one after another as a forward pass runs them (so a large model streams them from memory)."""
    key = (f"v{PLANS_VERSION} | {cpu_name()} | torch {torch.__version__} | {torch.get_num_threads()} threads | "
           f"{len(weights)} x {tuple(weights[0].shape)} {weights[0].dtype}")
    path = cache_root() / PLANS_FILE
    plans = _read_plans(path)
    if key not in plans:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path.with_name(f"{path.name}.lock")):  # processes starting at once time each shape once
            plans = _read_plans(path)  # re-read: another process may have timed it, or other shapes, meanwhile
            if key not in plans:
                log.info("timing the products for %s (once; kept in %s)", key, path)
                copies = weight_copies(weights, COPIED)
                fastest = {rows: _fastest(weights, copies, rows) for rows in LADDER}
                plans[key] = [fastest[max(r for r in LADDER if r <= rows)] for rows in range(1, MAX_ROWS + 1)]
                atomic_write_text(path, json.dumps(plans, indent=1))  # a concurrent reader sees the old or the new file
    return tuple(plans[key])


def weight_copies(weights: list[torch.Tensor], methods) -> dict[str, list[torch.Tensor]]:
    """weight_copy of every weight for each of `methods` that this torch, CPU and dtype support."""
    copies = {}
    for method in methods:
        try:
            copies[method] = [weight_copy(method, w) for w in weights]
        except (RuntimeError, NotImplementedError) as error:  # e.g. oneDNN's float16 needs AVX512-FP16
            log.info("not timing the %s product for %s weights: %s", method, weights[0].dtype, error)
    return copies


@contextlib.contextmanager
def _locked(path):
    """An exclusive lock on `path` while the block runs (released by the system if the process dies)."""
    with open(path, "a") as f:
        if fcntl is not None:
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _read_plans(path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # none yet, or unreadable: measure again
        return {}


def _fastest(weights: list[torch.Tensor], copies: dict[str, list[torch.Tensor]], rows: int, trials: int = 11) -> str:
    """Interleaved trials, best time of each candidate; a trial repeats the sweep for at least 0.5 ms.
    Eleven trials: with five, a busy moment of the shared host picked a product 12% slower for
    one row a third of the time, and the decode step paid for it (baseline 10% slower)."""
    x = torch.randn(rows, weights[0].shape[1], dtype=weights[0].dtype)
    candidates = [m for m in PRODUCTS if m not in COPIED or m in copies]

    def sweep(method: str) -> None:
        for i, weight in enumerate(weights):
            product(method, x, weight, None, copies[method][i] if method in copies else None)

    with torch.inference_mode():
        start = time.perf_counter()
        for method in candidates:  # warm-up, and how many sweeps make a trial
            sweep(method)
        repeats = max(1, int(5e-4 * len(candidates) / max(time.perf_counter() - start, 1e-7)))
        best = dict.fromkeys(candidates, float("inf"))
        for _ in range(trials):
            for method in candidates:
                start = time.perf_counter()
                for _ in range(repeats):
                    sweep(method)
                best[method] = min(best[method], time.perf_counter() - start)
    return min(best, key=best.get)


def shared_copy(model: nn.Module) -> nn.Module:
    """A copy of `model`'s modules that shares every parameter and buffer with it (and the
    laid-out weight copies of its FewRowLinear layers, which cannot be deep-copied)."""
    tensors = list(model.parameters()) + list(model.buffers())
    tensors += [t for m in model.modules() if isinstance(m, FewRowLinear) and m.copies for t in m.copies.values()]
    return copy.deepcopy(model, memo={id(t): t for t in tensors})


def few_row_linears(model: nn.Module, measure: bool = False) -> nn.Module:
    """`model`, its nn.Linear layers made FewRowLinear in place: with `measure` (auto), each shape
    follows the plan measured for it on this CPU, else `W @ x.T`. A plan that uses the
    transposed or the oneDNN product keeps those copies of the weights, taken now."""
    groups: dict[tuple, list[FewRowLinear]] = {}
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = FewRowLinear
            if measure and module.weight.device.type == "cpu":
                groups.setdefault((tuple(module.weight.shape), module.weight.dtype), []).append(module)
    for modules in groups.values():
        weights = [m.weight.detach() for m in modules]
        plan = measured_plan(weights)
        copies = weight_copies(weights, [m for m in COPIED if m in plan])
        for i, module in enumerate(modules):
            module.plan = plan
            module.copies = {method: laid_out[i] for method, laid_out in copies.items()}
    return model
