"""Prompt suites: JSONL files (one {"prompt", "id"?, "category"?} object a line) loaded with
`datasets`, turned into token ids, with the chat template for chat models."""

from pathlib import Path

from datasets import load_dataset

from specdec.errors import ConfigError

EMBEDDED_SUITE = Path(__file__).parent / "suites" / "embedded.jsonl"


def load_prompts(path: str | None = None, limit: int | None = None) -> list[dict]:
    """Prompts as dicts with id, category and prompt; `path` None means the embedded suite."""
    path = Path(path) if path else EMBEDDED_SUITE
    if not path.is_file():
        raise ConfigError(f"dataset.path {str(path)!r} is not a file: give a JSONL file with one {{\"prompt\": ...}} per line")
    try:
        rows = load_dataset("json", data_files=str(path), split="train")
    except Exception as e:  # datasets raises many types for a malformed file
        raise ConfigError(f"cannot read {path} as JSON Lines ({e.__class__.__name__}: {e}): write one JSON object per line") from None
    if "prompt" not in rows.column_names:
        raise ConfigError(f"{path} has no \"prompt\" field (fields: {', '.join(rows.column_names)}): add one string per line")
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"dataset.limit must be >= 1 or null (got {limit})")
        rows = rows.select(range(min(limit, len(rows))))
    prompts = []
    for i, row in enumerate(rows):
        prompts.append({
            "id": str(row.get("id") or i),
            "category": row.get("category") or "all",
            "prompt": row["prompt"],
        })
    return prompts


def encode(tokenizer, prompt: str, chat_template: str | bool = "auto") -> list[int]:
    """Token ids of a prompt, wrapped as a user turn when the model has a chat template."""
    use_template = tokenizer.chat_template is not None if chat_template == "auto" else bool(chat_template)
    if use_template:
        if tokenizer.chat_template is None:
            raise ConfigError("dataset.chat_template=true but the tokenizer has no chat template: use auto or false")
        return list(tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                                  add_generation_prompt=True, tokenize=True, return_dict=False))
    return tokenizer.encode(prompt)
