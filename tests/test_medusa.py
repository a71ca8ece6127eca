"""Medusa: candidate trees (mask, positions, paths) against brute-force references, greedy
output equal to the baseline token for token on several architectures and trees, the KV
cache after path compaction equal to a fresh prefill, heads saved and loaded, clear errors."""

import itertools
import json
import random

import pytest
import torch
from conftest import baseline_and_eos, decode_with, random_prompt, tiny
from safetensors.torch import load_file

from experiments.medusa_trees import accepted_per_pass, answer_ranks

from specdec import ConfigError, Decoder, GenerationConfig
from specdec.runtime.cached_model import CachedModel
from specdec.drafts.assets import SHIPPED
from specdec.drafts.medusa_heads import MedusaHeads, load_medusa_heads, save_medusa_heads
from specdec.runtime.few_row_linear import FewRowLinear
from experiments.summary import summarize
from specdec.drafts.assets import save_token_frequencies
from specdec.runtime.prepare import Runtime, prepare_strategy
from specdec.strategies import create_strategy
from specdec.tiny import tiny_random_model
from specdec.tree import Tree, best_tree, chain
from specdec.verify import tree_greedy

WIDE = [[0], [1], [2], [3], [0, 0], [0, 1], [1, 0], [2, 0], [0, 0, 0]]
DEFAULT_LIKE = best_tree([[0.5, 0.15, 0.08, 0.05], [0.3, 0.1, 0.06], [0.2, 0.08], [0.12]], 12)
TREES = {"chain": chain(4), "wide": WIDE, "default": DEFAULT_LIKE}
MEDUSA_ARCHS = ["llama", "qwen2", "mistral", "phi3"]


def random_tree(rng: random.Random, size: int) -> list[list[int]]:
    nodes = set()
    while len(nodes) < size:
        path = (rng.randrange(3),)
        while path in nodes and len(path) < 4:
            path += (rng.randrange(3),)
        nodes.add(path)
        nodes.update(path[:i] for i in range(1, len(path)))
    return [list(p) for p in nodes]


def ancestors_by_walking(tree: Tree, row: int) -> set[int]:
    chain_of_rows = {row}
    while tree.parents[row] >= 0:
        row = tree.parents[row]
        chain_of_rows.add(row)
    return chain_of_rows


@pytest.mark.parametrize("seed", range(8))
def test_mask_positions_and_paths_match_a_brute_force_reference(seed):
    rng = random.Random(seed)
    choices = random_tree(rng, rng.randint(1, 14)) if seed > 2 else list(TREES.values())[seed]
    tree = Tree(choices)
    rows = {(): 0, **{tuple(p): i + 1 for i, p in enumerate(tree.choices)}}
    assert sorted(map(tuple, tree.choices)) == sorted(map(tuple, choices))
    for path, row in rows.items():  # a node's parent is the node of its path minus the last rank
        assert tree.depths[row] == len(path)
        if path:
            assert tree.parents[row] == rows[path[:-1]]
    cached = rng.randint(0, 5)
    mask = tree.attention_mask(cached, torch.float32, "cpu")[0, 0]
    positions = tree.position_ids(cached, "cpu")[0]
    for i, j in itertools.product(range(tree.size + 1), range(cached + tree.size + 1)):
        visible = j < cached or (j - cached) in ancestors_by_walking(tree, i)
        assert (mask[i, j] == 0) == visible, (i, j)
    assert positions.tolist() == [cached + d for d in tree.depths]
    leaves = {row for row in range(1, tree.size + 1) if row not in tree.parents}
    expected_paths = sorted(sorted(ancestors_by_walking(tree, leaf)) for leaf in leaves)
    got = sorted([r for r in path if r >= 0] for path in tree.leaf_paths.tolist())
    assert got == expected_paths


def test_best_tree_takes_the_likeliest_nodes():
    accuracies = [[0.6, 0.2, 0.1], [0.4, 0.2], [0.3]]
    tree = best_tree(accuracies, 6)
    every = [list(p) for d in range(1, 4) for p in itertools.product(*(range(len(a)) for a in accuracies[:d]))]
    chance = {tuple(p): torch.tensor([accuracies[i][r] for i, r in enumerate(p)]).prod().item() for p in every}
    assert len(tree) == 6
    assert min(chance[tuple(p)] for p in tree) >= max(chance[tuple(p)] for p in every if p not in tree) - 1e-12
    Tree(tree)  # prefix-closed


@pytest.mark.parametrize("bad, message", [
    ([], "distinct paths"), ([[0], [0]], "distinct paths"), ([[0, 1]], "no parent"),
    ([[-1]], "ranks >= 0"), ([[]], "non-empty"),
])
def test_bad_trees_are_refused_with_the_fix(bad, message):
    with pytest.raises(ConfigError, match=message):
        Tree(bad)


def random_heads(model, seed: int, num_heads: int = 4, shared: bool = True) -> MedusaHeads:
    config = model.config
    heads = MedusaHeads(config.hidden_size, config.vocab_size, num_heads, 1, shared)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in heads.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    return heads.eval()


