"""Prompt suites: JSONL files loaded with `datasets`, one object a line with a "prompt"
string (or a "messages" list of {"role", "content"} turns) and optional "id", "category" and
"salt" (the tenant whose prefix-cache entries the prompt may use, see caching.prefix); turned
into token ids by specdec.chat.encode."""

import json
from pathlib import Path

from datasets import load_dataset

from specdec.errors import ConfigError

SUITES = Path(__file__).parent / "suites"


def check_limit(limit: int | None) -> int | None:
    if limit is not None and limit < 1:
        raise ConfigError(f"dataset.limit must be >= 1 or null (got {limit})")
    return limit


def shipped_suites() -> list[str]:
    return sorted(str(p.relative_to(SUITES).with_suffix("")) for p in SUITES.rglob("*.jsonl"))


def load_prompts(path: str | None = None, limit: int | None = None, suite: str = "embedded") -> list[dict]:
    """Prompts as dicts with id, category and messages, from a JSONL file, or when `path` is
    None from a suite shipped in experiments/suites (e.g. "embedded", "workloads/few_shot")."""
    if not path and suite not in shipped_suites():
        raise ConfigError(f"unknown dataset.suite {suite!r}; shipped suites: {', '.join(shipped_suites())}")
    path = Path(path) if path else SUITES / f"{suite}.jsonl"
    if not path.is_file():
        raise ConfigError(f"dataset.path {str(path)!r} is not a file: give a JSONL file with one {{\"prompt\": ...}} per line")
    check_salts(path)
    try:
        rows = load_dataset("json", data_files=str(path), split="train")
    except Exception as e:  # datasets raises many types for a malformed file
        raise ConfigError(f"cannot read {path} as JSON Lines ({e.__class__.__name__}: {e}): write one JSON object per line") from None
    if "prompt" not in rows.column_names and "messages" not in rows.column_names:
        raise ConfigError(f"{path} has no \"prompt\" field (fields: {', '.join(rows.column_names)}): add one string per line")
    if check_limit(limit) is not None:
        rows = rows.select(range(min(limit, len(rows))))
    prompts = []
    for i, row in enumerate(rows):
        prompts.append({
            "id": str(row.get("id") or i),
            "category": row.get("category") or "all",
            "messages": row.get("messages") or [{"role": "user", "content": row["prompt"]}],
            "salt": row.get("salt"),
        })
    return prompts


def check_salts(path: Path) -> None:
    """Every "salt" is a string. Checked line by line before `datasets` reads the file: its type
    inference fails on a column of mixed types without saying where, and skips blank lines."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
        except ValueError:
            continue  # blank or malformed: `datasets` reports the file
        salt = row.get("salt") if isinstance(row, dict) else None
        if salt is not None and not isinstance(salt, str):
            raise ConfigError(f"{path} line {number}: \"salt\" must be a string (got {json.dumps(salt)}): quote it, "
                              f"as \"salt\": {json.dumps(json.dumps(salt))}")


def evaluation_texts() -> list[str]:
    """Every message of every shipped suite: what training prompts must share no span with."""
    return [m["content"] for suite in shipped_suites() for p in load_prompts(suite=suite) for m in p["messages"]]
