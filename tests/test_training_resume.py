"""What a trainer finds in its work directory when it resumes: settings that differ from those it
was started with are an error naming them, a checkpoint that would run code is refused unread, a
damaged one is a one-line error, unreadable features are recomputed, and answers a killed run
was saving are answered again."""

import hashlib
import json
import logging
import random

import pytest
import torch
from conftest import tiny, train_config
from datasets import load_from_disk
from omegaconf import OmegaConf
from safetensors.torch import save_file

from specdec import ConfigError
from specdec.io import atomic_torch_save
from specdec.tiny import byte_tokenizer
from specdec.training import draft_recipe, fingerprint
from specdec.training.answer_store import AnswerStore, data_digest
from specdec.training.answers import answer
from specdec.training.accelerator import trainer_accelerator
from specdec.training.features import features, seed_dirs
from specdec.training.fingerprint import check_work_dir
from specdec.training.optim import optimize

TRAIN = OmegaConf.create({"lr": 1e-2, "checkpoint_every": 1, "time_budget_min": 1, "mixed_precision": "no",
                          "grad_accum": 1})


def test_a_rerun_with_other_settings_names_the_keys_and_the_fix(tmp_path, monkeypatch):
    """The issue: a draft trainer resumed with other data.prompts carried on with the old answers."""
    work, checkpoint = tmp_path / "work", tmp_path / "work" / "checkpoint"
    first = train_config("train_draft", f"work_dir={work}")
    check_work_dir(first, checkpoint, {0: work})
    (work / "answers").mkdir()
    check_work_dir(first, checkpoint, {0: work})  # the same settings resume
    changed = train_config("train_draft", f"work_dir={work}", "data.prompts=24", "data.temperature=0.5")
    monkeypatch.setattr(draft_recipe, "frozen_target", lambda cfg: pytest.fail("loaded the target"))
    with pytest.raises(ConfigError, match=r"^\S+answers was made with other settings \(data.prompts: 1200 -> 24; "
                                          r"data.temperature: 0.7 -> 0.5\): use a new work_dir, or delete \S+work to "
                                          r"answer again$"):
        draft_recipe.train_draft(changed, [])
    checkpoint.write_bytes(b"")  # a run's budget and checkpoint interval may change; its learning rate may not
    check_work_dir(train_config("train_draft", "train.time_budget_min=50", "train.checkpoint_every=5"), checkpoint,
                   {0: work})
    with pytest.raises(ConfigError, match=r"\(train.lr: 0.0005 -> 0.001\): use a new work_dir, or delete "
                                          r"\S+checkpoint to train from step 0$"):
        check_work_dir(train_config("train_draft", "train.lr=1e-3"), checkpoint, {0: work})
    monkeypatch.setattr(fingerprint, "git_commit", lambda: "another-commit")
    with pytest.raises(ConfigError, match=r'code: "\S+" -> "another-commit"'):
        check_work_dir(first, checkpoint, {0: work})


def test_eagle_and_medusa_share_answers_but_not_checkpoints(tmp_path):
    """Their data sections are the same, so the seed-N answers of one serve the other."""
    eagle, medusa = (train_config(f"train_{kind}", f"work_dir={tmp_path}", "data.seeds=[0,1]") for kind in ("eagle", "medusa"))
    check_work_dir(eagle, tmp_path / "eagle_checkpoint", seed_dirs(eagle, tmp_path))
    for directory in seed_dirs(eagle, tmp_path).values():
        (directory / "answers.parts").mkdir()  # answering began
    (tmp_path / "eagle_checkpoint").write_bytes(b"")
    check_work_dir(medusa, tmp_path / "medusa_checkpoint", seed_dirs(medusa, tmp_path))
    shorter = train_config("train_medusa", f"work_dir={tmp_path}", "data.seeds=[0,1]", "data.max_new_tokens=64")
    with pytest.raises(ConfigError, match=r"seed-0/answers.parts was made with other settings \(data.max_new_tokens: "
                                          r"128 -> 64\): use a new work_dir, or delete \S+seed-0 to answer again$"):
        check_work_dir(shorter, tmp_path / "medusa_checkpoint", seed_dirs(shorter, tmp_path))


