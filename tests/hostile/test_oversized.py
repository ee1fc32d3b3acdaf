"""Oversized and malformed messages: refused before the work or memory they ask for is spent.

Budgets are checked by counting, never by timing: bytes buffered, list items
decoded, tree hashes and signature checks performed, Python calls made.
"""

from __future__ import annotations

import contextlib
import cProfile
import pstats
from unittest import mock

import pytest

from mls2p import TwoPartySession
from mls2p.errors import AlertDescription
from mls2p.testing import TEST_PINS, config, sent
from mls2p.wire import MAX_MESSAGE_SIZE, MessageBuffer, ProfileMessage, ProfileMessageType
from mlscore import safe_app
from mlscore.codec import Writer
from mlscore.credentials import Credential, key_fingerprint
from mlscore.crypto import CipherSuite, get_suite
from mlscore.errors import DecodeError, MLSError
from mlscore.extensions import MAX_CAPABILITY_ENTRIES, MAX_EXTENSIONS, Extension
from mlscore.framing import MLSMessage
from mlscore.key_package import create_key_package, default_capabilities
from mlscore.tree.ratchet_tree import RatchetTree
from mlstls.connection import ConnectionTerminated
from mlstls.record import ContentType, plaintext_records
from mlstls.testing import TlsPair


def client_hello(*, extensions: int, capabilities: int, extension_size: int = 0, pinned: bool = True) -> bytes:
    """A ClientHello whose KeyPackage carries ``extensions`` extensions and lists ``capabilities``."""
    priv, pub = get_suite(1).generate_signature_key_pair()
    if pinned:  # the worst case: a peer we trust, so every check runs
        TEST_PINS.setdefault(b"client", set()).add(key_fingerprint(pub))
    caps = default_capabilities(1, extensions=(*range(0x1000, 0x1000 + capabilities), 6))
    exts = (safe_app.app_data_dictionary_extension([0x8001]),
            *(Extension(0x1000 + i, bytes(extension_size)) for i in range(extensions)))
    bundle = create_key_package(1, Credential.basic(b"client"), priv, capabilities=caps, leaf_extensions=exts)
    return ProfileMessage(ProfileMessageType.CLIENT_HELLO, MLSMessage(bundle.key_package).to_bytes()).to_bytes()


def test_a_declared_length_over_the_limit_is_refused_before_buffering() -> None:
    buffer = MessageBuffer()
    header = bytes([ProfileMessageType.CLIENT_HELLO]) + Writer().varint(MAX_MESSAGE_SIZE + 1).getvalue()
    with pytest.raises(DecodeError, match="exceeds"):
        buffer.feed_frames(header)
    assert buffer.pending <= len(header)


def test_an_mlstls_server_buffers_at_most_one_message_before_authentication() -> None:
    pair = TlsPair()
    header = bytes([ProfileMessageType.CLIENT_HELLO]) + Writer().varint(1 << 20).getvalue()
    pair.server.receive_data(plaintext_records(ContentType.HANDSHAKE, header + bytes(40_000)))
    closed = [e for e in iter(pair.server.next_event, None) if isinstance(e, ConnectionTerminated)]
    assert closed and closed[0].alert == AlertDescription.DECODE_ERROR
    assert pair.server.data_to_send().startswith(b"\x15")  # the alert, in plaintext


@pytest.mark.parametrize(("extensions", "capabilities"), [(MAX_EXTENSIONS + 1, 10), (10, MAX_CAPABILITY_ENTRIES + 1)])
def test_lists_over_their_limit_are_refused_while_decoding(extensions: int, capabilities: int) -> None:
    server = TwoPartySession.responder(config(b"server"))
    hello = client_hello(extensions=extensions, capabilities=capabilities)
    with mock.patch.object(CipherSuite, "verify_with_label", autospec=True) as verify, \
            pytest.raises(DecodeError, match="more than"):
        server.receive(hello)
    assert verify.call_count == 0  # refused before any signature was checked


def test_the_largest_acceptable_client_hello_costs_bounded_work() -> None:
    """A pinned peer's ClientHello near every limit: counted calls and signature checks stay small."""
    hello = client_hello(extensions=MAX_EXTENSIONS - 1, capabilities=MAX_CAPABILITY_ENTRIES - 1, extension_size=180)
    assert 40_000 < len(hello) <= MAX_MESSAGE_SIZE
    server = TwoPartySession.responder(config(b"server"))
    profiler = cProfile.Profile()
    with mock.patch.object(CipherSuite, "verify_with_label", autospec=True,
                           side_effect=CipherSuite.verify_with_label) as verify:
        profiler.enable()
        with contextlib.suppress(MLSError):
            server.receive(hello)
        profiler.disable()
    calls = pstats.Stats(profiler).total_calls  # type: ignore[attr-defined]
    assert verify.call_count <= 3  # the KeyPackage and its leaf, once each
    assert calls < 60_000, calls  # linear in the message (about 13,000 today); a quadratic path is far above


def test_a_welcome_with_a_huge_tree_is_refused_before_any_tree_hash() -> None:
    alice, hello = TwoPartySession.initiator(config(b"alice"))
    bob = TwoPartySession.responder(config(b"bob"))
    welcome = MLSMessage.from_bytes(ProfileMessage.from_bytes(sent(bob.receive(hello[0].data))[0]).body)  # type: ignore[union-attr]
    # Re-encode the Welcome as if its GroupInfo carried a larger tree: the joiner must refuse the tree
    # from its node count while decoding, before hashing it (in the real attack it is 1 MiB of blank nodes).
    with mock.patch("mlscore.group.welcome.decode_ratchet_tree", autospec=True) as decode, \
            mock.patch.object(RatchetTree, "tree_hash", autospec=True) as tree_hash:
        decode.side_effect = DecodeError("more than 3 items in a vector")
        with pytest.raises(DecodeError):
            alice.receive(ProfileMessage(ProfileMessageType.SERVER_HELLO, welcome.to_bytes()).to_bytes())
    assert decode.call_args.args[1] == 2 and tree_hash.call_count == 0  # decoded with the two-leaf bound


def test_a_ratchet_tree_of_blank_nodes_is_refused_by_count() -> None:
    from mlscore.tree.ratchet_tree import decode_ratchet_tree

    blank_tree = Writer().vector([0] * 100_000, Writer.u8).getvalue()  # 100,000 blank nodes
    with pytest.raises(DecodeError, match="more than 3 items"):
        decode_ratchet_tree(blank_tree, max_leaves=2)


def test_forged_key_phase_packets_cost_one_failed_open_each() -> None:
    from aioquic.quic.crypto import CryptoContext

    from mlsquic.testing import CLIENT_ADDR, QuicPair, client_configuration, server_configuration

    pair = QuicPair(client_configuration(), server_configuration())
    pair.run(pair.established)
    assert pair.echo_of(pair.send(b"warm up")) == b"warm up"
    short = [d for d in pair.client_datagrams if not d[0] & 0x80]  # 1-RTT packets
    forged = [bytes([d[0] ^ 0x04]) + d[1:] for d in short[-5:]]  # the other Key Phase, a broken tag
    server = pair.server.connection  # type: ignore[union-attr]
    with mock.patch.object(CryptoContext, "setup", autospec=True, side_effect=CryptoContext.setup) as setup:
        for _ in range(40):
            for datagram in forged:
                server.receive_datagram(datagram, CLIENT_ADDR, now=pair.now)
    assert setup.call_count <= 1  # the next epoch's keys are derived once, not per forged packet
    assert server.mls_epoch == 1 and pair.echo_of(pair.send(b"still fine")) == b"still fine"
