"""A feature-level draft (EAGLE, Li et al. 2024): one decoder layer of the target's own
architecture that reads the target's last hidden state at position t together with the
embedding of token t + 1, and predicts the target's hidden state at t + 1, which the
target's LM head turns into a guess for token t + 2.

Why: an independent small draft has to re-derive from tokens alone what the target
already computed; the target's hidden state carries it. One layer on it agrees with the
target far more often than a few layers on tokens, at a third of their cost per token.
Drafting several tokens feeds the draft's own predicted hidden state back in.

The draft borrows the target's embedding and LM head (frozen, never saved): the checkpoint
is its input projection `fc` (2d -> d), its layer and its final norm, as bf16 safetensors
plus eagle_config.json.
"""

import copy
import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import AutoModelForCausalLM

from specdec.errors import ConfigError
from specdec.placement import execution_device
from specdec.drafts.assets import DAMAGED, asset_directory, frequent_token_head, read_json, read_weights
from specdec.drafts.manifest import check_shipped
from specdec.drafts.draft_model import borrow_embeddings

CONFIG = "eagle_config.json"
WEIGHTS = "eagle_draft.safetensors"


class EagleDraft(nn.Module):
    """`fc` maps [target hidden state; next token's embedding] to the input of `lm`, a causal LM of
    the target's architecture with `num_layers` layers (EAGLE: one) whose embedding and LM head
    are the target's; or of `config`'s architecture (a public checkpoint's, specdec.drafts.public)."""

    feature_layers = None  # the target's final hidden state is the draft's input (EAGLE-3 reads three layers')

    def __init__(self, target: nn.Module, num_layers: int = 1, config=None):
        super().__init__()
        config = copy.deepcopy(config or target.config.get_text_config())
        config.num_hidden_layers = num_layers
        if getattr(config, "layer_types", None):
            config.layer_types = config.layer_types[-num_layers:]
        dtype = next(target.parameters()).dtype
        self.lm = borrow_embeddings(AutoModelForCausalLM.from_config(config, dtype=dtype), target).eval()
        self.fc = nn.Linear(2 * config.hidden_size, config.hidden_size, dtype=dtype)

    def inputs(self, hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """(..., d) target (or predicted) hidden states at t and (...) token ids at t + 1 -> the layer's input."""
        return self.fc(torch.cat([hidden, self.lm.get_input_embeddings()(tokens)], dim=-1))

    def own_state(self) -> dict[str, torch.Tensor]:
        """The trained weights: fc, the layer and the final norm (not the borrowed embedding and head)."""
        borrowed = {id(self.lm.get_input_embeddings().weight), id(self.lm.get_output_embeddings().weight)}
        return {name: p for name, p in self.named_parameters() if id(p) not in borrowed}


def new_eagle_draft(target: nn.Module, init_layer: int | None, num_layers: int = 1) -> EagleDraft:
    """A draft to train that starts close to the identity on the hidden state, as Medusa's heads do:
    `fc` passes the hidden state through and ignores the embedding, so the first guesses are the
    target's own; each of its `num_layers` layers is a copy of target layer `init_layer` (and
    final norm), or freshly initialized (small weights: the identity dominates) with None."""
    total = target.config.get_text_config().num_hidden_layers
    if init_layer is not None and not 0 <= init_layer < total:
        raise ConfigError(f"train.init_layer must be a target layer in [0, {total - 1}] or null (got {init_layer})")
    draft = EagleDraft(target, num_layers)
    size = draft.fc.out_features
    with torch.no_grad():
        draft.fc.weight.zero_()
        draft.fc.weight[:, :size] = torch.eye(size)
        draft.fc.bias.zero_()
    if init_layer is not None:
        ours, theirs = draft.lm.get_decoder(), target.get_decoder()
        for layer in ours.layers:
            layer.load_state_dict(theirs.layers[init_layer].state_dict())
        if hasattr(ours, "norm"):
            ours.norm.load_state_dict(theirs.norm.state_dict())
    return draft


def save_eagle_draft(draft: EagleDraft, directory: Path, meta: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in draft.own_state().items()}
    save_file(state, directory / WEIGHTS)
    config = draft.lm.config
    (directory / CONFIG).write_text(json.dumps({"hidden_size": config.hidden_size, "vocab_size": config.vocab_size,
                                                "model_type": config.model_type, "num_layers": config.num_hidden_layers,
                                                **meta}, indent=2))


def load_eagle_draft(name_or_path, target: nn.Module, head_tokens: int | None = None) -> tuple[EagleDraft, dict]:
    """The draft for `target` from a directory or alias (e.g. smollm2-135m-eagle): (draft, config);
    with `head_tokens`, its head scores only the target's most frequent tokens (specdec.drafts.subset_head)."""
    directory = asset_directory(name_or_path)
    if not (directory / CONFIG).exists():
        raise ConfigError(f"no EAGLE draft in {str(directory)!r} (eagle_config.json missing): train one with "
                          f"`python -m experiments.train_eagle`, or use smollm2-135m-eagle")
    check_shipped(directory)
    config = read_json(directory / CONFIG, ("model_type", "hidden_size", "vocab_size"))
    text = target.config.get_text_config()
    expected = (text.model_type, text.hidden_size, text.vocab_size)
    if (config["model_type"], config["hidden_size"], config["vocab_size"]) != expected:
        raise ConfigError(f"the EAGLE draft in {directory} was trained for a {config['model_type']} target of width "
                          f"{config['hidden_size']} and vocabulary {config['vocab_size']}, this target is a "
                          f"{expected[0]} of width {expected[1]} and vocabulary {expected[2]}: train one for it with "
                          "`python -m experiments.train_eagle`")
    draft, state = EagleDraft(target, config.get("num_layers", 1)), read_weights(directory / WEIGHTS)
    missing = set(draft.own_state()) - set(state)
    if missing:
        raise ConfigError(f"the EAGLE draft in {directory} lacks {sorted(missing)}: retrain it")
    try:
        draft.load_state_dict(state, strict=False)
    except RuntimeError as e:  # tensors of other shapes
        raise ConfigError(f"the EAGLE draft in {directory} does not fit its config ({str(e).splitlines()[-1].strip()}): "
                          f"{DAMAGED}") from None
    if head_tokens:
        draft.lm.lm_head = frequent_token_head(draft.lm.lm_head.weight, directory, head_tokens)
    draft.acceptance_by_depth = config.get("acceptance_by_depth")  # for auto sizes (specdec.auto_size)
    return draft.to(execution_device(target)).eval(), {**config, "directory": str(directory)}