@pytest.mark.parametrize("tree_name", list(TREES))
@pytest.mark.parametrize("arch", MEDUSA_ARCHS)
def test_greedy_medusa_equals_the_baseline(arch, tree_name):
    model = tiny(arch)
    rng = random.Random(f"{arch}-{tree_name}")
    for trial in range(4):
        prompt, config = random_prompt(rng), GenerationConfig(max_new_tokens=rng.randint(1, 40))
        expected, eos = baseline_and_eos(model, prompt, config, trial)
        heads = random_heads(model, trial, shared=trial % 2 == 0)
        got = decode_with(model, "medusa", prompt, config, eos=eos, target_model=model, heads=heads,
                          tree=TREES[tree_name])
        assert got.token_ids == expected.token_ids, (arch, tree_name, trial)
        assert got.stop_reason == expected.stop_reason


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_tree_sweep_from_the_baseline_answer_equals_decoding(arch):
    """experiments.medusa_trees: the passes it derives from the baseline's greedy answer and the
    heads' ranks there are the passes decoding with the tree makes, one by one (fresh heads accept
    often on a repetitive prompt, random heads seldom; EOS mid-answer and the token budget end runs)."""
    model = tiny(arch)
    rng = random.Random(arch)
    for trial in range(6):
        prompt = [5] * 30 if trial % 3 == 0 else random_prompt(rng)
        config = GenerationConfig(max_new_tokens=rng.randint(1, 40))
        expected, eos = baseline_and_eos(model, prompt, config, trial)
        heads = MedusaHeads(model.config.hidden_size, model.config.vocab_size, 4) if trial % 2 == 0 \
            else random_heads(model, trial)
        for tree in TREES.values():
            strategy = create_strategy("medusa", target_model=model, heads=heads, tree=tree)
            result = Decoder(model, strategy, eos_token_ids=eos).generate(prompt, config)
            assert result.token_ids == expected.token_ids
            passes = accepted_per_pass(answer_ranks(strategy, model, prompt, expected.token_ids), tree,
                                       config.max_new_tokens)
            metrics = result.metrics.to_dict()
            assert passes == metrics["accepted_per_step"] and 1 + len(passes) == metrics["target_forwards"]


def test_fresh_heads_and_the_metrics_of_a_tree_strategy():
    """Fresh heads are the identity (each guesses the LM head's token again); the records carry
    tree depths, per-depth acceptance and each head's accuracy, and no chain acceptance rate."""
    model = tiny("llama")
    heads = MedusaHeads(model.config.hidden_size, model.config.vocab_size, 3)  # identity heads
    prompt, config = [5] * 30, GenerationConfig(max_new_tokens=40)
    decoder = Decoder(model, create_strategy("medusa", target_model=model, heads=heads, tree=chain(3)), eos_token_ids=set())
    result = decoder.generate(prompt, config)
    assert result.token_ids == decode_with(model, "baseline", prompt, config, eos=set()).token_ids
    record = {**result.metrics.to_dict(), "token_ids": result.token_ids, "greedy": True}
    summary = summarize([record], None)
    assert summary["acceptance_rate"] is None  # a tree's nodes are alternatives
    assert len(summary["per_position_acceptance"]) >= 1
    assert len(summary["head_accuracy"]) == 3 and all(0 <= a <= 1 for a in summary["head_accuracy"])
    assert max(d for d in record["depth_per_step"] if d is not None) == 3


