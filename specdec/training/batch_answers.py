"""Batched answers for the training data, with the target's hidden states kept on the way.

The trainers answer thousands of prompts, a batch of left-padded prompts at a time. Every
forward of that generation already computes the last hidden state (what the LM head reads)
at each new position, which is exactly what EAGLE's draft trains on: keeping it makes the
separate feature pass over every sequence (a third of the recipe's time) unnecessary.
"""

import torch
from transformers import DynamicCache

from specdec.runtime.cached_model import cache_argument


@torch.inference_mode()
def generate_batch(model, prompts: list[list[int]], max_new_tokens: int, eos: set[int], pad: int,
                   temperature: float | None = None, keep_states: bool = False, seed: int = 0
                   ) -> list[tuple[list[int], torch.Tensor | None]]:
    """Per prompt, its answer (up to and including its first EOS, at most `max_new_tokens`),
    greedy or sampled at `temperature` from a generator seeded with `seed` (the batch's answers
    do not depend on what was sampled before it: a resumed run draws the same ones), and with
    `keep_states` the last hidden state (bf16) at every position of prompt + answer, as one pass
    over it computes."""
    device = next(model.parameters()).device
    generator = torch.Generator(device).manual_seed(seed)
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = {cache_argument(model): DynamicCache(config=model.config)}
    eos_ids = torch.tensor(sorted(eos), device=device)
    done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    answers, states, ended = [], [], False

    def keep(module, inputs, output):  # the decoder's output: what the LM head reads
        states.append(output[0].to(torch.bfloat16))

    hook = model.get_decoder().register_forward_hook(keep) if keep_states else None
    try:
        while True:
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                           logits_to_keep=1, **cache).logits[:, -1].float()
            if ended:
                break  # that pass only computed the states of the final tokens
            if temperature is None:
                chosen = logits.argmax(-1)
            else:
                chosen = torch.multinomial((logits / temperature).softmax(-1), 1, generator=generator)[:, 0]
            chosen = chosen.masked_fill(done, pad)
            answers.append(chosen)
            done |= torch.isin(chosen, eos_ids)
            ended = len(answers) == max_new_tokens or bool(done.all())
            if ended and not keep_states:
                break
            ids, positions = chosen[:, None], positions[:, -1:] + 1
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    finally:
        if hook is not None:
            hook.remove()
    rows = [cut_at_eos(tokens, eos) for tokens in torch.stack(answers, dim=1).tolist()]
    if not keep_states:
        return [(tokens, None) for tokens in rows]
    steps = torch.cat(states[1:], dim=1)  # (B, steps, d): the states of the tokens fed after the prompt
    return [(tokens, torch.cat([states[0][i, -len(prompt):], steps[i, : len(tokens)]]))
            for i, (prompt, tokens) in enumerate(zip(prompts, rows))]


def cut_at_eos(tokens: list[int], eos: set[int]) -> list[int]:
    """The tokens up to and including the first EOS."""
    for i, token in enumerate(tokens):
        if token in eos:
            return tokens[: i + 1]
    return tokens
