"""A small EAGLE draft and a small trained draft on a tiny target, trained through the
trainers' loop (specdec.training.optim); run as a script under `accelerate launch
--num_processes N`, it trains on N processes and writes the losses and weights (main process)."""

import json
import random
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from specdec.drafts.draft_model import new_draft
from specdec.drafts.eagle_draft import new_eagle_draft
from specdec.drafts.subset_head import SubsetHead
from specdec.tiny import tiny_random_model
from specdec.training.accelerator import trainer_accelerator
from specdec.training.batches import batches, sequence
from specdec.training.draft_recipe import answer_loss
from specdec.training.eagle_recipe import group_loss
from specdec.training.optim import optimize


def data():
    """The frozen target (a sharpened LM head: targets a draft can learn), 64 random sequences,
    their hidden states (bf16, as the trainers store them), a head over every other token, and
    40 micro-batches of <= 64 padded tokens."""
    model = tiny_random_model("llama").requires_grad_(False)
    with torch.no_grad():
        model.lm_head.weight.mul_(10.0)
    rng = random.Random(0)
    rows = [{"id": i, "index": i, "sampled": False,
             "prompt_ids": [rng.randrange(256) for _ in range(rng.randint(4, 12))],
             "answer_ids": [rng.randrange(256) for _ in range(rng.randint(6, 16))]} for i in range(64)]
    with torch.no_grad():
        hidden = [model.model(input_ids=torch.tensor([sequence(r)])).last_hidden_state[0].to(torch.bfloat16)
                  for r in rows]
    subset = SubsetHead(model.get_output_embeddings().weight, list(range(0, 258, 2)))
    plan = (batches(rows, 64, random.Random(0)) + batches(rows, 64, random.Random(1)))[:40]
    return model, hidden, subset, plan


def train(kind: str, micro_batches: int, grad_accum: int, checkpoint: Path, checkpoint_every: int = 100,
          stop_at: int | None = None):
    """Train a fresh `kind` ("eagle" or "draft") over the first `micro_batches` of the plan:
    (its trained weights, the loss per step); raises KeyboardInterrupt at micro-batch `stop_at`."""
    model, hidden, subset, plan = data()
    cfg = OmegaConf.create({"lr": 3e-3, "checkpoint_every": checkpoint_every, "time_budget_min": 5,
                            "mixed_precision": "no", "grad_accum": grad_accum})
    accelerator = trainer_accelerator(cfg)
    torch.manual_seed(0)
    if kind == "eagle":
        module = new_eagle_draft(model, init_layer=None)
        saved = module.own_state
        module.requires_grad_(False)
        params = list(saved().values())
        for p in params:
            p.requires_grad_(True)
        loss = lambda group: group_loss(module, group, hidden, subset, 2, 0.1, 0.0)  # noqa: E731
    else:
        module = new_draft(model, [0, 2])
        saved = lambda: {k: v for k, v in module.state_dict().items() if k.startswith(("model.layers", "model.norm"))}  # noqa: E731
        params = [p for p in module.parameters() if p.requires_grad]
        loss = lambda group: (lambda out: (out[0], [out[1]]))(answer_loss(module, group, 257, subset))  # noqa: E731
    seen = []

    def batch_loss(group):
        seen.append(group)
        if len(seen) == stop_at:
            raise KeyboardInterrupt  # a run stopped midway
        return loss(group)

    progress = optimize(cfg, accelerator, module, params, plan[:micro_batches], batch_loss, checkpoint, saved,
                        data_sha256="test")
    return {k: v.detach().clone() for k, v in saved().items()}, progress.losses, accelerator


if __name__ == "__main__":
    kind, out = sys.argv[1], Path(sys.argv[2])
    weights, losses, accelerator = train(kind, 40, 1, out.parent / f"{kind}-checkpoint")
    if accelerator.is_main_process:
        torch.save(weights, out.with_suffix(".pt"))
        out.write_text(json.dumps({"losses": losses, "processes": accelerator.num_processes}))
