"""A radix tree of cached KV segments keyed by token ids, in the manner of SGLang's RadixAttention.

Each node owns the KV of exactly the tokens on its edge, so the KV of a cached prefix is the
segments on the path from the top down to the node where the match ends. The tree never looks
inside a segment; it only needs the `Segment` protocol below, whose `split` must conserve bytes
(head.nbytes + tail.nbytes == nbytes): the tree splits segments on every match that ends inside
an edge, and a split that grew the cache could break the budget without an insert to evict for
it. A split that does not conserve bytes raises.

Design choices:
- Namespaces (model identity plus an optional salt, joined by the caller into one string)
  each get their own sub-root under the root, so two models or tenants never share an entry,
  while all of them share the tree's byte budget and LRU (caching.prefix gives each tenant a
  tree of its own when they must not). Namespace roots hold no tokens, are never evicted, and
  stay once created.
- A split keeps the original node object as the lower part and puts a new node above it, so a
  handle a caller holds (maybe locked) still ends at the same depth after later splits.
- Edges are never re-merged. After a split or the eviction of a sibling, a node may have a
  single child (as in SGLang): merging would need a segment concat the protocol lacks, and
  would invalidate handles.
- LRU times come from a counter, not the wall clock, so eviction order is deterministic. A
  node is touched whenever a match or insert passes through it, so a parent is always at
  least as recent as its children and leaves go before the prefixes they extend.
- Locks count references on a node and all its ancestors up to the root, so a parent's count
  is at least each child's, and any unlocked subtree can be evicted leaf by leaf.

Concurrency: one re-entrant lock per tree serialises every public method. An operation touches
the whole path to the root and the shared counters, and eviction the whole tree, so finer locks
would be taken almost everywhere for nothing: the operations are short pure Python, which runs
one thread at a time anyway. Without it, `+=` on the counters lost updates under 4 threads. A
handle is only safe while locked, so `match_prefix(..., lock=True)` matches and locks at once:
between a separate match and lock another thread could evict the node.
"""

import functools
import heapq
import itertools
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from caching import radix_check

logger = logging.getLogger(__name__)


class Segment(Protocol):
    nbytes: int  # bytes it holds

    def split(self, at: int) -> tuple["Segment", "Segment"]: ...  # first `at` tokens, the rest

    def __len__(self) -> int: ...  # tokens it covers; optional: only check_invariants uses it


class Node:
    """One edge of the tree: the tokens on it, their KV segment, and bookkeeping.
    Roots (the tree root and namespace roots) have an empty edge and no segment."""

    __slots__ = ("edge", "segment", "parent", "children", "lock_count", "last_access")

    def __init__(self, edge: tuple[int, ...] = (), segment: Any = None, parent: "Node | None" = None,
                 lock_count: int = 0, last_access: int = 0):
        self.edge = edge
        self.segment = segment
        self.parent = parent
        self.children: dict[int, Node] = {}  # keyed by the first token of the child's edge
        self.lock_count = lock_count
        self.last_access = last_access

    def __repr__(self) -> str:
        return f"Node(edge={radix_check.abbreviate(self.edge)}, lock_count={self.lock_count})"


@dataclass(frozen=True)
class Match:
    length: int  # tokens of the query that are cached
    node: Node  # handle: the deepest node of the match, for segments() and lock()


def _serialized(method):
    """Run `method` holding the tree's lock (see Concurrency above)."""
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with self._mutex:
            return method(self, *args, **kwargs)
    return run


