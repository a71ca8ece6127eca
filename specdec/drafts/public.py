"""Public EAGLE and Medusa checkpoints, loaded into our own modules (docs/design.md, "Public checkpoints").

The layout is chosen by the files in the directory (or hub repository):

    eagle_config.json / medusa_config.json            ours (experiments.train_eagle, train_medusa)
    config.json + pytorch_model.bin | model.safetensors
        with midlayer.*                               EAGLE-3 (SafeAILab/EAGLE eagle/model/cnets.py)
        with fc.* and layers.0.*                      EAGLE-1/2 (SafeAILab/EAGLE eagle/model/cnets1.py)
    config.json + medusa_lm_head.pt | .safetensors    Medusa-1 (FasterDecoding/Medusa medusa/model/medusa_model.py)

EAGLE-1/2 maps onto our EagleDraft: its `fc` reads [embedding; state] where ours reads [state;
embedding] (the columns swap), its first layer has no input norm and it has no final norm (both
become the identity). EAGLE-3 is specdec.drafts.eagle3_draft. Medusa-1's heads are ours with a
projection of their own each. `.bin` files load with torch.load(weights_only=True): never unpickled.
"""

import logging
import pickle
from pathlib import Path

import torch
from huggingface_hub import snapshot_download
from safetensors import SafetensorError, safe_open
from torch import nn
from transformers import AutoConfig

from specdec.drafts.assets import asset_directory, frequent_token_head, read_json, read_weights
from specdec.drafts.eagle3_draft import Eagle3Draft
from specdec.drafts.eagle_draft import EagleDraft, load_eagle_draft
from specdec.drafts.medusa_heads import MedusaHeads, load_medusa_heads
from specdec.errors import ConfigError, is_int
from specdec.placement import execution_device

log = logging.getLogger(__name__)

EAGLE_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
MEDUSA_WEIGHTS = ("medusa_lm_head.safetensors", "medusa_lm_head.pt")
LAYOUTS = "ours (eagle_config.json or medusa_config.json), EAGLE-1/2 or EAGLE-3 (config.json + pytorch_model.bin " \
          "or model.safetensors) or Medusa-1 (config.json + medusa_lm_head.pt)"
LABELS = {"eagle": "EAGLE-1/2", "eagle3": "EAGLE-3", "medusa1": "Medusa-1"}
EAGLE_KINDS = ("ours-eagle", "eagle", "eagle3")
LAYER_FIELDS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim",
                "rms_norm_eps", "rope_theta", "rope_scaling", "max_position_embeddings", "hidden_act")


def checkpoint_directory(name_or_path) -> Path:
    """A shipped alias or local directory; else a hub repository id (owner/name), downloaded."""
    directory = asset_directory(name_or_path)
    if directory.is_dir() or str(name_or_path).count("/") != 1 or str(name_or_path).startswith((".", "/")):
        return directory
    try:
        return Path(snapshot_download(str(name_or_path)))
    except Exception as e:  # noqa: BLE001  offline, unknown repository, no access: many types
        reason = f"{e.__class__.__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        raise ConfigError(f"{str(name_or_path)!r} is no local directory and cannot be downloaded from the hub "
                          f"({reason}): download it and give its directory") from None


def layout(directory: Path) -> str:
    """"ours-eagle", "ours-medusa", "eagle", "eagle3" or "medusa1", by the files in `directory`."""
    if (directory / "eagle_config.json").exists():
        return "ours-eagle"
    if (directory / "medusa_config.json").exists():
        return "ours-medusa"
    if not directory.is_dir():
        raise ConfigError(f"{str(directory)!r} is not a directory: give a draft directory ({LAYOUTS}) or a shipped alias")
    if not (directory / "config.json").exists():
        raise ConfigError(f"no draft in {directory} (no config.json): give a directory in one of the layouts {LAYOUTS}")
    if _weights_file(directory, MEDUSA_WEIGHTS) is not None:
        return "medusa1"
    path = _weights_file(directory, EAGLE_WEIGHTS)
    if path is None:
        raise ConfigError(f"no weights in {directory}: expected one of {', '.join(EAGLE_WEIGHTS + MEDUSA_WEIGHTS)}")
    names = tensor_names(path)
    if any(n.startswith("midlayer.") for n in names):
        return "eagle3"
    if "fc.weight" in names and any(n.startswith("layers.0.") for n in names):
        return "eagle"
    raise ConfigError(f"unknown checkpoint layout in {path} (neither EAGLE-3's midlayer.* nor EAGLE-1/2's fc.* and "
                      f"layers.0.*): give a directory in one of the layouts {LAYOUTS}")


