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
message for the same generation still opens afterwards.  (The only thing
``receive_key`` may change is the lazy expansion of the tree itself: the
first lookup on a leaf turns its tree secret into its two ratchet secrets,
which every later lookup would do identically.)

Every ratchet carries a version that each change bumps.  A
:class:`ReceiveKey` computed against an older version is re-planned against
the current state when consumed, so interleaved lookups can never bring a
deleted key back.

Out-of-order delivery: a receiver accepts generations up to
``maximum_forward_distance`` ahead of the next expected one and keeps the
keys of at most ``out_of_order_tolerance`` skipped generations (the most
recent ones); older skipped keys are deleted for forward secrecy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from itertools import islice

from ..crypto import CipherSuite
from ..errors import ReplayError, StateError, ValidationError
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


def take_leaf_secret(suite: CipherSuite, nodes: dict[int, bytes], leaf: int, n_leaves: int) -> bytes:
    """Derive a leaf's secret down from the nearest stored ancestor, consuming as it goes.

    ``nodes`` maps node index to secret; each parent on the way is replaced by
    its two children and the leaf's own secret is removed and returned, so a
    secret tree never keeps what it has handed out (RFC 9420 section 9.2).
    """
    target = 2 * leaf
    path = [target, *tree_math.direct_path(target, n_leaves)]
    start = next((i for i, node in enumerate(path) if node in nodes), None)
    if start is None:
        raise ReplayError(f"the secret of leaf {leaf} was already consumed")
    for i in range(start, 0, -1):
        secret = nodes.pop(path[i])
        nodes[tree_math.left(path[i])] = suite.expand_with_label(secret, "tree", b"left", suite.hash_len)
        nodes[tree_math.right(path[i])] = suite.expand_with_label(secret, "tree", b"right", suite.hash_len)
    return nodes.pop(target)


class SecretTree:
    """Per-epoch tree of sender ratchets rooted at the encryption_secret."""

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

    def _ratchet(self, leaf: int, ratchet: RatchetType) -> _Ratchet:
        if not 0 <= leaf < self.n_leaves:
            raise ValidationError(f"leaf {leaf} is outside the tree of {self.n_leaves} leaves")
        found = self._ratchets.get((leaf, ratchet))
        if found is None:
            leaf_secret = self._leaf_secret(leaf)
            for kind, label in _RATCHET_LABELS.items():
                self._ratchets[(leaf, kind)] = _Ratchet(
                    self.suite.expand_with_label(leaf_secret, label, b"", self.suite.hash_len))
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
        return self._plan(leaf, ratchet, self._ratchet(leaf, ratchet), generation)

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
        """Delete a key once the message it opened has been authenticated."""
        state = self._ratchets.get((found.leaf, found.ratchet))
        if state is None:
            raise StateError("consume() of a key this secret tree did not hand out")
        if found._version != state.version:
            found = self._plan(found.leaf, found.ratchet, state, found.generation)
        advance = found._advance
        if advance is None:
            del state.skipped[found.generation]
        else:
            state.secret, state.generation, state.skipped = advance.secret, advance.generation, advance.skipped
        state.version += 1

    def generation(self, leaf: int, ratchet: RatchetType) -> int:
        """The next generation the ratchet expects (for persistence and tests)."""
        return self._ratchet(leaf, ratchet).generation

    def skip_to(self, leaf: int, ratchet: RatchetType, generation: int) -> None:
        """Fast-forward our own sending ratchet, e.g. after restoring persisted state."""
        state = self._ratchet(leaf, ratchet)
        while state.generation < generation:
            state.secret = self._next_secret(state.secret, state.generation)
            state.generation += 1
        state.version += 1
