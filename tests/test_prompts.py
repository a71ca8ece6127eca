"""Prompt suites: shipped suites, user JSONL files with prompts or chat messages, bad files."""

import json

import pytest

from experiments.prompts import load_prompts, shipped_suites
from experiments.public_suites import load_public_prompts
from specdec import ConfigError
from specdec.chat import encode
from specdec.tiny import byte_tokenizer


def test_embedded_suite_has_six_categories_mixed_from_the_start():
    prompts = load_prompts()
    assert len(prompts) >= 40
    assert len({p["category"] for p in prompts}) == 6
    assert len({p["category"] for p in prompts[:6]}) == 6  # dataset.limit=6 already mixes them
    assert {"workloads/shared_system", "workloads/multi_turn", "workloads/no_sharing"} <= set(shipped_suites())


def test_multi_turn_workload_extends_turn_by_turn():
    turns = load_prompts(suite="workloads/multi_turn")
    for earlier, later in zip(turns, turns[1:]):
        assert later["messages"][: len(earlier["messages"])] == earlier["messages"]


def test_user_file_with_prompts_and_messages(tmp_path):
    path = tmp_path / "mine.jsonl"
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                          {"role": "user", "content": "bye"}], "id": "x"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (prompt,) = load_prompts(str(path))
    assert prompt["id"] == "x" and prompt["category"] == "all"
    assert byte_tokenizer().decode(encode(byte_tokenizer(), prompt["messages"])) == "hi\n\nhello\n\nbye"


@pytest.mark.parametrize("content,message", [
    (None, "is not a file"),
    ('{"text": "no prompt here"}\n', "has neither \"prompt\" nor \"messages\""),
    ("not json at all\n", "line 1 is not JSON"),
])
def test_bad_dataset_files(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_prompts(str(path))


def test_salt_field_is_optional_and_kept(tmp_path):
    path = tmp_path / "tenants.jsonl"
    path.write_text('{"prompt": "a", "salt": "acme"}\n{"prompt": "b"}\n')
    assert [p["salt"] for p in load_prompts(str(path))] == ["acme", None]


@pytest.mark.parametrize("salt", ["7", "[\"acme\"]", "{\"t\": 1}", "true"])
def test_salt_that_is_not_a_string_names_its_line(tmp_path, salt):
    path = tmp_path / "tenants.jsonl"
    path.write_text(f'{{"prompt": "a", "salt": "acme"}}\n\n{{"prompt": "b", "salt": {salt}}}\n')  # a blank line 2
    with pytest.raises(ConfigError, match=r"tenants.jsonl line 3: \"salt\" must be a string .*quote it") as error:
        load_prompts(str(path))
    assert "\n" not in str(error.value)


def test_unknown_suite_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match="unknown dataset.suite 'nope'; shipped suites: embedded"):
        load_prompts(suite="nope")


def test_bad_limit():
    with pytest.raises(ConfigError, match="dataset.limit must be an integer >= 1"):
        load_prompts(limit=0)


def test_public_suite_field_mapping(tmp_path):
    """Spec-Bench's question.jsonl layout, read from a local copy through the same mapping."""
    path = tmp_path / "question.jsonl"
    rows = [{"question_id": 81 + i, "category": "writing", "turns": [f"Write poem {i}.", "Now shorter."]} for i in range(3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    hub = {"path": "json", "name": None, "data_files": str(path), "split": "train", "prompt": "turns",
           "category": "category", "id": "question_id", "template": "Q: {prompt}"}
    prompts = load_public_prompts(hub, limit=2)
    assert [p["id"] for p in prompts] == ["81", "82"]
    assert prompts[1] == {"id": "82", "category": "writing", "messages": [{"role": "user", "content": "Q: Write poem 1."}]}
    with pytest.raises(ConfigError, match="has no field 'question'"):
        load_public_prompts({**hub, "prompt": "question"})


@pytest.mark.parametrize("rows,hub,message", [
    ([{"q": 1, "turns": ["a"]}, {"q": 1, "turns": ["b"]}], {}, "rows 0 and 1 of json have the same id '1': set dataset.hub.id=null"),
    ([{"q": 1, "turns": []}], {}, "row 0 of json has no text in 'turns' (got []): fix dataset.hub.prompt"),
    ([{"q": 1, "turns": [None]}], {}, "has no text in 'turns' (got None)"),
    ([{"q": 1, "turns": ["a"]}, {"q": 1, "turns": ["b"]}], {"id": None}, None),
])
def test_public_suite_ids_and_texts(tmp_path, rows, hub, message):
    path = tmp_path / "question.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    hub = {"path": "json", "name": None, "data_files": str(path), "split": "train", "prompt": "turns",
           "category": None, "id": "q", **hub}
    if message is None:
        assert [p["id"] for p in load_public_prompts(hub)] == ["0", "1"]
        return
    with pytest.raises(ConfigError) as caught:
        load_public_prompts(hub)
    assert message in str(caught.value)
