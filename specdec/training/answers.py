"""The training data: the target's own answers to the training prompts (self-distillation, as
Medusa and EAGLE train on the target's outputs), saved in a data directory as a `datasets.Dataset`
(specdec.training.answer_store).

Two stages (specdec.training.prompts_corpus, disjoint from every evaluation prompt): the
target first writes `data.passages` everyday texts, then answers `data.prompts` training
prompts built from templates, the Python standard library and those texts, plus
`data.self_written` prompts it writes itself, greedily and a `data.sampled_share` of them by
sampling. The prompts are answered in batches of `data.batch_size` (batch_answers.generate_batch:
left-padded, one target pass per new token for the whole batch, on the target's device), each batch
saved as it ends: a rerun with the same work directory answers only what is missing.
"""

import copy
import logging
import random
import time
import zlib
from pathlib import Path

from omegaconf import DictConfig
from tqdm import tqdm

from specdec.chat import encode
from specdec.decoding import eos_ids_of
from specdec.io import atomic_write_text
from specdec.runtime.prepare import prepare
from specdec.training.answer_store import AnswerStore
from specdec.training.batch_answers import generate_batch
from specdec.training.dtypes import cpu_dtype
from specdec.training.prompts_corpus import (
    check_disjoint,
    evaluation_spans,
    overlaps,
    passage_prompts,
    training_prompts,
)

log = logging.getLogger(__name__)


def generate_data(cfg: DictConfig, target, tokenizer, evaluation: list[str], store: AnswerStore,
                  states: dict | None = None) -> list[dict]:
    """Answer the passage requests, then every training prompt (none sharing a span with an
    `evaluation` text), with the target, into `store` (resuming from what it holds). With `states`,
    the target's hidden states over the sequences answered now are kept in it (see answer)."""
    model = answering_model(target, cfg.data.dtype)
    requests = passage_prompts(cfg.data.passages, cfg.seed)
    answer(requests, cfg, model, tokenizer, store, sampled_share=1.0, states=states)
    spans = evaluation_spans(evaluation)
    passages = [complete_sentences(tokenizer.decode(store.done[p["id"]]["answer_ids"], skip_special_tokens=True))
                for p in requests]
    passages = [text for text in passages if len(text) >= 200 and not overlaps(text, spans)]
    made = training_prompts(cfg.data.prompts, cfg.seed, passages)
    prompts = [p for p in made if not overlaps(p["prompt"], spans)]
    if len(prompts) < len(made):  # an instruction and a passage together can meet an evaluation prompt's wording
        log.info("dropped %d training prompts that share a span with an evaluation prompt", len(made) - len(prompts))
    prompts += self_written_prompts(cfg, model, tokenizer, store, spans)
    check_disjoint([p["prompt"] for p in prompts], evaluation)
    answer(prompts, cfg, model, tokenizer, store, sampled_share=cfg.data.sampled_share, states=states)
    return [store.done[p["id"]] for p in requests + prompts]


def self_written_prompts(cfg: DictConfig, model, tokenizer, store: AnswerStore, spans: set[str]) -> list[dict]:
    """`data.self_written` user prompts the target writes itself, sampled from its chat template
    up to the start of a user turn (Magpie, Xu et al. 2024): an instruction-tuned model then writes
    what its users ask, in far more varied topics and wordings than the templates. Only requests it
    finished (EOS) and that share no span with an evaluation prompt are kept."""
    count = cfg.data.self_written
    if not count:
        return []
    if tokenizer.chat_template is None:
        log.warning("data.self_written=%d skipped: the target's tokenizer has no chat template (not an "
                    "instruction-tuned model) to sample user turns from", count)
        return []
    marker = "\x00"  # cut the template where the user's text would start
    template = tokenizer.decode(encode(tokenizer, [{"role": "user", "content": marker}]))
    prefix = tokenizer.encode(template[: template.index(marker)])
    requests = [{"id": f"request-{i}", "category": "request", "input_ids": prefix} for i in range(count)]
    answer(requests, cfg, model, tokenizer, store, sampled_share=1.0, temperature=1.0)
    eos = eos_ids_of(model)
    prompts = []
    for r in requests:
        ids = store.done[r["id"]]["answer_ids"]
        text = tokenizer.decode(ids[:-1], skip_special_tokens=True).strip() if ids and ids[-1] in eos else ""
        if len(text.split()) >= 4 and not overlaps(text, spans):
            prompts.append({"id": f"self-written-{r['id']}", "category": "self-written", "prompt": text})
    log.info("the target wrote %d usable prompts of %d", len(prompts), count)
    return prompts


