"""The radix tree of cached segments: unit tests of each behaviour, and a stateful test of random
operations against a naive reference of the sequences inserted per namespace."""

import random

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from caching.radix import RadixTree

BYTES_PER_TOKEN = 10


class ListSegment:
    """A stand-in for a KV segment: the tokens themselves, at 10 bytes each."""

    def __init__(self, tokens):
        self.tokens = list(tokens)

    @property
    def nbytes(self) -> int:
        return BYTES_PER_TOKEN * len(self.tokens)

    def split(self, at: int):
        return ListSegment(self.tokens[:at]), ListSegment(self.tokens[at:])

    def __len__(self) -> int:
        return len(self.tokens)


def cached_tokens(tree: RadixTree, node) -> list[int]:
    return [t for segment in tree.segments(node) for t in segment.tokens]


def insert(tree: RadixTree, tokens, namespace: str = "") -> int:
    return tree.insert(tokens, ListSegment(tokens), namespace)


def test_match_ending_inside_an_edge_splits_node_and_segment():
    tree = RadixTree(max_bytes=1000)
    insert(tree, [1, 2, 3, 4, 5, 6])
    match = tree.match_prefix([1, 2, 3, 9])
    assert match.length == 3
    assert [s.tokens for s in tree.segments(match.node)] == [[1, 2, 3]]
    assert tree.stats["nodes"] == 2 and tree.stats["bytes_in_use"] == 60
    full = tree.match_prefix([1, 2, 3, 4, 5, 6, 7])
    assert full.length == 6
    assert [s.tokens for s in tree.segments(full.node)] == [[1, 2, 3], [4, 5, 6]]
    tree.check_invariants()


def test_insert_stores_only_the_uncached_suffix():
    tree = RadixTree(max_bytes=1000)
    assert insert(tree, [1, 2, 3]) == 3
    assert insert(tree, [1, 2, 3, 4, 5]) == 5
    assert tree.stats["bytes_in_use"] == 50 and tree.stats["nodes"] == 2
    match = tree.match_prefix([1, 2, 3, 4, 5])
    assert [s.tokens for s in tree.segments(match.node)] == [[1, 2, 3], [4, 5]]
    assert insert(tree, [1, 2, 3, 4]) == 4  # already cached: splits, stores nothing new
    assert tree.stats["bytes_in_use"] == 50
    tree.check_invariants()


def test_namespaces_never_share_entries():
    tree = RadixTree(max_bytes=1000)
    insert(tree, [1, 2, 3], namespace="model-a")
    miss = tree.match_prefix([1, 2, 3], namespace="model-b")
    assert miss.length == 0 and tree.segments(miss.node) == []
    insert(tree, [1, 2, 3, 4], namespace="model-b")
    assert tree.match_prefix([1, 2, 3, 4], namespace="model-a").length == 3
    assert tree.match_prefix([1, 2, 3, 4], namespace="model-b").length == 4
    assert tree.match_prefix([1, 2, 3, 4]).length == 0  # the default namespace is a third one
    assert tree.stats["bytes_in_use"] == 70
    tree.check_invariants()


def test_lock_prevents_eviction_until_unlocked():
    tree = RadixTree(max_bytes=60)
    insert(tree, [1, 2, 3])
    match = tree.match_prefix([1, 2, 3])
    tree.lock(match.node)
    assert tree.evict(1000) == 0
    assert insert(tree, [4, 5, 6, 7]) == 0  # would need the locked bytes
    assert cached_tokens(tree, match.node) == [1, 2, 3]
    tree.unlock(match.node)
    assert tree.evict(1000) == 30
    assert tree.match_prefix([1, 2, 3]).length == 0
    tree.check_invariants()


def test_locked_handle_survives_later_splits():
    tree = RadixTree(max_bytes=60)
    insert(tree, [1, 2, 3, 4, 5, 6])
    handle = tree.match_prefix([1, 2, 3, 4, 5, 6]).node
    tree.lock(handle)
    assert tree.match_prefix([1, 2, 9]).length == 2  # splits the locked node
    assert cached_tokens(tree, handle) == [1, 2, 3, 4, 5, 6]
    assert tree.evict(1000) == 0  # the new upper node inherited the lock
    tree.check_invariants()
    tree.unlock(handle)
    assert tree.evict(1000) == 60
    tree.check_invariants()


def test_unlock_below_zero_and_stale_handles_raise():
    tree = RadixTree(max_bytes=100)
    insert(tree, [1, 2])
    handle = tree.match_prefix([1, 2]).node
    with pytest.raises(ValueError):
        tree.unlock(handle)
    tree.evict(20)
    for use in (tree.segments, tree.lock, tree.unlock):
        with pytest.raises(ValueError):
            use(handle)
    tree.check_invariants()


