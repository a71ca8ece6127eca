"""Public EAGLE-1/2, EAGLE-3 and Medusa-1 checkpoints (specdec.drafts.public): each small random
checkpoint in the exact public layout computes, through our modules, what the public code's
forward computes (tests/public_layouts.py, within 1e-5), and decodes greedily token for token as
the baseline does through every strategy that uses it; bad checkpoints get one line."""

import itertools
import json
import random

import pytest
import torch
from conftest import baseline_and_eos, decode_with, random_prompt, tiny
from public_layouts import (
    eagle1_reference,
    eagle3_reference,
    medusa1_reference,
    write_eagle1,
    write_eagle3,
    write_medusa1,
)

from specdec import ConfigError, Decoder, GenerationConfig
from specdec.drafts.export import export_medusa1
from specdec.drafts.medusa_heads import MedusaHeads
from specdec.drafts.public import layout, load_eagle, load_medusa
from specdec.runtime.cached_model import CachedModel
from specdec.runtime.fused_layers import FusedDecoderLayer, FusedEagle3Layer
from specdec.runtime.prepare import Runtime, prepare, prepare_strategy
from specdec.strategies import create_strategy

TOL = 1e-5


def draft_forward(draft, hidden, tokens):
    """Our draft over one sequence: (the states it feeds back (n, d), its logits (n, V))."""
    embeds = draft.inputs(hidden, tokens)[None]
    with torch.no_grad():
        states = draft.lm.get_decoder()(inputs_embeds=embeds).last_hidden_state[0]
        return states, draft.lm(inputs_embeds=embeds).logits[0]


@pytest.mark.parametrize("layers", [1, 2])
def test_eagle1_forward_matches_the_public_code(tmp_path, layers):
    model = tiny("llama")
    state = write_eagle1(tmp_path, model, layers=layers)
    assert layout(tmp_path) == "eagle"
    draft = load_eagle(tmp_path, model)
    hidden, tokens = torch.randn(9, 64), torch.randint(0, 258, (9,))
    ref_states, ref_logits = eagle1_reference(state, json.loads((tmp_path / "config.json").read_text()), hidden,
                                              tokens, model.lm_head.weight.detach())
    fused = prepare(draft, Runtime(linear="few_rows"))  # runtime.layers=fused, its first layer without input norm
    assert all(isinstance(layer, FusedDecoderLayer) for layer in fused.lm.model.layers)
    for ours in (draft, fused):
        states, logits = draft_forward(ours, hidden, tokens)
        assert (states - ref_states).abs().max() < TOL and (logits - ref_logits).abs().max() < TOL


