"""Bad trainer settings are one-line ConfigErrors naming the setting and what it takes, found
before any model loads (the entry points' check_settings on the composed configs); the layers a
setting names are checked as soon as the target is loaded, before any data is made."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny, train_config

from specdec import ConfigError
from specdec.training import answers, draft_recipe
from specdec.training.accelerator import mixed_precision
from specdec.training.settings import check_settings, check_target_layers

REPO = Path(__file__).resolve().parent.parent
BAD = [  # (trainer, overrides, what the message says)
    ("draft", ["train.checkpoint_every=0"], "train.checkpoint_every=0 is invalid: set it to an integer >= 1"),
    ("draft", ["train.init_layers=[]"], "train.init_layers=[] is invalid: set it to a non-empty list of integers >= 0"),
    ("draft", ["train.init_layers=[0,-1]"], "train.init_layers=[0, -1] is invalid: set it to a non-empty list"),
    ("draft", ["train.init_layers=3"], "train.init_layers=3 is invalid: set it to a non-empty list"),
    ("draft", ["train.lr=0"], "train.lr=0 is invalid: set it to a number > 0"),
    ("draft", ["train.lr=fast"], "train.lr='fast' is invalid: set it to a number > 0"),
    ("draft", ["train.epochs=1.5"], "train.epochs=1.5 is invalid: set it to an integer >= 1"),
    ("draft", ["train.batch_tokens=0"], "train.batch_tokens=0 is invalid: set it to an integer >= 1"),
    ("draft", ["train.held_out_share=1"], "train.held_out_share=1 is invalid: set it to a number >= 0 and < 1"),
    ("draft", ["train.head_tokens=0"], "train.head_tokens=0 is invalid: set it to an integer >= 1 or null"),
    ("draft", ["train.time_budget_min=0"], "train.time_budget_min=0 is invalid: set it to a number > 0"),
    ("draft", ["~train.lr"], "train.lr is missing from the config: set train.lr to a number > 0"),
    ("draft", ["data.sampled_share=1.5"], "data.sampled_share=1.5 is invalid: set it to a number >= 0 and <= 1"),
    ("draft", ["data.temperature=0"], "data.temperature=0 is invalid: set it to a number > 0"),
    ("draft", ["data.dtype=bf17"], "data.dtype='bf17' is invalid: set it to one of auto, float32, float16, bfloat16"),
    ("draft", ["data.batch_size=0"], "data.batch_size=0 is invalid: set it to an integer >= 1"),
    ("draft", ["data.max_new_tokens=-5"], "data.max_new_tokens=-5 is invalid: set it to an integer >= 1"),
    ("draft", ["data.prompts=0"], "data.prompts=0 is invalid: set it to an integer >= 1"),
    ("draft", ["data.passages=-1"], "data.passages=-1 is invalid: set it to an integer >= 0"),
    ("draft", ["data.self_written=null"], "data.self_written=None is invalid: set it to an integer >= 0"),
    ("draft", ["seed=-1"], "seed=-1 is invalid: set it to an integer >= 0"),
    ("draft", ["seed=true"], "seed=True is invalid: set it to an integer >= 0"),
    ("draft", ["threads=0"], "threads=0 is invalid: set it to an integer >= 1 or null"),
    ("draft", ["work_dir=''"], "work_dir='' is invalid: set it to a non-empty string"),
    ("eagle", ["data.seeds=[]"], "data.seeds=[] is invalid: set it to a non-empty list of different integers >= 0"),
    ("eagle", ["data.seeds=[0,0]"], "data.seeds=[0, 0] is invalid: set it to a non-empty list of different integers"),
    ("eagle", ["train.unroll=0"], "train.unroll=0 is invalid: set it to an integer >= 1"),
    ("eagle", ["train.num_layers=0"], "train.num_layers=0 is invalid: set it to an integer >= 1"),
    ("eagle", ["train.init_layer=-1"], "train.init_layer=-1 is invalid: set it to an integer >= 0 or null"),
    ("eagle", ["train.mixed_precision=fp8"], "train.mixed_precision='fp8' is invalid: set it to one of auto, no, bf16, fp16"),
    ("medusa", ["train.grad_accum=0"], "train.grad_accum=0 is invalid: set it to an integer >= 1"),
    ("draft", ["~train.mixed_precision"], "train.mixed_precision is missing from the config: set train.mixed_precision"),
    ("eagle", ["train.noise=-0.1"], "train.noise=-0.1 is invalid: set it to a number >= 0"),
    ("eagle", ["train.checkpoint_every=0"], "train.checkpoint_every=0 is invalid: set it to an integer >= 1"),
    ("medusa", ["heads.num_heads=0"], "heads.num_heads=0 is invalid: set it to an integer >= 1"),
    ("medusa", ["heads.num_layers=0"], "heads.num_layers=0 is invalid: set it to an integer >= 1"),
    ("medusa", ["train.batch_positions=0"], "train.batch_positions=0 is invalid: set it to an integer >= 1"),
    ("medusa", ["train.head_decay=0"], "train.head_decay=0 is invalid: set it to a number > 0"),
    ("medusa", ["tree.max_nodes=0"], "tree.max_nodes=0 is invalid: set it to an integer >= 1"),
    ("medusa", ["tree.context_tokens=0"], "tree.context_tokens=0 is invalid: set it to an integer >= 1"),
]


@pytest.mark.parametrize(("trainer", "overrides", "message"), BAD, ids=[" ".join(row[1]) for row in BAD])
def test_a_bad_setting_is_one_line_naming_the_fix(trainer, overrides, message):
    with pytest.raises(ConfigError) as error:
        check_settings(train_config(f"train_{trainer}", *overrides), trainer)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


@pytest.mark.parametrize("trainer", ["draft", "eagle", "medusa"])
def test_the_shipped_settings_pass(trainer):
    check_settings(train_config(f"train_{trainer}"), trainer)
    check_settings(train_config(f"train_{trainer}", "threads=2", "train.head_tokens=null", "train.lr=1"), trainer)


def test_init_layers_past_the_target_stop_the_run_before_any_data_is_made(tmp_path, monkeypatch):
    """The tiny target has 3 layers."""
    monkeypatch.setattr(answers, "generate_data", lambda *_: pytest.fail("made data"))
    cfg = train_config("train_draft", "train.init_layers=[0,7]", f"work_dir={tmp_path}", f"out_dir={tmp_path / 'out'}")
    with pytest.raises(ConfigError, match=r"^train.init_layers=\[0, 7\] names a layer the target lacks: give layers "
                                          r"in \[0, 2\]$"):
        draft_recipe.train_draft(cfg, [])
    check_target_layers("train.init_layer", [2], tiny("llama"))


def test_the_entry_point_exits_with_status_2_and_the_message(tmp_path):
    result = subprocess.run([sys.executable, "-m", "experiments.train_eagle", "model=tiny-random", "train.unroll=0",
                             f"work_dir={tmp_path / 'work'}", f"hydra.run.dir={tmp_path / 'run'}"], cwd=REPO,
                            capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "train.unroll=0 is invalid: set it to an integer >= 1" in output
    assert "Traceback" not in output and not (tmp_path / "work").exists()  # stopped before touching the work dir


def test_mixed_precision_a_cpu_cannot_run_names_the_fix():
    with pytest.raises(ConfigError, match=r"^train.mixed_precision=fp16 needs a GPU: set it to auto, no or bf16$"):
        mixed_precision("fp16", torch.device("cpu"))
    assert mixed_precision("auto", torch.device("cpu")) == "no" and mixed_precision("no", torch.device("cuda")) == "no"
