"""Reference implementations timed beside our strategies: same prompts, same settings,
same record format, so the comparison is fair."""

import time

import torch

from specdec.decoding import GenerationConfig, GenerationResult, sync
from specdec.metrics import RequestMetrics


class _FirstTokenClock:
    """A generate() streamer that only notes when the first new token arrives."""

    def __init__(self):
        self.calls, self.first = 0, None

    def put(self, value):
        self.calls += 1
        if self.calls == 2:  # the first call carries the prompt
            self.first = time.perf_counter()

    def end(self):
        pass


class HFGenerate:
    """`transformers`' own `model.generate` (no assistant): the number to beat for the baseline."""

    name = "hf_generate"

    def __init__(self, model, tokenizer, eos_token_ids):
        self.model, self.tokenizer, self.eos_token_ids = model, tokenizer, sorted(eos_token_ids)
        self.device = next(model.parameters()).device

    @torch.inference_mode()
    def generate(self, prompt_ids, config: GenerationConfig, seed: int | None = None) -> GenerationResult:
        sampling = config.sampling
        kwargs = dict(do_sample=False) if sampling.greedy else dict(
            do_sample=True, temperature=sampling.temperature, top_k=sampling.top_k or None, top_p=sampling.top_p)
        if config.stop_strings:
            kwargs.update(stop_strings=list(config.stop_strings), tokenizer=self.tokenizer)
        torch.manual_seed(seed or 0)
        inputs = torch.tensor([list(prompt_ids)], device=self.device)
        clock = _FirstTokenClock()
        sync(self.device)
        start = time.perf_counter()
        out = self.model.generate(inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=config.max_new_tokens,
                                  eos_token_id=self.eos_token_ids, pad_token_id=self.eos_token_ids[0], streamer=clock, **kwargs)
        sync(self.device)
        total = time.perf_counter() - start
        tokens = out[0, inputs.shape[1]:].tolist()
        metrics = RequestMetrics(prompt_tokens=len(prompt_ids), new_tokens=len(tokens), target_forwards=len(tokens),
                                 ttft_s=(clock.first or time.perf_counter()) - start, total_s=total)
        reason = "eos" if tokens and tokens[-1] in self.eos_token_ids else "length"
        return GenerationResult(tokens, reason, metrics)


ANCHORS = {HFGenerate.name: HFGenerate}

