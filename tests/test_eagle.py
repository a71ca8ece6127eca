"""EAGLE: a one-layer draft on the target's hidden states (specdec.drafts.eagle_draft, strategy `eagle`).

Greedy output must equal the baseline's token for token whatever the draft guesses; the
training's unrolled passes must compute what the strategy computes when it drafts; the
checkpoint round-trips; bad drafts get clear errors.
"""

import random

import pytest
import torch
from datasets import load_from_disk
from conftest import baseline_and_eos, decode_with, mimic_eagle, random_eagle, random_prompt, tiny
from omegaconf import OmegaConf

from caching.prefix import PrefixCache
from specdec import ConfigError, Decoder, GenerationConfig
from specdec.runtime.cached_model import CachedModel
from specdec.drafts.assets import SHIPPED, token_frequency_file
from specdec.drafts.eagle_draft import (
    load_eagle_draft,
    new_eagle_draft,
    save_eagle_draft,
)
from specdec.runtime.few_row_linear import FewRowLinear
from specdec.runtime.fused_layers import FusedDecoderLayer
from specdec.drafts.assets import save_token_frequencies
from specdec.runtime.prepare import Runtime, prepare_strategy
from specdec.sampling import SamplingParams
from specdec.strategies import Request, create_strategy
from specdec.drafts.subset_head import SubsetHead
from specdec.tiny import tiny_random_model
from specdec.training import features as training_data
from specdec.training.accelerator import trainer_accelerator
from specdec.training.eagle_recipe import group_loss, train, unrolled_mask, unrolled_predictions
from specdec.training.features import features

EAGLE_ARCHS = ["llama", "qwen2", "mistral", "phi3", "gpt_neox", "gemma"]


