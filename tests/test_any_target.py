"""`python -m experiments.train_eagle model.name_or_path=<a Llama, Qwen2 or Mistral-style model>`
trains a draft for that target: on tiny random targets of those architectures saved as model
directories, the whole recipe (answers, features, training, export) runs, the exported draft
loads, decodes exactly the baseline's tokens, and has more of its tokens accepted than a
random draft of the same shape."""

import pytest
from conftest import random_eagle, train_config
from datasets import load_from_disk

from specdec import GenerationConfig
from specdec.decoding import Decoder
from specdec.drafts.eagle_draft import load_eagle_draft
from specdec.strategies import create_strategy
from specdec.tiny import byte_tokenizer, tiny_random_model
from specdec.training.eagle_recipe import train_eagle

RECIPE = ["data.seeds=[0]", "data.passages=2", "data.prompts=24", "data.self_written=0", "data.max_new_tokens=24",
          "data.batch_size=13", "data.dtype=float32", "train.head_tokens=258", "train.unroll=2", "train.epochs=6",
          "train.lr=3e-3", "train.batch_tokens=512", "train.held_out_share=0.1", "train.checkpoint_every=1000",
          "train.mixed_precision=no"]


def acceptance(target, draft, prompts: list[list[int]]) -> tuple[float, bool]:
    """(accepted / proposed draft tokens over `prompts`, whether every output equals the baseline's)."""
    config, accepted, proposed, lossless = GenerationConfig(max_new_tokens=24), 0, 0, True
    for prompt in prompts:
        expected = Decoder(target, create_strategy("baseline"), eos_token_ids=set()).generate(prompt, config)
        got = Decoder(target, create_strategy("eagle", target_model=target, draft=draft, gamma=3),
                      eos_token_ids=set()).generate(prompt, config)
        lossless &= got.token_ids == expected.token_ids
        accepted, proposed = accepted + got.metrics.accepted, proposed + got.metrics.proposed
    return accepted / proposed, lossless


@pytest.mark.parametrize("arch", ["qwen2", "mistral"])
def test_train_eagle_trains_a_lossless_draft_for_any_target(arch, tmp_path):
    target = tiny_random_model(arch)
    target.save_pretrained(tmp_path / "target")
    byte_tokenizer().save_pretrained(tmp_path / "target")
    cfg = train_config("train_eagle", f"model.name_or_path={tmp_path / 'target'}", *RECIPE,
                       f"work_dir={tmp_path / 'work'}", f"out_dir={tmp_path / 'draft'}")
    meta = train_eagle(cfg, [])
    assert meta["target"] == str(tmp_path / "target") and meta["steps"] == meta["planned_steps"] > 0
    draft, _ = load_eagle_draft(tmp_path / "draft", target)
    rows = load_from_disk(str(tmp_path / "work" / "seed-0" / "answers")).to_list()
    prompts = [r["prompt_ids"] for r in rows[:6]]
    trained, lossless = acceptance(target, draft, prompts)
    random, random_lossless = acceptance(target, random_eagle(target, 0), prompts)
    assert lossless and random_lossless
    assert trained > random + 0.1, (trained, random)
