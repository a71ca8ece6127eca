"""Public prompt suites from the Hugging Face hub (or a URL), mapped onto our prompt format.

Each suite's config under configs/dataset/ names where it lives and which fields hold the
prompt, the category and the id. Offline they fail with one clear line, never a traceback."""

from datasets import load_dataset

from experiments.prompts import check_limit
from specdec.errors import ConfigError


def load_public_prompts(hub: dict, limit: int | None = None, suite_name: str = "public") -> list[dict]:
    split = hub["split"] if check_limit(limit) is None else f"{hub['split']}[:{limit}]"
    try:
        rows = load_dataset(hub["path"], hub.get("name"), data_files=hub.get("data_files"), split=split)
    except Exception as e:  # offline or unreachable hub: datasets raises many types
        raise ConfigError(
            f"cannot load the public suite {hub['path']!r} ({e.__class__.__name__}: {str(e).splitlines()[0][:200]}); it needs "
            "access to the Hugging Face hub or the internet: offline, use dataset=embedded or dataset.path=FILE.jsonl"
        ) from None
    if hub["prompt"] not in rows.column_names:
        raise ConfigError(f"{hub['path']} has no field {hub['prompt']!r} (fields: {', '.join(rows.column_names)}): "
                          "fix dataset.hub.prompt")
    prompts = []
    rows_of = {}
    for i, row in enumerate(rows):
        text = row[hub["prompt"]]
        if isinstance(text, list) and text:  # multi-turn suites (MT-Bench, Spec-Bench): the first turn
            text = text[0]
        if not isinstance(text, str) or not text:
            raise ConfigError(f"row {i} of {hub['path']} has no text in {hub['prompt']!r} (got {text!r}): "
                              "fix dataset.hub.prompt")
        prompt_id = str(row[hub["id"]]) if hub.get("id") else str(i)
        if prompt_id in rows_of:
            raise ConfigError(f"rows {rows_of[prompt_id]} and {i} of {hub['path']} have the same id {prompt_id!r}: "
                              "set dataset.hub.id=null to number the prompts")
        rows_of[prompt_id] = i
        prompts.append({
            "id": prompt_id,
            "category": str(row[hub["category"]]) if hub.get("category") else suite_name,
            "messages": [{"role": "user", "content": hub.get("template", "{prompt}").format(prompt=text)}],
        })
    return prompts
