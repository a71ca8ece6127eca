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

import copy
import logging
import time

import torch
import torch.nn.functional as F
from torch import nn

from specdec.runtime.machine import cpu_name
from specdec.runtime.measured import kept
from specdec.runtime.timing import FIRST_RUN, Timing, implausible, interleaved

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
        laid_out = self.copies.get(method) if self.copies else None
        flat = x.reshape(rows, self.in_features)
        if method == "packed" and torch.compiler.is_compiling():  # inductor runs oneDNN only on weights it packed
            out = torch.ops.specdec.packed_product(flat, laid_out, self.bias)
        else:
            out = product(method, flat, self.weight, self.bias, laid_out)
        return out.reshape(*x.shape[:-1], self.out_features)


@torch.library.custom_op("specdec::packed_product", mutates_args=())
def _packed_product(x: torch.Tensor, laid_out: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """oneDNN's product inside compiled steps, as one opaque op: traced, it failed on our packed
    weights, and F.linear in its place ran a compiled 4-row verify pass at 2.4 decode steps."""
    return product("packed", x, None, bias, laid_out)  # the packed product reads laid_out only


@_packed_product.register_fake
def _(x, laid_out, bias):
    return x.new_empty(x.shape[0], laid_out.shape[0])


PLANS_FILE = "linear_plans.json"  # in specdec's cache directory: measured once per CPU, torch and shape
PLANS_VERSION = 6  # part of each plan's key: plans timed by older code are timed again
PLAN_SECONDS = 3.0  # timing of one shape's ladder, at most (of the process's first-run budget)
KEEP_FOR_CURVE = 15.0  # of the first-run budget, left for the verify-cost curve (specdec.runtime.verify_cost)


def measured_plan(weights: list[torch.Tensor]) -> tuple[str, ...] | None:
    """The fastest product for each row count 1..MAX_ROWS over these same-shaped weights, run
    one after another as a forward pass runs them (so a large model streams them from memory);
    None (the default products) where the host was busy or the first-run budget ran out before any
    was timed."""
    key = (f"v{PLANS_VERSION} | {cpu_name()} | torch {torch.__version__} | {torch.get_num_threads()} threads | "
           f"{len(weights)} x {tuple(weights[0].shape)} {weights[0].dtype}")
    plan = kept(PLANS_FILE, key, lambda: _timed_plan(weights), fallback={"plan": None})["plan"]
    return tuple(plan) if plan else None


def _timed_plan(weights: list[torch.Tensor]) -> dict:
    """The plan, with each rung's fastest product, its time and spread; rungs whose timing is
    implausible (specdec.runtime.timing) are timed once more, and the plan says whether it is
    plausible then (if not, the next run times it again). Rungs left untimed when the first-run
    budget runs out take the product of the rung below (none timed: no plan), and the plan counts
    as implausible."""
    copies = weight_copies(weights, COPIED)
    seconds = FIRST_RUN.allow(PLAN_SECONDS, keep=KEEP_FOR_CURVE) / len(LADDER)
    fastest = {}
    for rows in LADDER:
        if FIRST_RUN.allow(1.0, keep=KEEP_FOR_CURVE) <= 0:
            log.warning("first-run timing budget spent: %d rows and up keep the product of fewer rows", rows)
            break
        fastest[rows] = _fastest(weights, copies, rows, seconds)
    for rows in implausible_rungs(fastest) if FIRST_RUN.allow(1.0, keep=KEEP_FOR_CURVE) > 0 else ():
        fastest[rows] = _fastest(weights, copies, rows, seconds / 2)
    timed = [max((r for r in fastest if r <= rows), default=None) for rows in range(1, MAX_ROWS + 1)]
    return {"plan": [fastest[r][0] for r in timed] if fastest else None,
            "plausible": len(fastest) == len(LADDER) and not implausible_rungs(fastest),
            "complete": len(fastest) == len(LADDER),
            "us": {rows: round(t.best * 1e6, 1) for rows, (_, t) in fastest.items()},
            "spread": {rows: round(t.spread, 3) for rows, (_, t) in fastest.items()},
            "host_load": round(max((t.load for _, t in fastest.values()), default=0.0), 3)}


def implausible_rungs(fastest: dict) -> list[int]:
    """Rungs timed on a busy host, or whose product ran faster for more rows than the rung below did
    for fewer. Not a wide spread: trials of half a millisecond spread widely on a quiet host, and
    the best of them is what the plan compares."""
    return implausible({rows: timing for rows, (_, timing) in fastest.items()}, max_spread=float("inf"))


def weight_copies(weights: list[torch.Tensor], methods) -> dict[str, list[torch.Tensor]]:
    """weight_copy of every weight for each of `methods` that this torch, CPU and dtype support."""
    copies = {}
    for method in methods:
        try:
            copies[method] = [weight_copy(method, w) for w in weights]
        except (RuntimeError, NotImplementedError) as error:  # e.g. oneDNN's float16 needs AVX512-FP16
            log.info("not timing the %s product for %s weights: %s", method, weights[0].dtype, error)
    return copies


def _fastest(weights: list[torch.Tensor], copies: dict[str, list[torch.Tensor]], rows: int,
             seconds: float) -> tuple[str, Timing]:
    """The product with the best time over interleaved, spaced trials (specdec.runtime.timing), and its
    Timing; a trial repeats the sweep for at least 0.5 ms. Best times, over at least 5 trials: with
    five medians, a busy moment of the shared host picked a product 12% slower for one row a third
    of the time, and the decode step paid for it (baseline 10% slower)."""
    x = torch.randn(rows, weights[0].shape[1], dtype=weights[0].dtype)
    candidates = [m for m in PRODUCTS if m not in COPIED or m in copies]

    def sweep(method: str) -> None:
        for i, weight in enumerate(weights):
            product(method, x, weight, None, copies[method][i] if method in copies else None)

    with torch.inference_mode():
        start = time.perf_counter()
        for method in candidates:  # a warm-up, and how many sweeps make a trial
            sweep(method)
        warm = time.perf_counter() - start
        FIRST_RUN.spend(warm)
        repeats = max(1, int(5e-4 * len(candidates) / max(warm, 1e-7)))

        def timer(method: str):
            def run() -> float:
                began = time.perf_counter()
                for _ in range(repeats):
                    sweep(method)
                return (time.perf_counter() - began) / repeats
            return run

        timed = interleaved({m: timer(m) for m in candidates}, seconds, min_rounds=5, max_rounds=11, warmup=False)
    best = min(timed, key=lambda m: timed[m].best)
    return best, timed[best]


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
        copies = weight_copies(weights, [m for m in COPIED if m in (plan or ())])
        for i, module in enumerate(modules):
            module.plan = plan
            module.copies = {method: laid_out[i] for method, laid_out in copies.items()}
    return model
