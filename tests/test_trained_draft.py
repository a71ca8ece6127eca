"""The trained draft: built from target layers with the target's embedding borrowed, saved
small and loaded back, lossless with the full and the subset head; the shipped checkpoint;
training prompts disjoint from every evaluation suite."""

import json
import logging
import random
import time

import pytest
import torch
from omegaconf import OmegaConf
from conftest import random_prompt, tiny
from transformers import AutoModelForCausalLM

from experiments.prompts import evaluation_texts, load_prompts
from specdec import ConfigError, Decoder, GenerationConfig
from specdec.drafts.assets import SHIPPED, save_token_frequencies
from specdec.drafts.draft_model import load_draft, load_trained_draft, new_draft, save_trained_draft
from specdec.strategies import create_strategy
from specdec.drafts.subset_head import SubsetHead
from specdec.tiny import byte_tokenizer
from specdec.training import answers
from specdec.training.answer_store import AnswerStore
from specdec.training.dtypes import cpu_dtype
from specdec.training.prompts_corpus import check_disjoint, evaluation_spans, passage_prompts, training_prompts

ARCHS = ["llama", "qwen2", "mistral"]


def saved_draft(target, directory, init_layers=(0, 2)):
    draft = new_draft(target, list(init_layers))
    save_trained_draft(draft, directory, {"note": "test"})
    rng = random.Random(0)
    save_token_frequencies([[rng.randrange(100) for _ in range(50)] for _ in range(20)], target.config.vocab_size, directory)
    return draft


def test_new_draft_copies_layers_and_borrows_the_embedding():
    target = tiny("llama")
    draft = new_draft(target, [2, 0])
    assert draft.get_input_embeddings() is target.get_input_embeddings()
    assert draft.get_output_embeddings().weight is target.get_output_embeddings().weight
    for layer, source in zip(draft.model.layers, [2, 0]):
        for a, b in zip(layer.parameters(), target.model.layers[source].parameters()):
            assert torch.equal(a, b) and a is not b
    with pytest.raises(ConfigError, match="train.init_layers"):
        new_draft(target, [0, 7])


@pytest.mark.parametrize("arch", ARCHS)
def test_saved_draft_loads_back_without_the_borrowed_weights(arch, tmp_path):
    target = tiny(arch)
    draft = saved_draft(target, tmp_path)
    loaded = load_trained_draft(tmp_path, target)
    assert loaded.get_input_embeddings() is target.get_input_embeddings()
    ids = torch.tensor([[1, 5, 9, 200]])
    with torch.no_grad():
        bf16 = {k: v.to(torch.bfloat16).float() for k, v in draft.state_dict().items()}
        draft.load_state_dict(bf16)
        torch.testing.assert_close(loaded(ids).logits, draft(ids).logits)
    plain = AutoModelForCausalLM.from_pretrained(tmp_path)  # a stock from_pretrained reads it too
    assert torch.equal(plain.model.layers[0].mlp.up_proj.weight, loaded.model.layers[0].mlp.up_proj.weight.to(plain.dtype))
    ranked = json.loads((tmp_path / "tokens_by_frequency.json").read_text())
    assert sorted(ranked) == list(range(target.config.vocab_size)) and set(ranked[:100]) == set(range(100))


def test_subset_head_scores_only_its_tokens():
    weight = torch.randn(50, 8)
    head = SubsetHead(weight, [3, 7, 11])
    hidden = torch.randn(2, 4, 8)
    logits = head(hidden)
    assert logits.shape == (2, 4, 50)
    torch.testing.assert_close(logits[..., [3, 7, 11]], hidden @ weight[[3, 7, 11]].T)
    assert torch.isinf(logits[..., 0]).all()
    assert head.columns(torch.tensor([7, 0, 3, -100, 11])).tolist() == [1, -100, 0, -100, 2]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("head_tokens", [None, 40])
def test_greedy_output_with_a_trained_draft_equals_the_baseline(arch, head_tokens, tmp_path):
    target = tiny(arch)
    saved_draft(target, tmp_path)
    draft = load_draft(str(tmp_path), None, target, None, "cpu", torch.float32, head_tokens)
    assert isinstance(draft.lm_head, SubsetHead) == bool(head_tokens)
    rng = random.Random(arch)
    for _ in range(5):
        prompt, config = random_prompt(rng), GenerationConfig(max_new_tokens=rng.randint(5, 30))
        base = Decoder(target, create_strategy("baseline"), eos_token_ids=set()).generate(prompt, config)
        out = Decoder(target, create_strategy("draft", draft_model=draft, gamma=4), eos_token_ids=set()).generate(prompt, config)
        assert out.token_ids == base.token_ids


def test_bad_draft_settings_name_the_fix(tmp_path, monkeypatch):
    target = tiny("llama")
    with pytest.raises(ConfigError, match="draft.head_tokens needs a trained draft"):
        load_draft(None, 1, target, None, "cpu", torch.float32, head_tokens=100)
    monkeypatch.setitem(SHIPPED, "missing-draft", tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="python -m experiments.train_draft"):
        load_draft("missing-draft", None, target, None, "cpu", torch.float32)
    saved_draft(tiny("llama", hidden_size=32), tmp_path / "narrow")
    with pytest.raises(ConfigError, match="trained for another target"):
        load_draft(str(tmp_path / "narrow"), None, target, None, "cpu", torch.float32)


