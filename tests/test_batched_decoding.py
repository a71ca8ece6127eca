"""Batched decoding is lossless row by row: at batch sizes 1, 2, 4 and 7, every prompt's tokens
equal the same prompt decoded alone, for every strategy, on six architectures. Prompts have
different lengths, rows end mid-batch on EOS, a stop string or max_new_tokens, and the queue
is longer than the batch, so freed rows are refilled while others are mid-sequence. In
float64, so that the number of rows in a pass cannot change an argmax."""

import copy
import functools
import random

import pytest
from conftest import ARCHITECTURES, mimic_eagle, random_eagle, random_prompt, tiny
from test_medusa import MEDUSA_ARCHS, random_heads

from caching.prefix import PrefixCache
from specdec import ConfigError, Decoder, GenerationConfig
from specdec.drafts.draft_model import layer_skip_draft
from specdec.runtime.prepare import Runtime, prepare_once, prepare_strategy
from specdec.strategies import create_strategy
from specdec.tiny import byte_tokenizer

BATCH_SIZES = (1, 2, 4, 7)
PROMPTS = 9  # more than the largest batch: rows are refilled from the queue


@functools.cache
def tiny64(arch: str):
    return copy.deepcopy(tiny(arch)).double()


def strategies(arch: str, model) -> dict:
    """name -> options, for each strategy (drafts right about half the time, or more)."""
    options = {
        "baseline": ("baseline", {}),
        "draft": ("draft", {"draft_model": layer_skip_draft(model, 1), "gamma": 3}),
        "draft_heuristic": ("draft", {"draft_model": model, "gamma": 2, "gamma_schedule": "heuristic",
                                      "stop_below_prob": 0.3}),
        "prompt_lookup": ("prompt_lookup", {"max_ngram": 2, "num_tokens": 3}),
        "eagle": ("eagle", {"target_model": model, "draft": random_eagle(model, 3), "gamma": 3}),
        "eagle_tree": ("eagle", {"target_model": model, "draft": mimic_eagle(model), "gamma": 3, "tree_nodes": 6,
                                 "tree_topk": 2, "stop_below_prob": 0}),
    }
    if arch in MEDUSA_ARCHS:
        options["medusa"] = ("medusa", {"target_model": model, "heads": random_heads(model, 1).double(),
                                        "tree": [[0], [1], [0, 0], [0, 1], [1, 0], [0, 0, 0]]})
    return options


def batch_inputs(model, seed: str, tokenizer):
    """PROMPTS prompts of different lengths, and a config whose EOS and stop string end some rows early."""
    rng = random.Random(seed)
    prompts = [random_prompt(rng, 40) for _ in range(PROMPTS)]
    free = Decoder(model, create_strategy("baseline"), eos_token_ids=set()).generate(
        prompts[0], GenerationConfig(max_new_tokens=24)).token_ids
    eos = {free[6]}  # met by row 0 mid-sequence (and by others, by chance)
    text = tokenizer.decode(Decoder(model, create_strategy("baseline"), eos_token_ids=set()).generate(
        prompts[1], GenerationConfig(max_new_tokens=24)).token_ids)
    stop = next(text[i : i + 2] for i in range(4, len(text) - 1) if text[i : i + 2].strip())
    return prompts, eos, GenerationConfig(max_new_tokens=20, stop_strings=[stop])


def check_rows_equal_alone(model, name: str, strategy_name: str, options: dict, seed: str,
                           runtime: Runtime | None = None) -> set:
    """The rows' tokens at every batch size equal each prompt's alone; returns how rows ended."""
    tokenizer = byte_tokenizer()
    prompts, eos, config = batch_inputs(model, seed, tokenizer)
    strategy = create_strategy(strategy_name, **options)
    if runtime is not None:  # as experiments.run lays them out
        prepared = {}
        model, strategy = prepare_once(model, runtime, prepared), prepare_strategy(strategy, runtime, prepared)
    decoder = Decoder(model, strategy, tokenizer, eos_token_ids=eos)
    alone = [decoder.generate(p, config) for p in prompts]
    reasons = {r.stop_reason for r in alone}
    for batch_size in BATCH_SIZES:
        batched = decoder.generate_batch(prompts, config, batch_size=batch_size)
        for i, (one, row) in enumerate(zip(alone, batched)):
            assert row.token_ids == one.token_ids, (name, batch_size, i)
            assert row.stop_reason == one.stop_reason and row.metrics.new_tokens == len(one.token_ids)
    return reasons


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_row_equals_its_prompt_decoded_alone(arch):
    model = tiny64(arch)
    reasons = set()
    for name, (strategy_name, options) in strategies(arch, model).items():
        reasons |= check_rows_equal_alone(model, name, strategy_name, options, f"{arch}-{name}")
    assert reasons == {"eos", "stop_string", "length"}  # every way a row can end happened mid-batch


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_fused_layers_decode_rows_as_alone(arch):
    """Our fused layers and row products (runtime defaults) take the per-row masks too."""
    model = tiny64(arch)
    for name, (strategy_name, options) in strategies(arch, model).items():
        check_rows_equal_alone(model, name, strategy_name, options, f"fused-{arch}-{name}", Runtime(linear="few_rows"))


