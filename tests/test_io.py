"""specdec.io: whole files replaced atomically (an interrupted write leaves the old file and no
stray temporary), and JSON Lines whose torn last line is dropped, not a crash."""

import json
import logging

import pytest
import torch

from specdec import ConfigError
from specdec.io import atomic_torch_save, atomic_write_text, read_jsonl


def test_an_interrupted_save_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "checkpoint.pt"
    atomic_torch_save({"step": 1, "weights": torch.ones(3)}, path)
    with pytest.raises(Exception):  # a lambda cannot be pickled: the save stops midway
        atomic_torch_save({"step": 2, "weights": torch.zeros(3), "bad": lambda: None}, path)
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    atomic_write_text(tmp_path / "note.txt", "first")
    atomic_write_text(tmp_path / "note.txt", "second")
    assert (tmp_path / "note.txt").read_text() == "second" and len(list(tmp_path.iterdir())) == 2


@pytest.mark.parametrize("torn", ['{"id": "c", "answ', '{"id": "c"}', "\x00\x00\x00\n"])
def test_a_torn_last_line_is_dropped_and_cut_from_the_file(torn, tmp_path, caplog):
    """Unterminated (even if it parses: its write stopped before the newline) or not JSON."""
    path = tmp_path / "data.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}\n' + torn)
    with caplog.at_level(logging.WARNING):
        assert read_jsonl(path) == [{"id": "a"}, {"id": "b"}]
    assert "torn last line" in caplog.text
    with open(path, "a") as out:  # the next append starts on a fresh line
        out.write(json.dumps({"id": "c"}) + "\n")
    assert [row["id"] for row in read_jsonl(path)] == ["a", "b", "c"]


def test_a_bad_line_before_the_last_names_the_fix(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n\n')
    with pytest.raises(ConfigError, match=r"data.jsonl line 2 is not JSON .*: fix or delete that line"):
        read_jsonl(path)
    path.write_text('{"id": "a"}\n\n{"id": "b"}\n')  # blank lines are no rows
    assert len(read_jsonl(path)) == 2
