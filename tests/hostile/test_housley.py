"""Hostile peers against the Housley mode (docs/housley.md, test plan): a client or server that breaks the
draft's rules, or an on-path attacker that strips or grows the extension.  Each asserts the alert, that
nothing was stored and that no application data was delivered."""

from __future__ import annotations

import pytest
from tlslite.constants import ExtensionType, HandshakeType
from tlslite.extensions import TLSExtension
from tlslite.messages import ClientHello, ServerHello
from tlslite.utils.codec import Parser

from mls2p import MemorySessionStore
from mls2p.errors import AlertDescription
from mls2p.testing import config
from mlstls.config import HousleyConfig, MlsTlsConfiguration
from mlstls.connection import ConnectionTerminated, DataReceived
from mlstls.housley import HousleyConnection

from ..test_housley import Pair

EXT = HousleyConfig().extension_type


def connection(is_client: bool, store: MemorySessionStore | None = None) -> HousleyConnection:
    profile = config(b"client" if is_client else b"server")
    return HousleyConnection(MlsTlsConfiguration(profile, is_client, store or MemorySessionStore(),
                                                 housley=HousleyConfig()))


def records(data: bytes) -> list[tuple[int, bytes]]:
    out, offset = [], 0
    while offset < len(data):
        length = int.from_bytes(data[offset + 3 : offset + 5], "big")
        out.append((data[offset], data[offset + 5 : offset + 5 + length]))
        offset += 5 + length
    return out


def plaintext(message: bytes) -> bytes:
    """One handshake record (TLSPlaintext) per 2^14 bytes."""
    return b"".join(b"\x16\x03\x03" + len(message[i : i + 16384]).to_bytes(2, "big") + message[i : i + 16384]
                    for i in range(0, len(message), 16384))


def honest_client_hello() -> ClientHello:
    client = connection(True)
    client.connect()
    (record,) = records(client.data_to_send())
    assert record[0] == 22 and record[1][0] == HandshakeType.client_hello
    return ClientHello().parse(Parser(bytearray(record[1][1:])))


def with_extensions(hello: ClientHello | ServerHello, extensions: list[TLSExtension]) -> bytes:
    hello.extensions = extensions
    return bytes(hello.write())


def refused(target: HousleyConnection, data: bytes) -> ConnectionTerminated:
    target.receive_data(data)
    events = list(iter(target.next_event, None))
    assert not [e for e in events if isinstance(e, DataReceived)]
    ended = [e for e in events if isinstance(e, ConnectionTerminated)]
    assert ended and target.closed, events
    return ended[0]


def mls_extension(hello: ClientHello) -> TLSExtension:
    extension = hello.getExtension(EXT)
    assert extension is not None
    return extension


# -- the ClientHello -------------------------------------------------------------------------------------

def test_a_client_hello_without_the_extension_is_refused_with_missing_extension() -> None:
    hello = honest_client_hello()
    store = MemorySessionStore()
    server = connection(False, store)
    ended = refused(server, plaintext(with_extensions(hello, [e for e in hello.extensions if e.extType != EXT])))
    assert ended.alert == AlertDescription.MISSING_EXTENSION and store.group_ids() == []


@pytest.mark.parametrize("size", [0, 3, 60_000])  # empty, shorter than an MLSMessage header, large garbage
def test_an_empty_short_or_garbage_extension_is_a_decode_error(size: int) -> None:
    hello = honest_client_hello()
    others = [e for e in hello.extensions if e.extType != EXT]
    server = connection(False)
    ended = refused(server, plaintext(with_extensions(hello, [*others, TLSExtension(extType=EXT).create(
        bytearray(size))])))
    assert ended.alert == AlertDescription.DECODE_ERROR


def test_a_handshake_message_over_the_limit_is_refused_before_it_is_buffered() -> None:
    server = connection(False)
    header = bytes([HandshakeType.client_hello]) + (1 << 20).to_bytes(3, "big")
    ended = refused(server, plaintext(header + bytes(100)))
    assert ended.alert == AlertDescription.DECODE_ERROR


def test_early_data_together_with_the_extension_is_illegal_parameter() -> None:
    hello = honest_client_hello()
    early = TLSExtension(extType=ExtensionType.early_data).create(bytearray())
    ended = refused(connection(False), plaintext(with_extensions(hello, [*hello.extensions, early])))
    assert ended.alert == AlertDescription.ILLEGAL_PARAMETER and "early_data" in ended.reason


def test_a_key_package_with_a_broken_signature_is_refused_and_nothing_is_stored() -> None:
    hello = honest_client_hello()
    data = mls_extension(hello).extData
    tampered = TLSExtension(extType=EXT).create(bytearray(data[:-1]) + bytearray([data[-1] ^ 1]))
    store = MemorySessionStore()
    ended = refused(connection(False, store), plaintext(with_extensions(
        hello, [e for e in hello.extensions if e.extType != EXT] + [tampered])))
    assert ended.alert in (AlertDescription.DECRYPT_ERROR, AlertDescription.DECODE_ERROR) and store.group_ids() == []


def test_a_replayed_client_hello_gets_a_server_hello_but_nothing_is_stored() -> None:
    client = connection(True)
    client.connect()
    hello = client.data_to_send()
    store = MemorySessionStore()
    server = connection(False, store)
    server.receive_data(hello)  # the replayer gets the server's flight, but cannot finish (no init key)
    assert server.data_to_send() and store.group_ids() == [] and not server.established


