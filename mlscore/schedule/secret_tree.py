"""The secret tree and its per-sender ratchets (RFC 9420 section 9).

Secrets are derived lazily and deleted as soon as they are used (section
9.2): a parent's secret once both children exist, a leaf's once its two
ratchets exist, a ratchet secret once the next one is derived, a key once
it has decrypted its message.

Receiving is two-step so that a forged message cannot burn a key: the
framing layer calls :meth:`SecretTree.receive_key`, which returns the key
and a precomputed "after" state but changes no generation, authenticates
the message with it, and only then calls :meth:`SecretTree.consume`.  A
message that fails to decrypt or verify is simply dropped; the genuine
message for the same generation still opens afterwards.  Not even the lazy
expansion happens before ``consume``: the first lookup on a leaf plans
against the ratchet its first use would create, so a refused message leaves
the tree, and its stored form, exactly as they were.

Every ratchet carries a version that each change bumps.  A
:class:`ReceiveKey` computed against an older version is re-planned against
the current state when consumed, so interleaved lookups can never bring a
deleted key back.

Out-of-order delivery: a receiver accepts generations up to
``maximum_forward_distance`` ahead of the next expected one and keeps the
keys of at most ``out_of_order_tolerance`` skipped generations (the most
recent ones); older skipped keys are deleted for forward secrecy.

Persistence (:meth:`SecretTree.encode`, :meth:`SecretTree.decode`) stores the
tree exactly as it is held: the node secrets not yet consumed and each
ratchet's current secret, next generation and kept skipped keys.  Never the
root once it has been expanded: a stored tree can derive no key that the live
tree could no longer derive, and a restored receiver refuses what it had
already accepted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from itertools import islice, pairwise
from typing import TypeVar

from ..codec import Reader, Writer, decode_enum
from ..crypto import CipherSuite
from ..errors import DecodeError, ReplayError, StateError, ValidationError
from ..tree import math as tree_math

MAX_GENERATION = 0xFFFFFFFF
"""Generations travel as uint32 in SenderData."""


class RatchetType(IntEnum):
    HANDSHAKE = 0
    APPLICATION = 1


_RATCHET_LABELS = {RatchetType.HANDSHAKE: "handshake", RatchetType.APPLICATION: "application"}

_KeyNonce = tuple[bytes, bytes]


@dataclass
class _Ratchet:
    secret: bytes = field(repr=False)
    generation: int = 0
    # Keys of skipped generations, in ascending generation order (new ones are always higher).
    skipped: dict[int, _KeyNonce] = field(default_factory=dict, repr=False)
    version: int = 0


@dataclass(frozen=True)
class _Advance:
    """The ratchet state after consuming a generation at or beyond the next expected one."""

    secret: bytes = field(repr=False)
    generation: int
    skipped: dict[int, _KeyNonce] = field(repr=False)


@dataclass(frozen=True)
class ReceiveKey:
    """A key found for (leaf, ratchet, generation), not yet consumed."""

    leaf: int
    ratchet: RatchetType
    generation: int
    key: bytes = field(repr=False)
    nonce: bytes = field(repr=False)
    _version: int = field(default=-1, repr=False)
    # None when the key is one of the kept skipped keys.
    _advance: _Advance | None = field(default=None, repr=False)


def sender_data_key_nonce(suite: CipherSuite, sender_data_secret: bytes, ciphertext: bytes) -> tuple[bytes, bytes]:
    """Key and nonce protecting a PrivateMessage's SenderData (section 6.3.2)."""
    sample = ciphertext[: suite.hash_len]
    return (suite.expand_with_label(sender_data_secret, "key", sample, suite.aead_key_len),
            suite.expand_with_label(sender_data_secret, "nonce", sample, suite.aead_nonce_len))


def _path_to_stored(nodes: dict[int, bytes], leaf: int, n_leaves: int) -> tuple[list[int], int]:
    """The leaf's path to the root, and the position on it of the node that holds the leaf's secret."""
    target = 2 * leaf
    path = [target, *tree_math.direct_path(target, n_leaves)]
    start = next((i for i, node in enumerate(path) if node in nodes), None)
    if start is None:
        raise ReplayError(f"the secret of leaf {leaf} was already consumed")
    return path, start


def take_leaf_secret(suite: CipherSuite, nodes: dict[int, bytes], leaf: int, n_leaves: int) -> bytes:
    """Derive a leaf's secret down from the nearest stored ancestor, consuming as it goes.

    ``nodes`` maps node index to secret; each parent on the way is replaced by
    its two children and the leaf's own secret is removed and returned, so a
    secret tree never keeps what it has handed out (RFC 9420 section 9.2).
    """
    path, start = _path_to_stored(nodes, leaf, n_leaves)
    target = path[0]
    for i in range(start, 0, -1):
        secret = nodes.pop(path[i])
        nodes[tree_math.left(path[i])] = suite.expand_with_label(secret, "tree", b"left", suite.hash_len)
        nodes[tree_math.right(path[i])] = suite.expand_with_label(secret, "tree", b"right", suite.hash_len)
    return nodes.pop(target)


