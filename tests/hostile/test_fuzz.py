"""Fuzzing: every decoder, the session and the transports, fed mutated and random bytes.

Decoders raise only MLSError; a session refusing input is left exactly as it
was; a transport connection never raises (it closes with an alert).
``MLS_FUZZ_EXAMPLES`` sets the examples per test (300 by default; raise it for
a long run, e.g. ``MLS_FUZZ_EXAMPLES=20000 pytest tests/hostile/test_fuzz.py``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from functools import cache

from hypothesis import given, settings
from hypothesis import strategies as st

from mls2p.persistence import decode as decode_stored_session
from mls2p.testing import Pair, bundle, config, sent, two_party
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
from mlstls.connection import ConnectionTerminated, DataReceived, HandshakeCompleted, MlsTlsConnection
from mlstls.testing import TlsPair

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
    "stored session": lambda data: decode_stored_session(data, GroupConfig(max_leaves=2)),
}
EXAMPLES = int(os.environ.get("MLS_FUZZ_EXAMPLES", "300"))


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
    state = pair.alice.to_state()
    assert state is not None
    out.append(state)
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


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.sampled_from(sorted(DECODERS)), st.integers(0, 100), st.integers(0, 3), st.integers(0, 1 << 20),
       st.integers(0, 255))
def test_mutated_messages(name: str, sample: int, op: int, position: int, value: int) -> None:
    data = samples()[sample % len(samples())]
    assert_only_our_errors(DECODERS[name], mutate(data, op, position, value))


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.sampled_from(sorted(DECODERS)), st.binary(max_size=200))
def test_random_bytes(name: str, data: bytes) -> None:
    assert_only_our_errors(DECODERS[name], data)


def test_every_sample_decodes_with_its_decoder() -> None:
    """The mutation corpus itself is valid, so the fuzzing starts from real structure."""
    assert MLSMessage.from_bytes(samples()[1]).to_bytes() == samples()[1]
    assert ProfileMessage.from_bytes(samples()[-2]).to_bytes() == samples()[-2]


@cache
def established_session_messages() -> tuple[Pair, list[bytes]]:
    pair = Pair()
    return pair, sent(pair.alice.update()) + sent(pair.alice.resume())


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.integers(0, 10), st.integers(0, 3), st.integers(0, 1 << 16), st.integers(0, 255))
def test_a_session_refusing_mutated_messages_is_unchanged(sample: int, op: int, position: int, value: int) -> None:
    pair, messages = established_session_messages()
    data = mutate(messages[sample % len(messages)], op, position, value)
    bob = pair.bob
    before = (bob.state, bob.current_role, bob.epoch, bob.to_state())
    try:
        bob.receive(data)
    except MLSError:
        assert (bob.state, bob.current_role, bob.epoch, bob.to_state()) == before
        return
    # A mutation that still parses and authenticates is a genuine message: start again from a fresh pair.
    established_session_messages.cache_clear()


@settings(max_examples=EXAMPLES // 3, deadline=None)
@given(st.integers(0, 3), st.integers(0, 1 << 12), st.integers(0, 255), st.booleans())
def test_an_mlstls_server_never_raises_and_delivers_nothing(op: int, position: int, value: int, garbage: bool) -> None:
    pair = TlsPair()
    pair.client.connect()
    hello = pair.client.data_to_send()
    data = bytes((value + i) % 256 for i in range(position % 300)) if garbage else mutate(hello, op, position, value)
    server = MlsTlsConnection(pair.server.configuration)
    server.receive_data(data)  # must not raise, whatever the bytes
    events = list(iter(server.next_event, None))
    assert not any(isinstance(e, (DataReceived, HandshakeCompleted)) for e in events)  # nothing told
    assert pair.server_store.group_ids() == []  # nothing stored
    if any(isinstance(e, ConnectionTerminated) for e in events):
        out = server.data_to_send()  # refused: at most the alert goes out
        assert server.closed and (out == b"" or (out[0] == 0x15 and len(out) == 7))


def test_the_fuzz_corpus_covers_the_profile_and_stored_state() -> None:
    pair = Pair()
    state = pair.alice.to_state()
    assert state is not None and decode_stored_session(state, GroupConfig(max_leaves=2)).group.epoch == 1
    assert len(samples()) >= 10 and config(b"x").credential.identity == b"x"
