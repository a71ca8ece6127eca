"""`datasets.Dataset`s on disk that a killed run never leaves half written (the training data:
the answered prompts, the target's features).

A whole dataset is saved under another name, then swapped in: a reader finds the old one or
the new one. A dataset that grows while it is made (the answers, batch by batch) is written as
shards, each saved under another name and then renamed into its folder: a killed run loses at
most the batch it was saving, and a rerun reads every whole shard back. Both hold nothing but
what the target computes, so one that cannot be read is dropped with a warning and made again.
"""

import contextlib
import logging
import shutil
from pathlib import Path

import datasets
from datasets import Dataset, load_from_disk

log = logging.getLogger(__name__)


@contextlib.contextmanager
def quietly():
    """No "Saving the dataset" bar per save (a shard per batch would print hundreds)."""
    shown = not datasets.utils.are_progress_bars_disabled()
    datasets.utils.disable_progress_bars()
    try:
        yield
    finally:
        if shown:
            datasets.utils.enable_progress_bars()


def save_whole(dataset: Dataset, path: Path) -> None:
    """save_to_disk into <path>.partial, then swapped in: a reader finds the old dataset or the new one."""
    partial, old = path.with_name(path.name + ".partial"), path.with_name(path.name + ".old")
    for leftover in (partial, old):
        if leftover.exists():
            shutil.rmtree(leftover)
    with quietly():
        dataset.save_to_disk(str(partial))
    if path.exists():
        path.rename(old)
    partial.rename(path)
    if old.exists():
        shutil.rmtree(old)


def load_saved(path: Path) -> Dataset | None:
    """The dataset at `path` (or <path>.old, where a swap was cut short), read into memory (the
    files may be swapped under it): none if it is missing or unreadable (torn or damaged)."""
    found = next((p for p in (path, path.with_name(path.name + ".old")) if p.exists()), None)
    return None if found is None else readable(found)


def readable(path: Path) -> Dataset | None:
    """The dataset saved at `path`, or none (with a warning) if it cannot be read."""
    try:
        return load_from_disk(str(path), keep_in_memory=True)
    except Exception as e:  # datasets and pyarrow raise many types for a damaged folder
        log.warning("cannot read %s (%s): making it again", path, str(e).splitlines()[0] if str(e) else e.__class__.__name__)
        return None


def save_shard(dataset: Dataset, folder: Path) -> None:
    """The next shard of `folder`: saved as <index>.partial, then renamed to <index>."""
    folder.mkdir(parents=True, exist_ok=True)
    index = len([p for p in folder.iterdir() if not p.name.endswith(".partial")])
    partial = folder / f"{index:06d}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    with quietly():
        dataset.save_to_disk(str(partial))
    partial.rename(folder / f"{index:06d}")


def read_shards(folder: Path) -> list[Dataset]:
    """The whole shards of `folder` in the order they were saved (a shard cut short is removed;
    an unreadable one is dropped, so the next shard takes its place)."""
    if not folder.exists():
        return []
    shards = []
    for path in sorted(folder.iterdir()):
        shard = None if path.name.endswith(".partial") else readable(path)
        if shard is None:
            shutil.rmtree(path)
        else:
            shards.append(shard)
    for index, path in enumerate(sorted(folder.iterdir())):  # numbered 0.. again: the next shard never overwrites one
        path.rename(folder / f"{index:06d}")
    return shards