def complete_sentences(text: str) -> str:
    """The text up to its last full stop (answers are cut at max_new_tokens)."""
    return text[: text.rfind(".") + 1].strip()


def answering_model(target, dtype: str):
    """The target as it writes the training data: in `dtype` (data.dtype), with our fused layers
    and few-row products (a batch of answers is a few rows per step)."""
    dtype = cpu_dtype(dtype, "data.dtype")
    return prepare(target if dtype == target.dtype else copy.deepcopy(target).to(dtype))


def answer(prompts: list[dict], cfg: DictConfig, model, tokenizer, store: AnswerStore, sampled_share: float,
           temperature: float | None = None, states: dict | None = None) -> None:
    """Batched answers by `model` (answering_model's) to the prompts `store` lacks (their "prompt"
    in a user turn, or their "input_ids" as given), added to it batch by batch; a
    `sampled_share` of them sampled at `temperature` (default data.temperature), the rest greedy;
    each batch samples from its own seed (data seed and first prompt id): a resumed run, which
    answers the same batches less those saved, draws the same answers as an uninterrupted one.
    With `states`, its last hidden states over each answered sequence are kept in it by prompt
    id (specdec.training.batch_answers)."""
    rng = random.Random(cfg.seed)
    for p in prompts:
        if "input_ids" not in p:
            p["input_ids"] = encode(tokenizer, [{"role": "user", "content": p["prompt"]}])
        p["sampled"] = rng.random() < sampled_share
    size, todo, batches = cfg.data.batch_size, [p for p in prompts if p["id"] not in store.done], []
    for kind in (False, True):  # greedy, then sampled: a batch is all one kind, of similar lengths
        group = sorted((p for p in todo if p["sampled"] == kind), key=lambda p: len(p["input_ids"]))
        batches += [group[start : start + size] for start in range(0, len(group), size)]
    eos = eos_ids_of(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos)
    with tqdm(total=len(prompts), initial=len(prompts) - len(todo), desc="answering", unit="prompt") as bar:
        for batch in batches:
            sampled = batch[0]["sampled"]
            answers = generate_batch(model, [p["input_ids"] for p in batch], cfg.data.max_new_tokens, eos, pad,
                                     (temperature or cfg.data.temperature) if sampled else None, states is not None,
                                     seed=zlib.crc32(f"{cfg.seed}/{batch[0]['id']}".encode()))
            store.add([{"id": p["id"], "category": p["category"], "sampled": sampled, "prompt_ids": p["input_ids"],
                        "answer_ids": tokens} for p, (tokens, _) in zip(batch, answers)])
            if states is not None:
                states |= {p["id"]: hidden for p, (_, hidden) in zip(batch, answers)}
            bar.update(len(batch))


def answered_prompts(cfg: DictConfig, target, tokenizer, evaluation: list[str], work: Path,
                     states: dict | None = None) -> tuple[list[dict], float]:
    """generate_data into work's answers (specdec.training.answer_store), and the minutes it took
    summed over resumed runs (an interrupted run's time counts too, unless its process was killed
    outright; a run that found every answer on disk only read them, and its time does not count)."""
    store, spent = AnswerStore(work), work / "data_seconds.txt"
    seconds = float(spent.read_text()) if spent.exists() else 0.0
    began, finished = time.perf_counter(), False
    try:
        data = generate_data(cfg, target, tokenizer, evaluation, store, states)
        store.finish()
        finished = True
    finally:
        if not finished or store.added:
            seconds += time.perf_counter() - began
            atomic_write_text(spent, str(seconds))
    return data, seconds / 60
