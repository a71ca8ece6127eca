"""The answered prompts of a data directory, as a `datasets.Dataset` on disk (`answers/`).

While the target answers, each batch of answers is saved as a shard (`answers.parts/`,
specdec.training.saved_datasets): a killed run loses at most the batch it was saving, and a
rerun answers only the prompts no whole shard holds. Once every prompt is answered, the rows,
in the order they were first answered, are saved whole as `answers/` and the shards removed.

The data hash (data_sha256 in a checkpoint's progress and an exported draft's config) is the
sha256 of those rows as JSON lines, in that order: the bytes the earlier data.jsonl held, so the
hashes recorded by drafts trained on it keep their meaning.
"""

import hashlib
import json
import shutil
from pathlib import Path

from datasets import Dataset, Features, List, Value

from specdec.training.saved_datasets import load_saved, read_shards, save_shard, save_whole

ANSWERS = "answers"  # in each data directory: a datasets.Dataset saved to disk
PARTS = "answers.parts"  # its shards while the target answers
SCHEMA = Features({"id": Value("string"), "category": Value("string"), "sampled": Value("bool"),
                   "prompt_ids": List(Value("int32")), "answer_ids": List(Value("int32"))})


class AnswerStore:
    """The answers of one data directory: `done` (by prompt id) holds those saved so far."""

    def __init__(self, directory: Path):
        self.path, self.parts = directory / ANSWERS, directory / PARTS
        saved = load_saved(self.path)
        self.done = {}
        for dataset in ([saved] if saved is not None else []) + read_shards(self.parts):
            self.done |= {row["id"]: row for row in dataset.to_list()}  # a row saved twice keeps its first place
        self.added = 0  # rows answered by this run

    def add(self, rows: list[dict]) -> None:
        """A batch of answered rows (SCHEMA's columns), saved as a shard."""
        save_shard(Dataset.from_list(rows, features=SCHEMA), self.parts)
        self.done |= {row["id"]: row for row in rows}
        self.added += len(rows)

    def finish(self) -> None:
        """Every row saved as one dataset, in the order first answered; the shards removed."""
        if self.parts.exists():
            save_whole(Dataset.from_list(list(self.done.values()), features=SCHEMA), self.path)
            shutil.rmtree(self.parts)


def data_digest(directories: list[Path]) -> str:
    """sha256 of the answered rows of each data directory, in order, as JSON lines."""
    digest = hashlib.sha256()
    for directory in directories:
        for row in load_saved(directory / ANSWERS).to_list():
            digest.update((json.dumps(row) + "\n").encode())
    return digest.hexdigest()
