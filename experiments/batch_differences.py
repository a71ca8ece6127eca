"""Where a batched row's greedy tokens leave the same prompt's batch-1 tokens, and by how much
the target's top two logits were apart there. A near-tie (a margin at float rounding's scale)
is the one acceptable cause: the same sums in another matrix shape round differently."""

import torch


@torch.inference_mode()
def first_differences(calls: list[dict], target, prompts: list[list[int]]) -> list[dict]:
    """Per (strategy, batch size, prompt) whose tokens differ from batch size 1's first repeat: the
    first differing position and the target's top-1 minus top-2 logit there (one plain forward
    over the prompt and the tokens both runs agree on)."""
    single = {c["strategy"]: c["records"] for c in calls if c["batch_size"] == 1 and c["repeat"] == 0}
    found, seen = [], set()
    for call in calls:
        reference = single.get(call["strategy"])
        if call["batch_size"] == 1 or reference is None:
            continue
        for index, (record, alone) in enumerate(zip(call["records"], reference)):
            ours, theirs = record["token_ids"], alone["token_ids"]
            key = (call["strategy"], call["batch_size"], index)
            if ours == theirs or key in seen:
                continue
            seen.add(key)
            position = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
            ids = torch.tensor([prompts[index] + theirs[:position]], device=target.device)
            top = target(input_ids=ids).logits[0, -1].float().topk(2).values
            found.append({"strategy": call["strategy"], "batch_size": call["batch_size"], "prompt": index,
                          "position": position, "margin": float(top[0] - top[1])})
    return found
