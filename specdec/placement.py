"""Big targets: where the target's modules live (model.device_map, model.max_memory,
model.offload_folder) and which attention it runs (model.attn_implementation).

A target too big for one device loads through accelerate's big-model loading (transformers'
from_pretrained with a device_map): its modules spread over GPUs, the CPU and disk, and
accelerate's hooks move each module's inputs (and, for offloaded modules, its weights) to
where it runs. Our runtime layouts (fused layers, few-row products, compile) replace modules and
their weights, which those hooks would no longer reach: a dispatched target runs stock (the
settings are checked before it loads). Drafts that share the target's embedding, LM head or
layers need those on a device, not offloaded: `resident` refuses the rest with the fix.
"""

import re
from dataclasses import dataclass

import torch
from omegaconf import OmegaConf
from torch import nn

from specdec.errors import ConfigError, is_int

DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
ATTENTION = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")
MEMORY = re.compile(r"^\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$")
STOCK = "add runtime.layers=stock runtime.linear=stock runtime.compile=false"


def _is_device(value) -> bool:
    """A device_map value: a GPU index, cpu, disk, cuda, cuda:N or mps."""
    return (is_int(value) and value >= 0) or (isinstance(value, str) and re.fullmatch(r"cpu|disk|mps|cuda(:\d+)?", value))


@dataclass(frozen=True)
class Placement:
    """How the target loads. device_map: null (one device: runtime.device), auto, balanced,
    balanced_low_0, sequential, or {module name: device}; max_memory: {device: bytes or "10GiB"}
    for the automatic maps; offload_folder: where modules mapped to disk go."""

    device_map: str | dict | None = None
    max_memory: dict | None = None
    offload_folder: str | None = None
    attn_implementation: str | None = None

    def __post_init__(self):
        fix = "give null, auto, balanced, balanced_low_0, sequential or {module: device}"
        if isinstance(self.device_map, dict):
            bad = {k: v for k, v in self.device_map.items() if not isinstance(k, str) or not _is_device(v)}
            if bad or not self.device_map:
                raise ConfigError(f"model.device_map must map module names to devices (a GPU index, cpu, disk, "
                                  f"cuda:N or mps; got {bad or self.device_map!r}): {fix}")
        elif self.device_map is not None and self.device_map not in DEVICE_MAPS:
            raise ConfigError(f"unknown model.device_map {self.device_map!r}: {fix}")
        if self.max_memory is not None:
            if not isinstance(self.max_memory, dict) or not self.max_memory or not all(
                    _is_device(k) and k != "disk" and ((is_int(v) and v >= 0) or (isinstance(v, str) and MEMORY.match(v)))
                    for k, v in self.max_memory.items()):
                raise ConfigError(f"model.max_memory must map devices (GPU indices, cpu) to sizes like 10GiB "
                                  f"(got {self.max_memory!r}): e.g. model.max_memory={{0: 20GiB, cpu: 60GiB}}")
            if not isinstance(self.device_map, str):
                raise ConfigError("model.max_memory bounds the automatic device maps: add model.device_map=auto "
                                  "(or balanced), or drop model.max_memory")
        if self.offload_folder is not None and (not isinstance(self.offload_folder, str) or not self.offload_folder):
            raise ConfigError(f"model.offload_folder must be a directory path (got {self.offload_folder!r})")
        on_disk = isinstance(self.device_map, dict) and "disk" in self.device_map.values()
        if on_disk and self.offload_folder is None:
            raise ConfigError("model.device_map puts modules on disk: set model.offload_folder=DIR (where their "
                              "weights go)")
        if self.attn_implementation is not None and self.attn_implementation not in ATTENTION:
            raise ConfigError(f"unknown model.attn_implementation {self.attn_implementation!r}: use null (the "
                              f"model's default) or one of {', '.join(ATTENTION)}")
        gpus = [v for v in (self.device_map.values() if isinstance(self.device_map, dict) else [])
                if is_int(v) or str(v).startswith("cuda")]
        if gpus and not torch.cuda.is_available():
            raise ConfigError(f"model.device_map names GPUs ({gpus[0]!r}) but no CUDA GPU is visible: map the "
                              "modules to cpu and disk, or run where the GPUs are")

    @staticmethod
    def of(model_cfg) -> "Placement":
        """The placement settings of a `model` config node (a plain container or OmegaConf's)."""
        values = OmegaConf.to_container(model_cfg, resolve=True) if OmegaConf.is_config(model_cfg) else dict(model_cfg)
        return Placement(*(values.get(k) for k in ("device_map", "max_memory", "offload_folder", "attn_implementation")))

    def check_runtime(self, runtime) -> None:
        """A dispatched target runs stock (specdec.runtime.prepare.Runtime)."""
        if self.device_map is not None and (runtime.layers != "stock" or runtime.linear != "stock" or runtime.static_steps):
            raise ConfigError(f"model.device_map runs the target through accelerate's hooks, which runtime.layers="
                              f"{runtime.layers}, runtime.linear={runtime.linear} or compile would bypass: {STOCK}")

    def load_kwargs(self) -> dict:
        """from_pretrained's arguments for this placement."""
        kwargs = {"attn_implementation": self.attn_implementation} if self.attn_implementation else {}
        if self.device_map is not None:
            kwargs.update(device_map=self.device_map, max_memory=self.max_memory, offload_folder=self.offload_folder)
        return kwargs


