"""The one decoding loop every strategy runs in: propose, verify, accept, commit, roll back.

    prefill the prompt -> first token
    repeat: the strategy proposes k tokens
            ONE target pass over [pending token, *proposal] gives k+1 rows of logits
            the acceptance rule keeps n <= k drafts and picks the target's next token
            the target cache is rolled back to the committed length
            n drafts + 1 target token are committed (EOS, stop strings, max_new_tokens cut them)
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from specdec.batch import Batch, Slot, check_batch_size
from specdec.runtime.cached_model import CachedModel
from specdec.runtime.prepare import check_static_cache
from specdec.runtime.timing import sync
from specdec.runtime.verify_cost import DeviceCosts
from specdec.errors import ConfigError, is_int, is_number
from specdec.metrics import RequestMetrics, Step
from specdec.sampling import SamplingParams, probabilities, sample
from specdec.stopping import StopCriteria
from specdec.strategies.base import Request, Strategy, kept_hidden

if TYPE_CHECKING:
    from caching.prefix import PrefixCache

MIN_TEMPERATURE = 1e-5  # below this (but > 0) sampling overflows; 0 is greedy


@dataclass
class GenerationConfig:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 means greedy
    top_k: int = 0
    top_p: float = 1.0
    stop_strings: list[str] = field(default_factory=list)
    batch_size: int = 1  # requests decoded together (Decoder.generate_batch); not a transformers setting

    @property
    def sampling(self) -> SamplingParams:
        return SamplingParams(self.temperature, self.top_k, self.top_p)

    def validate(self) -> None:
        """ConfigError for a setting that would fail deep inside torch or be silently wrong."""
        if not is_int(self.max_new_tokens) or self.max_new_tokens < 1:
            raise ConfigError(f"generation.max_new_tokens must be an integer >= 1 (got {self.max_new_tokens!r})")
        if not is_number(self.temperature) or not 0 <= self.temperature < math.inf:
            raise ConfigError(f"generation.temperature must be a number >= 0, 0 for greedy (got {self.temperature!r})")
        if 0 < self.temperature < MIN_TEMPERATURE:  # logits / 1e-45 overflow to inf: NaN probabilities
            raise ConfigError(f"generation.temperature={self.temperature!r} is below {MIN_TEMPERATURE}, where the "
                              "probabilities overflow: use generation.temperature=0 for greedy decoding")
        if not is_int(self.top_k) or self.top_k < 0:
            raise ConfigError(f"generation.top_k must be an integer >= 0, 0 to switch it off (got {self.top_k!r})")
        if not is_number(self.top_p) or not 0 < self.top_p <= 1:
            raise ConfigError(f"generation.top_p must be a number in (0, 1], 1 to switch it off (got {self.top_p!r})")
        check_batch_size(self.batch_size)
        strings = self.stop_strings
        if not isinstance(strings, (list, tuple)) or not all(isinstance(s, str) and s for s in strings):
            raise ConfigError(f"generation.stop_strings must be a list of non-empty strings (got {strings!r}; an empty "
                              "string would stop every request at once): e.g. generation.stop_strings='[\"User:\"]', "
                              "or [] for none")


@dataclass
class GenerationResult:
    token_ids: list[int]  # the new tokens only
    stop_reason: str  # "eos", "stop_string" or "length"
    metrics: RequestMetrics


def eos_ids_of(model, tokenizer=None) -> set[int]:
    """Every id that ends a generation: the generation config's, the model config's and the tokenizer's."""
    ids = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        ids.update(value if isinstance(value, (list, tuple)) else [] if value is None else [value])
    return ids


