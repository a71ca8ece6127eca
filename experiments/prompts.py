"""Prompt suites: JSONL files, one object a line with a "prompt" string (or a "messages" list
of {"role", "content"} turns) and optional "id", "category" and "salt" (the tenant whose
prefix-cache entries the prompt may use, see caching.prefix); turned into token ids by
specdec.chat.encode.

Read line by line rather than with `datasets`, whose type inference fails on a column of mixed
types without saying where (or lets a number through as a prompt): every bad line is a
ConfigError naming its line number, and ids must be unique (a duplicate was skipped on resume)."""

import json
from pathlib import Path

from specdec.errors import ConfigError, is_int
from specdec.fingerprint import short

SUITES = Path(__file__).parent / "suites"
FORMAT = 'one {"prompt": "..."} or {"messages": [{"role": "user", "content": "..."}]} per line'


def check_limit(limit) -> int | None:
    if limit is not None and (not is_int(limit) or limit < 1):
        raise ConfigError(f"dataset.limit must be an integer >= 1, or null for every prompt (got {limit!r})")
    return limit


def shipped_suites() -> list[str]:
    return sorted(str(p.relative_to(SUITES).with_suffix("")) for p in SUITES.rglob("*.jsonl"))


def load_prompts(path: str | None = None, limit: int | None = None, suite: str = "embedded") -> list[dict]:
    """Prompts as dicts with id, category, messages and salt, from a JSONL file, or when `path`
    is None from a suite shipped in experiments/suites (e.g. "embedded", "workloads/few_shot");
    the first `limit` only. The whole file is checked, so that a larger limit later cannot fail."""
    check_limit(limit)
    if not path and suite not in shipped_suites():
        raise ConfigError(f"unknown dataset.suite {suite!r}; shipped suites: {', '.join(shipped_suites())}")
    path = Path(path) if path else SUITES / f"{suite}.jsonl"
    if not path.is_file():
        raise ConfigError(f"dataset.path {str(path)!r} is not a file: give a JSONL file with {FORMAT}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {path} ({e.__class__.__name__}: {e}): give a readable UTF-8 JSONL file") from None
    prompts, lines_of = [], {}
    for number, line in enumerate(lines, 1):
        if line.strip():
            prompt = parse_row(line, f"{path} line {number}", len(prompts))
            if prompt["id"] in lines_of:
                raise ConfigError(f"{path} lines {lines_of[prompt['id']]} and {number} have the same id "
                                  f"{prompt['id']!r}: give every prompt its own \"id\"")
            lines_of[prompt["id"]] = number
            prompts.append(prompt)
    if not prompts:
        raise ConfigError(f"{path} holds no prompts: write {FORMAT}")
    return prompts[:limit]


def parse_row(line: str, where: str, index: int) -> dict:
    """One line as a prompt dict (id defaults to the prompt's index); ConfigError naming `where`."""
    try:
        row = json.loads(line)
    except ValueError as e:
        raise ConfigError(f"{where} is not JSON ({e}): write {FORMAT}") from None
    if not isinstance(row, dict):
        raise ConfigError(f"{where} is not a JSON object: write {FORMAT}")
    if row.get("messages") is not None:
        messages = row["messages"]
        if not (isinstance(messages, list) and messages and all(is_turn(m) for m in messages)):
            raise ConfigError(f"{where}: \"messages\" must be a non-empty list of {{\"role\": str, \"content\": str}} "
                              f"turns (got {short(messages)})")
    elif row.get("prompt") is not None:
        if not isinstance(row["prompt"], str) or not row["prompt"]:
            raise ConfigError(f"{where}: \"prompt\" must be a non-empty string (got {short(row['prompt'])}): quote it")
        messages = [{"role": "user", "content": row["prompt"]}]
    else:
        raise ConfigError(f"{where} has neither \"prompt\" nor \"messages\" (fields: {', '.join(row) or 'none'}): "
                          f"write {FORMAT}")
    for field in ("id", "category", "salt"):
        value = row.get(field)
        allowed = isinstance(value, str) and (value or field != "id") or field == "id" and is_int(value)
        if value is not None and not allowed:
            kind = "a non-empty string" if field == "id" else "a string"
            raise ConfigError(f"{where}: \"{field}\" must be {kind} (got {short(value)}): quote it, as "
                              f"\"{field}\": {json.dumps(json.dumps(value))}")
    return {
        "id": str(index if row.get("id") is None else row["id"]),
        "category": row.get("category") or "all",
        "messages": messages,
        "salt": row.get("salt"),
    }


def is_turn(message) -> bool:
    return isinstance(message, dict) and isinstance(message.get("role"), str) and isinstance(message.get("content"), str)



def evaluation_texts() -> list[str]:
    """Every message of every shipped suite: what training prompts must share no span with."""
    return [m["content"] for suite in shipped_suites() for p in load_prompts(suite=suite) for m in p["messages"]]
