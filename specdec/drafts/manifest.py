"""The shipped files' sha256 (specdec/assets/manifest.json), checked when a shipped draft, EAGLE
draft or Medusa heads load: a damaged or half-copied install is one clear line naming the fix,
not a traceback from safetensors, nor (a flipped bit in the weights) a silently worse draft.

`python -m specdec.drafts.manifest` rewrites the manifest after retraining a shipped asset;
tests/test_shipped_files.py checks that it matches the files."""

import hashlib
import json
from pathlib import Path

from specdec.drafts.assets import ASSETS
from specdec.errors import ConfigError
from specdec.io import atomic_write_text

MANIFEST = "manifest.json"
REINSTALL = "reinstall the package (pip install -e . in a clone, else pip install --force-reinstall specdec)"
_verified: dict[Path, tuple[int, int]] = {}  # file -> (size, mtime) when it last matched: hashed once a process


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digests(root: Path | None = None) -> dict[str, dict]:
    """Every file under `root` (default: the shipped assets) but the manifest: relative path -> {"bytes", "sha256"}."""
    root = root or ASSETS
    return {str(p.relative_to(root)): {"bytes": p.stat().st_size, "sha256": sha256(p)}
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != MANIFEST}


def write_manifest(root: Path | None = None) -> None:
    root = root or ASSETS
    atomic_write_text(root / MANIFEST, json.dumps(file_digests(root), indent=1) + "\n")


def check_shipped(directory: Path, root: Path | None = None) -> None:
    """When `directory` is a shipped asset (under `root`, default the package's assets), ConfigError unless
    each of its files, and its target's shared files (root/<target>/*, e.g. the token frequencies), matches
    the manifest."""
    root = root or ASSETS
    directory = Path(directory).resolve()
    if not directory.is_relative_to(root.resolve()):
        return  # the user's own directory: nothing recorded to check against
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"the shipped file list {root / MANIFEST} is unreadable ({e.__class__.__name__}): "
                          f"{REINSTALL}") from None
    own = directory.relative_to(root.resolve())
    for name, expected in manifest.items():
        relative = Path(name)
        if relative.is_relative_to(own) or relative.parent == own.parent:
            check_file(root / relative, expected)


def check_file(path: Path, expected: dict) -> None:
    if not path.is_file():
        raise ConfigError(f"the shipped file {path} is missing: {REINSTALL}")
    stat = path.stat()
    if _verified.get(path) == (stat.st_size, stat.st_mtime_ns):
        return
    if stat.st_size != expected["bytes"] or sha256(path) != expected["sha256"]:
        raise ConfigError(f"the shipped file {path} is damaged (its sha256 differs from {MANIFEST}'s): {REINSTALL}")
    _verified[path] = (stat.st_size, stat.st_mtime_ns)


if __name__ == "__main__":
    write_manifest()
    print(f"wrote {ASSETS / MANIFEST}")
