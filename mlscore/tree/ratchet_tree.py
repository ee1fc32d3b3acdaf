"""Ratchet tree nodes and UpdatePath (RFC 9420 sections 7.1, 7.6, 12.4.1).

This module holds the wire structs; the tree itself (hashes, resolution,
validation, TreeKEM) is built on them below.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Self

from ..codec import Reader, Struct, Writer, decode_enum
from ..crypto import CipherSuite
from ..errors import DecodeError, TreeError
from ..leaf_node import LeafNode, LeafNodeSource
from . import math as tree_math


class NodeType(IntEnum):
    LEAF = 1
    PARENT = 2


@dataclass(frozen=True)
class ParentNode(Struct):
    encryption_key: bytes
    parent_hash: bytes = b""
    unmerged_leaves: tuple[int, ...] = ()

    def encode(self, w: Writer) -> None:
        w.opaque(self.encryption_key).opaque(self.parent_hash).vector(self.unmerged_leaves, Writer.u32)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.opaque(), r.opaque(), tuple(r.vector(Reader.u32)))


Node = LeafNode | ParentNode


def encode_node(w: Writer, node: Node) -> None:
    if isinstance(node, LeafNode):
        w.u8(NodeType.LEAF)
    else:
        w.u8(NodeType.PARENT)
    w.struct(node)


def decode_node(r: Reader) -> Node:
    node_type = decode_enum(NodeType, r.u8(), "node type")
    if node_type == NodeType.LEAF:
        return LeafNode.decode(r)
    return ParentNode.decode(r)


def encode_ratchet_tree(nodes: list[Node | None]) -> bytes:
    """The ``ratchet_tree`` extension body: ``optional<Node> ratchet_tree<V>``."""
    # mypy solves optional's T as the join of LeafNode and ParentNode (Struct), not the Node union
    return Writer().vector(nodes, lambda w, node: w.optional(node, encode_node)).getvalue()  # type: ignore[arg-type]


def decode_ratchet_tree(data: bytes, max_leaves: int | None = None) -> list[Node | None]:
    """The nodes of a ``ratchet_tree``; more than a tree of ``max_leaves`` holds is refused while decoding."""
    r = Reader(data)
    max_nodes = 2 * max_leaves - 1 if max_leaves is not None else None
    nodes = r.vector(lambda inner: inner.optional(decode_node), max_nodes)
    r.finish()
    if nodes and nodes[-1] is None:
        raise DecodeError("ratchet tree ends in a blank node")
    return nodes


@dataclass(frozen=True)
class HPKECiphertext(Struct):
    kem_output: bytes
    ciphertext: bytes

    def encode(self, w: Writer) -> None:
        w.opaque(self.kem_output).opaque(self.ciphertext)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.opaque(), r.opaque())


@dataclass(frozen=True)
class UpdatePathNode(Struct):
    encryption_key: bytes
    encrypted_path_secret: tuple[HPKECiphertext, ...]

    def encode(self, w: Writer) -> None:
        w.opaque(self.encryption_key).structs(self.encrypted_path_secret)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.opaque(), tuple(r.structs(HPKECiphertext)))


@dataclass(frozen=True)
class UpdatePath(Struct):
    leaf_node: LeafNode
    nodes: tuple[UpdatePathNode, ...]

    def encode(self, w: Writer) -> None:
        w.struct(self.leaf_node)
        w.structs(self.nodes)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(LeafNode.decode(r), tuple(r.structs(UpdatePathNode)))


# -- the tree ------------------------------------------------------------------------

_LEAF_TYPE = bytes([NodeType.LEAF])
_PARENT_TYPE = bytes([NodeType.PARENT])


class RatchetTree:
    """The public ratchet tree: ``2 * n_leaves - 1`` nodes, ``n_leaves`` a power of two.

    Tree hashes are cached per node and invalidated along the path of every
    change, because the tree hash is computed on every commit.
    """

    def __init__(self, suite: CipherSuite, nodes: list[Node | None]) -> None:
        self.suite = suite
        self._nodes = nodes
        self._hashes: dict[int, bytes] = {}

    # construction and export
    @classmethod
    def from_nodes(cls, suite: CipherSuite, nodes: list[Node | None]) -> RatchetTree:
        """From the (possibly truncated) ``ratchet_tree`` extension list, checking node kinds."""
        if not nodes:
            raise TreeError("empty ratchet tree")
        if len(nodes) % 2 == 0:
            raise TreeError("ratchet tree has an even number of nodes")
        for index, node in enumerate(nodes):
            if node is not None and isinstance(node, LeafNode) != tree_math.is_leaf(index):
                raise TreeError(f"node {index} has the wrong type")
        n_leaves = 1
        while 2 * n_leaves - 1 < len(nodes):
            n_leaves *= 2
        return cls(suite, list(nodes) + [None] * (2 * n_leaves - 1 - len(nodes)))

    @classmethod
    def with_leaves(cls, suite: CipherSuite, leaves: list[LeafNode]) -> RatchetTree:
        tree = cls(suite, [None])
        for leaf in leaves:
            tree.add_leaf(leaf)
        return tree

    def nodes_for_export(self) -> list[Node | None]:
        """The node list with trailing blanks removed (section 12.4.3.3)."""
        end = len(self._nodes)
        while end > 0 and self._nodes[end - 1] is None:
            end -= 1
        return self._nodes[:end]

    def copy(self) -> RatchetTree:
        clone = RatchetTree(self.suite, list(self._nodes))
        clone._hashes = dict(self._hashes)
        return clone

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RatchetTree) and self.nodes_for_export() == other.nodes_for_export()

    __hash__ = None  # type: ignore[assignment]

    # access
    @property
    def n_leaves(self) -> int:
        return (len(self._nodes) + 1) // 2

    def node(self, index: int) -> Node | None:
        return self._nodes[index]

    def leaf(self, leaf_index: int) -> LeafNode | None:
        if not 0 <= leaf_index < self.n_leaves:
            return None
        return self._nodes[2 * leaf_index]  # type: ignore[return-value]

    def parent_node(self, index: int) -> ParentNode | None:
        return self._nodes[index]  # type: ignore[return-value]

    def leaves(self) -> list[tuple[int, LeafNode]]:
        return [(i, leaf) for i in range(self.n_leaves) if (leaf := self.leaf(i)) is not None]

    def find_leaf(self, leaf_node: LeafNode) -> int | None:
        for index, leaf in self.leaves():
            if leaf.encryption_key == leaf_node.encryption_key and leaf.signature_key == leaf_node.signature_key:
                return index
        return None

    def set_node(self, index: int, node: Node | None) -> None:
        self._nodes[index] = node
        self._invalidate(index)

    def _invalidate(self, index: int) -> None:
        self._hashes.pop(index, None)
        for ancestor in tree_math.direct_path(index, self.n_leaves):
            self._hashes.pop(ancestor, None)

    # structure changes (section 12.1)
    def add_leaf(self, leaf_node: LeafNode) -> int:
        """Put a new member in the leftmost blank leaf, widening the tree if needed."""
        leaf_index = next((i for i in range(self.n_leaves) if self._nodes[2 * i] is None), None)
        if leaf_index is None:
            leaf_index = self.n_leaves
            self._nodes.extend([None] * len(self._nodes) + [None])
            self._hashes.clear()
        node_index = 2 * leaf_index
        self.set_node(node_index, leaf_node)
        for ancestor in tree_math.direct_path(node_index, self.n_leaves):
            parent = self._nodes[ancestor]
            if parent is not None:
                assert isinstance(parent, ParentNode)
                merged = tuple(sorted({*parent.unmerged_leaves, leaf_index}))
                self.set_node(ancestor, ParentNode(parent.encryption_key, parent.parent_hash, merged))
        return leaf_index

    def blank_path(self, leaf_index: int) -> None:
        for ancestor in tree_math.direct_path(2 * leaf_index, self.n_leaves):
            self.set_node(ancestor, None)

    def update_leaf(self, leaf_index: int, leaf_node: LeafNode) -> None:
        self.set_node(2 * leaf_index, leaf_node)
        self.blank_path(leaf_index)

    def remove_leaf(self, leaf_index: int) -> None:
        self.set_node(2 * leaf_index, None)
        self.blank_path(leaf_index)
        self.truncate()

    def truncate(self) -> None:
        """Halve the tree while its right half is entirely blank (section 7.7)."""
        while self.n_leaves > 1:
            half = self.n_leaves // 2
            if any(self._nodes[2 * i] is not None for i in range(half, self.n_leaves)):
                break
            del self._nodes[2 * half - 1 :]
            self._hashes.clear()

    # resolution and paths (section 4.1.1)
    def resolution(self, index: int) -> list[int]:
        node = self._nodes[index]
        if node is not None:
            if isinstance(node, ParentNode):
                return [index, *(2 * leaf for leaf in node.unmerged_leaves)]
            return [index]
        if tree_math.is_leaf(index):
            return []
        return self.resolution(tree_math.left(index)) + self.resolution(tree_math.right(index))

    def filtered_direct_path(self, leaf_index: int) -> list[int]:
        """Direct path nodes whose copath child has a non-empty resolution."""
        node_index = 2 * leaf_index
        n = self.n_leaves
        return [parent for parent, sibling in zip(tree_math.direct_path(node_index, n),
                                                  tree_math.copath(node_index, n), strict=True)
                if self.resolution(sibling)]

    # hashes (sections 7.8 and 7.9)
    def tree_hash(self, index: int | None = None) -> bytes:
        if index is None:
            index = tree_math.root(self.n_leaves)
        cached = self._hashes.get(index)
        if cached is None:
            cached = self._compute_hash(index, frozenset())
            self._hashes[index] = cached
        return cached

    def _compute_hash(self, index: int, removed: frozenset[int]) -> bytes:
        node = self._nodes[index]
        w = Writer()
        if tree_math.is_leaf(index):
            leaf = None if (index // 2) in removed else node
            w.raw(_LEAF_TYPE).u32(index // 2).optional(leaf, Writer.struct)
            return self.suite.hash(w.getvalue())
        parent = node
        if parent is not None and removed:
            assert isinstance(parent, ParentNode)
            parent = ParentNode(parent.encryption_key, parent.parent_hash,
                                tuple(i for i in parent.unmerged_leaves if i not in removed))
        hash_of = (lambda x: self._compute_hash(x, removed)) if removed else self.tree_hash
        w.raw(_PARENT_TYPE).optional(parent, Writer.struct)
        w.opaque(hash_of(tree_math.left(index))).opaque(hash_of(tree_math.right(index)))
        return self.suite.hash(w.getvalue())

    def parent_hash_of(self, parent_index: int, sibling_index: int) -> bytes:
        """The parent_hash a child of ``parent_index`` carries (sibling = the other child)."""
        parent = self._nodes[parent_index]
        assert isinstance(parent, ParentNode)
        sibling_hash = self._compute_hash(sibling_index, frozenset(parent.unmerged_leaves))
        data = Writer().opaque(parent.encryption_key).opaque(parent.parent_hash).opaque(sibling_hash)
        return self.suite.hash(data.getvalue())

    def set_path_parent_hashes(self, leaf_index: int, filtered_path: list[int]) -> bytes:
        """Fill parent_hash along a freshly set filtered direct path; return the leaf's value."""
        node_index = 2 * leaf_index
        n = self.n_leaves
        next_hash = b""
        for position in range(len(filtered_path) - 1, -1, -1):
            parent_index = filtered_path[position]
            parent = self._nodes[parent_index]
            assert isinstance(parent, ParentNode)
            self.set_node(parent_index, ParentNode(parent.encryption_key, next_hash, ()))
            below = filtered_path[position - 1] if position > 0 else node_index
            next_hash = self.parent_hash_of(parent_index, _other_child(parent_index, below, n))
        return next_hash

    def verify_parent_hashes(self) -> None:
        """Every non-blank parent must be parent-hash valid (section 7.9.2)."""
        for index in range(1, len(self._nodes), 2):
            parent = self._nodes[index]
            if parent is None:
                continue
            assert isinstance(parent, ParentNode)
            if not any(self._valid_via(index, parent, child, sibling)
                       for child, sibling in ((tree_math.left(index), tree_math.right(index)),
                                              (tree_math.right(index), tree_math.left(index)))):
                raise TreeError(f"parent node {index} is not parent-hash valid")

    def _valid_via(self, index: int, parent: ParentNode, child: int, sibling: int) -> bool:
        expected = self.parent_hash_of(index, sibling)
        resolution = self.resolution(child)
        unmerged_below = {2 * leaf for leaf in parent.unmerged_leaves if _is_below(2 * leaf, child)}
        for descendant in resolution:
            node = self._nodes[descendant]
            carried = node.parent_hash if node is not None else b""
            if carried == expected and unmerged_below == set(resolution) - {descendant}:
                return True
        return False

    def validate(self, group_id: bytes, *, check_signatures: bool = True) -> None:
        """Structural checks a joiner runs on a tree it receives (section 12.4.3.1).

        ``check_signatures=False`` is for callers that verify every leaf anyway
        (the group runs full leaf-node validation right after), so each
        signature is checked once.
        """
        self.verify_parent_hashes()
        encryption_keys: set[bytes] = set()
        signature_keys: set[bytes] = set()
        n = self.n_leaves
        for index, node in enumerate(self._nodes):
            if node is None:
                continue
            if node.encryption_key in encryption_keys:
                raise TreeError(f"encryption key of node {index} is used twice in the tree")
            encryption_keys.add(node.encryption_key)
            if isinstance(node, LeafNode):
                if node.signature_key in signature_keys:
                    raise TreeError(f"signature key of leaf {index // 2} is used twice")
                signature_keys.add(node.signature_key)
                if check_signatures:
                    gid = None if node.leaf_node_source == LeafNodeSource.KEY_PACKAGE else group_id
                    node.verify(self.suite, gid, None if gid is None else index // 2)
            else:
                for leaf in node.unmerged_leaves:
                    if leaf >= n or self._nodes[2 * leaf] is None:
                        raise TreeError(f"parent {index} lists blank or absent unmerged leaf {leaf}")
                    if not _is_below(2 * leaf, index):
                        raise TreeError(f"parent {index} lists unmerged leaf {leaf} outside its subtree")
                    for between in tree_math.direct_path(2 * leaf, n):
                        if between == index:
                            break
                        middle = self._nodes[between]
                        if middle is not None and leaf not in middle.unmerged_leaves:  # type: ignore[union-attr]
                            raise TreeError(f"unmerged leaf {leaf} of node {index} is missing at node {between}")


def _is_below(node: int, ancestor: int) -> bool:
    """Whether ``node`` is in the subtree rooted at ``ancestor``."""
    k = tree_math.level(ancestor)
    return ancestor - ((1 << k) - 1) <= node <= ancestor + ((1 << k) - 1)


def _other_child(parent_index: int, below: int, n_leaves: int) -> int:
    left = tree_math.left(parent_index)
    return tree_math.right(parent_index) if _is_below(below, left) else left