def _peek_leaf_secret(suite: CipherSuite, nodes: dict[int, bytes], leaf: int, n_leaves: int) -> bytes:
    """The secret :func:`take_leaf_secret` would return, derived without changing ``nodes``."""
    path, start = _path_to_stored(nodes, leaf, n_leaves)
    secret = nodes[path[start]]
    for i in range(start, 0, -1):
        side = b"left" if path[i - 1] < path[i] else b"right"  # a left child's index is below its parent's
        secret = suite.expand_with_label(secret, "tree", side, suite.hash_len)
    return secret


class SecretTree:
    """Per-epoch tree of sender ratchets rooted at the encryption_secret.

    ``encode``/``decode`` (and ``to_state``/``from_state`` for the section on
    its own) are the group's own persistence, not a wire format.
    """

    def __init__(self, suite: CipherSuite, encryption_secret: bytes, n_leaves: int, *,
                 out_of_order_tolerance: int = 16, maximum_forward_distance: int = 1000) -> None:
        self.suite = suite
        self.n_leaves = n_leaves
        self._nodes: dict[int, bytes] = {tree_math.root(n_leaves): encryption_secret}
        self._ratchets: dict[tuple[int, RatchetType], _Ratchet] = {}
        self.out_of_order_tolerance = out_of_order_tolerance
        self.maximum_forward_distance = maximum_forward_distance

    def __repr__(self) -> str:
        return f"SecretTree(n_leaves={self.n_leaves}, ratchets={len(self._ratchets)})"

    def _leaf_secret(self, leaf: int) -> bytes:
        return take_leaf_secret(self.suite, self._nodes, leaf, self.n_leaves)

    def _existing_ratchet(self, leaf: int, ratchet: RatchetType) -> _Ratchet | None:
        if not 0 <= leaf < self.n_leaves:
            raise ValidationError(f"leaf {leaf} is outside the tree of {self.n_leaves} leaves")
        return self._ratchets.get((leaf, ratchet))

    def _new_ratchet(self, leaf_secret: bytes, ratchet: RatchetType) -> _Ratchet:
        return _Ratchet(self.suite.expand_with_label(leaf_secret, _RATCHET_LABELS[ratchet], b"", self.suite.hash_len))

    def _ratchet(self, leaf: int, ratchet: RatchetType) -> _Ratchet:
        """The ratchet, created on first use: the leaf's secret is consumed into both of its ratchets."""
        found = self._existing_ratchet(leaf, ratchet)
        if found is None:
            leaf_secret = self._leaf_secret(leaf)
            for kind in RatchetType:
                self._ratchets[(leaf, kind)] = self._new_ratchet(leaf_secret, kind)
            found = self._ratchets[(leaf, ratchet)]
        return found

    def _key_nonce(self, secret: bytes, generation: int) -> _KeyNonce:
        suite = self.suite
        return (suite.derive_tree_secret(secret, "key", generation, suite.aead_key_len),
                suite.derive_tree_secret(secret, "nonce", generation, suite.aead_nonce_len))

    def _next_secret(self, secret: bytes, generation: int) -> bytes:
        return self.suite.derive_tree_secret(secret, "secret", generation, self.suite.hash_len)

    def next_send_key(self, leaf: int, ratchet: RatchetType) -> tuple[int, bytes, bytes]:
        """(generation, key, nonce) for our next message; the ratchet moves on at once."""
        state = self._ratchet(leaf, ratchet)
        generation = state.generation
        if generation > MAX_GENERATION:
            raise StateError(f"the {ratchet.name.lower()} ratchet of leaf {leaf} is exhausted; commit first")
        key, nonce = self._key_nonce(state.secret, generation)
        state.secret = self._next_secret(state.secret, generation)
        state.generation += 1
        state.version += 1
        return generation, key, nonce

    def receive_key(self, leaf: int, ratchet: RatchetType, generation: int) -> ReceiveKey:
        """The key for a received message, without consuming anything.

        Raises ReplayError for a generation already consumed (or whose
        skipped key was deleted) and ValidationError for one too far ahead.
        """
        state = self._existing_ratchet(leaf, ratchet)
        if state is None:
            # The ratchet as its first use would create it (version 0, like a new one): consume()
            # creates it for real, once the message is authentic.
            state = self._new_ratchet(_peek_leaf_secret(self.suite, self._nodes, leaf, self.n_leaves), ratchet)
        return self._plan(leaf, ratchet, state, generation)

    def _plan(self, leaf: int, ratchet: RatchetType, state: _Ratchet, generation: int) -> ReceiveKey:
        kept = state.skipped.get(generation)
        if kept is not None:
            return ReceiveKey(leaf, ratchet, generation, *kept, state.version)
        if generation < state.generation:
            raise ReplayError(f"generation {generation} of leaf {leaf} was already used or expired")
        if generation - state.generation > self.maximum_forward_distance:
            raise ValidationError(f"generation {generation} is too far ahead of {state.generation}")
        skipped = dict(state.skipped)
        secret = state.secret
        keep_from = generation - self.out_of_order_tolerance
        for g in range(state.generation, generation):
            if g >= keep_from:  # keys that would be evicted at once are never derived
                skipped[g] = self._key_nonce(secret, g)
            secret = self._next_secret(secret, g)
        for old in list(islice(skipped, max(0, len(skipped) - self.out_of_order_tolerance))):
            del skipped[old]
        key, nonce = self._key_nonce(secret, generation)
        advance = _Advance(self._next_secret(secret, generation), generation + 1, skipped)
        return ReceiveKey(leaf, ratchet, generation, key, nonce, state.version, advance)

    def consume(self, found: ReceiveKey) -> None:
        """Delete a key once the message it opened has been authenticated (creating its ratchet on first use)."""
        state = self._ratchet(found.leaf, found.ratchet)
        if found._version != state.version:
            found = self._plan(found.leaf, found.ratchet, state, found.generation)
        advance = found._advance
        if advance is None:
            del state.skipped[found.generation]
        else:
            state.secret, state.generation, state.skipped = advance.secret, advance.generation, advance.skipped
        state.version += 1

    def expand(self, leaf: int) -> None:
        """Create the leaf's two ratchets now, as its first use would: its secret and every node above it
        on the way down, the root included, are consumed."""
        self._ratchet(leaf, RatchetType.APPLICATION)

    def generation(self, leaf: int, ratchet: RatchetType) -> int:
        """The next generation the ratchet expects (for tests; it creates the ratchet if need be)."""
        return self._ratchet(leaf, ratchet).generation

    def skip_to(self, leaf: int, ratchet: RatchetType, generation: int) -> None:
        """Fast-forward our own sending ratchet: restoring a format-1 group state, which held only its generation."""
        state = self._ratchet(leaf, ratchet)
        while state.generation < generation:
            state.secret = self._next_secret(state.secret, state.generation)
            state.generation += 1
        state.version += 1

    # -- persistence -----------------------------------------------------------------------------

    def encode(self, w: Writer) -> None:
        """Append the tree as it is held now, deriving nothing.

        ::

            struct { uint32 node; opaque secret<V>; } nodes<V>;        /* ascending node index */
            struct {
                uint32 leaf;
                uint8  ratchet_type;                                 /* 0 handshake, 1 application */
                opaque secret<V>;                                    /* of the next generation */
                uint64 next_generation;                              /* 2^32: an exhausted ratchet */
                struct { uint32 generation; opaque key<V>; opaque nonce<V>; } skipped<V>;  /* ascending */
            } ratchets<V>;                                           /* ascending (leaf, ratchet_type) */

        The limits (``out_of_order_tolerance``, ``maximum_forward_distance``)
        and the number of leaves are the reader's, not stored.
        """
        w.vector(sorted(self._nodes.items()), lambda w2, item: w2.u32(item[0]).opaque(item[1]))
        w.vector(sorted(self._ratchets.items()), _encode_ratchet)

    def to_state(self) -> bytes:
        """:meth:`encode` on its own (the group embeds the section in its state instead)."""
        writer = Writer()
        self.encode(writer)
        return writer.getvalue()

    @classmethod
    def decode(cls, r: Reader, suite: CipherSuite, n_leaves: int, *, out_of_order_tolerance: int = 16,
               maximum_forward_distance: int = 1000) -> SecretTree:
        """Read :meth:`encode`'s section for a tree of ``n_leaves``; anything inconsistent is a DecodeError.

        Every count is bounded before its items are read (nodes and ratchets by
        the tree's size, skipped keys by ``out_of_order_tolerance``), every
        index is checked against the tree and every length against the suite,
        and no secret is derived: loading costs the same whatever the stored
        generations.
        """
        nodes = dict(_ascending(r.vector(lambda r2: _decode_node(r2, suite, n_leaves), n_leaves), "node"))
        ratchets = dict(_ascending(r.vector(lambda r2: _decode_ratchet(r2, suite, n_leaves, out_of_order_tolerance),
                                            len(RatchetType) * n_leaves), "ratchet"))
        _check_every_leaf_held_once(nodes, ratchets, n_leaves)
        tree = cls(suite, b"", n_leaves, out_of_order_tolerance=out_of_order_tolerance,
                   maximum_forward_distance=maximum_forward_distance)
        tree._nodes, tree._ratchets = nodes, ratchets  # what was stored, in place of a root secret
        return tree

    @classmethod
    def from_state(cls, data: bytes, suite: CipherSuite, n_leaves: int, **limits: int) -> SecretTree:
        """:meth:`decode` of exactly one section (trailing bytes are a DecodeError)."""
        reader = Reader(data)
        tree = cls.decode(reader, suite, n_leaves, **limits)
        reader.finish()
        return tree