class RadixTree:
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._mutex = threading.RLock()  # re-entrant: insert locks, evicts and unlocks through public methods
        self.root = Node()
        self._namespaces: dict[str, Node] = {}
        self._clock = 0
        self._bytes_in_use = 0
        self._locked_bytes = 0  # bytes in nodes with a positive lock count: never evictable
        self._node_count = 0
        self._queried_tokens = 0
        self._hit_tokens = 0
        self._evictions = 0

    @_serialized
    def match_prefix(self, tokens: Sequence[int], namespace: str = "", lock: bool = False) -> Match:
        """Longest cached prefix of `tokens`. Splits the last node if the match ends inside
        its edge, so the handle covers exactly the match; with `lock`, locks it too."""
        tokens = tuple(tokens)
        namespace_root = self._namespaces.get(namespace)
        if namespace_root is None:
            node, length = self.root, 0
        else:
            node, length = self._walk(namespace_root, tokens, self._tick())
        self._queried_tokens += len(tokens)
        self._hit_tokens += length
        if lock:
            self.lock(node)
        return Match(length, node)

    @_serialized
    def segments(self, node: Node) -> list:
        """The segments from the top down to `node`: together, the KV of its whole prefix."""
        return [n.segment for n in reversed(self._path_to_root(node)) if n.segment is not None]

    @_serialized
    def insert(self, tokens: Sequence[int], kv: Segment, namespace: str = "", start: int = 0) -> int:
        """Cache `tokens`, storing only the part not cached yet. `kv` is the KV of tokens[start:]
        (a caller that knows the first `start` tokens are cached need not copy their KV); if
        fewer than `start` are cached, nothing is stored. Evicts to make room; if room cannot
        be made, stores nothing. Returns how many tokens are now cached."""
        tokens = tuple(tokens)
        now = self._tick()
        namespace_root = self._namespaces.get(namespace)
        if namespace_root is None:
            namespace_root = self._namespaces[namespace] = Node(parent=self.root)
        node, cached = self._walk(namespace_root, tokens, now)
        if cached == len(tokens) or cached < start:
            return cached
        suffix = kv.split(cached - start)[1] if cached > start else kv
        if not self._make_room(suffix.nbytes, keep=node):
            logger.debug("no room for %d bytes of %d tokens; stored nothing", suffix.nbytes, len(tokens) - cached)
            return cached
        leaf = Node(tokens[cached:], suffix, parent=node, last_access=now)
        node.children[leaf.edge[0]] = leaf
        self._bytes_in_use += suffix.nbytes
        self._node_count += 1
        return len(tokens)

    @_serialized
    def lock(self, node: Node) -> None:
        """Protect `node` and its ancestors from eviction until the matching unlock."""
        for n in self._path_to_root(node):
            if n.lock_count == 0 and n.segment is not None:
                self._locked_bytes += n.segment.nbytes
            n.lock_count += 1

    @_serialized
    def unlock(self, node: Node) -> None:
        path = self._path_to_root(node)
        if node.lock_count <= 0:  # ancestors count at least as much, so checking `node` suffices
            raise ValueError(f"unlock of {node!r}, which is not locked")
        for n in path:
            n.lock_count -= 1
            if n.lock_count == 0 and n.segment is not None:
                self._locked_bytes -= n.segment.nbytes

    @_serialized
    def evict(self, nbytes: int) -> int:
        """Free at least `nbytes` by removing least recently used unlocked leaves, a parent
        becoming a candidate once its children are gone. Returns the bytes freed, which are
        fewer only when nothing evictable is left."""
        if nbytes <= 0:
            return 0
        tiebreak = itertools.count()  # equal times never fall through to comparing nodes
        candidates = [(n.last_access, next(tiebreak), n) for n in self._token_nodes() if self._evictable(n)]
        heapq.heapify(candidates)
        freed = evicted = 0
        while freed < nbytes and candidates:
            _, _, leaf = heapq.heappop(candidates)
            parent = leaf.parent
            freed += self._remove_leaf(leaf)
            evicted += 1
            if self._evictable(parent):
                heapq.heappush(candidates, (parent.last_access, next(tiebreak), parent))
        self._evictions += evicted
        logger.debug("evicted %d nodes, %d bytes (asked for %d)", evicted, freed, nbytes)
        return freed

    @property
    @_serialized
    def stats(self) -> dict:
        """Counters since construction; `nodes` counts nodes holding tokens (not roots)."""
        return {
            "queried_tokens": self._queried_tokens,
            "hit_tokens": self._hit_tokens,
            "hit_rate": self._hit_tokens / self._queried_tokens if self._queried_tokens else 0.0,
            "evictions": self._evictions,
            "bytes_in_use": self._bytes_in_use,
            "nodes": self._node_count,
        }

    @_serialized
    def dump(self) -> str:
        """The tree, one node a line, indented by depth."""
        return radix_check.dump(self)

    @_serialized
    def check_invariants(self) -> None:
        """Assert the structural invariants (for tests); see the module docstring for why."""
        radix_check.check_invariants(self)

    def _tick(self) -> int:
        self._clock += 1
        return self._clock

    def _walk(self, start: Node, tokens: tuple[int, ...], now: int) -> tuple[Node, int]:
        """Descend from `start` along `tokens`, touching each node passed and splitting the
        last one if the match ends inside its edge. Returns the deepest node and its depth."""
        node, matched = start, 0
        while matched < len(tokens):
            child = node.children.get(tokens[matched])
            if child is None:
                break
            common = common_prefix_length(child.edge, tokens[matched : matched + len(child.edge)])
            if common < len(child.edge):
                child = self._split(child, common)
            child.last_access = now
            node, matched = child, matched + common
        return node, matched

    def _split(self, node: Node, at: int) -> Node:
        """Cut `node`'s edge after `at` tokens; a new node above it takes the first part, so
        existing handles to `node` keep ending where they did. Returns the new upper node."""
        head, tail = node.segment.split(at)
        if head.nbytes + tail.nbytes != node.segment.nbytes:
            raise ValueError(f"segment split changed its size: {node.segment.nbytes} -> "
                             f"{head.nbytes} + {tail.nbytes}")
        upper = Node(node.edge[:at], head, node.parent, node.lock_count, node.last_access)
        upper.children[node.edge[at]] = node
        node.parent.children[node.edge[0]] = upper
        node.edge, node.segment, node.parent = node.edge[at:], tail, upper
        self._node_count += 1
        return upper

    def _make_room(self, nbytes: int, keep: Node) -> bool:
        """Evict until `nbytes` more fit the budget, sparing `keep` and its ancestors (the
        prefix the new bytes extend). Evicts nothing if even that would not be enough."""
        self.lock(keep)
        try:
            if nbytes > self.max_bytes - self._locked_bytes:
                return False
            self.evict(self._bytes_in_use + nbytes - self.max_bytes)
            return True
        finally:
            self.unlock(keep)

    def _remove_leaf(self, leaf: Node) -> int:
        """Detach `leaf`; its parent pointer goes to None so stale handles are detected."""
        freed = leaf.segment.nbytes
        del leaf.parent.children[leaf.edge[0]]
        leaf.parent = leaf.segment = None
        self._bytes_in_use -= freed
        self._node_count -= 1
        return freed

    def _evictable(self, node: Node) -> bool:
        return node.segment is not None and not node.children and node.lock_count == 0

    def _path_to_root(self, node: Node) -> list[Node]:
        """`node` and its ancestors, bottom up; raises if `node` was evicted."""
        path = [node]
        while path[-1].parent is not None:
            path.append(path[-1].parent)
        if path[-1] is not self.root:
            raise ValueError(f"{node!r} is not in this tree (evicted?)")
        return path

    def _token_nodes(self, namespace: str | None = None) -> Iterator[Node]:
        """Every node holding tokens (in one namespace, if given), parents before children."""
        stack = [child for name, namespace_root in self._namespaces.items() if namespace in (None, name)
                 for child in namespace_root.children.values()]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(node.children.values())


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))

