"""Draft models for the `draft` strategy: the layer-skip self-draft, a self-distilled draft that
borrows its target's embedding and LM head, or any causal LM that shares the target's tokenizer."""

import copy
import json
from pathlib import Path

import torch
import transformers
from safetensors import SafetensorError
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

from specdec.drafts.assets import DAMAGED, SHIPPED, asset_directory, frequent_token_head, read_json
from specdec.drafts.manifest import check_shipped
from specdec.errors import ConfigError
from specdec.models import load_model
from specdec.placement import check_head_beside_embedding, execution_device, resident

TRAINED_DRAFT_MARK = "specdec_draft.json"  # beside a draft that borrows its target's embedding and LM head


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
        tensor = resident(shared[name], f"the target's {name}", "the layer-skip self-draft shares the target's first "
                          "layers: keep them on a device in model.device_map, or give a draft model (draft.name_or_path)")
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
    trained draft (a shipped alias or a directory with specdec_draft.json; with
    `head_tokens`, its head scores only that many of the target's most frequent tokens), or
    any causal LM sharing the target's tokenizer."""
    directory = asset_directory(name_or_path or "")
    if name_or_path in SHIPPED:
        check_shipped(directory)
    trained = bool(name_or_path) and (directory / TRAINED_DRAFT_MARK).exists()
    if name_or_path in SHIPPED and not trained:
        raise ConfigError(f"the trained draft {name_or_path!r} is missing from {directory}: train it with "
                          "`python -m experiments.train_draft` (see the README), or use draft=layer-skip")
    if head_tokens and not trained:
        raise ConfigError("draft.head_tokens needs a trained draft (it ships the token frequencies): set "
                          "draft.name_or_path=smollm2-135m-draft (or a trained directory) or draft.head_tokens=null")
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
    check_head_beside_embedding(target, "a draft that shares the target's embedding and LM head")
    head = resident(target.get_output_embeddings().weight, "the target's LM head",
                    "keep lm_head on a device in model.device_map (e.g. lm_head: cpu)")
    draft.set_input_embeddings(target.get_input_embeddings())
    draft.get_output_embeddings().weight = head
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
    config = read_json(directory / "config.json", ("hidden_size", "vocab_size"))
    width, vocabulary = target.config.hidden_size, target.config.vocab_size
    if (config["hidden_size"], config["vocab_size"]) != (width, vocabulary):
        raise ConfigError(f"the trained draft in {directory} was trained for another target (width "
                          f"{config['hidden_size']}, vocabulary {config['vocab_size']}; this target has {width} and "
                          f"{vocabulary}): use the "
                          "layer-skip self-draft (draft=layer-skip), or train one for it with "
                          "`python -m experiments.train_draft`")
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        draft = AutoModelForCausalLM.from_pretrained(directory, dtype=next(target.parameters()).dtype)
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:
        raise ConfigError(f"cannot load the trained draft in {directory} ({e.__class__.__name__}: "
                          f"{str(e).splitlines()[0]}): {DAMAGED}") from None
    finally:
        transformers.logging.set_verbosity(verbosity)
    draft = borrow_embeddings(draft.to(execution_device(target)), target).eval()
    if head_tokens:
        draft.lm_head = frequent_token_head(draft.lm_head.weight, directory, head_tokens)
    draft.acceptance_by_depth = read_json(directory / TRAINED_DRAFT_MARK).get("acceptance_by_depth")  # auto sizes
    return draft
