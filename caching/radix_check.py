"""The radix tree's diagnostics: a readable dump, the structural invariants tests assert, and
the bytes one namespace holds.

Kept apart from caching.radix so that the tree's own module holds only what it runs on; these
read its internals under its lock (RadixTree.dump and RadixTree.check_invariants take it first).
"""


def namespace_bytes(tree, namespace: str) -> int:
    """Bytes cached under one namespace: one model's entries for one tenant."""
    with tree._mutex:
        return sum(node.segment.nbytes for node in tree._token_nodes(namespace))


def dump(tree) -> str:
    """The tree, one node a line, indented by depth."""
    lines = [f"RadixTree {tree._bytes_in_use}/{tree.max_bytes} bytes, {tree._node_count} nodes, "
             f"lock {tree.root.lock_count}"]
    for name, namespace_root in tree._namespaces.items():
        lines.append(f"  namespace {name!r} lock {namespace_root.lock_count}")
        stack = [(child, 2) for child in _sorted_children(namespace_root)[::-1]]
        while stack:
            node, depth = stack.pop()
            lines.append(f"{'  ' * depth}[{abbreviate(node.edge)}] {len(node.edge)} tok, "
                         f"{node.segment.nbytes} B, lock {node.lock_count}")
            stack.extend((child, depth + 1) for child in _sorted_children(node)[::-1])
    return "\n".join(lines)


def check_invariants(tree) -> None:
    """Assert the invariants caching.radix's docstring gives reasons for, and exact accounting:
    the byte, locked-byte and node counters equal what the nodes hold, within the budget."""
    assert tree.root.lock_count >= 0 and tree.root.segment is None and not tree.root.children
    for namespace_root in tree._namespaces.values():
        assert namespace_root.parent is tree.root and not namespace_root.edge
        assert namespace_root.segment is None
        assert 0 <= namespace_root.lock_count <= tree.root.lock_count
    total_bytes = locked_bytes = count = 0
    for node in tree._token_nodes():
        parent = node.parent
        assert node.edge, "non-root node with an empty edge"
        assert parent.children.get(node.edge[0]) is node, "child not keyed by its first token"
        assert node.segment is not None
        if hasattr(node.segment, "__len__"):
            assert len(node.segment) == len(node.edge), "segment does not cover its edge"
        assert 0 <= node.lock_count <= parent.lock_count, "lock count above its parent's"
        assert node.last_access <= parent.last_access or parent.segment is None, "child more recent"
        total_bytes += node.segment.nbytes
        locked_bytes += node.segment.nbytes if node.lock_count else 0
        count += 1
    assert total_bytes == tree._bytes_in_use, f"bytes_in_use {tree._bytes_in_use} != {total_bytes}"
    assert locked_bytes == tree._locked_bytes, f"locked bytes {tree._locked_bytes} != {locked_bytes}"
    assert count == tree._node_count, f"node count {tree._node_count} != {count}"
    assert tree._bytes_in_use <= tree.max_bytes, "over budget"


def abbreviate(edge: tuple[int, ...], limit: int = 8) -> str:
    if len(edge) <= limit:
        return " ".join(map(str, edge))
    return " ".join(map(str, edge[: limit - 2])) + " ... " + " ".join(map(str, edge[-2:]))


def _sorted_children(node) -> list:
    return [node.children[key] for key in sorted(node.children)]
