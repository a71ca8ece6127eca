"""The quality of what a lossy strategy generates (docs/design.md): the target's negative
log-likelihood per generated token, from its raw distribution (temperature 1, no filters).
A lossless strategy matches the baseline's in expectation; typical acceptance may not."""

import torch
import torch.nn.functional as F


@torch.inference_mode()
def target_nll(model, prompt_ids: list[int], token_ids: list[int]) -> float | None:
    """Mean NLL of `token_ids` after `prompt_ids` under `model`; None for an empty output."""
    if not token_ids:
        return None
    device = next(model.parameters()).device
    logits = model(torch.tensor([prompt_ids + token_ids], device=device)).logits[0, len(prompt_ids) - 1 : -1]
    return F.cross_entropy(logits.float(), torch.tensor(token_ids, device=device)).item()
