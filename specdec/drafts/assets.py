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

from specdec.drafts.subset_head import SubsetHead
from specdec.errors import ConfigError

ASSETS = Path(__file__).resolve().parent.parent / "assets"
SHIPPED = {  # alias -> directory
    "smollm2-135m-draft": ASSETS / "smollm2-135m" / "draft",
    "smollm2-135m-eagle": ASSETS / "smollm2-135m" / "eagle",
    "smollm2-135m-medusa": ASSETS / "smollm2-135m" / "medusa",
}
TOKEN_FREQUENCIES = "tokens_by_frequency.json"  # token ids, most frequent in the training answers first


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
    return SubsetHead(weight, json.loads(path.read_text())[:head_tokens])


def save_token_frequencies(sequences: list[list[int]], vocab_size: int, directory: Path) -> None:
    """Every token id, those most frequent in `sequences` (the target's answers) first, then
    the unseen ones by id (a BPE vocabulary numbers its merges from the most frequent), for SubsetHead."""
    counts = Counter(token for sequence in sequences for token in sequence)
    seen = [token for token, _ in counts.most_common()]
    ranked = seen + sorted(set(range(vocab_size)) - set(seen))
    (Path(directory) / TOKEN_FREQUENCIES).write_text(json.dumps(ranked))