@pytest.mark.parametrize("kv_cache", ["preallocated", "dynamic"])
@pytest.mark.parametrize("arch", MEDUSA_ARCHS)
def test_cache_after_compaction_equals_a_fresh_prefill(arch, kv_cache):
    model = tiny(arch)
    tree = Tree(WIDE)
    rng = random.Random(arch)
    prompt = random_prompt(rng, 20)
    nodes = torch.tensor([rng.randrange(256) for _ in range(tree.size + 1)])  # root + nodes
    cached = CachedModel(model, kv_cache)
    cached.prefill(prompt)
    cached.forward(nodes, tree=tree)
    rows = tree.leaf_paths[3][tree.leaf_paths[3] >= 0].tolist()[:3]  # a root-to-node path
    cached.keep(len(prompt), rows)
    fresh = CachedModel(model, kv_cache)
    fresh.prefill(prompt + nodes[rows].tolist())
    assert cached.length == fresh.length == len(prompt) + len(rows)
    for ours, reference in zip(cached.cache.layers, fresh.cache.layers):
        torch.testing.assert_close(ours.keys, reference.keys, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(ours.values, reference.values, atol=1e-5, rtol=1e-4)


def test_tree_greedy_keeps_the_path_the_target_agrees_with():
    tree = Tree(WIDE)
    vocab = 10
    # node tokens: rows 1..9 = [0], [1], [2], [3], [0,0], [0,1], [1,0], [2,0], [0,0,0]
    tokens = torch.tensor([4, 5, 6, 7, 1, 2, 3, 8, 9])
    choice = {0: 5, 2: 3, 7: 0}  # the target's argmax after rows 0, 2 ([1]) and 7 ([1, 0])
    logits = torch.zeros(tree.size + 1, vocab)
    for row in range(tree.size + 1):
        logits[row, choice.get(row, 0)] = 1.0
    verdict = tree_greedy(logits, tokens, tree, None, None)
    assert verdict.rows == [0, 2, 7] and verdict.tokens == [5, 3, 0]


def test_sampling_runs_with_typical_and_exact_acceptance():
    model = tiny("llama")
    config = GenerationConfig(max_new_tokens=24, temperature=0.8, top_p=0.9)
    for acceptance in ("typical", "exact"):
        result = decode_with(model, "medusa", [1, 2, 3, 4], config, eos=set(), seed=3, target_model=model,
                             heads=random_heads(model, 0), tree=WIDE, acceptance=acceptance)
        assert len(result.token_ids) == 24 and all(0 <= t < model.config.vocab_size for t in result.token_ids)


def test_heads_round_trip_through_safetensors(tmp_path):
    model = tiny("llama")
    heads = random_heads(model, 1, num_heads=3, shared=False)
    save_medusa_heads(heads, tmp_path, {"default_tree": chain(2), "topk_accuracy": [[0.5, 0.1]] * 3})
    loaded, config = load_medusa_heads(tmp_path, model, dtype=torch.float32)
    assert config["default_tree"] == chain(2) and config["num_heads"] == 3
    hidden = torch.randn(2, model.config.hidden_size)
    expected = heads.to(torch.bfloat16).float()(hidden, model.lm_head)
    torch.testing.assert_close(loaded(hidden, model.lm_head), expected)
    strategy = create_strategy("medusa", target_model=model, heads=str(tmp_path), tree=3)
    assert strategy.tree.size == 3
    save_token_frequencies([list(range(40))], model.config.vocab_size, tmp_path)
    for linear, few_rows in (("stock", False), ("few_rows", True)):  # the head follows runtime.linear
        strategy = prepare_strategy(create_strategy("medusa", target_model=model, heads=str(tmp_path), head_tokens=16),
                                    Runtime(linear=linear))
        assert any(type(m) is FewRowLinear for m in strategy.lm_head.modules()) == few_rows
    assert json.loads((tmp_path / "medusa_config.json").read_text())["shared_lm_head"] is False


def test_clear_errors(tmp_path):
    model = tiny("llama")
    with pytest.raises(ConfigError, match="no Medusa heads.*train_medusa"):
        create_strategy("medusa", target_model=model, heads="/nonexistent")
    other = tiny("llama", hidden_size=32, intermediate_size=64)
    save_medusa_heads(random_heads(other, 0), tmp_path, {})
    with pytest.raises(ConfigError, match="trained for hidden size 32.*train_medusa"):
        create_strategy("medusa", target_model=model, heads=str(tmp_path))
    with pytest.raises(ConfigError, match="4 Medusa heads"):
        create_strategy("medusa", target_model=model, heads=random_heads(model, 0), tree=chain(5))
    with pytest.raises(ConfigError, match="acceptance must be one of"):
        create_strategy("medusa", target_model=model, heads=random_heads(model, 0), acceptance="greedy")
    with pytest.raises(ConfigError, match="needs heads with measured top-k accuracies"):
        create_strategy("medusa", target_model=model, heads=random_heads(model, 0), tree=8)


def test_a_model_that_ignores_the_tree_mask_is_refused():
    model = tiny_random_model("llama")
    stock = type(model)

    class IgnoresTreeMask(stock):
        def forward(self, *args, attention_mask=None, position_ids=None, **kwargs):
            return super().forward(*args, **kwargs)

    model.__class__ = IgnoresTreeMask
    with pytest.raises(ConfigError, match="does not honour a 4D attention mask"):
        create_strategy("medusa", target_model=model, heads=random_heads(model, 0))


def test_shipped_heads_are_small_and_complete():
    """The heads shipped for SmolLM2-135M: at most 10 MB, their training record beside them,
    and weights that fit MedusaHeads of the recorded architecture."""
    directory = SHIPPED["smollm2-135m-medusa"]
    config = json.loads((directory / "medusa_config.json").read_text())
    assert sum(p.stat().st_size for p in directory.iterdir()) <= 10 * 2**20
    assert len(config["data_sha256"]) == 64 and config["config"]["seed"] == 0
    assert len(config["topk_accuracy"]) == config["num_heads"] and Tree(config["default_tree"]).size >= 1
    expected = MedusaHeads(**{k: config[k] for k in ("hidden_size", "vocab_size", "num_heads", "num_layers",
                                                     "shared_lm_head")}).state_dict()
    weights = load_file(directory / "medusa_heads.safetensors")
    assert {k: v.shape for k, v in weights.items()} == {k: v.shape for k, v in expected.items()}
    assert all(v.dtype == torch.bfloat16 for v in weights.values())
