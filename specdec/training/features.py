"""The training sequences' features: the frozen target's last hidden state (the LM head's
input) at every position, which EAGLE's draft and Medusa's heads train on.

Most come free with the answers (specdec.training.batch_answers keeps them while the target
answers); the rest (sequences answered before a resume) take one batched pass here. They are
stored by row id in the work directory, so a rerun computes only what is missing (a stored file
that cannot be read is recomputed, with a warning: it holds nothing but the target's states). Each seed in
`data.seeds` draws its own passages and prompts (seeded_data): more data, answered in
work_dir/seed-N, so the EAGLE draft and the Medusa heads can train on the same files.
"""

import logging
import pickle
import random
from pathlib import Path

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from specdec.io import atomic_torch_save
from specdec.training.answers import answered_prompts
from specdec.training.batches import batches, sequence

log = logging.getLogger(__name__)


@torch.no_grad()
def features(rows: list[dict], target, path: Path, known: dict | None = None,
             max_tokens: int = 1024) -> list[torch.Tensor]:
    """The target's last hidden state (after its final norm) at every position of every sequence,
    bf16, in the order of `rows`: those `known` (kept while answering), the others computed here,
    batched by length, right-padded (causal: padding never leaks). Kept in `path` by row id: a
    rerun computes only the rows added since."""
    kept, known = stored_features(path), known or {}
    new = {r["id"]: known[r["id"]] for r in rows if r["id"] in known and r["id"] not in kept}
    kept.update(new)
    missing = [r for r in rows if r["id"] not in kept]
    with tqdm(total=len(rows), initial=len(rows) - len(missing), desc="features", unit="sequence") as bar:
        for group in batches(missing, max_tokens, random.Random(0)):
            seqs = [sequence(r) for r in group]
            width = max(map(len, seqs))
            ids = torch.tensor([s + [0] * (width - len(s)) for s in seqs])
            states = target.get_decoder()(input_ids=ids).last_hidden_state
            for row, s, state in zip(group, seqs, states):
                kept[row["id"]] = state[: len(s)].to(torch.bfloat16)
            bar.update(len(group))
    if missing or new:
        atomic_torch_save(kept, path)
    return [kept[r["id"]] for r in rows]


def stored_features(path: Path) -> dict[str, torch.Tensor]:
    """The features kept in `path` by row id: none if it is missing, or unreadable (torn, damaged,
    or holding objects other than tensors, which are never unpickled)."""
    if not path.exists():
        return {}
    try:
        return torch.load(path, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
        log.warning("cannot read %s (%s): computing its features again", path, str(e).splitlines()[0] if str(e) else
                    e.__class__.__name__)
        return {}


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
        states = features(rows, target, directory / "features.pt", answering)
        for index, row in enumerate(rows, start=len(hidden)):  # the row's features: hidden[row["index"]]
            row["index"] = index
            row["id"] = f"{seed}/{row['id']}"
        data, hidden, minutes = data + rows, hidden + states, minutes + spent
    return data, hidden, minutes



def seed_dirs(cfg: DictConfig, work: Path) -> dict[int, Path]:
    """Each seed's data directory, by seed, in data.seeds' order."""
    return {seed: work / f"seed-{seed}" for seed in cfg.data.seeds}