class Decoder:
    """Runs one strategy against one target model, on one request or a batch of them.

    The strategy names the acceptance rule (Strategy.acceptance_rule). With a `prefix_cache`,
    every model of a request prefills through a handle of its own (caching.prefix), under the
    request's salt. `kv_cache` ("preallocated", "static" or "dynamic") is the KV cache every model
    of the request uses; `max_length`, the static cache's positions per row (None: grown as needed)."""

    def __init__(self, target_model, strategy: Strategy, tokenizer=None, eos_token_ids=None,
                 prefix_cache: PrefixCache | None = None, kv_cache: str = "preallocated", max_length: int | None = None):
        check_static_cache(getattr(target_model, "static_steps", None), kv_cache)
        self.target_model = target_model
        self.targets = {1: CachedModel(target_model, kv_cache, keep_hidden=kept_hidden(strategy), max_length=max_length)}
        self.kv_cache, self.max_length = kv_cache, max_length
        self.prefix_cache = prefix_cache  # caching.prefix.PrefixCache, or None for no prefix caching
        self.strategy = strategy
        strategy.tune(DeviceCosts(target_model, kv_cache))  # sizes left `auto`, by this device's costs (measured once)
        self.tokenizer = tokenizer
        self.eos_token_ids = set(eos_token_ids) if eos_token_ids is not None else eos_ids_of(target_model, tokenizer)
        self.context_length = getattr(target_model.config, "max_position_embeddings", None)

    @property
    def target(self) -> CachedModel:
        return self.targets[1]

    def generate(self, prompt_ids, config: GenerationConfig, seed: int | None = None,
                 salt: str | None = None) -> GenerationResult:
        """`salt` keeps the request's prefix-cache entries apart from other salts' (default: the
        cache's salt); without a prefix cache it changes nothing."""
        return self.generate_batch([prompt_ids], config, seeds=[seed], salts=[salt])[0]

    def generate_batch(self, prompts: list, config: GenerationConfig, batch_size: int | None = None,
                       seeds: list[int | None] | None = None, salts: list[str | None] | None = None
                       ) -> list[GenerationResult]:
        """One result per prompt, in order. Up to `batch_size` requests decode together, one target
        pass verifying every row's proposal; a finished row's slot takes the next waiting prompt
        (continuous batching). Each row's tokens are those the prompt gets decoded alone.
        `batch_size` defaults to config.batch_size."""
        batch_size = config.batch_size if batch_size is None else batch_size
        check_batch_size(batch_size)
        prompts = [[int(t) for t in prompt] for prompt in prompts]
        for prompt in prompts:
            self.check(prompt, config)
        seeds = seeds or [None] * len(prompts)
        salts = salts or [None] * len(prompts)
        if batch_size not in self.targets:
            self.targets[batch_size] = CachedModel(self.target_model, self.kv_cache, rows=batch_size,
                                                   keep_hidden=kept_hidden(self.strategy), max_length=self.max_length)
        batch = Batch(self.targets[batch_size], self.strategy, batch_size)
        waiting = deque(range(len(prompts)))
        results = [None] * len(prompts)
        try:
            while waiting or batch.busy:
                for row in batch.free_rows():
                    if not waiting:
                        break
                    index = waiting.popleft()
                    slot = self._admit(batch, row, index, prompts[index], config, seeds[index], salts[index])
                    if slot.reason is not None:
                        results[index] = self._finish(batch, slot)
                if batch.busy:
                    self._step(batch)
                    for slot in [s for s in batch.slots if s is not None and s.reason is not None]:
                        results[slot.index] = self._finish(batch, slot)
        finally:
            for slot in [s for s in batch.slots if s is not None]:
                slot.release()
        return results

    def _admit(self, batch: Batch, row: int, index: int, prompt: list[int], config: GenerationConfig,
               seed: int | None, salt: str | None) -> Slot:
        """Start request `index` in `row`: prefill the prompt and choose the first token."""
        sampling = config.sampling
        device = batch.target.device
        generator = None if sampling.greedy else torch.Generator(device).manual_seed(seed or 0)
        stop = StopCriteria(len(prompt), config.max_new_tokens, self.eos_token_ids, config.stop_strings, self.tokenizer)
        handle = self.prefix_cache.begin(salt) if self.prefix_cache is not None else None
        request = Request(list(prompt), len(prompt), sampling, generator, device, handle, self.kv_cache, row, batch.size,
                          max_length=self.max_length)
        slot = batch.take(row, index, request, stop, RequestMetrics(prompt_tokens=len(prompt)))
        sync(device)
        slot.started = time.perf_counter()
        slot.strategy.begin(request)
        logits, slot.metrics.cached_prompt_tokens = batch.target.prefill(prompt, handle, row=row)
        slot.metrics.target_forwards = 1
        check_finite(logits[-1:], 0)
        request.target_hidden = batch.target.hidden
        first = logits[-1].argmax() if sampling.greedy else sample(probabilities(logits[-1], sampling), generator)
        slot.reason = stop.extend(request.tokens, [int(first.item())])
        slot.metrics.ttft_s = time.perf_counter() - slot.started
        return slot

    def _finish(self, batch: Batch, slot: Slot) -> GenerationResult:
        request, metrics = slot.request, slot.metrics
        slot.release()
        if request.prefix_cache is not None:
            metrics.cache_load_s, metrics.cache_insert_s = request.prefix_cache.load_s, request.prefix_cache.insert_s
        batch.free(slot.request.row)
        metrics.new_tokens = len(request.tokens) - request.prompt_len
        metrics.total_s = time.perf_counter() - slot.started
        metrics.extra = slot.strategy.stats(request)
        return GenerationResult(request.tokens[request.prompt_len :], slot.reason, metrics)

    def _step(self, batch: Batch) -> None:
        """One propose -> verify -> accept -> commit -> roll back step for every busy row."""
        slots = batch.busy_slots()
        began = time.perf_counter()
        proposals = batch.propose(slots)
        propose_s = time.perf_counter() - began
        device = batch.target.device
        inputs = [torch.cat([torch.tensor(s.request.tokens[-1:], device=device), p.tokens])
                  for s, p in zip(slots, proposals)]
        trees = [p.tree for p in proposals]
        logits = batch.target.forward_some([s.request.row for s in slots], inputs, trees)  # every row's verify pass
        counts = [len(x) for x in inputs]
        check_finite_rows(logits, counts, slots, trees)
        hidden = batch.target.hidden_rows
        for i, (slot, proposal) in enumerate(zip(slots, proposals)):
            request, tree = slot.request, proposal.tree
            rule = slot.strategy.acceptance_rule(request.sampling, tree=tree is not None)
            if tree is None:
                verdict = rule(logits[i, : counts[i]], proposal.tokens, proposal.probs, request.sampling, request.generator)
                batch.target.rollback(len(request.tokens) + verdict.accepted, request.row)
            else:
                verdict = rule(logits[i, : counts[i]], proposal.tokens, tree, request.sampling, request.generator)
                batch.target.keep(len(request.tokens) - 1, verdict.rows, request.row)  # the accepted path, compacted
            if hidden is not None:
                request.target_hidden = hidden[i][verdict.kept_rows]
            metrics = slot.metrics
            metrics.target_forwards += 1
            metrics.propose_s += propose_s
            metrics.steps.append(Step(proposal.tokens.numel(), verdict.accepted, tree.depth if tree else None))
            slot.reason = slot.stop.extend(request.tokens, verdict.tokens)
            if slot.reason is None:
                slot.strategy.on_commit(request, verdict.accepted)

    def check(self, prompt_ids: list[int], config: GenerationConfig) -> None:
        """Raise ConfigError for settings or a prompt this decoder cannot run."""
        config.validate()
        if not prompt_ids:
            raise ConfigError("the prompt is empty: give at least one token")
        if config.stop_strings and self.tokenizer is None:
            raise ConfigError("generation.stop_strings needs a tokenizer: pass tokenizer= to Decoder")
        if self.context_length and len(prompt_ids) + config.max_new_tokens > self.context_length:
            raise ConfigError(
                f"prompt ({len(prompt_ids)} tokens) + max_new_tokens ({config.max_new_tokens}) exceeds the "
                f"model's context of {self.context_length} tokens: shorten the prompt or lower "
                "generation.max_new_tokens"
            )


