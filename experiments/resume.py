"""What a run directory holds, so that rerunning the same command resumes it exactly, and a
rerun with other settings is refused instead of mixing two experiments in one summary.

fingerprint.json records, before the first record is written, every setting that changes the
records (model, strategies, anchors, generation, dataset file or suite, runtime dtype/device/
seed/kv_cache/layers/linear/compile, cache, the draft, the code's git commit) and each prompt's
content by id; after the models load, the sizes `auto` chose (check_auto_sizes). dataset.limit is
left out: a larger limit resumes with the new prompts (their contents join the fingerprint), a
smaller one summarises the selected prompts only. Left out too, as they change timings only:
runtime.warmup and runtime.threads.
"""

import hashlib
import json
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from specdec.code_version import git_commit
from specdec.errors import ConfigError
from specdec.fingerprint import differences, flat
from specdec.io import atomic_write_text, read_jsonl
from specdec.strategies import strategy_class

log = logging.getLogger(__name__)
FINGERPRINT = "fingerprint.json"
RESULTS = "results.jsonl"
NEW_RUN = "start a new run with hydra.run.dir=<a new directory>"



def fingerprint(cfg: DictConfig, strategies: dict[str, dict], prompts: list[dict], device: torch.device,
                dtype: torch.dtype) -> dict:
    """{"settings": dotted settings that change the records, "prompts": id -> sha256 of its content}."""
    settings = OmegaConf.to_container(cfg, resolve=True)
    dataset = {k: v for k, v in settings["dataset"].items() if k != "limit"}
    if dataset.get("path"):
        dataset["path"] = str(Path(dataset["path"]).resolve())
    runtime = {k: v for k, v in settings["runtime"].items() if k not in ("warmup", "threads")}
    uses_draft = any(strategy_class(o.get("name"), o.get("target")).needs_draft_model for o in strategies.values())
    tree = {
        "model": settings["model"], "strategies": strategies, "anchors": settings["anchors"],
        "generation": settings["generation"], "dataset": dataset, "cache": settings["cache"],
        "runtime": {**runtime, "device": str(device), "dtype": str(dtype)},
        "draft": settings["draft"] if uses_draft else None, "code": git_commit(),
    }
    return {"settings": json.loads(json.dumps(flat(tree))), "prompts": {p["id"]: prompt_hash(p) for p in prompts}}


def prompt_hash(prompt: dict) -> str:
    content = {k: prompt.get(k) for k in ("messages", "category", "salt")}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def check_fingerprint(run_dir: Path, current: dict) -> None:
    """Record `current` in run_dir while it holds no results; else require the same settings and,
    for every prompt id both know, the same prompt (new prompts join the record)."""
    path, results = run_dir / FINGERPRINT, run_dir / RESULTS
    if not results.exists():
        atomic_write_text(path, json.dumps(current, indent=1))
        return
    if not path.exists():
        raise ConfigError(f"{results} has no record of the settings it was made with ({FINGERPRINT}; an older "
                          f"version wrote it): {NEW_RUN}")
    try:
        recorded = json.loads(path.read_text())
        old_settings, old_prompts = recorded["settings"], recorded["prompts"]
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{path} is damaged: {NEW_RUN}") from None
    new_settings = current["settings"]
    differ = differences(old_settings, new_settings)
    changed = [i for i, digest in current["prompts"].items() if old_prompts.get(i, digest) != digest]
    if changed:
        differ.append(f"the prompts with id {', '.join(changed[:3])}{' ...' if len(changed) > 3 else ''}")
    if differ:
        raise ConfigError(f"{run_dir} holds a run with other settings ({'; '.join(differ)}): resume it with the same "
                          f"settings, or {NEW_RUN}")
    merged = {**recorded, "settings": new_settings, "prompts": {**old_prompts, **current["prompts"]}}
    if merged != recorded:
        atomic_write_text(path, json.dumps(merged, indent=1))


def check_auto_sizes(run_dir: Path, chosen: dict[str, dict]) -> None:
    """Sizes left `auto` follow this device's measured costs, which the settings cannot show: record
    what each runner chose (`chosen`: runner -> its strategy's auto_sizes) beside the fingerprint, and
    refuse to resume with other sizes, which would mix two experiments in one summary."""
    path = run_dir / FINGERPRINT
    recorded = json.loads(path.read_text())
    sizes = {name: {k: v for k, v in s.items() if k != "predicted_speedup"} for name, s in chosen.items() if s}
    before = recorded.get("auto_sizes")
    if before is not None and before != sizes and (run_dir / RESULTS).exists():
        raise ConfigError(f"{run_dir} was started with the auto sizes {json.dumps(before)}, and auto now chooses "
                          f"{json.dumps(sizes)} (this device's measured costs differ: another machine, or a "
                          f"re-measure): resume it on the device that started it, or {NEW_RUN} (with these sizes "
                          f"set instead of auto to repeat them)")
    if before != sizes:
        atomic_write_text(path, json.dumps({**recorded, "auto_sizes": sizes}, indent=1))


def previous_records(run_dir: Path, prompt_ids: list[str], runners) -> dict[str, list[dict]]:
    """runner -> its records already in run_dir's results.jsonl for these prompts (an interrupted
    write's torn last line is dropped, to be redone); records of prompts outside a smaller
    dataset.limit stay in the file but out of the summary."""
    path = run_dir / RESULTS
    records = {name: [] for name in runners}
    if not path.exists():
        return records
    rows, seen, selected = read_jsonl(path), set(), set(prompt_ids)
    for number, row in enumerate(rows, 1):
        key = (row.get("prompt_id"), row.get("strategy"))
        if key in seen or key[1] not in records:
            raise ConfigError(f"{path} record {number} ({key[1]} on prompt {key[0]!r}) is a duplicate or of an unknown "
                              f"runner: delete that line to redo it, or {NEW_RUN}")
        seen.add(key)
        if key[0] in selected:
            records[key[1]].append(row)
    kept = sum(map(len, records.values()))
    log.info("resuming: %d results already in %s%s", kept, path,
             f" ({len(rows) - kept} more for prompts outside dataset.limit)" if len(rows) > kept else "")
    return records
