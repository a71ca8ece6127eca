"""Reference implementations timed beside our strategies: same prompts, same settings,
same record format, so the comparison is fair."""

import copy
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
    mirrors = None  # the strategy whose settings this anchor copies, run once per such strategy
    settings = ()  # the mirrored strategy's options this anchor uses (they name it: hf_assisted(gamma=4))

    def __init__(self, model, tokenizer, eos_token_ids, **_):
        self.model, self.tokenizer, self.eos_token_ids = model, tokenizer, sorted(eos_token_ids)
        self.device = next(model.parameters()).device

    def options(self) -> dict:
        """generate() arguments that make this anchor what it is."""
        return {}

    @torch.inference_mode()
    def generate(self, prompt_ids, config: GenerationConfig, seed: int | None = None,
                 salt: str | None = None) -> GenerationResult:
        """As Decoder.generate; `salt` only matters to a prefix cache, which anchors have none of."""
        sampling = config.sampling
        kwargs = dict(do_sample=False) if sampling.greedy else dict(
            do_sample=True, temperature=sampling.temperature, top_k=sampling.top_k or None, top_p=sampling.top_p)
        if config.stop_strings:
            kwargs.update(stop_strings=list(config.stop_strings), tokenizer=self.tokenizer)
        torch.manual_seed(seed or 0)
        inputs = torch.tensor([list(prompt_ids)], device=self.device)
        clock, forwards = _FirstTokenClock(), []
        hook = self.model.register_forward_pre_hook(lambda *_: forwards.append(1))  # target passes, for mean_accepted
        sync(self.device)
        start = time.perf_counter()
        try:
            out = self.model.generate(inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=config.max_new_tokens,
                                      eos_token_id=self.eos_token_ids, pad_token_id=self.eos_token_ids[0], streamer=clock,
                                      **kwargs, **self.options())
            sync(self.device)
        finally:
            hook.remove()
        total = time.perf_counter() - start
        tokens = out[0, inputs.shape[1]:].tolist()
        metrics = RequestMetrics(prompt_tokens=len(prompt_ids), new_tokens=len(tokens), target_forwards=len(forwards),
                                 ttft_s=(clock.first or time.perf_counter()) - start, total_s=total)
        reason = "eos" if tokens and tokens[-1] in self.eos_token_ids else "length"
        return GenerationResult(tokens, reason, metrics)


class HFAssisted(HFGenerate):
    """`transformers`' assisted generation with our draft model at our gamma, with a constant
    draft length and our stop_below_prob as its confidence threshold (which transformers keeps
    fixed, as we do, unless scikit-learn is installed): the reference for strategy=draft."""

    name = "hf_assisted"
    mirrors = "draft"
    settings = ("gamma", "stop_below_prob")

    def __init__(self, model, tokenizer, eos_token_ids, draft=None, gamma: int = 4, stop_below_prob: float = 0.0, **_):
        super().__init__(model, tokenizer, eos_token_ids)
        self.draft = draft
        # transformers reads the draft length, schedule and threshold from the ASSISTANT's generation
        # config (generate() arguments of those names are ignored), so each anchor brings its own
        self.assistant_config = copy.deepcopy(draft.generation_config)
        self.assistant_config.update(num_assistant_tokens=gamma, num_assistant_tokens_schedule="constant",
                                     assistant_confidence_threshold=stop_below_prob)

    def options(self) -> dict:
        self.draft.generation_config = self.assistant_config  # the draft module is shared by the gamma variants
        return dict(assistant_model=self.draft)


class HFPromptLookup(HFGenerate):
    """`transformers`' prompt lookup decoding with our settings: the reference for strategy=prompt_lookup."""

    name = "hf_prompt_lookup"
    mirrors = "prompt_lookup"
    settings = ("max_ngram", "num_tokens")

    def __init__(self, model, tokenizer, eos_token_ids, max_ngram: int = 3, num_tokens: int = 10, **_):
        super().__init__(model, tokenizer, eos_token_ids)
        self.max_ngram, self.num_tokens = max_ngram, num_tokens

    def options(self) -> dict:
        return dict(prompt_lookup_num_tokens=self.num_tokens, max_matching_ngram_size=self.max_ngram)


ANCHORS = {anchor.name: anchor for anchor in (HFGenerate, HFAssisted, HFPromptLookup)}
