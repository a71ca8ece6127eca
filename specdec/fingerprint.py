"""Settings as flat dotted keys, and how two records of them differ: the one comparison behind
both resume checks (run directories, experiments.resume; trainers' work directories,
specdec.training.fingerprint), so that both name a changed setting the same way."""

import json


def flat(tree: dict, prefix: str = "") -> dict:
    """{"generation.max_new_tokens": 128, ...}: nested settings as dotted keys (an empty dict is a value)."""
    keys = {}
    for name, value in tree.items():
        keys |= flat(value, f"{prefix}{name}.") if isinstance(value, dict) and value else {f"{prefix}{name}": value}
    return keys


def differences(recorded: dict, current: dict) -> list[str]:
    """`key: old -> new` for every key whose value differs, sorted by key."""
    keys = sorted(recorded.keys() | current.keys())
    return [f"{key}: {short(recorded.get(key))} -> {short(current.get(key))}"
            for key in keys if recorded.get(key) != current.get(key)]


def short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 48 else text[:45] + "..."