@pytest.mark.parametrize("arch", EAGLE_ARCHS)
def test_greedy_eagle_equals_the_baseline(arch):
    model = tiny(arch)
    rng = random.Random(f"eagle-{arch}")
    for trial in range(6):
        prompt, config = random_prompt(rng), GenerationConfig(max_new_tokens=rng.randint(1, 40))
        expected, eos = baseline_and_eos(model, prompt, config, trial)
        options = dict(gamma=rng.randint(1, 5), gamma_schedule=["constant", "heuristic"][trial % 2],
                       stop_below_prob=[0.0, 0.3][trial // 3])
        layers = 1 + trial % 2  # EAGLE's one layer, or two (train.num_layers)
        got = decode_with(model, "eagle", prompt, config, eos=eos, target_model=model,
                          draft=random_eagle(model, trial, layers), **options)
        assert got.token_ids == expected.token_ids, (arch, trial, layers, options)
        assert got.stop_reason == expected.stop_reason


@pytest.mark.parametrize("arch", EAGLE_ARCHS)
def test_greedy_eagle_tree_equals_the_baseline(arch):
    """EAGLE-2's dynamic trees of random sizes, from a random draft (nearly always wrong) and from
    one that is mostly right (so that deep paths are accepted too)."""
    model = tiny(arch)
    rng = random.Random(f"eagle-tree-{arch}")
    deepest = 0
    for trial in range(6):
        prompt, config = random_prompt(rng), GenerationConfig(max_new_tokens=rng.randint(1, 40))
        expected, eos = baseline_and_eos(model, prompt, config, trial)
        mostly_right = trial >= 3  # its narrow trees reach deep
        draft = mimic_eagle(model) if mostly_right else random_eagle(model, trial)
        options = dict(gamma=rng.randint(1 + mostly_right, 5), tree_nodes=rng.randint(1, 24),
                       tree_topk=rng.randint(1, 4 - 2 * mostly_right))
        got = decode_with(model, "eagle", prompt, config, eos=eos, target_model=model, draft=draft,
                          stop_below_prob=0, **options)
        assert got.token_ids == expected.token_ids, (arch, trial, options)
        assert got.stop_reason == expected.stop_reason
        deepest = max([deepest] + [s.accepted for s in got.metrics.steps])
    assert deepest >= 2


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_tree_nodes_are_the_draft_s_best_paths_run_one_by_one(arch):
    """Each depth of the tree runs through the draft in one pass under a mask: every node must be
    what the draft chooses when its path is fed as a plain chain, and the tree the best-scored
    nodes of EAGLE-2's full expansion, computed here from those chains, also when drafting
    stopped early because no deeper node could make the cut."""
    model = tiny(arch)
    draft = random_eagle(model, 4)
    depth, topk = 3, 3  # 3 + 9 + 9 candidates
    prompt = [random.Random(arch).randrange(256) for _ in range(17)]
    target = CachedModel(model, "dynamic", keep_hidden=True)
    logits, _ = target.prefill(prompt)
    request = Request(prompt + [int(logits[-1].argmax())], len(prompt), SamplingParams(), None, torch.device("cpu"))
    request.target_hidden = target.hidden

    def log_probs(tokens: list[int]) -> torch.Tensor:  # the draft's, fed as a chain after the verified prompt
        chain = CachedModel(draft.lm, "dynamic", keep_hidden=True)
        chain.reset()
        with torch.no_grad():
            out = chain.forward(None, embeds=draft.inputs(request.target_hidden, torch.tensor(request.tokens[1:])))
            for token in tokens:
                out = chain.forward(None, embeds=draft.inputs(chain.hidden[-1:], torch.tensor([token])))
        return out[-1].log_softmax(-1)

    frontier, everything = [((), (), 0.0)], []  # (ranks, tokens, joint log-probability)
    for _ in range(depth):
        children = []
        for ranks, tokens, score in frontier:
            top = log_probs(list(tokens)).topk(topk)
            children += [(ranks + (r,), tokens + (t,), score + v) for r, (v, t) in
                         enumerate(zip(top.values.tolist(), top.indices.tolist()))]
        everything += children
        frontier = sorted(children, key=lambda c: -c[2])[:topk]
    nodes_run = {}
    for nodes in (2, 5, 18):
        strategy = create_strategy("eagle", target_model=model, draft=draft, gamma=depth, stop_below_prob=0,
                                   tree_nodes=nodes, tree_topk=topk)
        strategy.begin(request)
        proposal = strategy.propose(request, max_tokens=10)
        best = sorted(everything, key=lambda c: (-c[2], len(c[0])))[:nodes]
        assert {(r, t[-1]) for r, t, _ in best} == {(tuple(c), t) for c, t in zip(proposal.tree.choices,
                                                                                       proposal.tokens.tolist())}
        nodes_run[nodes] = strategy.draft.length - strategy.verified[0]  # tree nodes fed to the draft
    assert nodes_run[18] == 2 * topk  # depths 1 and 2 run, for a tree 3 deep
    assert nodes_run[2] < nodes_run[18]  # two depth-1 nodes outscore every depth-2 one: no second pass


def test_with_a_prefix_cache_the_draft_starts_after_the_cached_prompt():
    """With cache=radix the target computes hidden states only for the uncached part of a
    prompt; the draft starts there (rotary positions are relative) and output stays the baseline's."""
    model = tiny("llama")
    rng = random.Random(7)
    shared = [rng.randrange(256) for _ in range(30)]
    decoder = Decoder(model, create_strategy("eagle", target_model=model, draft=random_eagle(model, 5), gamma=3),
                      eos_token_ids=set(), prefix_cache=PrefixCache(max_bytes=10**9))
    config = GenerationConfig(max_new_tokens=25)
    for tail in ([1, 2, 3], [4, 5, 6, 7]):
        got = decoder.generate(shared + tail, config)
        assert got.token_ids == decode_with(model, "baseline", shared + tail, config, eos=set()).token_ids
    assert got.metrics.cached_prompt_tokens >= 30


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_training_passes_compute_what_drafting_computes(arch):
    """Pass s of specdec.training.eagle_recipe at draft position q equals what the strategy's draft
    computes for drafted token s after the target verified position q - s + 1."""
    model = tiny(arch)
    draft = random_eagle(model, 3)
    rng = random.Random(arch)
    seq = [rng.randrange(256) for _ in range(36)]
    with torch.no_grad():
        states = model.model(input_ids=torch.tensor([seq])).last_hidden_state[0]
    ids, inputs = torch.tensor([seq[1:]]), states[None, :-1]
    with torch.no_grad():
        passes = unrolled_predictions(draft, ids, inputs, unroll=3)
    for verified in (10, 20, 27):  # the target verified positions 0..verified
        cached = CachedModel(draft.lm, "dynamic", keep_hidden=True)
        cached.reset()
        cached.forward(None, embeds=draft.inputs(states[: verified + 1], ids[0, : verified + 1]))
        predicted = cached.hidden[-1:]
        assert torch.allclose(predicted[0], passes[0][0, verified], atol=1e-5)
        for s in (2, 3):  # drafted token s: its own previous guess of the state, and the token it drafted
            q = verified + s - 1
            cached.forward(None, embeds=draft.inputs(predicted, ids[0, q : q + 1]))
            predicted = cached.hidden[-1:]
            assert torch.allclose(predicted[0], passes[s - 1][0, q], atol=1e-5), (verified, s)


def test_unrolled_mask_lets_each_row_see_itself():
    for s in (1, 2, 3):
        allowed = unrolled_mask(6, s)[0, 0] == 0
        assert allowed.shape == (6, 6 * s)
        assert allowed[:, (s - 1) * 6 :].diagonal().all()


def test_round_trip_and_clear_errors(tmp_path):
    model = tiny("llama")
    draft = new_eagle_draft(model, init_layer=2)
    assert torch.equal(draft.lm.model.layers[0].mlp.up_proj.weight, model.model.layers[2].mlp.up_proj.weight)
    save_eagle_draft(draft, tmp_path, {"note": "test"})
    save_token_frequencies([[5, 5, 6]], model.config.vocab_size, tmp_path)
    loaded, config = load_eagle_draft(tmp_path, model)
    assert config["note"] == "test"
    for name, p in draft.own_state().items():
        assert torch.allclose(p, loaded.own_state()[name], atol=1e-2), name  # bf16 on disk
    assert loaded.lm.get_input_embeddings().weight is model.get_input_embeddings().weight  # borrowed, not saved
    subset, _ = load_eagle_draft(tmp_path, model, head_tokens=2)
    logits = subset.lm(inputs_embeds=torch.randn(1, 3, model.config.hidden_size)).logits
    assert torch.isfinite(logits[0, 0]).sum() == 2
    deeper = new_eagle_draft(model, init_layer=1, num_layers=2)
    save_eagle_draft(deeper, tmp_path / "two", {})
    loaded, config = load_eagle_draft(tmp_path / "two", model)
    assert config["num_layers"] == 2 and len(loaded.lm.model.layers) == 2
    assert torch.allclose(loaded.lm.model.layers[1].mlp.up_proj.weight, model.model.layers[1].mlp.up_proj.weight,
                          atol=1e-2)
    with pytest.raises(ConfigError, match="train_eagle"):
        load_eagle_draft(tmp_path / "nothing", model)
    with pytest.raises(ConfigError, match="width 64"):
        load_eagle_draft(tmp_path, tiny("llama", hidden_size=32, num_attention_heads=2))
    with pytest.raises(ConfigError, match=r"init_layer must be a target layer in \[0, 2\]"):
        new_eagle_draft(model, init_layer=3)
    with pytest.raises(ConfigError, match="gamma"):
        create_strategy("eagle", target_model=model, draft=draft, gamma=0)
    with pytest.raises(ConfigError, match="tree_nodes must be auto .* or an integer >= 1"):
        create_strategy("eagle", target_model=model, draft=draft, stop_below_prob=0, tree_nodes=0)
    with pytest.raises(ConfigError, match="stop_below_prob=0"):
        create_strategy("eagle", target_model=model, draft=draft, tree_nodes=8)


def test_sampling_runs_and_reports_acceptance():
    model = tiny("llama")
    decoder = Decoder(model, create_strategy("eagle", target_model=model, draft=random_eagle(model, 1), gamma=3),
                      eos_token_ids=set())
    result = decoder.generate([3, 4, 5, 6] * 5, GenerationConfig(max_new_tokens=30, temperature=0.8), seed=1)
    assert len(result.token_ids) == 30
    assert sum(step.proposed for step in result.metrics.steps) > 0


def test_the_shipped_draft_is_small_and_complete():
    directory = SHIPPED["smollm2-135m-eagle"]
    files = {p.name: p.stat().st_size for p in directory.iterdir()}
    assert {"eagle_config.json", "eagle_draft.safetensors"} <= set(files)
    assert token_frequency_file(directory) == directory.parent / "tokens_by_frequency.json"  # one per target
    assert files["eagle_draft.safetensors"] <= 25 * 2**20


def test_training_lowers_the_loss_and_checkpoints(tmp_path):
    """specdec.training.eagle_recipe on a tiny target: batched features equal one sequence's own pass,
    and a few epochs lower the loss of every unrolled pass on the training data (a sharpened
    LM head gives the target distributions a draft can learn; a random one's are near uniform)."""
    model = tiny_random_model("llama")
    with torch.no_grad():
        model.lm_head.weight.mul_(10.0)
    rng = random.Random(0)
    rows = [{"id": i, "index": i, "sampled": False, "prompt_ids": [rng.randrange(256) for _ in range(rng.randint(4, 12))],
             "answer_ids": [rng.randrange(256) for _ in range(rng.randint(6, 16))]} for i in range(12)]
    hidden = features(rows, model, tmp_path / "features")
    with torch.no_grad():
        alone = model.model(input_ids=torch.tensor([rows[3]["prompt_ids"] + rows[3]["answer_ids"]])).last_hidden_state[0]
    assert torch.allclose(hidden[3].float(), alone, atol=0.05)  # bf16 on disk
    more = [{**rows[0], "id": "new", "index": 12}]
    again = features(rows + more, model, tmp_path / "features")  # computes the new row only
    assert len(again) == 13 and all(a is b or torch.equal(a, b) for a, b in zip(again, hidden))
    assert torch.allclose(again[12].float(), again[0].float(), atol=0.05) and len(load_from_disk(str(tmp_path / "features"))) == 13
    subset = SubsetHead(model.get_output_embeddings().weight, list(range(model.config.vocab_size)))
    draft = new_eagle_draft(model, init_layer=None)
    cfg = OmegaConf.create({"seed": 0, "train": {"unroll": 2, "feature_weight": 0.1, "noise": 0.0, "lr": 3e-3,
                                                 "mixed_precision": "bf16", "grad_accum": 1, "epochs": 30, "batch_tokens": 128, "checkpoint_every": 10,
                                                 "time_budget_min": 5}})

    def losses():
        with torch.no_grad():
            draft.eval()
            return [group_loss(draft, [r], hidden, subset, 2, 0.1, 0.0)[0].item() for r in rows]

    before = losses()
    result = train(cfg, trainer_accelerator(cfg.train), draft, rows, rows[:2], hidden, subset, tmp_path, "data")
    after = losses()
    assert result["steps"] == result["planned_steps"] and (tmp_path / "eagle_checkpoint" / "progress.json").exists()
    assert sum(after) < 0.9 * sum(before)  # cross-entropy against soft targets: their entropy is its floor
    assert len(result["held_out_top1"]) == 2


def test_each_seed_adds_its_own_data_set(tmp_path, monkeypatch):
    """data.seeds (the EAGLE draft's and the Medusa heads' data): one answered data set per seed
    in work/seed-N, joined with globally unique ids and indices that point at each row's own
    hidden states; states kept while answering are used as they are, the others computed."""
    model = tiny("llama")

    def answered(cfg, target, tokenizer, evaluation, directory, states):
        assert directory == tmp_path / f"seed-{cfg.seed}"
        rng = random.Random(cfg.seed)
        rows = [{"id": f"p-{i}", "sampled": False, "prompt_ids": [rng.randrange(256) for _ in range(5 + i)],
                 "answer_ids": [rng.randrange(256) for _ in range(4)]} for i in range(3)]
        states["p-0"] = torch.full((9, model.config.hidden_size), 7.0, dtype=torch.bfloat16)
        return rows, 1.5

    monkeypatch.setattr(training_data, "answered_prompts", answered)
    cfg = OmegaConf.create({"seed": 0, "data": {"seeds": [0, 1]}, "train": {"batch_tokens": 64}})
    data, hidden, minutes = training_data.seeded_data(cfg, model, None, [], tmp_path)
    assert [r["id"] for r in data] == ["0/p-0", "0/p-1", "0/p-2", "1/p-0", "1/p-1", "1/p-2"]
    assert minutes == 3.0 and len(hidden) == 6 and (tmp_path / "seed-1" / "features").exists()
    for row in data:
        assert len(hidden[row["index"]]) == len(row["prompt_ids"]) + len(row["answer_ids"])
        assert (hidden[row["index"]] == 7).all() == row["id"].endswith("p-0")


def test_eagle_runs_its_draft_in_the_runtime_layout():
    """runtime.layers / runtime.linear hold for the draft EAGLE builds, as for the target."""
    model = tiny("llama")
    draft = random_eagle(model, 0)
    stock = prepare_strategy(create_strategy("eagle", target_model=model, draft=draft),
                             Runtime(layers="stock", linear="stock"))
    assert not any(isinstance(m, (FusedDecoderLayer, FewRowLinear)) for m in stock.eagle.modules())
    fast = prepare_strategy(create_strategy("eagle", target_model=model, draft=draft),
                            Runtime(layers="fused", linear="few_rows"))
    assert isinstance(fast.eagle.lm.model.layers[0], FusedDecoderLayer) and type(fast.eagle.fc) is FewRowLinear
    assert type(draft.fc) is torch.nn.Linear  # the stock draft is left as it was
    prompt, config = [5, 9, 13, 2, 7], GenerationConfig(max_new_tokens=12)
    expected = Decoder(model, create_strategy("baseline"), eos_token_ids=set()).generate(prompt, config).token_ids
    for strategy in (stock, fast):
        assert Decoder(model, strategy, eos_token_ids=set()).generate(prompt, config).token_ids == expected