def test_least_recently_used_leaf_goes_first():
    tree = RadixTree(max_bytes=60)
    insert(tree, [1, 2, 3])
    insert(tree, [4, 5, 6])
    tree.match_prefix([1, 2, 3])  # now [4, 5, 6] is the older one
    assert insert(tree, [7, 8, 9]) == 3
    assert tree.match_prefix([4, 5, 6]).length == 0
    assert tree.match_prefix([1, 2, 3]).length == 3
    assert tree.stats["evictions"] == 1
    tree.check_invariants()


def test_parent_is_evicted_only_after_its_children():
    tree = RadixTree(max_bytes=1000)
    insert(tree, [1, 2, 3, 4])
    insert(tree, [1, 2, 5, 6])
    insert(tree, [9])
    assert tree.evict(40) == 40  # the leaves [3 4] and [5 6], not their older-looking parent
    assert tree.match_prefix([1, 2, 3]).length == 2
    assert tree.match_prefix([9]).length == 1
    assert tree.evict(30) == 30
    assert tree.stats["nodes"] == 0 and tree.stats["evictions"] == 4
    tree.check_invariants()


def test_budget_never_exceeded_when_inserting_more_than_fits():
    rng = random.Random(0)
    tree = RadixTree(max_bytes=200)
    for _ in range(300):
        tokens = [rng.randrange(4) for _ in range(rng.randint(1, 12))]
        assert insert(tree, tokens, namespace=rng.choice("ab")) == len(tokens)  # nothing locked: always fits
        assert tree.stats["bytes_in_use"] <= 200
        tree.check_invariants()
    assert tree.stats["evictions"] > 0


def test_oversize_insert_stores_nothing_and_evicts_nothing():
    tree = RadixTree(max_bytes=50)
    insert(tree, [9, 9])
    assert insert(tree, [1, 2, 3, 4, 5, 6]) == 0
    assert tree.match_prefix([9, 9]).length == 2  # not evicted for an insert that cannot fit
    locked = tree.match_prefix([9, 9]).node
    tree.lock(locked)
    assert insert(tree, [9, 9, 1, 2, 3, 4]) == 2  # the suffix alone fits, but not beside the lock
    assert insert(tree, [1, 2, 3, 4]) == 0
    assert tree.stats["bytes_in_use"] == 20 and tree.stats["evictions"] == 0
    tree.check_invariants()


def test_insert_never_evicts_the_prefix_it_extends():
    tree = RadixTree(max_bytes=100)
    insert(tree, [7, 7, 7])
    tree.lock(tree.match_prefix([7, 7, 7]).node)
    insert(tree, [1, 2, 3, 4])
    # the new 40 bytes fit beside the lock only if [1 2 3 4] went, and they extend it
    assert insert(tree, [1, 2, 3, 4, 5, 6, 7, 8]) == 4
    assert tree.match_prefix([1, 2, 3, 4, 5]).length == 4
    assert tree.stats["evictions"] == 0
    tree.check_invariants()


def test_stats_and_hit_rate():
    tree = RadixTree(max_bytes=1000)
    assert tree.stats["hit_rate"] == 0.0
    insert(tree, [1, 2, 3, 4])
    tree.match_prefix([1, 2, 9, 9])
    assert tree.stats["queried_tokens"] == 4 and tree.stats["hit_tokens"] == 2
    tree.match_prefix([1, 2, 3, 4])
    assert tree.stats["hit_rate"] == 0.75
    tree.match_prefix([1], namespace="other")
    assert tree.stats["queried_tokens"] == 9 and tree.stats["hit_tokens"] == 6


def test_dump_shows_tokens_sizes_and_locks():
    tree = RadixTree(max_bytes=1000)
    insert(tree, [11, 12, 13], namespace="model-a")
    insert(tree, list(range(100, 120)), namespace="model-a")
    tree.lock(tree.match_prefix([11, 12, 13], namespace="model-a").node)
    text = tree.dump()
    assert "'model-a'" in text
    assert "[11 12 13] 3 tok, 30 B, lock 1" in text
    assert "100 101" in text and "..." in text and "20 tok, 200 B, lock 0" in text


