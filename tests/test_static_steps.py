"""The static KV cache and compiled steps (runtime.kv_cache=static, runtime.compile): every strategy
gives the preallocated cache's tokens, alone and in batches; compiled, it gives the eager tokens and
compiles nothing after its warm-up, over a 512-token generation."""

import functools
import random

import pytest
import torch
from conftest import mimic_eagle, random_prompt, tiny

from specdec import ConfigError, Decoder, GenerationConfig
from specdec.drafts.medusa_heads import MedusaHeads
from specdec.runtime.cached_model import CachedModel
from specdec.runtime.prepare import Runtime, prepare, prepare_once, prepare_strategy
from specdec.runtime.static_step import compile_count
from specdec.strategies import create_strategy

STRATEGIES = ["baseline", "draft", "eagle", "eagle_tree", "medusa", "prompt_lookup"]


def strategy(name: str, target):
    """A strategy whose proposals are often accepted (long verify passes, trees, catch-ups); its
    modules are made once per target, so that compiled graphs are shared between tests."""
    options = {
        "baseline": {}, "draft": {"draft_model": tiny("llama", seed=1, num_hidden_layers=1, max_position_embeddings=1024),
                                  "gamma": 3},
        "eagle": {"target_model": target, "draft": eagle_of(target), "gamma": 3},
        "eagle_tree": {"target_model": target, "draft": eagle_of(target), "gamma": 3, "tree_nodes": 6,
                       "stop_below_prob": 0},
        "medusa": {"target_model": target, "heads": MedusaHeads(target.config.hidden_size, target.config.vocab_size, 3),
                   "tree": [[0], [1], [0, 0], [0, 0, 0]]},
        "prompt_lookup": {"max_ngram": 2, "num_tokens": 4},
    }[name]
    return create_strategy("eagle" if name == "eagle_tree" else name, **options)


@functools.cache
def eagle_of(target):
    return mimic_eagle(target)


PREPARED: dict[Runtime, dict] = {}  # per runtime: every module prepared so far (specdec.runtime.prepare_once)


def decoder(target, name: str, runtime: Runtime, kv_cache: str, max_length=None) -> Decoder:
    prepared = PREPARED.setdefault(runtime, {})
    return Decoder(prepare_once(target, runtime, prepared), prepare_strategy(strategy(name, target), runtime, prepared),
                   eos_token_ids=set(), kv_cache=kv_cache, max_length=max_length)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("name", STRATEGIES)
def test_static_cache_gives_the_preallocated_tokens_alone_and_in_batches(arch, name):
    target = tiny(arch, num_hidden_layers=2)
    rng = random.Random(name)
    prompts = [random_prompt(rng) for _ in range(3)]
    config = GenerationConfig(max_new_tokens=30)
    runtime = Runtime(linear="stock")
    for batch_size in (1, 2):
        expected = decoder(target, name, runtime, "preallocated").generate_batch(prompts, config, batch_size)
        got = decoder(target, name, runtime, "static", max_length=24).generate_batch(prompts, config, batch_size)
        assert [r.token_ids for r in got] == [r.token_ids for r in expected], (name, batch_size)


def test_the_static_cache_grows_when_a_pass_needs_more_room():
    target = tiny("llama", num_hidden_layers=1)
    cached = CachedModel(prepare(target, Runtime(linear="stock")), "static", max_length=8)
    cached.prefill(list(range(40)))
    assert cached.cache.capacity >= 40 + 64 and cached.length == 40
    alone = CachedModel(prepare(target, Runtime(linear="stock")), "preallocated")
    alone.prefill(list(range(40)))
    ids = torch.tensor([1, 2, 3])
    torch.testing.assert_close(cached.forward(ids), alone.forward(ids))


@pytest.mark.parametrize("name", STRATEGIES)
def test_compiled_steps_give_the_eager_tokens_and_never_compile_after_the_warm_up(name):
    target = tiny("llama", num_hidden_layers=1, max_position_embeddings=1024)
    prompt, long = random_prompt(random.Random(name)), GenerationConfig(max_new_tokens=512)
    eager = decoder(target, name, Runtime(linear="few_rows"), "static").generate(prompt, long).token_ids
    compiled = decoder(target, name, Runtime(linear="few_rows", compile=True), "static", len(prompt) + 512 + 64)
    compiled.generate(prompt[:5], GenerationConfig(max_new_tokens=8))  # the warm-up
    before = compile_count()
    assert compiled.generate(prompt, long).token_ids == eager
    assert compile_count() == before
    assert name != "medusa" or compiled.strategy.compiled is not None  # Medusa's heads ran compiled too


@pytest.mark.parametrize("name", ["eagle_tree", "medusa"])
def test_the_cuda_graph_steps_run_on_a_cpu_as_compiled_steps(name):
    """runtime.cuda_graphs needs CUDA, where no test runs. On a CPU, torch.compile's reduce-overhead
    mode compiles without capturing, so the same code (buffers at static addresses, step marks, outputs
    cloned before the next replay) runs here, for the target, the EAGLE draft and Medusa's heads."""
    target = tiny("llama", num_hidden_layers=1, max_position_embeddings=1024)
    prompt, config = random_prompt(random.Random(name)), GenerationConfig(max_new_tokens=64)
    eager = decoder(target, name, Runtime(linear="few_rows"), "static").generate(prompt, config).token_ids
    runtime, prepared = Runtime(linear="few_rows", compile=True), {}  # modules of its own: they change mode
    graphs_target, graphs_strategy = prepare_once(target, runtime, prepared), prepare_strategy(strategy(name, target),
                                                                                               runtime, prepared)
    for module in {id(m): m for copy in prepared.values() for m in copy.modules()}.values():
        if getattr(module, "static_steps", None):
            module.static_steps = "cuda_graphs"
    graphs = Decoder(graphs_target, graphs_strategy, eos_token_ids=set(), kv_cache="static",
                     max_length=len(prompt) + 64 + 64)
    assert graphs.targets[1].static.mode == "cuda_graphs"
    assert graphs.generate(prompt, config).token_ids == eager


def test_compile_needs_the_static_cache_and_fused_layers():
    target = tiny("llama", num_hidden_layers=1)
    with pytest.raises(ConfigError, match="runtime.compile=true needs runtime.kv_cache=static"):
        Decoder(prepare(target, Runtime(linear="stock", compile=True)), create_strategy("baseline"))
    with pytest.raises(ConfigError, match="runtime.kv_cache=static runs fused decoder layers only"):
        CachedModel(prepare(target, Runtime(layers="stock", linear="stock")), "static")
    with pytest.raises(ConfigError, match="runtime.cuda_graphs=true needs a CUDA device"):
        prepare(target, Runtime(linear="stock", cuda_graphs=True))