def test_shipped_draft_is_small_and_documented():
    directory = SHIPPED["smollm2-135m-draft"]
    size = sum(p.stat().st_size for p in directory.iterdir())
    assert size <= 25 * 2**20
    config = json.loads((directory / "config.json").read_text())
    meta = json.loads((directory / "specdec_draft.json").read_text())
    assert config["hidden_size"] == 576 and config["num_hidden_layers"] == len(meta["config"]["train"]["init_layers"])
    assert len(meta["data_sha256"]) == 64 and meta["config"]["seed"] == 0


def test_training_prompts_are_disjoint_from_every_evaluation_suite():
    requests = passage_prompts(400)  # configs/train_draft.yaml's data.passages
    assert len({p["prompt"] for p in requests}) == 400 and {p["category"] for p in requests} == {"passage"}
    passages = [f"A written passage number {i}. " * 12 for i in range(50)]  # stand-ins for the target's texts
    prompts = training_prompts(1200, passages=passages)  # configs/train_draft.yaml's data.prompts
    assert len({p["prompt"] for p in prompts}) == 1200
    assert {p["category"] for p in prompts} == {"chat", "code", "summarization", "qa", "math", "rewrite"}
    assert sum(any(text in p["prompt"] for text in passages) for p in prompts) > 200  # the passages are used
    evaluation = evaluation_texts()
    check_disjoint([p["prompt"] for p in prompts + requests], evaluation)
    with pytest.raises(ValueError, match="overlaps"):
        check_disjoint(["Please answer: " + evaluation[0]], evaluation)


def test_data_time_of_an_interrupted_run_is_kept_for_the_resumed_one(tmp_path, monkeypatch):
    def interrupted(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(answers, "generate_data", interrupted)
    with pytest.raises(KeyboardInterrupt):
        answers.answered_prompts(None, None, None, [], tmp_path)
    first = float((tmp_path / "data_seconds.txt").read_text())
    row = {"id": "p", "category": "test", "sampled": False, "prompt_ids": [1], "answer_ids": [2]}
    monkeypatch.setattr(answers, "generate_data", lambda cfg, target, tokenizer, evaluation, store, states: store.add([row]))
    assert answers.answered_prompts(None, None, None, [], tmp_path)[1] * 60 > first > 0
    # a rerun that finds every answer on disk only reads them: its time does not count
    answered = float((tmp_path / "data_seconds.txt").read_text())
    monkeypatch.setattr(answers, "generate_data", lambda *_: time.sleep(0.01) or ["row"])
    assert answers.answered_prompts(None, None, None, [], tmp_path)[1] * 60 == pytest.approx(answered)  # x / 60 * 60 may round


def test_self_written_prompts_come_from_the_user_turn_and_keep_only_finished_new_ones(tmp_path, monkeypatch, caplog):
    """Magpie: the target samples from its chat template cut where the user's text starts; a request
    is kept when it ended with EOS, has a few words and shares no span with an evaluation prompt."""
    tokenizer, model = byte_tokenizer(), tiny("llama")
    eos = tokenizer.convert_tokens_to_ids("<eos>")
    model.generation_config.eos_token_id = eos
    evaluation = load_prompts()[0]["messages"][0]["content"]
    texts = ["How do I keep my bike chain clean?", "An unfinished request with no end", "Too short", evaluation]
    seen = {}

    def fake_answer(prompts, cfg, target, tok, store, sampled_share, temperature=None):
        seen.update(ids=[p["input_ids"] for p in prompts], share=sampled_share)
        for p, text in zip(prompts, texts):
            store.done[p["id"]] = {"answer_ids": tok.encode(text) + ([] if "unfinished" in text else [eos])}

    monkeypatch.setattr(answers, "answer", fake_answer)
    cfg = OmegaConf.create({"data": {"self_written": 4}})
    with caplog.at_level(logging.WARNING):
        assert answers.self_written_prompts(cfg, model, tokenizer, AnswerStore(tmp_path), set()) == []
    assert "no chat template" in caplog.text and not seen
    tokenizer.chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}<assistant>"
    spans = evaluation_spans([evaluation])
    prompts = answers.self_written_prompts(cfg, model, tokenizer, AnswerStore(tmp_path), spans)
    assert [tokenizer.decode(ids) for ids in seen["ids"]] == ["<user>"] * 4 and seen["share"] == 1.0
    assert [p["prompt"] for p in prompts] == [texts[0]] and prompts[0]["category"] == "self-written"


def test_training_dtypes_name_their_knob_and_warn_where_bf16_is_emulated(monkeypatch, caplog):
    with pytest.raises(ConfigError, match="unknown data.dtype 'bf17'"):
        cpu_dtype("bf17", "data.dtype")
    cpu_dtype.cache_clear()
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    with caplog.at_level(logging.WARNING):
        assert cpu_dtype("float32", "data.dtype") == torch.float32 and not caplog.text
        assert cpu_dtype("bfloat16", "data.dtype") == torch.bfloat16
    assert "set data.dtype=float32" in caplog.text
    cpu_dtype.cache_clear()
