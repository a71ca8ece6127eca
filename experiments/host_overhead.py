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
import time

import torch

from specdec.decoding import Decoder, GenerationConfig
from specdec.runtime.static_cache import BUCKETS
from specdec.runtime.timing import Budget, interleaved, sync
from specdec.strategies.autoregressive import Autoregressive

PROMPT_TOKENS = 32


def hf_generator(stock: torch.nn.Module, ids: torch.Tensor, **options):
    """A function(new tokens) running `generate` greedily on `ids` (1, n), with no stop but the length."""
    settings = copy.deepcopy(stock.generation_config)
    settings.update(eos_token_id=None, do_sample=False, pad_token_id=0, use_cache=True, **options)

    @torch.inference_mode()
    def generate(new_tokens: int) -> None:
        settings.max_new_tokens = new_tokens
        stock.generate(ids, attention_mask=torch.ones_like(ids), generation_config=settings)

    return generate


def per_token_timer(generate, device, short: int, long: int):
    """A function timing `generate`'s seconds per token: a `long` generation minus a `short` one."""
    def wall_s(new_tokens: int) -> float:
        sync(device)
        start = time.perf_counter()
        generate(new_tokens)
        sync(device)
        return time.perf_counter() - start

    return lambda: (wall_s(long) - wall_s(short)) / (long - short)


def op_count(generate, new_tokens: int) -> int:
    """Torch ops (profiler events, nested ones included) of one generation."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        generate(new_tokens)
    return len(profile.events())


def step_costs(stock: torch.nn.Module, prepared: torch.nn.Module, device, repeats: int, short: int = 16,
               long: int = 80, kv_cache: str = "preallocated", max_length: int | None = None) -> dict:
    """Per decode step, ours (our loop, baseline strategy, on the `prepared` model over `kv_cache` of
    `max_length`: the compiled steps' shapes, to compile nothing more) and generate's
    (the `stock` model): wall ms (median and spread of `repeats` interleaved rounds, after a
    warm-up) and torch ops, with their ratios."""
    prompt = torch.randint(0, stock.config.vocab_size, (PROMPT_TOKENS,)).tolist()
    decoder = Decoder(prepared, Autoregressive(), eos_token_ids=set(), kv_cache=kv_cache,
                      max_length=max_length or PROMPT_TOKENS + long + BUCKETS[-1])
    runs = {"ours": lambda n: decoder.generate(prompt, GenerationConfig(max_new_tokens=n)),
            "generate": hf_generator(stock, torch.tensor([prompt], device=device))}
    timed = interleaved({name: per_token_timer(run, device, short, long) for name, run in runs.items()},
                        float("inf"), repeats, repeats, Budget(float("inf")))
    result = {name: {"step_ms": round(timed[name].median * 1000, 4), "spread": round(timed[name].spread, 3),
                     "ops": (op_count(run, long) - op_count(run, short)) / (long - short)}
              for name, run in runs.items()}
    result["ratio"] = {"step_ms": round(result["ours"]["step_ms"] / result["generate"]["step_ms"], 3),
                       "ops": round(result["ours"]["ops"] / result["generate"]["ops"], 3)}
    return result