def test_eagle3_forward_matches_the_public_code(tmp_path):
    model = tiny("llama")
    state = write_eagle3(tmp_path, model)
    assert layout(tmp_path) == "eagle3"
    draft = load_eagle(tmp_path, model, head_tokens=8192)  # its own vocabulary: head_tokens does not apply
    config, embedding = json.loads((tmp_path / "config.json").read_text()), model.get_input_embeddings().weight.detach()
    prompt = torch.randint(0, 258, (1, 10))
    with torch.no_grad():  # the target's features: inputs of layers 2, L // 2, L - 3 (here 0, 1, 2), low to high
        layers = model(prompt, output_hidden_states=True).hidden_states
    features = torch.cat([layers[i][0] for i in sorted({2, 3 // 2, 3 - 3})], dim=-1)
    cached = CachedModel(model, keep_hidden=draft.feature_layers)
    cached.prefill(prompt[0].tolist())
    assert (cached.hidden - features).abs().max() < TOL
    tokens = torch.randint(0, 258, (10,))
    fused = prepare(draft, Runtime(linear="few_rows"))  # runtime.layers=fused: its layer in a few large ops
    assert isinstance(fused.lm.model.layers[0], FusedEagle3Layer)
    for ours, hidden in itertools.product((draft, fused), (features, torch.randn(10, 64))):
        # target features (through fc), then fed-back states (not)
        states, logits = draft_forward(ours, hidden, tokens)
        ref_states, ref_scores, ref_tokens = eagle3_reference(state, config, hidden, tokens, embedding)
        assert (states - ref_states).abs().max() < TOL
        assert (logits[:, ref_tokens] - ref_scores).abs().max() < TOL
        outside = torch.ones(258, dtype=torch.bool)
        outside[ref_tokens] = False
        assert torch.isneginf(logits[:, outside]).all()  # a token outside the draft vocabulary is never proposed
        assert torch.equal(logits.argmax(-1), ref_tokens[ref_scores.argmax(-1)])


@pytest.mark.parametrize("layers", [0, 1, 2])
def test_medusa1_forward_matches_the_public_code(tmp_path, layers):
    model = tiny("llama")
    state = write_medusa1(tmp_path, model, heads=3, layers=layers)
    assert layout(tmp_path) == "medusa1"
    heads, _ = load_medusa(tmp_path, model)
    hidden = torch.randn(7, 64)
    with torch.no_grad():
        ours = heads(hidden, model.lm_head)  # (n, K, V): its own projections, not the target's head
    assert (ours.transpose(0, 1) - medusa1_reference(state, 3, layers, hidden)).abs().max() < TOL


def lossless(model, strategy: str, trials: int, prepared: bool = False, kv_cache: str = "preallocated", **options):
    rng = random.Random(f"{strategy}-{options}")
    for trial in range(trials):
        prompt, config = random_prompt(rng), GenerationConfig(max_new_tokens=rng.randint(1, 30))
        expected, eos = baseline_and_eos(model, prompt, config, trial)
        if prepared:  # fused layers and few-row products, as experiments.run runs it
            runtime = Runtime(linear="few_rows")
            s = prepare_strategy(create_strategy(strategy, target_model=model, **options), runtime)
            got = Decoder(prepare(model, runtime), s, eos_token_ids=eos, kv_cache=kv_cache).generate(prompt, config)
        else:
            got = decode_with(model, strategy, prompt, config, eos=eos, target_model=model, **options)
        assert got.token_ids == expected.token_ids, (strategy, trial, options)
        assert got.stop_reason == expected.stop_reason


@pytest.mark.parametrize("writer", [write_eagle1, write_eagle3])
def test_greedy_public_eagle_equals_the_baseline(tmp_path, writer):
    model = tiny("llama")
    writer(tmp_path, model)
    lossless(model, "eagle", 3, draft=str(tmp_path), head_tokens=None, gamma=3)  # chains
    lossless(model, "eagle", 3, draft=str(tmp_path), head_tokens=None, gamma=3, tree_nodes=8, tree_topk=3,
             stop_below_prob=0)  # EAGLE-2 trees
    for kv_cache in ("preallocated", "static"):  # static: fixed shapes, what compile and CUDA graphs run
        lossless(model, "eagle", 2, prepared=True, kv_cache=kv_cache, draft=str(tmp_path), head_tokens=None, gamma=2,
                 tree_nodes=5, tree_topk=2, stop_below_prob=0)


def test_greedy_public_medusa_equals_the_baseline(tmp_path):
    model = tiny("llama")
    write_medusa1(tmp_path, model, heads=3, layers=1)
    lossless(model, "medusa", 3, heads=str(tmp_path), tree=[[0], [1], [0, 0], [0, 1], [0, 0, 0]])
    lossless(model, "medusa", 2, prepared=True, heads=str(tmp_path), tree=None, head_tokens=8192)


def _bad(tmp_path, kind: str):
    """A directory holding a damaged checkpoint of one kind, and the loader that must refuse it."""
    model = tiny("llama")
    if kind == "no config":
        write_eagle1(tmp_path, model)
        (tmp_path / "config.json").unlink()
    elif kind == "no weights":
        write_eagle1(tmp_path, model)
        (tmp_path / "pytorch_model.bin").unlink()
    elif kind == "unknown layout":
        torch.save({"something.weight": torch.zeros(2)}, tmp_path / "pytorch_model.bin")
        (tmp_path / "config.json").write_text("{}")
    elif kind == "pickled object":
        (tmp_path / "config.json").write_text("{}")
        torch.save({"fc.weight": torch.zeros(2), "extra": Evil()}, tmp_path / "pytorch_model.bin")
    elif kind == "wider target":
        write_eagle1(tmp_path, tiny("llama", hidden_size=32, intermediate_size=64))
    elif kind == "other vocabulary":
        write_eagle3(tmp_path, tiny("llama", vocab_size=300))
    elif kind == "missing tensor":
        state = write_eagle1(tmp_path, model)
        del state["layers.0.mlp.up_proj.weight"]
        torch.save(state, tmp_path / "pytorch_model.bin")
    elif kind == "bad d2t":
        write_eagle3(tmp_path, model)
        from safetensors.torch import load_file, save_file
        state = load_file(tmp_path / "model.safetensors")
        state["d2t"] = torch.zeros_like(state["d2t"])  # every row the same token... of row 0 and up: 1 repeat
        state["d2t"][1] = -1
        save_file(state, tmp_path / "model.safetensors")
    elif kind == "medusa for another vocabulary":
        write_medusa1(tmp_path, tiny("llama", vocab_size=300))
    elif kind == "medusa config":
        write_medusa1(tmp_path, model)
        (tmp_path / "config.json").write_text(json.dumps({"medusa_num_heads": 0, "medusa_num_layers": 1}))
    elif kind == "heads given as a draft":
        write_medusa1(tmp_path, model)
    return model


class Evil:
    def __reduce__(self):
        return (print, ("unpickled!",))


BAD = [  # what the directory holds, the loader, a fragment of the one-line error
    ("no config", load_eagle, "no config.json"),
    ("no weights", load_eagle, "no weights in"),
    ("unknown layout", load_eagle, "unknown checkpoint layout"),
    ("pickled object", load_eagle, "as plain tensors (UnpicklingError"),
    ("wider target", load_eagle, "is for a target of width 32 and vocabulary 258"),
    ("other vocabulary", load_eagle, "vocabulary 300"),
    ("missing tensor", load_eagle, "missing ['lm.model.layers.0.mlp.up_proj.weight']"),
    ("bad d2t", load_eagle, "does not name 100 different target tokens"),
    ("medusa for another vocabulary", load_medusa, "onto a vocabulary of 300"),
    ("medusa config", load_medusa, "must give medusa_num_heads >= 1"),
    ("heads given as a draft", load_eagle, "holds Medusa heads (Medusa-1), not what strategy=eagle takes as "
                                           "strategy.draft: give it to strategy=medusa as strategy.heads"),
]


@pytest.mark.parametrize("kind,loader,fragment", BAD)
def test_bad_checkpoints_get_one_line(tmp_path, capsys, kind, loader, fragment):
    model = _bad(tmp_path, kind)
    with pytest.raises(ConfigError) as caught:
        loader(tmp_path, model)
    message = str(caught.value)
    assert fragment in message and "\n" not in message, message
    assert "unpickled!" not in capsys.readouterr().out


def test_a_missing_directory_and_an_unreachable_hub_id(tmp_path):
    model = tiny("llama")
    with pytest.raises(ConfigError, match="no EAGLE draft in .* \\(not a directory\\): train one with"):
        load_eagle(tmp_path / "nothing" / "here", model)
    with pytest.raises(ConfigError, match="is no local directory and cannot be downloaded from the hub"):
        load_medusa("no-such-owner/no-such-heads", model)  # the tests' hub is offline (conftest)


def test_our_medusa_heads_export_to_medusa1_and_load_back(tmp_path):
    """Heads sharing the target's head, exported in Medusa-1's layout, compute what they computed."""
    model = tiny("llama")
    heads = MedusaHeads(64, 258, num_heads=3, num_layers=1)
    with torch.no_grad():
        for block in heads.blocks:
            block[0].linear.weight.normal_(0, 0.1)
            block[0].linear.bias.normal_(0, 0.1)
    export_medusa1(heads, model.lm_head, tmp_path, "tiny-random")
    assert layout(tmp_path) == "medusa1"
    loaded, _ = load_medusa(tmp_path, model)
    hidden = torch.randn(5, 64)
    with torch.no_grad():
        assert (loaded(hidden, model.lm_head) - heads(hidden, model.lm_head)).abs().max() < TOL
    two = MedusaHeads(64, 258, num_heads=2, num_layers=2)
    with torch.no_grad():
        two.blocks[1][1].linear.bias.fill_(0.5)  # head 1's two blocks differ: Medusa-1 cannot hold them
    with pytest.raises(ConfigError, match="head 1's 2 blocks differ"):
        export_medusa1(two, model.lm_head, tmp_path / "two", "tiny-random")
