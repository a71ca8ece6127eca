"""Measurements of this machine kept on disk between runs (few-row product plans, verify-cost
curves): one JSON file per kind in specdec's cache directory, keyed by what the measurement
depends on (device, torch, threads, model and layout), so that each is timed once.

Processes starting at once (test workers, sweep jobs) take a lock, so that one times a key and
the others read its result; the file is replaced atomically (specdec.io), so a reader sees the
old file or the new one. An entry marked `"plausible": false` (timed on a host too busy to
trust, specdec.runtime.timing) is timed again by the next process that needs it (up to TRIES
times in all; one left incomplete when the first-run budget ran out, until it is whole), and
`python -m experiments.measure_device` times everything again on purpose (FRESH). Nothing is timed
while other processes keep the CPUs busy (specdec.runtime.timing.busy_host): the caller's fallback
serves until a later run finds the host quiet.
"""

import contextlib
import json
import logging
import os

from specdec.io import atomic_write_text
from specdec.runtime.machine import cache_root
from specdec.runtime.timing import busy_host

try:
    import fcntl
except ImportError:  # Windows: no lock; a key timed twice at once is timed twice, the last result kept
    fcntl = None

log = logging.getLogger(__name__)

TRIES = 3  # an entry still implausible after this many processes timed it serves as it is (a host always busy)
FRESH = "SPECDEC_REMEASURE"  # set (to 1) by experiments.measure_device: every key this process needs is timed again


def kept(file: str, key: str, measure, fallback: dict) -> dict:
    """The entry under `key` in the cache directory's `file`: read, or measured now by `measure()` (a
    JSON-ready dict) and kept. Measured again when the kept one is implausible or FRESH is set (once
    per process: what this process measured serves it as it came out). On a busy host nothing is
    timed: the kept entry serves as it is, or else `fallback` (not kept), and a later run measures."""
    path, name = cache_root() / file, (file, key)
    entry = read(path).get(key)
    if usable(entry, name):
        return entry
    load = busy_host()
    if load is not None:
        log.warning("not timing %s now: other processes use %.0f%% of this process's CPUs (a later run will)",
                    key, 100 * load)
        whole = entry is not None and entry.get("complete", True)
        return entry if whole else {**fallback, "plausible": False, "complete": False, "host_load": round(load, 3)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.with_name(f"{path.name}.lock")):
        entries = read(path)  # re-read: another process may have measured it, or other keys, meanwhile
        if not usable(entries.get(key), name):
            log.info("measuring %s (kept in %s)", key, path)
            tries = 1 + (entries[key].get("tries", 1) if key in entries and not os.environ.get(FRESH) else 0)
            entries[key] = json.loads(json.dumps({**measure(), "tries": tries}))  # as a later read gives it
            _measured_here.add(name)
            atomic_write_text(path, json.dumps(entries, indent=1))
    return entries[key]


_measured_here: set[tuple[str, str]] = set()


def usable(entry: dict | None, name: tuple[str, str]) -> bool:
    """Whether a kept entry serves as it is."""
    if name in _measured_here:
        return entry is not None
    trusted = entry is not None and (entry.get("plausible", True) or (  # implausible: timed TRIES times, and whole
        entry.get("tries", 1) >= TRIES and entry.get("complete", True)))
    return trusted and not os.environ.get(FRESH)


def read(path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # none yet, or unreadable: measure again
        return {}


@contextlib.contextmanager
def _locked(path):
    """An exclusive lock on `path` while the block runs (released by the system if the process dies)."""
    with open(path, "a") as f:
        if fcntl is not None:
            fcntl.flock(f, fcntl.LOCK_EX)
        yield