def check_finite(logits: torch.Tensor, first_new_token: int, depths: list[int] | None = None) -> None:
    """ConfigError for NaN or infinite logits (an overflow in a low-precision dtype, or broken weights):
    argmax would pick a token anyway and sampling would fail deep inside torch. One check a pass,
    on each row's maximum (NaN and +inf reach it; a lone -inf, a masked token, is harmless);
    row r of the pass gives new token first_new_token + r (of a tree: + the depth of node r)."""
    finite = torch.isfinite(logits.amax(dim=-1))
    if not bool(finite.all()):
        row = int((~finite).nonzero()[0])
        token = first_new_token + (depths[row] if depths else row)
        raise ConfigError(f"the target's logits are not finite (NaN or inf) for new token {token}: run in "
                          "float32 (runtime.dtype=float32), or check the model's weights")


def check_finite_rows(logits: torch.Tensor, counts: list[int], slots: list, trees: list) -> None:
    """check_finite for a pass over several rows, with one sync when all is well; padding is ignored."""
    if bool(torch.isfinite(logits.amax(dim=-1)).all()):
        return
    for row, slot in enumerate(slots):
        new = len(slot.request.tokens) - slot.request.prompt_len
        check_finite(logits[row, : counts[row]], new, trees[row].depths if trees[row] else None)
