"""Our Medusa heads written in the Medusa-1 layout (FasterDecoding/Medusa), so that heads trained
here load in the public tools: config.json (medusa_num_heads, medusa_num_layers,
base_model_name_or_path) and medusa_lm_head.safetensors with head i's blocks as `i.j.linear` and
its projection as `i.<medusa_num_layers>.weight` (the target's LM head, copied, for heads that
share it).

Medusa-1 repeats one residual block per head (`[ResBlock] * n`), so heads of more than one
block per head export only when their blocks are equal. Our EAGLE draft has no exact EAGLE-1/2
form (its layer's input norm and its final norm are not the identity), so it is not exported.
"""

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from specdec.drafts.medusa_heads import MedusaHeads
from specdec.errors import ConfigError


def export_medusa1(heads: MedusaHeads, lm_head: nn.Module, directory: Path, base_model: str) -> None:
    """Write `heads` (projections of their own, or the target's `lm_head`) to `directory` in Medusa-1's layout."""
    depth = heads.config["num_layers"]
    state = {}
    for i, blocks in enumerate(heads.blocks):
        linears = [block.linear for block in blocks]
        if any(not (torch.equal(a.weight, linears[0].weight) and torch.equal(a.bias, linears[0].bias))
               for a in linears[1:]):
            raise ConfigError(f"Medusa-1 repeats one block per head; head {i}'s {depth} blocks differ: export heads "
                              "trained with train.num_layers=1")
        for j, linear in enumerate(linears):
            state[f"{i}.{j}.linear.weight"] = linear.weight.detach().clone()
            state[f"{i}.{j}.linear.bias"] = linear.bias.detach().clone()
        projection = lm_head.weight if heads.projections is None else heads.projections[i].weight
        state[f"{i}.{depth}.weight"] = projection.detach().clone()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, directory / "medusa_lm_head.safetensors")
    (directory / "config.json").write_text(json.dumps({"medusa_num_heads": heads.num_heads, "medusa_num_layers": depth,
                                                       "base_model_name_or_path": base_model}, indent=2))
