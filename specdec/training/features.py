"""The training sequences' features: the frozen target's last hidden state (the LM head's
input) at every position, which EAGLE's draft and Medusa's heads train on.

Most come free with the answers (specdec.training.batch_answers keeps them while the target
answers); the rest (sequences answered before a resume) are computed here with
`datasets.Dataset.map(batched=True)` on the target's device. They are stored as a
`datasets.Dataset` on disk (Arrow: the row id, and the states as bf16 bits in an int16 array),
saved whole and swapped in (specdec.training.saved_datasets), so a rerun computes only what is
missing. Each seed in `data.seeds` draws its own passages and prompts (seeded_data):
more data, answered in work_dir/seed-N, so the EAGLE draft and the Medusa heads can train on
the same files.
"""

from pathlib import Path

import numpy as np
import torch
from datasets import Array2D, Dataset, Features, Value, concatenate_datasets
from omegaconf import DictConfig

from specdec.training.answers import answered_prompts
from specdec.training.batches import sequence
from specdec.training.saved_datasets import load_saved, save_whole

FEATURES = "features"  # in each data directory: a datasets.Dataset saved to disk


def features(rows: list[dict], target, path: Path, known: dict | None = None,
             batch_size: int = 16) -> list[torch.Tensor]:
    """The target's last hidden state (after its final norm) at every position of every sequence,
    bf16, in the order of `rows`: those `known` (kept while answering), the others computed by a
    batched map over the sequences (right-padded, sorted by length; causal: padding never leaks).
    Kept in the dataset at `path` by row id: a rerun computes only the rows added since."""
    kept, known = load_saved(path), {str(k): v for k, v in (known or {}).items()}
    stored = set(kept["id"]) if kept is not None else set()
    missing = sorted((r for r in rows if str(r["id"]) not in stored), key=lambda r: len(sequence(r)))
    if missing:
        width = target.config.get_text_config().hidden_size
        schema = Features({"id": Value("string"), "hidden": Array2D(shape=(None, width), dtype="int16")})
        todo = Dataset.from_list([{"id": str(r["id"]), "ids": sequence(r)} for r in missing])
        new = todo.map(lambda batch: target_states(batch, target, known), batched=True, batch_size=batch_size,
                       remove_columns=["ids"], features=schema, desc="features", keep_in_memory=True)
        kept = new if kept is None else concatenate_datasets([kept, new])
        save_whole(kept, path)
    by_id = {row_id: i for i, row_id in enumerate(kept["id"])}
    hidden = list(kept.with_format("numpy")["hidden"])  # the bits come back widened to int64
    return [torch.from_numpy(hidden[by_id[str(r["id"])]].astype(np.int16)).view(torch.bfloat16) for r in rows]


@torch.no_grad()
def target_states(batch: dict, target, known: dict) -> dict:
    """The map over a batch of sequences: each one's states, as kept while answering or computed
    in one right-padded pass of the target's decoder, as int16 arrays of their bf16 bits."""
    todo = [ids for row_id, ids in zip(batch["id"], batch["ids"]) if row_id not in known]
    computed = []
    if todo:
        width = max(map(len, todo))
        device = next(target.parameters()).device
        padded = torch.tensor([ids + [0] * (width - len(ids)) for ids in todo], device=device)
        computed = list(target.get_decoder()(input_ids=padded).last_hidden_state)
    states = []
    for row_id, ids in zip(batch["id"], batch["ids"]):
        state = known[row_id] if row_id in known else computed.pop(0)[: len(ids)]
        states.append(state.to(torch.bfloat16).cpu().view(torch.int16).numpy())
    return {"hidden": states}


def seeded_data(cfg: DictConfig, target, tokenizer, evaluation: list[str], work: Path
                ) -> tuple[list[dict], list[torch.Tensor], float]:
    """One data set per seed in data.seeds (the recipe's passages and prompts drawn with that seed,
    answered in work/seed-N, resumable), with their features: (rows, hidden states, minutes of answering)."""
    data, hidden, minutes = [], [], 0.0
    for seed, directory in seed_dirs(cfg, work).items():
        directory.mkdir(parents=True, exist_ok=True)
        part = cfg.copy()
        part.seed = seed
        answering = {}  # hidden states kept while answering: no feature pass over those rows
        rows, spent = answered_prompts(part, target, tokenizer, evaluation, directory, answering)
        states = features(rows, target, directory / FEATURES, answering)
        for index, row in enumerate(rows, start=len(hidden)):  # the row's features: hidden[row["index"]]
            row["index"] = index
            row["id"] = f"{seed}/{row['id']}"
        data, hidden, minutes = data + rows, hidden + states, minutes + spent
    return data, hidden, minutes


def seed_dirs(cfg: DictConfig, work: Path) -> dict[int, Path]:
    """Each seed's data directory, by seed, in data.seeds' order."""
    return {seed: work / f"seed-{seed}" for seed in cfg.data.seeds}
