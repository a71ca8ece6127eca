"""Where a greedy output leaves its reference (the same prompt decoded another way), and by how
much the target's top two logits were apart there. A near-tie, a margin at the scale of the
dtype's rounding, is the one acceptable cause: the same sums in another matrix shape (a batch,
a verify pass instead of a decode step) round differently, and a tie can go either way."""

import json
from pathlib import Path

import torch


@torch.inference_mode()
def divergence(target, prompt: list[int], ours: list[int], reference: list[int]) -> dict | None:
    """None for equal outputs; else the first differing position, the target's top-1 minus top-2
    logit there (one plain forward over the prompt and the tokens both agree on), and that margin
    in rounding steps of the top logit in the target's dtype (its spacing at that magnitude)."""
    if ours == reference:
        return None
    position = next((i for i, (a, b) in enumerate(zip(ours, reference)) if a != b), min(len(ours), len(reference)))
    ids = torch.tensor([prompt + reference[:position]], device=target.device)
    top = target(input_ids=ids).logits[0, -1].topk(2).values
    step = torch.finfo(top.dtype).eps * 2.0 ** torch.floor(torch.log2(top[0].abs().float()))
    margin = float(top[0].float() - top[1].float())
    return {"position": position, "margin": margin, "rounding_steps": round(margin / float(step), 2)}


def first_differences(calls: list[dict], target, prompts: list[list[int]]) -> list[dict]:
    """Per (strategy, batch size, prompt) whose tokens differ from batch size 1's first repeat: its divergence."""
    single = {c["strategy"]: c["records"] for c in calls if c["batch_size"] == 1 and c["repeat"] == 0}
    found, seen = [], set()
    for call in calls:
        reference = single.get(call["strategy"])
        if call["batch_size"] == 1 or reference is None:
            continue
        for index, (record, alone) in enumerate(zip(call["records"], reference)):
            key = (call["strategy"], call["batch_size"], index)
            if key in seen or (where := divergence(target, prompts[index], record["token_ids"], alone["token_ids"])) is None:
                continue
            seen.add(key)
            found.append({"strategy": call["strategy"], "batch_size": call["batch_size"], "prompt": index, **where})
    return found


def run_mismatches(run_dir: Path, target, prompts: dict[str, list[int]], reference_dir: Path | None = None) -> list[dict]:
    """Every greedy record of experiments.run's results.jsonl in `run_dir` whose tokens differ from
    its reference: the run's baseline for a strategy; the baseline of `reference_dir` (a run in
    float32, the lossless reference) for the baseline itself. `target` is the run's model, in its dtype."""
    records = read_records(run_dir)
    references = {("baseline", r["prompt_id"]): r["token_ids"] for r in records if r["strategy"] == "baseline"}
    if reference_dir is not None:
        references.update({("float32", r["prompt_id"]): r["token_ids"]
                           for r in read_records(reference_dir) if r["strategy"] == "baseline"})
    found = []
    for record in records:
        against = "float32" if record["strategy"] == "baseline" else "baseline"
        reference = references.get((against, record["prompt_id"]))
        if reference is None or not record["greedy"]:
            continue
        where = divergence(target, prompts[record["prompt_id"]], record["token_ids"], reference)
        if where is not None:
            found.append({"strategy": record["strategy"], "reference": against, "prompt_id": record["prompt_id"], **where})
    return found


def read_records(run_dir: Path) -> list[dict]:
    with open(run_dir / "results.jsonl") as lines:
        return [json.loads(line) for line in lines if line.strip()]
