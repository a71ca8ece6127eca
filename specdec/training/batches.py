"""Training rows: held out or trained on, and grouped into padded batches of similar length."""

import random


def sequence(row: dict) -> list[int]:
    """A data row's tokens: its prompt, then the target's answer."""
    return row["prompt_ids"] + row["answer_ids"]


def batches(rows: list[dict], max_tokens: int, rng: random.Random) -> list[list[dict]]:
    """Groups of similar length holding at most `max_tokens` padded tokens, in random order."""
    rows = sorted(rows, key=lambda r: len(r["prompt_ids"]) + len(r["answer_ids"]))
    groups, group = [], []
    for row in rows:
        length = len(row["prompt_ids"]) + len(row["answer_ids"])
        if group and length * (len(group) + 1) > max_tokens:
            groups.append(group)
            group = []
        group.append(row)
    groups += [group] if group else []
    rng.shuffle(groups)
    return groups


def held_out_ids(data: list[dict], share: float, seed: int) -> set:
    """Ids of a random `share` (train.held_out_share) of the greedy answers, kept out of training
    to measure agreement with the target."""
    rng = random.Random(seed)
    return {r["id"] for r in data if not r["sampled"] and rng.random() < share}
