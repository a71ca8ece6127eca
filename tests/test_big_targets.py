"""Big targets (specdec.placement): a tiny target split by model.device_map across the CPU and disk
(offloaded to a folder) decodes with the baseline and with drafts exactly as the whole model does;
what cannot run on a dispatched target is refused with one line that names the fix."""

import random

import pytest
import torch
from conftest import mimic_eagle, random_prompt
from omegaconf import OmegaConf

from specdec import ConfigError, Decoder, GenerationConfig
from specdec.drafts.draft_model import borrow_embeddings, layer_skip_draft
from specdec.drafts.medusa_heads import MedusaHeads
from specdec.models import load_model
from specdec.placement import Placement, dispatched, execution_device
from specdec.runtime.prepare import Runtime, prepare, prepare_strategy
from specdec.strategies import create_strategy
from specdec.tiny import byte_tokenizer, tiny_random_model

SPLIT = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk", "model.layers.2": "disk",
         "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
STOCK = Runtime(layers="stock", linear="stock")


@pytest.fixture(scope="module")
def targets(tmp_path_factory):
    """(the whole tiny target, the same weights loaded from disk through SPLIT)."""
    directory = tmp_path_factory.mktemp("tiny")
    whole = tiny_random_model("llama")
    whole.save_pretrained(directory)
    byte_tokenizer().save_pretrained(directory)
    placement = Placement(device_map=SPLIT, offload_folder=str(directory / "offload"), attn_implementation="sdpa")
    split, _ = load_model(str(directory), torch.device("cpu"), torch.float32, placement)
    assert dispatched(split) and split.model.layers[1].self_attn.q_proj.weight.device.type == "meta"
    assert execution_device(split) == torch.device("cpu")
    return whole, split


def decode(model, strategy: str, prompt, config, runtime=STOCK, **options):
    s = prepare_strategy(create_strategy(strategy, target_model=model, **options), runtime)
    return Decoder(prepare(model, runtime), s, eos_token_ids={model.config.eos_token_id}).generate(prompt, config)


def test_a_split_target_decodes_as_the_whole_one(targets):
    whole, split = targets
    draft_model = tiny_random_model("llama", seed=1, num_hidden_layers=1)
    eagle = mimic_eagle(whole)  # mostly right: it runs the target's layers one token behind
    borrow_embeddings(eagle.lm, split)  # with the split target's embedding and head (on the CPU)
    heads = MedusaHeads(64, 258, num_heads=2)
    rng = random.Random("split")
    for trial in range(2):
        prompt, config = random_prompt(rng, 20), GenerationConfig(max_new_tokens=12)
        expected = decode(whole, "baseline", prompt, config).token_ids
        assert decode(split, "baseline", prompt, config).token_ids == expected
        assert decode(split, "draft", prompt, config, draft_model=draft_model, gamma=3).token_ids == expected
        got = decode(split, "eagle", prompt, config, draft=eagle, gamma=2, stop_below_prob=0, tree_nodes=4, tree_topk=2)
        assert got.token_ids == expected and max(s.accepted for s in got.metrics.steps) >= 1
        # the draft is prepared (fused) as usual; only the dispatched target runs stock
        fused_draft = decode(split, "eagle", prompt, config, draft=eagle, gamma=2)
        assert fused_draft.token_ids == expected
        assert decode(split, "medusa", prompt, config, heads=heads, tree=[[0], [1], [0, 0]]).token_ids == expected


def test_a_split_target_refuses_what_it_cannot_run(targets):
    _, split = targets
    with pytest.raises(ConfigError, match="runtime.layers=stock runtime.linear=stock"):
        prepare(split, Runtime())  # fused layers would escape accelerate's hooks
    with pytest.raises(ConfigError, match="the layer-skip self-draft shares the target's first layers"):
        layer_skip_draft(split, 2)  # layer 1 is on disk


PLACEMENTS = [  # settings of the model config node, a fragment of the error
    ({"device_map": "everywhere"}, "unknown model.device_map 'everywhere'"),
    ({"device_map": {"model.layers.0": "tpu"}}, "model.device_map must map module names to devices"),
    ({"device_map": {}}, "model.device_map must map module names to devices"),
    ({"device_map": {"lm_head": "disk"}}, "puts modules on disk: set model.offload_folder=DIR"),
    ({"device_map": {"lm_head": 0}}, "names GPUs (0) but no CUDA GPU is visible"),
    ({"max_memory": {"cpu": "1GiB"}}, "model.max_memory bounds the automatic device maps: add model.device_map=auto"),
    ({"device_map": "auto", "max_memory": {"cpu": "lots"}}, "model.max_memory must map devices (GPU indices, cpu)"),
    ({"attn_implementation": "fast"}, "unknown model.attn_implementation 'fast'"),
    ({"offload_folder": 3}, "model.offload_folder must be a directory path"),
]


@pytest.mark.parametrize("settings,fragment", PLACEMENTS)
def test_bad_placements_get_one_line(settings, fragment):
    if "GPUs" in fragment and torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(ConfigError) as caught:
        Placement.of(OmegaConf.create({"name_or_path": "x", **settings}))
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_a_device_map_needs_the_stock_runtime_before_anything_loads():
    with pytest.raises(ConfigError, match="add runtime.layers=stock runtime.linear=stock"):
        Placement(device_map="auto").check_runtime(Runtime())
    Placement(device_map="auto").check_runtime(STOCK)


def test_the_tiny_alias_dispatches_too(tmp_path):
    model, _ = load_model("tiny-random", torch.device("cpu"), torch.float32,
                          Placement(device_map="auto", max_memory={"cpu": "1GiB"}, attn_implementation="eager"))
    assert model.config._attn_implementation == "eager" and model.hf_device_map
    prompt, config = [5, 6, 7], GenerationConfig(max_new_tokens=6)
    whole = tiny_random_model("llama", max_position_embeddings=2048)
    assert decode(model, "baseline", prompt, config).token_ids == decode(whole, "baseline", prompt, config).token_ids
