"""Array-based left-balanced binary trees (RFC 9420 section 4.1 and Appendix C).

Leaf ``i`` is node ``2*i``; parents sit at odd indices.  Every function takes
the number of leaves where the answer depends on the tree's width.  Asking
for something that does not exist (a leaf's children, the root's parent, a
node outside the tree) raises :class:`~mlscore.errors.TreeError`: callers
that reach it from wire data get an MLS error, never an endless walk.
"""

from __future__ import annotations

from functools import lru_cache

from ..errors import TreeError


def log2(x: int) -> int:
    """Floor of log2(x), with log2(0) = 0 as in the RFC."""
    return x.bit_length() - 1 if x > 0 else 0


def level(x: int) -> int:
    """Height above the leaves: the number of trailing one bits."""
    return (x ^ (x + 1)).bit_length() - 1


def node_width(n_leaves: int) -> int:
    return 0 if n_leaves == 0 else 2 * (n_leaves - 1) + 1


def root(n_leaves: int) -> int:
    return (1 << log2(node_width(n_leaves))) - 1


def left(x: int) -> int:
    k = level(x)
    if k == 0:
        raise TreeError(f"node {x} is a leaf and has no children")
    return x ^ (1 << (k - 1))


def right(x: int) -> int:
    k = level(x)
    if k == 0:
        raise TreeError(f"node {x} is a leaf and has no children")
    return x ^ (3 << (k - 1))


def parent(x: int, n_leaves: int) -> int:
    if not 0 <= x < node_width(n_leaves):
        raise TreeError(f"node {x} is outside a tree of {n_leaves} leaves")
    if x == root(n_leaves):
        raise TreeError("the root has no parent")
    k = level(x)
    b = (x >> (k + 1)) & 1
    return (x | (1 << k)) ^ (b << (k + 1))


def sibling(x: int, n_leaves: int) -> int:
    p = parent(x, n_leaves)
    return right(p) if x < p else left(p)


@lru_cache(maxsize=4096)
def direct_path(x: int, n_leaves: int) -> tuple[int, ...]:
    """The ancestors of ``x`` from its parent up to the root (empty for the root)."""
    r = root(n_leaves)
    path = []
    while x != r:
        x = parent(x, n_leaves)
        path.append(x)
    return tuple(path)


@lru_cache(maxsize=4096)
def copath(x: int, n_leaves: int) -> tuple[int, ...]:
    """The siblings of ``x`` and of each of its ancestors below the root."""
    if x == root(n_leaves):
        return ()
    nodes = [x, *direct_path(x, n_leaves)[:-1]]
    return tuple(sibling(y, n_leaves) for y in nodes)


def common_ancestor(x: int, y: int) -> int:
    """The lowest common ancestor of two nodes (semantic, any tree width)."""
    lx, ly = level(x) + 1, level(y) + 1
    if lx <= ly and x >> ly == y >> ly:
        return y
    if ly <= lx and x >> lx == y >> lx:
        return x
    xn, yn = x, y
    k = 0
    while xn != yn:
        xn >>= 1
        yn >>= 1
        k += 1
    return (xn << k) + (1 << (k - 1)) - 1


def is_leaf(x: int) -> bool:
    return x & 1 == 0


def leaf_node(leaf_index: int) -> int:
    return 2 * leaf_index


def node_leaf(x: int) -> int:
    return x >> 1
