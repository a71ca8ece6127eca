"""Reference implementations timed beside our strategies: same prompts, same settings,
same record format, so the comparison is fair."""

import copy
import time

import torch
from transformers.generation.stopping_criteria import StopStringCriteria

from specdec.batch import check_batch_size
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

    def generate(self, prompt_ids, config: GenerationConfig, seed: int | None = None,
                 salt: str | None = None) -> GenerationResult:
        """As Decoder.generate; `salt` only matters to a prefix cache, which anchors have none of."""
        return self._generate_chunk([list(prompt_ids)], config, seed)[0]

    def generate_batch(self, prompts: list[list[int]], config: GenerationConfig, batch_size: int | None = None,
                       seeds: list[int | None] | None = None,
                       salts: list[str | None] | None = None) -> list[GenerationResult]:
        """As Decoder.generate_batch (`batch_size` defaults to config.batch_size), by static batching,
        what generate() does: consecutive chunks of `batch_size` prompts, left-padded, one generate()
        call each, seeded by the chunk's first seed. Each request reports its chunk's first-token
        time as ttft, the chunk's time as total and the chunk's passes as target_forwards. Padded
        rows may pick other greedy tokens than batch 1 in low precision; experiments.batch_sweep's
        match_single shows how often."""
        batch_size = config.batch_size if batch_size is None else batch_size
        check_batch_size(batch_size)
        seeds = seeds or [None] * len(prompts)
        return [result for start in range(0, len(prompts), batch_size)
                for result in self._generate_chunk(prompts[start : start + batch_size], config, seeds[start])]

    @torch.inference_mode()
    def _generate_chunk(self, prompts: list[list[int]], config: GenerationConfig,
                        seed: int | None) -> list[GenerationResult]:
        sampling = config.sampling
        kwargs = dict(do_sample=False) if sampling.greedy else dict(
            do_sample=True, temperature=sampling.temperature, top_k=sampling.top_k or None, top_p=sampling.top_p)
        if config.stop_strings:
            kwargs.update(stop_strings=list(config.stop_strings), tokenizer=self.tokenizer)
        torch.manual_seed(seed or 0)
        width, pad = max(map(len, prompts)), self.eos_token_ids[0]
        inputs = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompts], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        clock, forwards = _FirstTokenClock(), []
        hook = self.model.register_forward_pre_hook(lambda *_: forwards.append(1))  # target passes, for mean_accepted
        sync(self.device)
        start = time.perf_counter()
        try:
            out = self.model.generate(inputs, attention_mask=mask, max_new_tokens=config.max_new_tokens,
                                      eos_token_id=self.eos_token_ids, pad_token_id=pad, streamer=clock,
                                      **kwargs, **self.options())
            sync(self.device)
        finally:
            hook.remove()
        total = time.perf_counter() - start
        ttft = (clock.first or time.perf_counter()) - start
        results = []
        for prompt, (tokens, reason) in zip(prompts, self._own_tokens(out, width, config)):
            metrics = RequestMetrics(prompt_tokens=len(prompt), new_tokens=len(tokens), target_forwards=len(forwards),
                                     ttft_s=ttft, total_s=total)
            results.append(GenerationResult(tokens, reason, metrics))
        return results

    def _own_tokens(self, out: torch.Tensor, width: int, config: GenerationConfig) -> list[tuple[list[int], str]]:
        """Each row's new tokens and why it stopped: a row that finished before the chunk's last goes
        on with padding, so it is cut where generate() stopped it (at its first EOS, or where
        transformers' own stop-string check first fires)."""
        stops = [None] * out.shape[0]
        if config.stop_strings:
            check = StopStringCriteria(self.tokenizer, list(config.stop_strings))
            for i in range(out.shape[1] - width):
                for row in check(out[:, : width + i + 1], None).nonzero().flatten().tolist():
                    stops[row] = i if stops[row] is None else stops[row]
        results = []
        for row, stop in zip(out[:, width:].tolist(), stops):
            eos = next((i for i, token in enumerate(row) if token in self.eos_token_ids), None)
            if eos is not None and (stop is None or eos <= stop):
                results.append((row[: eos + 1], "eos"))
            else:
                results.append((row, "length") if stop is None else (row[: stop + 1], "stop_string"))
        return results


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
