"""The radix tree under concurrent use: 4 threads x 10,000 random operations on one tree, with
the structural invariants and exact byte accounting checked after every operation.

Without the tree's lock this fails within a few thousand operations (lost `+=` updates of the
byte counters, a node split twice); the short switch interval makes threads trade places often."""

import random
import sys
import threading

import pytest
from test_radix import ListSegment, cached_tokens

from caching.radix import RadixTree

THREADS, OPS, MAX_BYTES, MAX_LOCKS = 4, 10_000, 300, 3


def random_ops(tree: RadixTree, seed: int, failures: list) -> None:
    """One thread's share: match (and maybe lock), insert, unlock, evict; each lock it holds
    must keep its prefix cached, and the tree must stay consistent and within budget."""
    rng = random.Random(seed)
    held = []  # (handle, the prefix it was matched with)
    try:
        for _ in range(OPS):
            tokens = [rng.randrange(4) for _ in range(rng.randint(1, 8))]
            namespace = rng.choice("ab")
            op = rng.random()
            if op < 0.35:
                lock = len(held) < MAX_LOCKS and rng.random() < 0.5
                match = tree.match_prefix(tokens, namespace, lock=lock)
                if lock:
                    held.append((match.node, tokens[: match.length]))
            elif op < 0.7:
                cached = tree.insert(tokens, ListSegment(tokens), namespace)
                assert 0 <= cached <= len(tokens)
            elif op < 0.85 and held:
                tree.unlock(held.pop(rng.randrange(len(held)))[0])
            else:
                tree.evict(rng.randint(1, 100))
            for handle, prefix in held:
                assert cached_tokens(tree, handle) == prefix, "a locked prefix changed"
            tree.check_invariants()  # under the lock: bytes == sum of segments, within budget
    except BaseException as e:  # noqa: BLE001  (reported by the main thread)
        failures.append(e)
    finally:
        for handle, _ in held:
            tree.unlock(handle)


@pytest.fixture
def fast_switching():
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(interval)


def test_concurrent_operations_keep_the_tree_consistent(fast_switching):
    tree = RadixTree(MAX_BYTES)
    failures = []
    threads = [threading.Thread(target=random_ops, args=(tree, seed, failures)) for seed in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, f"{len(failures)} threads failed, first: {failures[0]!r}"
    tree.check_invariants()
    stats = tree.stats
    assert tree.root.lock_count == 0 and stats["bytes_in_use"] <= MAX_BYTES
    assert stats["evictions"] > 0 and stats["hit_tokens"] > 0  # the budget was tight and the tree was used
    assert tree.evict(10**9) == stats["bytes_in_use"] and tree.stats["nodes"] == 0  # all of it was real