def _weights_file(directory: Path, names: tuple[str, ...]) -> Path | None:
    return next((directory / n for n in names if (directory / n).exists()), None)


def tensor_names(path: Path) -> list[str]:
    """The names of the tensors in a weights file (a safetensors file's without reading them)."""
    if path.suffix != ".safetensors":
        return list(read_state(path))
    try:
        with safe_open(path, "pt") as f:
            return list(f.keys())
    except (OSError, SafetensorError) as e:
        raise ConfigError(f"cannot read the weights {path} ({e.__class__.__name__}: {e}): copy it again") from None


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file, or a torch file of plain tensors (weights_only: nothing is unpickled)."""
    if path.suffix == ".safetensors":
        return read_weights(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ConfigError(f"cannot read the weights {path} as plain tensors ({e.__class__.__name__}: {reason[:200]}): "
                          "copy the file again, or convert it to safetensors") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{path} is not a dictionary of tensors: give the checkpoint's weights file")
    return state


def load_public_eagle(directory: Path, kind: str, target: nn.Module) -> EagleDraft | Eagle3Draft:
    """An EAGLE-1/2 (`kind` "eagle") or EAGLE-3 ("eagle3") checkpoint as a draft for `target`."""
    config = read_json(directory / "config.json", ("hidden_size", "vocab_size"))
    state = read_state(_weights_file(directory, EAGLE_WEIGHTS))
    text = target.config.get_text_config()
    width = config.get("target_hidden_size", config["hidden_size"])
    if (width, config["vocab_size"], config["hidden_size"]) != (text.hidden_size, text.vocab_size, text.hidden_size):
        raise ConfigError(f"the {LABELS[kind]} draft in {directory} is for a target of width {width} and vocabulary "
                          f"{config['vocab_size']} (its own width {config['hidden_size']}); this target has width "
                          f"{text.hidden_size} and vocabulary {text.vocab_size}: use the draft published for this target")
    if kind == "eagle3":
        draft, mapped = _eagle3(directory, config, state, target)
    else:
        draft, mapped = _eagle(config, state, target)
    if "embed_tokens.weight" in state:  # the checkpoint's own copy of the target's embedding
        draft.lm.set_input_embeddings(nn.Embedding(text.vocab_size, text.hidden_size, dtype=draft.fc.weight.dtype))
        mapped["lm.model.embed_tokens.weight"] = state["embed_tokens.weight"]
    expected = set(draft.own_state()) | ({"lm.model.embed_tokens.weight"} if "embed_tokens.weight" in state else set())
    load_exactly(draft, mapped, expected, directory, LABELS[kind])
    return draft.requires_grad_(False).to(execution_device(target)).eval()



def _layer_config(config: dict, text, model_type: str):
    fields = {k: config[k] for k in LAYER_FIELDS if config.get(k) is not None}
    fields.setdefault("max_position_embeddings", getattr(text, "max_position_embeddings", 2048))
    return AutoConfig.for_model(model_type, **fields, num_hidden_layers=config.get("num_hidden_layers", 1),
                                vocab_size=text.vocab_size, tie_word_embeddings=False)


def _eagle(config: dict, state: dict, target: nn.Module) -> tuple[EagleDraft, dict]:
    """EAGLE-1/2: Llama layers (q, k and v with biases where the config says qkv_bias: Qwen2's)."""
    layers = _layer_config(config, target.config.get_text_config(), "qwen2" if config.get("qkv_bias") else "llama")
    draft = EagleDraft(target, layers.num_hidden_layers, layers)
    draft.lm.model.layers[0].input_layernorm = nn.Identity()  # EAGLE's first layer reads fc's output as it is
    draft.lm.model.norm = nn.Identity()  # and its state goes to the target's head unnormalized
    width = layers.hidden_size
    mapped = {"lm.model." + k: v for k, v in state.items() if k.startswith("layers.")}
    fc = state["fc.weight"]
    mapped["fc.weight"] = torch.cat([fc[:, width:], fc[:, :width]], dim=1) if fc.shape[-1] == 2 * width else fc
    mapped["fc.bias"] = state.get("fc.bias", torch.zeros(width))
    return draft, mapped


def _eagle3(directory: Path, config: dict, state: dict, target: nn.Module) -> tuple[Eagle3Draft, dict]:
    vocab = config["vocab_size"]
    offsets = state.get("d2t")
    if offsets is None or offsets.dim() != 1:
        raise ConfigError(f"the EAGLE-3 draft in {directory} lacks its d2t map (draft row -> target token offset): "
                          "copy the checkpoint again")
    tokens = torch.arange(len(offsets)) + offsets.long()
    if len(tokens) != config.get("draft_vocab_size", vocab) or tokens.min() < 0 or tokens.max() >= vocab \
            or len(set(tokens.tolist())) != len(tokens):
        raise ConfigError(f"the d2t map in {directory} does not name {config.get('draft_vocab_size', vocab)} different "
                          f"target tokens in [0, {vocab}): copy the checkpoint again")
    layer = _layer_config(config, target.config.get_text_config(), "llama")
    draft = Eagle3Draft(target, layer, tokens, config.get("target_hidden_size", config["hidden_size"]))
    mapped = {"lm.model.layers.0." + k.removeprefix("midlayer."): v for k, v in state.items() if k.startswith("midlayer.")}
    renamed = {"fc.weight": "fc.weight", "norm.weight": "lm.lm_head.0.weight", "lm_head.weight": "lm.lm_head.1.scores.weight"}
    mapped.update({ours: state[theirs] for theirs, ours in renamed.items() if theirs in state})
    return draft, mapped


def load_exactly(module: nn.Module, mapped: dict, expected, directory: Path, label: str) -> None:
    """Load `mapped` (our names) into `module`: every `expected` tensor, no other, each of its shape."""
    missing, unknown = sorted(set(expected) - set(mapped)), sorted(set(mapped) - set(expected))
    if missing or unknown:
        raise ConfigError(f"the {label} checkpoint in {directory} does not fit its config (missing {missing[:4]}, "
                          f"unexpected {unknown[:4]}): copy it again, or check that it is a {label} checkpoint")
    try:
        module.load_state_dict(mapped, strict=False)
    except RuntimeError as e:  # tensors of other shapes
        lines = [line.strip() for line in str(e).splitlines() if "size mismatch" in line]
        raise ConfigError(f"the {label} checkpoint in {directory} does not fit its config "
                          f"({lines[0] if lines else 'shapes differ'}): copy it again") from None


def load_public_medusa(directory: Path, target: nn.Module) -> tuple[MedusaHeads, dict]:
    """Medusa-1's heads: head i is medusa_num_layers residual blocks (i.j.linear) then its own
    projection to the vocabulary (i.<medusa_num_layers>.weight); they read the target's last state."""
    config = read_json(directory / "config.json", ("medusa_num_heads", "medusa_num_layers"))
    count, depth = config["medusa_num_heads"], config["medusa_num_layers"]
    if not (is_int(count) and count >= 1 and is_int(depth) and depth >= 0):
        raise ConfigError(f"{directory / 'config.json'} must give medusa_num_heads >= 1 and medusa_num_layers >= 0 "
                          f"(got {count!r}, {depth!r}): copy the checkpoint again")
    state = {k.removeprefix("medusa_head."): v for k, v in read_state(_weights_file(directory, MEDUSA_WEIGHTS)).items()}
    text = target.config.get_text_config()
    projection = state.get(f"0.{depth}.weight")
    if projection is not None and tuple(projection.shape) != (text.vocab_size, text.hidden_size):
        raise ConfigError(f"the Medusa-1 heads in {directory} project width {projection.shape[1]} onto a vocabulary "
                          f"of {projection.shape[0]}; this target has width {text.hidden_size} and vocabulary "
                          f"{text.vocab_size}: use the heads published for this target")
    heads = MedusaHeads(text.hidden_size, text.vocab_size, count, depth, shared_lm_head=False)
    mapped = {}
    for i in range(count):
        mapped.update({f"blocks.{i}.{j}.linear.{p}": state[f"{i}.{j}.linear.{p}"] for j in range(depth)
                       for p in ("weight", "bias") if f"{i}.{j}.linear.{p}" in state})
        if f"{i}.{depth}.weight" in state:
            mapped[f"projections.{i}.weight"] = state[f"{i}.{depth}.weight"]
    load_exactly(heads, mapped, heads.state_dict().keys(), directory, "Medusa-1")
    return heads.to(execution_device(target), next(target.parameters()).dtype).eval(), {"directory": str(directory), "layout": "medusa1",
                                                                "base_model": config.get("base_model_name_or_path")}



def load_eagle(name_or_path, target: nn.Module, head_tokens: int | None = None):
    """The `eagle` strategy's draft from an alias, a directory or a hub id, in our layout or a
    public one. A public EAGLE-3 draft scores its own vocabulary: head_tokens does not apply."""
    directory = checkpoint_directory(name_or_path)
    kind = strategy_layout(directory, "eagle")
    if kind == "ours-eagle":
        return load_eagle_draft(directory, target, head_tokens)[0]
    draft = load_public_eagle(directory, kind, target)
    if head_tokens and kind == "eagle":
        draft.lm.lm_head = frequent_token_head(draft.lm.lm_head.weight, directory, head_tokens)
    elif head_tokens:
        log.info("%s: an EAGLE-3 draft scores its own vocabulary; strategy.head_tokens does not apply", directory)
    return draft


def load_medusa(name_or_path, target: nn.Module) -> tuple[MedusaHeads, dict]:
    """The `medusa` strategy's heads from an alias, a directory or a hub id, ours or Medusa-1's."""
    directory = checkpoint_directory(name_or_path)
    if strategy_layout(directory, "medusa") == "ours-medusa":
        return load_medusa_heads(directory, target)
    return load_public_medusa(directory, target)


def strategy_layout(directory: Path, strategy: str) -> str:
    """The layout of `directory`, which strategy `strategy` (eagle or medusa) must take."""
    if not directory.is_dir():
        what = "EAGLE draft" if strategy == "eagle" else "Medusa heads"
        raise ConfigError(f"no {what} in {str(directory)!r} (not a directory): train one with `python -m experiments."
                          f"train_{strategy}`, or give a shipped alias or a directory in one of the layouts {LAYOUTS}")
    kind = layout(directory)
    if (kind in EAGLE_KINDS) != (strategy == "eagle"):
        knob, other = ("draft", "heads") if strategy == "eagle" else ("heads", "draft")
        raise ConfigError(f"{directory} holds {'an EAGLE draft' if kind in EAGLE_KINDS else 'Medusa heads'} "
                          f"({LABELS.get(kind, 'ours')}), not what strategy={strategy} takes as strategy.{knob}: "
                          f"give it to strategy={'medusa' if strategy == 'eagle' else 'eagle'} as strategy.{other}")
    return kind


def check_checkpoint(name_or_path: str, strategy: str) -> None:
    """Before any model loads: an alias or local directory must hold what `strategy` takes (a hub
    id is checked when it downloads)."""
    directory = asset_directory(name_or_path)
    if directory.exists() or name_or_path.count("/") != 1 or name_or_path.startswith((".", "/")):
        strategy_layout(directory, strategy)