def test_a_client_finished_changed_on_the_way_is_refused_and_nothing_is_stored() -> None:
    client, store = connection(True), MemorySessionStore()
    server = connection(False, store)
    client.connect()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    forged = bytearray(client.data_to_send())
    forged[-1] ^= 1  # the client's Finished record
    ended = refused(server, bytes(forged))
    assert ended.alert == AlertDescription.BAD_RECORD_MAC and store.group_ids() == []


def test_a_client_finished_with_a_wrong_mac_is_decrypt_error() -> None:
    client, store = connection(True), MemorySessionStore()
    server = connection(False, store)
    client.connect()
    server.receive_data(client.data_to_send())
    client._check_finished = lambda body, key: None  # type: ignore[method-assign]  # it skips the server's
    flight = server.data_to_send()
    real = client._send_handshake

    def forge(encoded: bytes | bytearray) -> None:  # the client's Finished with one bit of its MAC flipped
        data = bytearray(encoded)
        if data[0] == HandshakeType.finished:
            data[-1] ^= 1
        real(bytes(data))

    client._send_handshake = forge  # type: ignore[method-assign]
    client.receive_data(flight)
    ended = refused(server, client.data_to_send())
    assert ended.alert == AlertDescription.DECRYPT_ERROR and store.group_ids() == []


# -- the ServerHello -------------------------------------------------------------------------------------

def test_a_server_hello_without_the_extension_is_refused_by_the_client() -> None:
    client, server = connection(True), connection(False)
    client.connect()
    server.receive_data(client.data_to_send())
    flight = records(server.data_to_send())
    hello = ServerHello().parse(Parser(bytearray(flight[0][1][1:])))
    stripped = with_extensions(hello, [e for e in hello.extensions if e.extType != EXT])
    ended = refused(client, plaintext(stripped))
    assert ended.alert == AlertDescription.MISSING_EXTENSION and not client.established


def test_a_welcome_for_another_client_is_refused() -> None:
    victim, other, server = connection(True), connection(True), connection(False)
    victim.connect()
    other.connect()
    server.receive_data(other.data_to_send())
    ended = refused(victim, server.data_to_send())  # the answer to someone else's ClientHello
    assert ended.alert in (AlertDescription.ILLEGAL_PARAMETER, AlertDescription.DECODE_ERROR,
                           AlertDescription.HANDSHAKE_FAILURE, AlertDescription.DECRYPT_ERROR)
    assert not victim.established


# -- after the handshake ------------------------------------------------------------------------------

def test_an_oversized_mls_handshake_message_is_a_decode_error() -> None:
    pair = Pair(1)
    header = bytes([HousleyConfig().handshake_type]) + (1 << 20).to_bytes(3, "big")
    pair.client._records.send(22, header)
    ended = refused(pair.server, pair.client.data_to_send())
    assert ended.alert == AlertDescription.DECODE_ERROR


def test_a_key_switch_without_a_new_epoch_is_unexpected() -> None:
    pair = Pair(1)
    pair.client._send_mls_handshake(HousleyConfig().key_switch, b"")
    ended = refused(pair.server, pair.client.data_to_send())
    assert ended.alert == AlertDescription.UNEXPECTED_MESSAGE


def test_a_second_client_hello_after_the_handshake_is_unexpected() -> None:
    pair = Pair(1)
    pair.client._records.send(22, bytes([HandshakeType.client_hello]) + (4).to_bytes(3, "big") + bytes(4))
    ended = refused(pair.server, pair.client.data_to_send())
    assert ended.alert == AlertDescription.UNEXPECTED_MESSAGE


def test_a_hello_retry_request_is_refused_by_the_client() -> None:
    from mlstls.housley import HELLO_RETRY_RANDOM

    client, server = connection(True), connection(False)
    client.connect()
    server.receive_data(client.data_to_send())
    flight = records(server.data_to_send())
    hello = ServerHello().parse(Parser(bytearray(flight[0][1][1:])))
    hello.random = bytearray(HELLO_RETRY_RANDOM)
    ended = refused(client, plaintext(bytes(hello.write())))
    assert ended.alert == AlertDescription.UNEXPECTED_MESSAGE and "HelloRetryRequest" in ended.reason


def test_a_malformed_key_update_is_a_decode_error() -> None:
    pair = Pair(1)
    pair.client._send_handshake(bytes([24]) + (2).to_bytes(3, "big") + b"\x01\x01")
    ended = refused(pair.server, pair.client.data_to_send())
    assert ended.alert == AlertDescription.DECODE_ERROR


def test_a_key_package_without_the_profiles_rules_is_refused() -> None:
    """A validly signed KeyPackage that does not list the profile's component (a plain MLS client's)."""
    from mls2p.testing import bundle
    from mlscore.framing import MLSMessage

    hello = honest_client_hello()
    plain = bundle(b"client", 1).key_package  # signed, but without the two-party profile's app component
    others = [e for e in hello.extensions if e.extType != EXT]
    store = MemorySessionStore()
    ended = refused(connection(False, store), plaintext(with_extensions(hello, [*others, TLSExtension(
        extType=EXT).create(bytearray(MLSMessage(plain).to_bytes()))])))
    assert ended.alert == AlertDescription.ILLEGAL_PARAMETER and "app_data_dictionary" in ended.reason
    assert store.group_ids() == []
