"""Shared helpers: tiny random models of several architectures, random prompts, and the
reference outputs of `transformers`' own generate."""

import functools
import os
import random
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

os.environ.setdefault("SPECDEC_MAX_HOST_LOAD", "100")  # time tiny models on a shared host too (read at import)
from specdec import Decoder, GenerationConfig
from specdec.drafts.eagle_draft import EagleDraft
from specdec.strategies import create_strategy
from specdec.tiny import tiny_random_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
torch.set_num_threads(1)  # tiny models gain nothing from threads, and a busy core stalls a thread pool
os.environ.setdefault("OMP_NUM_THREADS", "1")  # so do the entry points the tests start (one core per test worker)

ARCHITECTURES = ["llama", "qwen2", "gpt_neox", "mistral", "phi3", "gemma"]
VOCAB = 258  # byte tokenizer: 256 bytes + <eos> + <pad>


# Files of long tests (a minute of one core or more in all), longest first: they run first, so that
# parallel workers (pytest-xdist, pyproject.toml's addopts) end on short tests, not one on a long one.
LONG_FIRST = ["test_static_steps.py", "test_sampling_lossless.py", "test_cli.py", "test_gamma_schedule.py",
              "test_prompt_lookup.py", "test_kill_anywhere.py", "test_sweeps.py", "test_greedy_lossless.py", "test_sampling_power.py",
              "test_bad_inputs.py", "test_user_strategy.py", "test_batched_decoding.py"]


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its order


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per CPU this process may run on (its affinity; psutil, xdist's
    default, counts the host's cores, which a container may not have)."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return int(os.environ["PYTEST_XDIST_AUTO_NUM_WORKERS"])
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@functools.cache
def tiny(arch: str, seed: int = 0, **overrides):
    with torch.inference_mode(False):  # shared by every later test: never inference tensors, whatever the caller's mode
        return tiny_random_model(arch, seed=seed, **overrides)


def train_config(name: str, *overrides: str):
    """configs/<name>.yaml as `python -m experiments.<name> model=tiny-random *overrides` composes it."""
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parent.parent / "configs"), version_base="1.3"):
        return compose(config_name=name, overrides=["model=tiny-random", *overrides])


def random_eagle(model, seed: int, num_layers: int = 1) -> EagleDraft:
    """An EAGLE draft with random weights (a fresh one's fc would mostly guess one token)."""
    draft = EagleDraft(model, num_layers)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in draft.own_state().values():  # norms around 1, matrices scaled by their width
            p.copy_(torch.randn(p.shape, generator=generator) / p.shape[-1] ** 0.5 + (p.dim() == 1))
    return draft.eval()


def mimic_eagle(model) -> EagleDraft:
    """An EAGLE draft that is mostly right: the target's own layers on the token embeddings (fc
    passes the embedding through), so it runs the target one token behind."""
    draft = EagleDraft(model, model.config.get_text_config().num_hidden_layers)
    draft.lm.get_decoder().load_state_dict(model.get_decoder().state_dict())
    width = draft.fc.out_features
    with torch.no_grad():
        draft.fc.weight.zero_()
        draft.fc.weight[:, width:] = torch.eye(width)
        draft.fc.bias.zero_()
    return draft.eval()


def random_prompt(rng: random.Random, max_len: int = 40) -> list[int]:
    return [rng.randrange(0, 256) for _ in range(rng.randint(1, max_len))]


def decode_with(model, strategy_name: str, prompt, config: GenerationConfig, eos=None, seed=None, **options):
    decoder = Decoder(model, create_strategy(strategy_name, **options), eos_token_ids=eos)
    return decoder.generate(prompt, config, seed=seed)


def baseline_and_eos(model, prompt, config: GenerationConfig, trial: int):
    """(baseline output, EOS set): on odd trials an EOS the output really meets (a token from
    the middle of the EOS-free output), on even ones the model's own EOS."""
    free = decode_with(model, "baseline", prompt, config, eos=set())
    eos = {free.token_ids[len(free.token_ids) // 2]} if trial % 2 else {model.config.eos_token_id}
    return decode_with(model, "baseline", prompt, config, eos=eos), eos


def hf_greedy(model, prompt, max_new_tokens: int, eos: int) -> list[int]:
    inputs = torch.tensor([prompt])
    out = model.generate(inputs, attention_mask=torch.ones_like(inputs), do_sample=False,
                         max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=eos)
    return out[0, len(prompt):].tolist()


@pytest.fixture(params=ARCHITECTURES)
def arch(request):
    return request.param
