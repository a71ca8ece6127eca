"""Files that an interrupted process never leaves half written.

A whole file (a checkpoint, a summary) goes to a temporary file in the same directory, then
replaces the old one with os.replace, which is atomic within a file system: a reader sees the
old file or the new one, never a torn one. A JSON Lines file a process appends to can still
end in a torn line (the process stopped mid-write); read_jsonl drops that line, so its row is
redone.
"""

import contextlib
import json
import logging
import os
import secrets
from pathlib import Path

import torch

from specdec.errors import ConfigError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _replacing(path: Path, mode: str):
    """A file opened in `mode` that replaces `path` when the block ends, and is removed if it raises."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, mode.replace("w", "x")) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    with _replacing(path, "w") as f:
        f.write(text)


def atomic_torch_save(obj, path: Path) -> None:
    with _replacing(path, "wb") as f:
        torch.save(obj, f)


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSON Lines file that rows are appended to. A last line that is unterminated or
    not JSON (an interrupted write) is dropped with a warning and cut from the file, so that appends
    start on a fresh line; a bad line before it is a ConfigError."""
    path = Path(path)
    lines = path.read_bytes().split(b"\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    rows, offset = [], 0
    for i, line in enumerate(lines):
        if line.strip():
            try:
                if i == len(lines) - 1:  # no end of line after it: the write stopped
                    raise ValueError("no end of line")
                rows.append(json.loads(line))
            except ValueError as e:
                if i != last:
                    raise ConfigError(f"{path} line {i + 1} is not JSON ({e}): fix or delete that line, "
                                      "or delete the file") from None
                log.warning("dropped the torn last line of %s (an interrupted write): its row is redone", path)
                with open(path, "r+b") as f:
                    f.truncate(offset)
                break
        offset += len(line) + 1
    return rows
