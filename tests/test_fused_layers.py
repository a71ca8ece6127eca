"""runtime.layers=fused: FusedDecoderLayer computes the stock layer's function (padded batches,
cached steps, tree masks, both KV caches), stores no weight twice, leaves the models it does
not know stock, and every strategy's greedy output is the stock model's."""

import random

import pytest
import torch
from conftest import decode_with, random_prompt, tiny

from specdec import ConfigError, GenerationConfig
from specdec.runtime.cached_model import CachedModel
from specdec.runtime.fused_layers import FusedDecoderLayer, fuse_decoder_layers
from specdec.drafts.medusa_heads import MedusaHeads
from specdec.drafts.draft_model import layer_skip_draft
from specdec.runtime.prepare import Runtime, prepare
from specdec.tiny import tiny_random_model
from specdec.tree import Tree

FUSED_ARCHS = ["llama", "qwen2", "mistral"]
WIDE = [[0], [1], [2], [0, 0], [0, 1], [1, 0], [0, 0, 0]]


def stock_and_fused(arch: str, attention: str = "sdpa"):
    model = tiny_random_model(arch)  # a fresh model, not conftest's shared one: this one is changed
    model.set_attn_implementation(attention)  # eager gives float masks, SDPA boolean ones
    with torch.no_grad():  # Qwen2's q, k and v have biases, zero at initialization: make them count
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_()
    fused = prepare(model, Runtime(linear="stock"))
    assert sum(isinstance(m, FusedDecoderLayer) for m in fused.modules()) == model.config.num_hidden_layers
    return model, fused


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("arch", FUSED_ARCHS)
def test_logits_equal_the_stock_layers_on_a_padded_batch(arch, attention):
    model, fused = stock_and_fused(arch, attention)
    ids = torch.randint(0, 256, (3, 17))
    mask = torch.ones_like(ids)
    mask[1, :6] = 0  # left padding
    with torch.no_grad():
        expected, got = (m(ids, attention_mask=mask).logits for m in (model, fused))
    torch.testing.assert_close(got[mask.bool()], expected[mask.bool()], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("kv_cache", ["preallocated", "dynamic"])
@pytest.mark.parametrize("arch", FUSED_ARCHS)
def test_cached_steps_and_tree_passes_equal_the_stock_layers(arch, kv_cache, attention):
    model, fused = stock_and_fused(arch, attention)
    rng = random.Random(arch)
    runs = [CachedModel(m, kv_cache) for m in (model, fused)]
    tree = Tree(WIDE)
    prompt = random_prompt(rng, 30)
    steps = [torch.tensor([rng.randrange(256) for _ in range(k)]) for k in (1, 1, 3, 5)]
    nodes = torch.tensor([rng.randrange(256) for _ in range(tree.size + 1)])
    outputs = []
    for cached in runs:
        logits = [cached.prefill(prompt)[0]] + [cached.forward(step) for step in steps]
        logits.append(cached.forward(nodes, tree=tree))
        outputs.append(logits)
    for expected, got in zip(*outputs):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    for expected, got in zip(runs[0].cache.layers, runs[1].cache.layers):
        torch.testing.assert_close(got.keys, expected.keys, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(got.values, expected.values, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", FUSED_ARCHS)
def test_every_strategy_gives_the_stock_models_greedy_tokens(arch):
    model, fused = stock_and_fused(arch)
    heads = MedusaHeads(model.config.hidden_size, model.config.vocab_size, 3).eval()  # identity heads
    drafts = {model: layer_skip_draft(model, 1)}  # as experiments.run builds them: from the stock target
    drafts[fused] = prepare(drafts[model], Runtime(linear="stock"))
    rng = random.Random(arch)
    for trial in range(3):
        prompt, config = random_prompt(rng), GenerationConfig(max_new_tokens=rng.randint(5, 30))
        for name, options in [
            ("baseline", lambda m: {}),
            ("draft", lambda m: {"draft_model": drafts[m], "gamma": 3}),
            ("prompt_lookup", lambda m: {}),
            ("medusa", lambda m: {"target_model": m, "heads": heads, "tree": WIDE}),
        ]:
            expected, got = (decode_with(m, name, prompt, config, eos=set(), **options(m)).token_ids
                             for m in (model, fused))
            assert got == expected, (name, trial)


def test_weights_are_shared_not_copied():
    model = tiny_random_model("llama")
    values = {name: p.detach().clone() for name, p in model.named_parameters()}
    first, second = prepare(model, Runtime(linear="few_rows")), prepare(model, Runtime(linear="few_rows"))
    for name, p in model.named_parameters():  # the stock weights keep their values
        assert torch.equal(p, values[name]), name
    attn, mlp = model.model.layers[0].self_attn, model.model.layers[0].mlp
    for fused in (first, second):
        layer = fused.model.layers[0]
        assert layer.qkv.weight.data_ptr() == attn.q_proj.weight.data_ptr()
        assert layer.qkv.weight[-attn.v_proj.out_features:].data_ptr() == attn.v_proj.weight.data_ptr()
        assert layer.gate_up.weight.data_ptr() == mlp.gate_proj.weight.data_ptr()
        assert layer.o_proj.weight is attn.o_proj.weight


@pytest.mark.parametrize("arch", ["gemma", "phi3", "gpt_neox"])
def test_architectures_it_does_not_know_stay_stock(arch):
    model = tiny(arch)
    assert fuse_decoder_layers(prepare(model, Runtime(linear="stock", layers="stock"))) == 0
    prompt, config = [3, 1, 4, 1, 5], GenerationConfig(max_new_tokens=12)
    assert (decode_with(prepare(model), "baseline", prompt, config, eos=set()).token_ids
            == decode_with(model, "baseline", prompt, config, eos=set()).token_ids)


def test_attention_kernels_with_other_mask_forms_stay_stock():
    model = tiny_random_model("llama")  # fresh: its configuration is changed
    model.config._attn_implementation = "flex_attention"  # its masks are BlockMasks, not SDPA's
    assert fuse_decoder_layers(prepare(model, Runtime(linear="stock", layers="stock"))) == 0


def test_unknown_layers_name_the_choices():
    with pytest.raises(ConfigError, match="unknown runtime.layers 'fast'.*fused or stock"):
        prepare(tiny("llama"), Runtime(layers="fast"))