def test_files_made_before_fingerprints_were_recorded_name_the_fix(tmp_path):
    (tmp_path / "features").mkdir()
    with pytest.raises(ConfigError, match=r"features has no record of the settings it was made with "
                                          r"\(data_fingerprint.json; an older version wrote it\): use a new work_dir"):
        check_work_dir(train_config("train_draft"), tmp_path / "checkpoint", {0: tmp_path})


class Payload:
    """Unpickling it opens (creates) the marker file: what a crafted checkpoint could run instead."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def train_steps(checkpoint, steps: int = 3, data_sha256: str = "data") -> tuple[torch.nn.Linear, int]:
    """A tiny linear regression through the trainers' loop, resuming from `checkpoint`: (module, steps done)."""
    torch.manual_seed(0)
    module = torch.nn.Linear(4, 1)
    x, y = torch.randn(8, 4), torch.randn(8, 1)

    def batch_loss(_):
        loss = torch.nn.functional.mse_loss(module(x), y)
        return loss, [torch.ones(1)]

    progress = optimize(TRAIN, trainer_accelerator(TRAIN), module, list(module.parameters()), list(range(steps)),
                        batch_loss, checkpoint, module.state_dict, data_sha256)
    return module, progress.steps


def test_a_checkpoint_that_would_run_code_is_refused_unread(tmp_path):
    marker, checkpoint = tmp_path / "code-ran", tmp_path / "checkpoint"
    train_steps(checkpoint)
    torch.save({"state": Payload(marker), "param_groups": []}, checkpoint / "optimizer.bin")
    with pytest.raises(ConfigError, match=r"^refused to resume from .*checkpoint: .*could run code.*"
                                          r"delete it, or use a new work_dir$"):
        train_steps(checkpoint)
    assert not marker.exists()
    torch.load(checkpoint / "optimizer.bin", weights_only=False)  # the payload is real: a plain load runs it
    assert marker.exists()


@pytest.mark.parametrize("damage", ["truncate", "empty", "keys", "progress"])
def test_a_damaged_checkpoint_is_one_line_naming_the_fix(damage, tmp_path):
    checkpoint = tmp_path / "checkpoint"
    trained, step = train_steps(checkpoint)
    resumed, again = train_steps(checkpoint)  # a sound checkpoint resumes at its step: nothing is retrained
    assert step == again == 3 and torch.equal(trained.weight, resumed.weight)
    weights = checkpoint / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "empty":
        (checkpoint / "optimizer.bin").write_bytes(b"")
    elif damage == "keys":
        save_file({"other.weight": torch.zeros(1)}, weights)
    else:
        (checkpoint / "progress.json").unlink()
    with pytest.raises(ConfigError, match=r"^cannot resume from .*checkpoint \(damaged or not a checkpoint of "
                                          r"this trainer: [^\n]*\); delete it to train from step 0, or use a new work_dir$"):
        train_steps(checkpoint)


def test_a_checkpoint_of_other_data_is_refused_and_a_cut_swap_resumes(tmp_path):
    """Resuming on data with another hash (answers changed under the same settings) names the fix;
    a kill between the swap's two renames leaves the previous checkpoint as <name>.old, which resumes."""
    checkpoint = tmp_path / "checkpoint"
    train_steps(checkpoint, steps=3)
    with pytest.raises(ConfigError, match=r"^\S+checkpoint was trained on other data \(data hash data\.\.\. -> "
                                          r"other\.\.\.\): use a new work_dir, or delete \S+checkpoint to train from step 0$"):
        train_steps(checkpoint, steps=3, data_sha256="other")
    checkpoint.rename(tmp_path / "checkpoint.old")
    module, step = train_steps(checkpoint, steps=3)
    assert step == 3 and not (tmp_path / "checkpoint").exists()  # resumed at its last step: nothing to do


