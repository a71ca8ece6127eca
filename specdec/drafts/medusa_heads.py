"""Medusa heads (Cai et al. 2024): K small heads on the target's last hidden state; head k
guesses the token k + 2 positions after the one that produced the hidden state (the target's
own LM head gives k + 1).

Each head is `num_layers` residual blocks x + SiLU(W x + b), with W and b zero at the start so
that a fresh head is the identity (it starts as a copy of the LM head's guess), then an output
projection: the target's own LM head (`shared_lm_head`, the default: the checkpoint holds only
the blocks) or a projection of its own. Saved as safetensors plus medusa_config.json.
"""

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from specdec.drafts.assets import DAMAGED, asset_directory, read_json, read_weights
from specdec.drafts.manifest import check_shipped
from specdec.errors import ConfigError
from specdec.placement import execution_device

CONFIG = "medusa_config.json"
WEIGHTS = "medusa_heads.safetensors"


class ResidualBlock(nn.Module):
    def __init__(self, size: int):
        super().__init__()
        self.linear = nn.Linear(size, size)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + nn.functional.silu(self.linear(x))


class MedusaHeads(nn.Module):
    def __init__(self, hidden_size: int, vocab_size: int, num_heads: int = 4, num_layers: int = 1,
                 shared_lm_head: bool = True):
        super().__init__()
        if num_heads < 1 or num_layers < 0:
            raise ConfigError(f"Medusa needs num_heads >= 1 and num_layers >= 0 (got {num_heads}, {num_layers})")
        self.config = dict(hidden_size=hidden_size, vocab_size=vocab_size, num_heads=num_heads,
                           num_layers=num_layers, shared_lm_head=shared_lm_head)
        self.blocks = nn.ModuleList(nn.Sequential(*(ResidualBlock(hidden_size) for _ in range(num_layers)))
                                    for _ in range(num_heads))
        self.projections = None if shared_lm_head else nn.ModuleList(
            nn.Linear(hidden_size, vocab_size, bias=False) for _ in range(num_heads))

    @property
    def num_heads(self) -> int:
        return len(self.blocks)

    def hidden(self, hidden: torch.Tensor, count: int | None = None) -> torch.Tensor:
        """(..., d) -> (..., K, d): each head's transformed hidden state (the first `count` heads only)."""
        return torch.stack([block(hidden) for block in self.blocks[:count]], dim=-2)

    def forward(self, hidden: torch.Tensor, lm_head: nn.Module, count: int | None = None) -> torch.Tensor:
        """(..., d) hidden states -> (..., K, V) logits, head k in row k; `count` limits it to the
        first heads (a tree of depth d needs d)."""
        states = self.hidden(hidden, count)
        if self.projections is None:
            return lm_head(states)  # one product over K rows: the target's head (or its token subset)
        return torch.stack([proj(states[..., k, :]) for k, proj in enumerate(self.projections[:count])], dim=-2)


def top_guesses(heads: MedusaHeads, lm_head: nn.Module, hidden: torch.Tensor, depth: int, ranks: int) -> torch.Tensor:
    """(rows, d) hidden states -> (rows, depth, ranks): the `ranks` most likely tokens of each of the first `depth` heads."""
    return heads(hidden, lm_head, count=depth).topk(ranks, dim=-1).indices


def save_medusa_heads(heads: MedusaHeads, directory: Path, meta: dict) -> None:
    """bf16 safetensors + medusa_config.json (architecture, training record, measured accuracies)."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in heads.state_dict().items()}
    save_file(state, directory / WEIGHTS)
    (directory / CONFIG).write_text(json.dumps({**heads.config, **meta}, indent=2))


def load_medusa_heads(name_or_path, target, device=None, dtype=None) -> tuple[MedusaHeads, dict]:
    """Heads for `target` from a directory (or alias, e.g. smollm2-135m-medusa): (heads, config)."""
    directory = asset_directory(name_or_path)
    if not (directory / CONFIG).exists():
        raise ConfigError(f"no Medusa heads in {str(directory)!r} (medusa_config.json missing): train them with "
                          f"`python -m experiments.train_medusa`, or use smollm2-135m-medusa")
    check_shipped(directory)
    keys = ("hidden_size", "vocab_size", "num_heads", "num_layers", "shared_lm_head")
    config = {**read_json(directory / CONFIG, keys), "directory": str(directory)}
    expected = (target.config.get_text_config().hidden_size, target.config.get_text_config().vocab_size)
    if (config["hidden_size"], config["vocab_size"]) != expected:
        raise ConfigError(f"Medusa heads in {directory} were trained for hidden size {config['hidden_size']} and "
                          f"vocabulary {config['vocab_size']}, the target has {expected[0]} and {expected[1]}: "
                          "train heads for this target with `python -m experiments.train_medusa`")
    heads = MedusaHeads(**{k: config[k] for k in keys})
    try:
        heads.load_state_dict(read_weights(directory / WEIGHTS))
    except RuntimeError as e:  # missing tensors, or of other shapes
        raise ConfigError(f"the Medusa heads in {directory} do not fit their config ({str(e).splitlines()[-1].strip()}): "
                          f"{DAMAGED}") from None
    return heads.to(device or execution_device(target), dtype or next(target.parameters()).dtype).eval(), config