def test_split_that_changes_size_is_refused():
    class Padded(ListSegment):  # each piece rounds up to a 4-token page
        @property
        def nbytes(self):
            return BYTES_PER_TOKEN * -(-len(self.tokens) // 4) * 4

        def split(self, at):
            return Padded(self.tokens[:at]), Padded(self.tokens[at:])

    tree = RadixTree(max_bytes=1000)
    tree.insert([1, 2, 3, 4], Padded([1, 2, 3, 4]))
    with pytest.raises(ValueError):
        tree.match_prefix([1, 2])
    tree.check_invariants()


# Stateful test: random operations on a tree and on a reference that only knows which sequences
# went in. Eviction is the tree's choice, so with a small budget the reference bounds match
# lengths from above; with an unlimited one (and no evict calls) it predicts them exactly.

NAMESPACES = ("a", "b")
token_sequences = st.lists(st.integers(0, 3), min_size=1, max_size=8)


def common_prefix_length(a, b) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


class RadixMachine(RuleBasedStateMachine):
    max_bytes: int  # set by the subclasses below
    unlimited = False

    def __init__(self):
        super().__init__()
        self.tree = RadixTree(self.max_bytes)
        self.inserted = {namespace: set() for namespace in NAMESPACES}
        self.locked = []  # (namespace, handle, the prefix it was matched with)
        self.queried = self.hit = 0

    @rule(namespace=st.sampled_from(NAMESPACES), tokens=token_sequences)
    def insert(self, namespace, tokens):
        cached = insert(self.tree, tokens, namespace)
        assert 0 <= cached <= len(tokens)
        if self.unlimited or (not self.locked and BYTES_PER_TOKEN * len(tokens) <= self.max_bytes):
            assert cached == len(tokens)
        self.inserted[namespace].add(tuple(tokens[:cached]))

    @rule(namespace=st.sampled_from(NAMESPACES), tokens=token_sequences, lock=st.booleans())
    def match(self, namespace, tokens, lock):
        match = self.tree.match_prefix(tokens, namespace)
        longest = max((common_prefix_length(tokens, s) for s in self.inserted[namespace]), default=0)
        if self.unlimited:
            assert match.length == longest
        assert match.length <= longest
        for locked_namespace, _, prefix in self.locked:
            if locked_namespace == namespace and tuple(tokens[: len(prefix)]) == prefix:
                assert match.length >= len(prefix), "a locked prefix went missing"
        assert cached_tokens(self.tree, match.node) == tokens[: match.length]
        self.queried += len(tokens)
        self.hit += match.length
        if lock:
            self.tree.lock(match.node)
            self.locked.append((namespace, match.node, tuple(tokens[: match.length])))

    @precondition(lambda self: self.locked)
    @rule(data=st.data())
    def unlock(self, data):
        _, handle, _ = self.locked.pop(data.draw(st.integers(0, len(self.locked) - 1)))
        self.tree.unlock(handle)

    @precondition(lambda self: not self.unlimited)
    @rule(nbytes=st.integers(0, 300))
    def evict(self, nbytes):
        before = self.tree.stats
        freed = self.tree.evict(nbytes)
        after = self.tree.stats
        assert before["bytes_in_use"] - after["bytes_in_use"] == freed
        assert after["evictions"] - before["evictions"] == before["nodes"] - after["nodes"]
        if freed < nbytes:
            assert self.tree.evict(1) == 0, "stopped short while something was evictable"

    @invariant()
    def tree_is_consistent(self):
        self.tree.check_invariants()
        stats = self.tree.stats
        assert stats["bytes_in_use"] <= self.max_bytes
        assert (stats["queried_tokens"], stats["hit_tokens"]) == (self.queried, self.hit)
        for _, handle, prefix in self.locked:
            assert tuple(cached_tokens(self.tree, handle)) == prefix
        if self.unlimited:  # each distinct prefix is stored exactly once
            prefixes = {(ns, s[:i]) for ns, seqs in self.inserted.items() for s in seqs for i in range(1, len(s) + 1)}
            assert stats["bytes_in_use"] == BYTES_PER_TOKEN * len(prefixes)


class SmallBudgetMachine(RadixMachine):
    max_bytes = 60  # 6 tokens, less than the longest insert: evictions and refusals happen often


class UnlimitedBudgetMachine(RadixMachine):
    max_bytes = 10**9
    unlimited = True


TestSmallBudget = SmallBudgetMachine.TestCase
TestSmallBudget.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)
TestUnlimitedBudget = UnlimitedBudgetMachine.TestCase
TestUnlimitedBudget.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)


def test_insert_with_start_copies_only_the_new_part():
    """A caller that knows a prefix is cached passes the KV of the rest only."""
    tree = RadixTree(max_bytes=10_000)
    tree.insert([1, 2, 3], ListSegment([1, 2, 3]))
    assert tree.insert([1, 2, 3, 4, 5], ListSegment([4, 5]), start=3) == 5
    assert tree.insert([1, 2, 3, 4, 5, 6], ListSegment([3, 4, 5, 6]), start=2) == 6  # more cached than start
    assert tree.insert([7, 8, 9], ListSegment([9]), start=2) == 0  # a gap: nothing stored
    match = tree.match_prefix([1, 2, 3, 4, 5, 6, 7])
    assert match.length == 6
    assert [t for seg in tree.segments(match.node) for t in seg.tokens] == [1, 2, 3, 4, 5, 6]
    tree.check_invariants()