def _encode_ratchet(w: Writer, item: tuple[tuple[int, RatchetType], _Ratchet]) -> None:
    (leaf, kind), ratchet = item
    w.u32(leaf).u8(kind).opaque(ratchet.secret).u64(ratchet.generation)
    w.vector(sorted(ratchet.skipped.items()), lambda w2, kept: w2.u32(kept[0]).opaque(kept[1][0]).opaque(kept[1][1]))


def _sized(r: Reader, length: int, what: str) -> bytes:
    value = r.opaque()
    if len(value) != length:
        raise DecodeError(f"stored {what} has {len(value)} bytes, the suite's is {length}")
    return value


def _decode_node(r: Reader, suite: CipherSuite, n_leaves: int) -> tuple[int, bytes]:
    node = r.u32()
    if node >= tree_math.node_width(n_leaves):
        raise DecodeError(f"stored secret-tree node {node} is outside a tree of {n_leaves} leaves")
    return node, _sized(r, suite.hash_len, "tree secret")


def _decode_ratchet(r: Reader, suite: CipherSuite, n_leaves: int,
                    tolerance: int) -> tuple[tuple[int, RatchetType], _Ratchet]:
    leaf, kind = r.u32(), decode_enum(RatchetType, r.u8(), "stored ratchet type")
    if leaf >= n_leaves:
        raise DecodeError(f"stored ratchet of leaf {leaf} is outside a tree of {n_leaves} leaves")
    secret = _sized(r, suite.hash_len, "ratchet secret")
    generation = r.u64()
    if generation > MAX_GENERATION + 1:
        raise DecodeError(f"stored next generation {generation} is beyond 2^32")

    def skipped_key(r2: Reader) -> tuple[int, _KeyNonce]:
        kept = r2.u32()
        if kept >= generation:
            raise DecodeError(f"stored skipped generation {kept} is not below the next one, {generation}")
        return kept, (_sized(r2, suite.aead_key_len, "key"), _sized(r2, suite.aead_nonce_len, "nonce"))

    skipped = dict(_ascending(r.vector(skipped_key, tolerance), "skipped generation"))
    return (leaf, kind), _Ratchet(secret, generation, skipped)