def test_batch_results_keep_prompt_order_and_their_own_metrics():
    model = tiny64("llama")
    decoder = Decoder(model, create_strategy("draft", draft_model=layer_skip_draft(model, 1), gamma=3),
                      eos_token_ids=set())
    prompts = [[5] * n for n in (3, 30, 1, 12)]
    lengths = [4, 9, 1, 6]
    results = [decoder.generate_batch([p], GenerationConfig(max_new_tokens=m))[0] for p, m in zip(prompts, lengths)]
    batched = decoder.generate_batch(prompts, GenerationConfig(max_new_tokens=9), batch_size=3)
    for result, alone, length in zip(batched, results, lengths):
        assert result.metrics.prompt_tokens == alone.metrics.prompt_tokens
        assert len(result.token_ids) == 9 and result.token_ids[:length] == alone.token_ids
        assert result.metrics.target_forwards == 1 + len(result.metrics.steps)


@pytest.mark.parametrize("bad, message", [
    (0, "generation.batch_size must be an integer >= 1 (got 0)"),
    (-2, "generation.batch_size must be an integer >= 1"),
    (2.5, "generation.batch_size must be an integer >= 1"),
    (True, "generation.batch_size must be an integer >= 1"),
])
def test_bad_batch_sizes_are_refused(bad, message):
    decoder = Decoder(tiny("llama"), create_strategy("baseline"), eos_token_ids=set())
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        decoder.generate_batch([[1, 2]], GenerationConfig(max_new_tokens=2), batch_size=bad)


def test_dynamic_cache_cannot_batch():
    decoder = Decoder(tiny("llama"), create_strategy("baseline"), eos_token_ids=set(), kv_cache="dynamic")
    with pytest.raises(ConfigError, match="batch_size > 1 needs runtime.kv_cache=preallocated"):
        decoder.generate_batch([[1, 2], [3]], GenerationConfig(max_new_tokens=2), batch_size=2)


def test_a_prompt_that_does_not_fit_the_context_is_refused_before_any_work():
    model = tiny("llama")
    context = model.config.max_position_embeddings
    decoder = Decoder(model, create_strategy("baseline"), eos_token_ids=set())
    with pytest.raises(ConfigError, match="exceeds the model's context"):
        decoder.generate_batch([[1, 2], [1] * context], GenerationConfig(max_new_tokens=2), batch_size=2)
    assert 2 not in decoder.targets  # refused before a cache for two rows was made


@pytest.mark.parametrize("strategy_name", ["baseline", "draft", "eagle"])
def test_rows_prefill_through_the_prefix_cache(strategy_name):
    """Rows that share a system prompt hit the radix cache, each row loading into its own slot; the
    tokens equal each prompt decoded alone without a cache."""
    model = tiny64("llama")
    name, options = strategies("llama", model)[strategy_name]
    rng = random.Random(strategy_name)
    system = random_prompt(rng, 40) + [7] * 20
    prompts = [system + random_prompt(rng, 12) for _ in range(7)]
    config = GenerationConfig(max_new_tokens=12)
    alone = Decoder(model, create_strategy(name, **options), eos_token_ids=set())
    expected = [alone.generate(p, config).token_ids for p in prompts]
    cache = PrefixCache(max_bytes=10**8)
    cached = Decoder(model, create_strategy(name, **options), eos_token_ids=set(), prefix_cache=cache)
    results = cached.generate_batch(prompts, config, batch_size=3)
    assert [r.token_ids for r in results] == expected
    assert sum(r.metrics.cached_prompt_tokens >= len(system) for r in results) >= 4  # later rows hit the system prompt
