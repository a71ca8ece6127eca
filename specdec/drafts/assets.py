"""The drafts and heads shipped with the package: one folder per target under specdec/assets,
one alias table, and one token-frequency file per target.

    specdec/assets/<target>/draft/     a self-distilled draft model (draft strategy)
    specdec/assets/<target>/eagle/     an EAGLE draft
    specdec/assets/<target>/medusa/    Medusa heads
    specdec/assets/<target>/tokens_by_frequency.json   the target's answer tokens, most frequent first
"""

import json
from collections import Counter
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from specdec.drafts.subset_head import SubsetHead
from specdec.errors import ConfigError
from specdec.placement import resident

ASSETS = Path(__file__).resolve().parent.parent / "assets"
SHIPPED = {  # alias -> directory
    "smollm2-135m-draft": ASSETS / "smollm2-135m" / "draft",
    "smollm2-135m-eagle": ASSETS / "smollm2-135m" / "eagle",
    "smollm2-135m-medusa": ASSETS / "smollm2-135m" / "medusa",
}
TOKEN_FREQUENCIES = "tokens_by_frequency.json"  # token ids, most frequent in the training answers first
DAMAGED = ("the file is damaged or incomplete: copy it again, or retrain (python -m experiments.train_draft, "
           "train_eagle or train_medusa)")


def asset_directory(alias_or_path) -> Path:
    """The directory of a shipped alias, or the given directory."""
    return Path(SHIPPED.get(str(alias_or_path), alias_or_path))


def token_frequency_file(directory: Path) -> Path:
    """A trained directory's own token frequencies, or, for a shipped one, its target's."""
    directory = Path(directory)
    own = directory / TOKEN_FREQUENCIES
    if own.exists() or directory.resolve().parent.parent != ASSETS:
        return own
    return directory.parent / TOKEN_FREQUENCIES


def frequent_token_head(weight: torch.Tensor, directory: Path, head_tokens: int) -> SubsetHead:
    """A SubsetHead over the `head_tokens` most frequent tokens listed for `directory`."""
    if isinstance(head_tokens, bool) or not isinstance(head_tokens, int) or head_tokens < 1:
        raise ConfigError(f"head_tokens must be an integer >= 1, or null for the full head (got {head_tokens!r})")
    path = token_frequency_file(directory)
    if not path.exists():
        raise ConfigError(f"head_tokens needs {path} (written by the trainers): retrain, or set head_tokens=null")
    weight = resident(weight, "the target's LM head", "keep lm_head on a device in model.device_map, or set head_tokens=null")
    return SubsetHead(weight, read_json(path)[:head_tokens])


def read_json(path: Path, required: tuple[str, ...] = ()):
    """A trained directory's JSON file (with `required` keys, for an object); ConfigError if unreadable."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read {path} ({e.__class__.__name__}: {e}): {DAMAGED}") from None
    missing = [key for key in required if not isinstance(data, dict) or key not in data]
    if missing:
        raise ConfigError(f"{path} lacks {', '.join(missing)}: {DAMAGED}")
    return data


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; ConfigError if it is missing or unreadable."""
    try:
        return load_file(path)
    except (OSError, SafetensorError) as e:
        raise ConfigError(f"cannot read the weights {path} ({e.__class__.__name__}: {e}): {DAMAGED}") from None


def save_token_frequencies(sequences: list[list[int]], vocab_size: int, directory: Path) -> None:
    """Every token id, those most frequent in `sequences` (the target's answers) first, then
    the unseen ones by id (a BPE vocabulary numbers its merges from the most frequent), for SubsetHead."""
    counts = Counter(token for sequence in sequences for token in sequence)
    seen = [token for token, _ in counts.most_common()]
    ranked = seen + sorted(set(range(vocab_size)) - set(seen))
    (Path(directory) / TOKEN_FREQUENCIES).write_text(json.dumps(ranked))