_K = TypeVar("_K", int, tuple[int, RatchetType])
_V = TypeVar("_V")


def _ascending(items: list[tuple[_K, _V]], what: str) -> list[tuple[_K, _V]]:
    """The items, if strictly ascending by key: one encoding per tree, and no key twice."""
    for (before, _), (after, _) in pairwise(items):
        if not before < after:
            raise DecodeError(f"stored {what}s are not in strictly ascending order")
    return items


def _check_every_leaf_held_once(nodes: dict[int, bytes], ratchets: dict[tuple[int, RatchetType], _Ratchet],
                                n_leaves: int) -> None:
    """Each leaf's secret lives in exactly one place: one stored node above it, or its pair of ratchets.

    That is the shape lazy derivation leaves (RFC 9420 section 9.2); anything
    else would keep a secret the live tree had deleted, or none for a leaf.
    Each stored node holds a contiguous range of leaves, so the check is
    linear in what is stored, whatever the tree's size.
    """
    ratchet_leaves = {leaf for leaf, _ in ratchets}
    if len(ratchets) != len(RatchetType) * len(ratchet_leaves):
        raise DecodeError("a stored leaf has one ratchet without the other")
    held = sorted([*(_leaves_under(node, n_leaves) for node in nodes), *((leaf, leaf + 1) for leaf in ratchet_leaves)])
    end = 0
    for start, stop in held:
        if start != end:
            raise DecodeError(f"the stored secret tree holds leaf {min(start, end)}'s secret "
                              f"{'twice' if start < end else 'nowhere'}")
        end = stop
    if end != n_leaves:
        raise DecodeError(f"the stored secret tree holds leaf {end}'s secret nowhere")


def _leaves_under(node: int, n_leaves: int) -> tuple[int, int]:
    """The leaves [start, stop) below ``node``: a node of level k spans 2^k of them."""
    k = tree_math.level(node)
    start = (node >> (k + 1)) << k
    return start, min(start + (1 << k), n_leaves)
