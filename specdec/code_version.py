"""The version of this code a result was made with: its git commit."""

import subprocess
from pathlib import Path


def git_commit() -> str:
    """HEAD's commit of the checkout this package runs from ("-dirty" with uncommitted changes to
    tracked files), or "unknown" outside a git checkout."""
    repo = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")