def dispatch(model: nn.Module, placement: Placement) -> nn.Module:
    """A model built in-process (the tiny-random alias) placed as from_pretrained would place it."""
    from accelerate import dispatch_model, infer_auto_device_map  # here: importing accelerate takes a second
    from accelerate.utils import get_balanced_memory, get_max_memory
    device_map = placement.device_map
    if isinstance(device_map, str):
        no_split = getattr(model, "_no_split_modules", None)
        memory = (get_balanced_memory(model, placement.max_memory, no_split_module_classes=no_split)
                  if device_map.startswith("balanced") else get_max_memory(placement.max_memory))
        device_map = infer_auto_device_map(model, max_memory=memory, no_split_module_classes=no_split)
    model.hf_device_map = device_map
    return dispatch_model(model, device_map, offload_dir=placement.offload_folder)


def dispatched(model: nn.Module) -> bool:
    """Whether accelerate's hooks run (some of) `model`'s modules."""
    return any(hasattr(m, "_hf_hook") for m in model.modules())


def module_device(module: nn.Module) -> torch.device:
    """Where `module` runs: its hook's execution device when dispatched (its weights may be
    offloaded, on `meta`), else its first parameter's device."""
    device = getattr(getattr(module, "_hf_hook", None), "execution_device", None)
    if device is not None:
        return torch.device(f"cuda:{device}" if is_int(device) else device)
    return next(module.parameters()).device


def execution_device(model: nn.Module) -> torch.device:
    """Where the model's inputs go: where its input embedding runs."""
    embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return module_device(embedding if embedding is not None else model)


def check_head_beside_embedding(target: nn.Module, user: str) -> None:
    """Drafts and heads run where the target's inputs go, on its last hidden states, with its LM head."""
    inputs, head = execution_device(target), module_device(target.get_output_embeddings())
    if inputs != head:
        raise ConfigError(f"{user} runs beside the target's embedding and LM head, which model.device_map puts on "
                          f"{inputs} and {head}: map model.embed_tokens, model.norm and lm_head to one device")


def resident(tensor: torch.Tensor, what: str, fix: str) -> torch.Tensor:
    """`tensor`, unless accelerate offloaded it (its data lives on disk or the CPU between forwards)."""
    if tensor.device.type == "meta":
        raise ConfigError(f"{what} is offloaded by model.device_map (its weights load only while it runs): {fix}")
    return tensor