def test_unreadable_features_are_computed_again(tmp_path, caplog):
    model = tiny("llama")
    rows = [{"id": f"r{i}", "prompt_ids": [1, 2, 3 + i], "answer_ids": [4, 5]} for i in range(3)]
    path = tmp_path / "features"
    expected = features(rows, model, path)
    for arrow in path.glob("*.arrow"):  # a damaged dataset
        arrow.write_bytes(arrow.read_bytes()[:40])
    with caplog.at_level(logging.WARNING):
        again = features(rows, model, path)
    assert "making it again" in caplog.text
    assert all(torch.equal(a, b) for a, b in zip(again, expected))
    assert sorted(load_from_disk(str(path))["id"]) == ["r0", "r1", "r2"]  # rewritten whole


def test_answers_a_killed_run_was_saving_are_answered_again(tmp_path, caplog):
    """A run killed while it saved a batch leaves that shard cut short (<index>.partial) and
    the shards before it whole: a rerun reads those, answers only the cut batch, and the answers
    end as an uninterrupted run's (sampled: each batch from its own seed), with the same data hash."""
    model, tokenizer = tiny("llama"), byte_tokenizer()
    cfg = OmegaConf.create({"seed": 0, "data": {"batch_size": 2, "max_new_tokens": 4, "temperature": 0.7}})
    prompts = [{"id": f"p{i}", "category": "test", "input_ids": [5 + i, 9, 13 + i]} for i in range(5)]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    store = AnswerStore(whole)
    answer(prompts, cfg, model, tokenizer, store, sampled_share=1.0)
    assert store.added == 5 and len(list((whole / "answers.parts").iterdir())) == 3  # a shard per batch
    store.finish()
    assert not (whole / "answers.parts").exists() and [r["id"] for r in load_from_disk(str(whole / "answers"))] == [
        "p0", "p1", "p2", "p3", "p4"]
    answer(prompts[:4], cfg, model, tokenizer, AnswerStore(cut), sampled_share=1.0)
    (cut / "answers.parts" / "000001").rename(cut / "answers.parts" / "000001.partial")  # killed mid-save
    resumed = AnswerStore(cut)
    assert sorted(resumed.done) == ["p0", "p1"]
    answer(prompts, cfg, model, tokenizer, resumed, sampled_share=1.0)
    assert resumed.added == 3 and sorted(p.name for p in (cut / "answers.parts").iterdir()) == ["000000", "000001", "000002"]
    resumed.finish()
    assert load_from_disk(str(cut / "answers")).to_list() == load_from_disk(str(whole / "answers")).to_list()
    assert data_digest([cut]) == data_digest([whole]) == hashlib.sha256(b"".join(  # what data.jsonl held
        json.dumps({key: resumed.done[p["id"]][key] for key in ("id", "category", "sampled", "prompt_ids", "answer_ids")
                    }).encode() + b"\n" for p in prompts)).hexdigest()
    again = AnswerStore(cut)  # a finished directory: every row read back, nothing to answer or save
    answer(prompts, cfg, model, tokenizer, again, sampled_share=1.0)
    again.finish()
    assert again.added == 0 and not (cut / "answers.parts").exists() and list(again.done) == list(resumed.done)


def test_a_batch_is_all_greedy_or_all_sampled(tmp_path):
    """Where the greedy prompts do not fill their last batch, the sampled ones start a new one
    (before, a batch took the first prompt's kind, and sampled prompts after it were answered greedily)."""
    model, tokenizer = tiny("llama"), byte_tokenizer()
    cfg = OmegaConf.create({"seed": 0, "data": {"batch_size": 4, "max_new_tokens": 4, "temperature": 0.7}})
    prompts = [{"id": f"p{i}", "category": "test", "input_ids": [5 + i, 9, 13 + i]} for i in range(10)]
    store = AnswerStore(tmp_path)
    answer(prompts, cfg, model, tokenizer, store, sampled_share=0.5)
    drawn = random.Random(0)
    assert {p["id"]: drawn.random() < 0.5 for p in prompts} == {i: row["sampled"] for i, row in store.done.items()}
    kinds = [set(load_from_disk(str(shard))["sampled"]) for shard in sorted((tmp_path / "answers.parts").iterdir())]
    assert kinds == [{False}, {False}, {True}, {True}]  # 5 greedy, 5 sampled: 4 + 1 and 4 + 1 (not 4, 1 + 3, 2)
