"""Ratchet tree nodes and UpdatePath (RFC 9420 sections 7.1, 7.6, 12.4.1).

This module holds the wire structs; the tree itself (hashes, resolution,
validation, TreeKEM) is built on them below.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Self

from .codec import Reader, Struct, Writer, decode_enum
from .errors import DecodeError
from .leaf_node import LeafNode


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
    node.encode(w)


def decode_node(r: Reader) -> Node:
    node_type = decode_enum(NodeType, r.u8(), "node type")
    if node_type == NodeType.LEAF:
        return LeafNode.decode(r)
    return ParentNode.decode(r)


def encode_ratchet_tree(nodes: list[Node | None]) -> bytes:
    """The ``ratchet_tree`` extension body: ``optional<Node> ratchet_tree<V>``."""
    return Writer().vector(nodes, lambda w, node: w.optional(node, encode_node)).getvalue()


def decode_ratchet_tree(data: bytes) -> list[Node | None]:
    r = Reader(data)
    nodes = r.vector(lambda inner: inner.optional(decode_node))
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
        self.leaf_node.encode(w)
        w.structs(self.nodes)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(LeafNode.decode(r), tuple(r.structs(UpdatePathNode)))
