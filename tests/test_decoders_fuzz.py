"""Every decoder, fed truncated, extended, bit-flipped and random bytes, raises only MLSError."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from functools import cache

from hypothesis import given, settings
from hypothesis import strategies as st

from mls2p.testing import Pair, bundle, sent, two_party
from mls2p.wire import ProfileMessage
from mlscore.errors import MLSError
from mlscore.framing import AuthenticatedContent, MLSMessage, WireFormat
from mlscore.group import GroupConfig
from mlscore.leaf_node import LeafNode
from mlscore.messages import Commit, GroupInfo, GroupSecrets, KeyPackage, Welcome, proposal_from_bytes
from mlscore.safe_app import AppDataDictionary, SafeAAD
from mlscore.schedule.key_schedule import GroupContext
from mlscore.schedule.psk import PreSharedKeyID
from mlscore.tree.ratchet_tree import UpdatePath, decode_ratchet_tree

DECODERS: dict[str, Callable[[bytes], object]] = {
    "MLSMessage": MLSMessage.from_bytes,
    "KeyPackage": KeyPackage.from_bytes,
    "Welcome": Welcome.from_bytes,
    "GroupInfo": GroupInfo.from_bytes,
    "GroupSecrets": GroupSecrets.from_bytes,
    "Commit": Commit.from_bytes,
    "Proposal": proposal_from_bytes,
    "LeafNode": LeafNode.from_bytes,
    "UpdatePath": UpdatePath.from_bytes,
    "GroupContext": GroupContext.from_bytes,
    "PreSharedKeyID": PreSharedKeyID.from_bytes,
    "AuthenticatedContent": AuthenticatedContent.from_bytes,
    "ratchet_tree": decode_ratchet_tree,
    "ProfileMessage": ProfileMessage.from_bytes,
    "SafeAAD": SafeAAD.from_bytes,
    "AppDataDictionary": AppDataDictionary.from_bytes,
}


@cache
def samples() -> list[bytes]:
    """Valid encodings to mutate: real messages from a real two-party run."""
    alice, _bob = two_party(config=GroupConfig(handshake_wire_format=WireFormat.PUBLIC_MESSAGE))
    commit = alice.commit()
    out = [
        MLSMessage(bundle(b"x").key_package).to_bytes(),
        commit.message.to_bytes(),
        commit.message.body.content.content.to_bytes(),  # type: ignore[union-attr]
        commit.message.body.content.content.path.to_bytes(),  # type: ignore[union-attr]
        commit.group_info.to_bytes(),
        alice.protect(b"data").to_bytes(),
        alice.ratchet_tree_extension().extension_data,
        alice.context.to_bytes(),
    ]
    pair = Pair()
    out += sent(pair.alice.update())
    return out


def mutate(data: bytes, op: int, position: int, value: int) -> bytes:
    position %= max(len(data), 1)
    if op == 0:
        return data[:position]
    if op == 1:
        return data + bytes([value]) * (position % 7 + 1)
    if op == 2:
        return data[:position] + bytes([data[position] ^ (value or 1)]) + data[position + 1 :] if data else data
    return data[:position] + data[position + 1 :]


def assert_only_our_errors(decoder: Callable[[bytes], object], data: bytes) -> None:
    with contextlib.suppress(MLSError):
        decoder(data)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(DECODERS)), st.integers(0, 100), st.integers(0, 3), st.integers(0, 1 << 20),
       st.integers(0, 255))
def test_mutated_messages(name: str, sample: int, op: int, position: int, value: int) -> None:
    data = samples()[sample % len(samples())]
    assert_only_our_errors(DECODERS[name], mutate(data, op, position, value))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(DECODERS)), st.binary(max_size=200))
def test_random_bytes(name: str, data: bytes) -> None:
    assert_only_our_errors(DECODERS[name], data)


def test_every_sample_decodes_with_its_decoder() -> None:
    """The mutation corpus itself is valid, so the fuzzing starts from real structure."""
    assert MLSMessage.from_bytes(samples()[1]).to_bytes() == samples()[1]
    assert ProfileMessage.from_bytes(samples()[-1]).to_bytes() == samples()[-1]
