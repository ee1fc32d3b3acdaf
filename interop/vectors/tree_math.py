"""tree-math.json: root, children, parent and sibling of every node."""

from __future__ import annotations

from collections.abc import Callable

from mlscore.errors import TreeError
from mlscore.tree import math as tm


def _or_none(fn: Callable[..., int], *args: int) -> int | None:
    """The vectors write null where the relation does not exist; we raise TreeError there."""
    try:
        return fn(*args)
    except TreeError:
        return None


def check(entry: dict) -> None:
    n = entry["n_leaves"]
    assert tm.node_width(n) == entry["n_nodes"], "n_nodes"
    assert tm.root(n) == entry["root"], "root"
    for x in range(entry["n_nodes"]):
        assert _or_none(tm.left, x) == entry["left"][x], f"left({x})"
        assert _or_none(tm.right, x) == entry["right"][x], f"right({x})"
        assert _or_none(tm.parent, x, n) == entry["parent"][x], f"parent({x})"
        assert _or_none(tm.sibling, x, n) == entry["sibling"][x], f"sibling({x})"
