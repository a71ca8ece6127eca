"""The host's share of a decode step: our whole baseline step against `generate`'s, on one model.

On a model whose arithmetic is negligible (model=tiny-random: 3 layers of width 64), a decode
step's wall time is host work: Python, torch's dispatch of each op, and on a GPU one kernel
launch per op. So the wall time and the count of torch ops a step issues, measured here on a
CPU, carry over to any device where a small model is launch-bound. A step is the whole loop
step (forward, acceptance, rollback, stop checks), not a bare forward: what `generate` does
between tokens counts against it too. Each is measured as the difference between a long and a
short generation of the same prompt, divided by the extra tokens, so prefill cancels out.
"""

import copy
import statistics
import time

import torch

from specdec.decoding import Decoder, GenerationConfig, sync
from specdec.strategies.autoregressive import Autoregressive

PROMPT_TOKENS = 32


def generators(stock: torch.nn.Module, prepared: torch.nn.Module, device) -> dict:
    """name -> function(new tokens) generating greedily with no stop but the length: ours (our
    decode loop, baseline strategy, on the `prepared` model) and `generate` (the `stock` model)."""
    prompt = torch.randint(0, stock.config.vocab_size, (PROMPT_TOKENS,)).tolist()
    decoder = Decoder(prepared, Autoregressive(), eos_token_ids=set())
    settings = copy.deepcopy(stock.generation_config)
    settings.update(eos_token_id=None, do_sample=False, pad_token_id=0, use_cache=True)
    ids = torch.tensor([prompt], device=device)

    def ours(new_tokens: int) -> None:
        decoder.generate(prompt, GenerationConfig(max_new_tokens=new_tokens))

    @torch.inference_mode()
    def hf(new_tokens: int) -> None:
        settings.max_new_tokens = new_tokens
        stock.generate(ids, generation_config=settings)

    return {"ours": ours, "generate": hf}


def wall_s(generate, new_tokens: int, device) -> float:
    sync(device)
    start = time.perf_counter()
    generate(new_tokens)
    sync(device)
    return time.perf_counter() - start


def op_count(generate, new_tokens: int) -> int:
    """Torch ops (profiler events, nested ones included) of one generation."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        generate(new_tokens)
    return len(profile.events())


def step_costs(stock: torch.nn.Module, prepared: torch.nn.Module, device, repeats: int, short: int = 16,
               long: int = 80) -> dict:
    """Per decode step, ours and generate's: wall ms (median and quartiles of `repeats` interleaved
    rounds, after a warm-up) and torch ops, with their ratios."""
    runs = generators(stock, prepared, device)
    for generate in runs.values():
        generate(short)
        generate(long)
    samples = {name: [] for name in runs}
    for _ in range(repeats):
        for name, generate in runs.items():
            extra = wall_s(generate, long, device) - wall_s(generate, short, device)
            samples[name].append(extra / (long - short) * 1000)
    result = {}
    for name, generate in runs.items():
        p25, median, p75 = statistics.quantiles(samples[name], n=4)
        ops = (op_count(generate, long) - op_count(generate, short)) / (long - short)
        result[name] = {"step_ms": round(median, 4), "p25": round(p25, 4), "p75": round(p75, 4), "ops": ops}
    result["ratio"] = {"step_ms": round(result["ours"]["step_ms"] / result["generate"]["step_ms"], 3),
                       "ops": round(result["ours"]["ops"] / result["generate"]["ops"], 3)}
    return result
