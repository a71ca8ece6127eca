"""The one step that puts a module into the form our decoders run on this machine.

Every module a run executes goes through `prepare`: the target, a draft model, and the modules
strategies build themselves (EAGLE's draft, Medusa's heads and LM head), which they list in
`Strategy.prepared_modules`. So `runtime.layers=stock` or `runtime.linear=stock` holds for all
of them, and no strategy needs to know how the runtime lays modules out.
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel

from specdec.errors import ConfigError
from specdec.placement import STOCK, dispatched
from specdec.runtime.few_row_linear import few_row_linears, shared_copy
from specdec.runtime.fused_layers import fuse_decoder_layers

LINEAR_LAYOUTS = ("auto", "few_rows", "stock")
LAYERS = ("fused", "stock")


@dataclass(frozen=True)
class Runtime:
    """How modules run (the runtime config group's layers, linear, compile and cuda_graphs)."""

    layers: str = "fused"  # fused: Llama-style layers in a few large ops (fused_layers); stock: as shipped
    linear: str = "auto"  # auto: per shape the product timed fastest here (few_row_linear); few_rows; stock
    compile: bool = False  # torch.compile each causal LM's static steps, once per bucket (static_step)
    cuda_graphs: bool = False  # capture them as CUDA graphs instead (CUDA only)

    def __post_init__(self):
        if self.linear not in LINEAR_LAYOUTS:
            raise ConfigError(f"unknown runtime.linear {self.linear!r}: use {' or '.join(LINEAR_LAYOUTS)}")
        if self.layers not in LAYERS:
            raise ConfigError(f"unknown runtime.layers {self.layers!r}: use {' or '.join(LAYERS)}")
        for knob in ("compile", "cuda_graphs"):
            if not isinstance(getattr(self, knob), bool):
                raise ConfigError(f"runtime.{knob} must be true or false (got {getattr(self, knob)!r})")

    @property
    def static_steps(self) -> str | None:
        """How the static cache's steps run beyond eager: "cuda_graphs", "compile" or None."""
        return "cuda_graphs" if self.cuda_graphs else "compile" if self.compile else None

    @staticmethod
    def of(runtime_cfg) -> "Runtime":
        """The settings of a `runtime` config node."""
        return Runtime(runtime_cfg.layers, runtime_cfg.linear, runtime_cfg.compile, runtime_cfg.cuda_graphs)


def check_static(runtime: Runtime, kv_cache: str, device: torch.device) -> None:
    """ConfigError, before any model loads, for compiled or captured steps that cannot run."""
    check_static_cache(runtime.static_steps, kv_cache)
    if runtime.cuda_graphs and device.type != "cuda":
        raise ConfigError(f"runtime.cuda_graphs=true needs a CUDA device (this run's is {device.type}): use "
                          "runtime.compile=true here")


def check_static_cache(static_steps: str | None, kv_cache: str) -> None:
    """Compiled or captured steps (a prepared model's `static_steps`) need the static cache's fixed shapes."""
    if static_steps and kv_cache != "static":
        raise ConfigError(f"runtime.{static_steps}=true needs runtime.kv_cache=static (fixed shapes; over "
                          f"the {kv_cache} cache every step would compile again)")


def prepare(module: nn.Module, runtime: Runtime = Runtime()) -> nn.Module:
    """A copy of `module` sharing every weight with it (the original stays stock, for the
    anchors), with every causal LM inside it given fused layers, every linear layer the
    runtime's product and, with compile or cuda_graphs, every causal LM compiled static steps
    (`lm.static_steps`, read by specdec.runtime.static_step). A model that accelerate
    dispatched (specdec.placement) runs as placed, stock: `module` itself (a copy would duplicate its
    offloaded weights, and new layers would escape its hooks)."""
    if dispatched(module):
        if runtime != Runtime(layers="stock", linear="stock"):
            raise ConfigError(f"a target dispatched by model.device_map runs through accelerate's hooks, which "
                              f"runtime.layers, runtime.linear, compile and cuda_graphs would bypass: {STOCK}")
        return module
    ours = shared_copy(module)
    language_models = [m for m in ours.modules()  # causal LMs, not their inner decoders
                       if isinstance(m, PreTrainedModel) and m.get_output_embeddings() is not None]
    if runtime.layers == "fused":
        for lm in language_models:
            fuse_decoder_layers(lm)
    if runtime.linear != "stock":
        few_row_linears(ours, measure=runtime.linear == "auto")
    if runtime.static_steps:
        check_static(runtime, "static", next(ours.parameters()).device)
        for lm in [ours, *language_models]:  # the prepared module too: the modules strategies build (Medusa's heads)
            lm.static_steps = runtime.static_steps
    return ours


def prepare_once(module: nn.Module, runtime: Runtime, prepared: dict[int, nn.Module]) -> nn.Module:
    """`prepare`, remembered in `prepared` (id of the stock module -> its copy), so that modules
    shared by several runners (the target, one draft model) are prepared and laid out once."""
    if id(module) not in prepared:
        prepared[id(module)] = prepare(module, runtime)
        prepared[id(prepared[id(module)])] = prepared[id(module)]  # preparing a prepared module is a no-op
    return prepared[id(module)]


def prepare_strategy(strategy, runtime: Runtime = Runtime(), prepared: dict[int, nn.Module] | None = None):
    """Replace each module the strategy runs (its `prepared_modules`) by its prepared copy."""
    prepared = {} if prepared is None else prepared
    for name in strategy.prepared_modules:
        setattr(strategy, name, prepare_once(getattr(strategy, name), runtime, prepared))
    return strategy
