"""Hostile review of the Housley mode (mlstls.housley, docs/housley.md): a malicious client against the server, a
malicious server against the client, and an on-path attacker who drops, replays, reorders, splices, strips or grows
bytes, before and after the handshake.

Every test asserts the *secure* outcome: the victim ends the connection with a specific alert (never
internal_error for peer input), no exception escapes ``receive_data``, nothing is delivered as application data,
the server's store is unchanged (nothing stored before the client's Finished verifies) and, where it matters, an
honest connection afterwards still works.  Tests that fail expose a real problem (see the review report); they
are kept failing on purpose until the code is fixed.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable

import pytest
from tlslite.constants import ExtensionType, HandshakeType
from tlslite.extensions import SupportedVersionsExtension, TLSExtension
from tlslite.messages import ClientHello, EncryptedExtensions, ServerHello
from tlslite.utils.codec import Parser

import mls2p.session
from mls2p import MemorySessionStore
from mls2p.errors import AlertDescription
from mls2p.wire import ProfileMessage, ProfileMessageType
from mlstls.config import HousleyConfig, MlsTlsConfiguration
from mlstls.connection import ConnectionTerminated, DataReceived, HandshakeCompleted, StreamEnded
from mlstls.housley import HousleyConnection

from ..test_housley import Pair
from .test_housley import connection, honest_client_hello, mls_extension, plaintext, records, refused, with_extensions

H = HousleyConfig()
EXT = H.extension_type
ALERT_FATAL = b"\x15\x03\x03\x00\x02\x02"  # a plaintext fatal alert record, description byte to follow
CCS = b"\x14\x03\x03\x00\x01\x01"
RECORD_OVERFLOW, UNSUPPORTED_EXTENSION = 22, 110  # RFC 8446 alerts mls2p.errors.AlertDescription does not name


# -- helpers ----------------------------------------------------------------------------------------------------

def events(target: HousleyConnection) -> list[object]:
    return list(iter(target.next_event, None))


def no_internal_error(evs: list[object]) -> None:
    for event in evs:
        if isinstance(event, ConnectionTerminated) and not event.by_peer:  # our alert, not the peer's
            assert event.alert != AlertDescription.INTERNAL_ERROR, event.reason


def record(content_type: int, payload: bytes) -> bytes:
    return bytes([content_type]) + b"\x03\x03" + len(payload).to_bytes(2, "big") + payload


def server_flight() -> tuple[HousleyConnection, HousleyConnection, list[tuple[int, bytes]]]:
    """A fresh client that sent its ClientHello, the server that answered, and the server's flight (records)."""
    client, server = connection(True), connection(False)
    client.connect()
    server.receive_data(client.data_to_send())
    return client, server, records(server.data_to_send())


def parsed_server_hello(flight: list[tuple[int, bytes]]) -> ServerHello:
    return ServerHello().parse(Parser(bytearray(flight[0][1][1:])))


def rewriting(target: HousleyConnection, rewrite: Callable[[bytes], bytes]) -> None:
    """Make ``target`` a malicious peer: each handshake message it sends is rewritten *before* it enters its own
    transcript, so its Finished still verifies over what it sent."""
    real = target._send_handshake

    def send(encoded: bytes | bytearray) -> None:
        real(rewrite(bytes(encoded)))

    target._send_handshake = send  # type: ignore[method-assign]


def resumption_parts(pair: Pair | None = None) -> tuple[Pair, HousleyConnection, HousleyConnection]:
    """A pair that completed a fresh handshake and dropped, plus a new resuming client and a new server (not
    connected yet) on the same stores."""
    pair = pair or Pair(1)
    pair.exchange(100)
    pair.drop()
    client, server = pair.resuming()
    return pair, client, server


def honest_resumption_works(pair: Pair) -> None:
    group_id = pair.client_store.group_ids()[0]
    pair.drop()
    pair.connect(resume=group_id)
    assert pair.client.established and pair.server.established
    pair.exchange(100)


def stored(store: MemorySessionStore) -> dict[bytes, bytes | None]:
    return {group_id: store.load(group_id) for group_id in store.group_ids()}


# == findings: these assert the secure behaviour and fail today ==================================================

# -- F1: unprotected alerts accepted after the handshake (tlslite's "seqnum == 0" plaintext-alert rule) -----------

def _window(kind: str) -> tuple[Pair, HousleyConnection]:
    """A connected pair where the server's read keys are fresh (sequence number 0) and nothing came under them."""
    pair = Pair(1)
    if kind == "after a rekey":
        pair.client.rekey()
        pair.pump()
        assert pair.server.epoch == 2
    elif kind == "after a KeyUpdate":
        pair.client._send_handshake(bytes([HandshakeType.key_update]) + (1).to_bytes(3, "big") + b"\x00")
        pair.server.receive_data(pair.client.data_to_send())
        assert not pair.server.closed
    events(pair.server)
    return pair, pair.server


@pytest.mark.parametrize("kind", ["after the handshake", "after a rekey", "after a KeyUpdate"])
def test_a_plaintext_fatal_alert_after_the_handshake_is_not_the_peers_authenticated_alert(kind: str) -> None:
    """On-path: a plaintext alert record injected once the read keys are fresh is taken as the peer's alert and
    reported as *authenticated* (tlslite-ng lets plaintext alerts through while the read sequence number is 0,
    meant for the early handshake; the Housley mode resets it at every epoch switch and KeyUpdate)."""
    _, server = _window(kind)
    server.receive_data(ALERT_FATAL + bytes([AlertDescription.BAD_CERTIFICATE]))
    (ended,) = [e for e in events(server) if isinstance(e, ConnectionTerminated)]
    assert not (ended.by_peer and ended.authenticated), ended  # anyone on the path could have sent it


@pytest.mark.parametrize("kind", ["after the handshake", "after a rekey", "after a KeyUpdate"])
def test_a_plaintext_close_notify_after_the_handshake_is_no_end_of_stream(kind: str) -> None:
    """On-path truncation: a forged plaintext close_notify becomes StreamEnded (the application believes the peer
    finished sending), and the peer's later records are still read."""
    _, server = _window(kind)
    server.receive_data(b"\x15\x03\x03\x00\x02\x01\x00")
    evs = events(server)
    assert not [e for e in evs if isinstance(e, StreamEnded)] and not server.read_closed, evs


def test_application_data_after_the_peers_close_notify_is_not_delivered() -> None:
    """RFC 8446 section 6.1: data after a closure alert MUST be ignored.  Here it is delivered after StreamEnded
    (an asyncio StreamReader then asserts 'feed_data after feed_eof')."""
    pair = Pair(1)
    pair.client.send_eof()
    pair.pump()
    assert pair.server.read_closed
    pair.client._records.send(23, b"after my close_notify")
    pair.server.receive_data(pair.client.data_to_send())
    assert not [e for e in events(pair.server) if isinstance(e, DataReceived)]


# -- F2: internal_error for bad peer input -------------------------------------------------------------------------

@pytest.mark.parametrize("extension_type", [EXT, ExtensionType.supported_versions, ExtensionType.key_share])
def test_a_client_hello_with_a_duplicate_extension_is_refused_without_internal_error(extension_type: int) -> None:
    hello = honest_client_hello()
    (duplicate,) = [e for e in hello.extensions if e.extType == extension_type]
    store = MemorySessionStore()
    ended = refused(connection(False, store), plaintext(with_extensions(hello, [*hello.extensions, duplicate])))
    assert ended.alert in (AlertDescription.ILLEGAL_PARAMETER, AlertDescription.DECODE_ERROR), ended
    assert store.group_ids() == []


@pytest.mark.parametrize("extension_type", [EXT, ExtensionType.supported_versions])
def test_a_server_hello_with_a_duplicate_extension_is_refused_without_internal_error(extension_type: int) -> None:
    client, _, flight = server_flight()
    hello = parsed_server_hello(flight)
    (duplicate,) = [e for e in hello.extensions if e.extType == extension_type]
    ended = refused(client, plaintext(with_extensions(hello, [*hello.extensions, duplicate])))
    assert ended.alert in (AlertDescription.ILLEGAL_PARAMETER, AlertDescription.DECODE_ERROR), ended


def test_an_empty_supported_versions_is_refused_without_internal_error() -> None:
    hello = honest_client_hello()
    others = [e for e in hello.extensions if e.extType != ExtensionType.supported_versions]
    empty = TLSExtension(extType=ExtensionType.supported_versions).create(bytearray())
    ended = refused(connection(False), plaintext(with_extensions(hello, [empty, *others])))
    assert ended.alert in (AlertDescription.DECODE_ERROR, AlertDescription.PROTOCOL_VERSION,
                           AlertDescription.ILLEGAL_PARAMETER), ended


# -- F3: a resumed connection reads data from the ResumptionRequest's epoch -------------------------------------

def test_a_resumed_client_refuses_server_data_from_the_epoch_of_its_request() -> None:
    """After its Finished and EpochKeyUpdate the client writes under N+2, but still reads N+1 (until the server's
    key switch), and ``established`` looks at the write epoch only: server data under N+1 is delivered."""
    _, client, server = resumption_parts()
    client.connect()
    server.receive_data(client.data_to_send())
    request_epoch = server.epoch
    client.receive_data(server.data_to_send())
    assert client.epoch == request_epoch + 1  # the client switched its writes to the response's epoch
    server._records.send(23, b"under the request's epoch")  # still the N+1 application keys
    client.receive_data(server.data_to_send())
    evs = events(client)
    assert not [e for e in evs if isinstance(e, DataReceived)], "data from the ResumptionRequest's epoch"


def test_a_resumed_server_refuses_client_data_from_the_epoch_of_its_request() -> None:
    """Mirror image: a client that sends its EpochKeyUpdate but no key switch, then data under N+1."""
    _, client, server = resumption_parts()
    client._switch_write = lambda epoch, reason: None  # type: ignore[method-assign]  # EKU sent, no key switch
    client.connect()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    client._records.send(23, b"under the request's epoch")
    server.receive_data(client.data_to_send())
    evs = events(server)
    assert not [e for e in evs if isinstance(e, DataReceived)], "data from the ResumptionRequest's epoch"


# -- F4: draft and RFC 8446 rules the state machine does not enforce ----------------------------------------------

def test_a_welcome_whose_group_id_lacks_tls13_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Draft section 4: the group_id MUST contain "tls13"; docs/housley.md: the client refuses one that does not
    start with it (illegal_parameter).  Neither the server's ids nor the client's check exist."""
    create = mls2p.session.Group.create.__func__  # type: ignore[attr-defined]

    def without_prefix(cls, bundle, **kwargs):  # type: ignore[no-untyped-def]
        kwargs["group_id"] = b"not-tls-" + os.urandom(16)
        return create(cls, bundle, **kwargs)

    monkeypatch.setattr(mls2p.session.Group, "create", classmethod(without_prefix))
    client, server = connection(True), connection(False)
    client.connect()
    server.receive_data(client.data_to_send())
    ended = refused(client, server.data_to_send())
    assert ended.alert == AlertDescription.ILLEGAL_PARAMETER and not client.established


def test_the_server_makes_group_ids_that_start_with_tls13() -> None:
    pair = Pair(1)
    assert pair.client.session.group_id.startswith(b"tls13")


def test_a_plaintext_encrypted_extensions_coalesced_with_the_server_hello_is_refused() -> None:
    """RFC 8446 section 5.1: a handshake message before a key change must end at a record boundary
    (unexpected_message).  Today the client reads the attacker's *plaintext* EE as if it came under the
    handshake keys."""
    client, _, flight = server_flight()
    encrypted_extensions = bytes(EncryptedExtensions().create([]).write())
    ended = refused(client, plaintext(flight[0][1] + encrypted_extensions))
    assert ended.alert == AlertDescription.UNEXPECTED_MESSAGE


def test_a_server_hello_that_does_not_echo_the_session_id_is_illegal_parameter() -> None:
    """RFC 8446 section 4.1.3 (MUST): a malicious server's legacy_session_id_echo that differs."""
    client, server = connection(True), connection(False)

    def other_session_id(encoded: bytes) -> bytes:
        if encoded[0] != HandshakeType.server_hello:
            return encoded
        hello = ServerHello().parse(Parser(bytearray(encoded[1:])))
        hello.session_id = bytearray(os.urandom(32))
        return bytes(hello.write())

    rewriting(server, other_session_id)
    client.connect()
    server.receive_data(client.data_to_send())
    ended = refused(client, server.data_to_send())
    assert ended.alert == AlertDescription.ILLEGAL_PARAMETER and not client.established


def test_a_server_hello_with_an_extension_the_client_did_not_offer_is_refused() -> None:
    """RFC 8446 section 4.2 (MUST): unsupported_extension.  A malicious server adds pre_shared_key (never offered)."""
    client, server = connection(True), connection(False)

    def with_psk(encoded: bytes) -> bytes:
        if encoded[0] != HandshakeType.server_hello:
            return encoded
        hello = ServerHello().parse(Parser(bytearray(encoded[1:])))
        return with_extensions(hello, [*hello.extensions,
                                       TLSExtension(extType=ExtensionType.pre_shared_key).create(bytearray(2))])

    rewriting(server, with_psk)
    client.connect()
    server.receive_data(client.data_to_send())
    ended = refused(client, server.data_to_send())
    assert ended.alert in (UNSUPPORTED_EXTENSION, AlertDescription.ILLEGAL_PARAMETER), ended


@pytest.mark.parametrize("connected", [False, True])
def test_a_record_over_the_size_limit_is_record_overflow(connected: bool) -> None:
    """RFC 8446 sections 5.1/5.2 (MUST): record_overflow; tlslite's TLSRecordOverflow is mapped to decode_error."""
    target = Pair(1).server if connected else connection(False)
    kind = 23 if connected else 22
    ended = refused(target, bytes([kind]) + b"\x03\x03" + (16384 + 257).to_bytes(2, "big") + bytes(10))
    assert ended.alert == RECORD_OVERFLOW, ended


@pytest.mark.parametrize("where", ["after the handshake", "protected", "wrong value"])
def test_a_change_cipher_spec_outside_the_handshake_is_unexpected(where: str) -> None:
    """RFC 8446 section 5: a CCS after the peer's Finished, a protected one, or one other than 0x01 MUST be an
    unexpected_message; all three are dropped silently today."""
    pair = Pair(1)
    if where == "protected":
        pair.client._records.send(20, b"\x01")
        data = pair.client.data_to_send()
    elif where == "wrong value":
        data = record(20, b"\x02\x02")
    else:
        data = CCS
    ended = refused(pair.server, data)
    assert ended.alert == AlertDescription.UNEXPECTED_MESSAGE


def test_a_new_session_ticket_from_the_client_is_unexpected() -> None:
    """Only servers send NewSessionTicket (RFC 8446 4.6.1); the server drops the client's unread, any number."""
    pair = Pair(1)
    pair.client._send_handshake(bytes([HandshakeType.new_session_ticket]) + (9).to_bytes(3, "big") + bytes(9))
    ended = refused(pair.server, pair.client.data_to_send())
    assert ended.alert == AlertDescription.UNEXPECTED_MESSAGE


def test_our_extension_in_a_new_session_ticket_is_illegal_parameter() -> None:
    """Draft section 5 / docs/housley.md "placement": the extension in a NewSessionTicket is illegal_parameter.
    The client drops every ticket unparsed."""
    pair = Pair(1)
    extension = EXT.to_bytes(2, "big") + (4).to_bytes(2, "big") + b"\x00\x01\x00\x03"
    body = (b"\x00\x00\x0e\x10" + b"\x00\x00\x00\x01" + b"\x01\x00" + b"\x00\x01\x00"
            + len(extension).to_bytes(2, "big") + extension)  # lifetime, age_add, nonce, ticket, extensions
    pair.server._send_handshake(bytes([HandshakeType.new_session_ticket]) + len(body).to_bytes(3, "big") + body)
    ended = refused(pair.client, pair.server.data_to_send())
    assert ended.alert == AlertDescription.ILLEGAL_PARAMETER


# == attacks refused correctly (these pass) =======================================================================

# -- malicious or spliced ClientHello -----------------------------------------------------------------------------

def test_a_legacy_tls12_client_hello_is_protocol_version() -> None:
    hello = honest_client_hello()
    store = MemorySessionStore()
    ended = refused(connection(False, store), plaintext(with_extensions(
        hello, [e for e in hello.extensions if e.extType != ExtensionType.supported_versions])))
    assert ended.alert == AlertDescription.PROTOCOL_VERSION and store.group_ids() == []


def test_a_client_hello_offering_only_tls12_is_protocol_version() -> None:
    hello = honest_client_hello()
    others = [e for e in hello.extensions if e.extType != ExtensionType.supported_versions]
    ended = refused(connection(False), plaintext(with_extensions(
        hello, [SupportedVersionsExtension().create([(3, 3)]), *others])))
    assert ended.alert == AlertDescription.PROTOCOL_VERSION


def test_a_client_hello_without_a_common_tls_suite_is_handshake_failure() -> None:
    hello = honest_client_hello()
    hello.cipher_suites = [0x009C, 0x1304]
    ended = refused(connection(False), plaintext(bytes(hello.write())))
    assert ended.alert == AlertDescription.HANDSHAKE_FAILURE


def test_a_client_hello_with_a_pre_shared_key_is_illegal_parameter() -> None:
    hello = honest_client_hello()
    psk = TLSExtension(extType=ExtensionType.pre_shared_key).create(bytearray(b"\x00\x00\x00\x00"))
    ended = refused(connection(False), plaintext(with_extensions(hello, [*hello.extensions, psk])))
    assert ended.alert == AlertDescription.ILLEGAL_PARAMETER


def test_a_client_hello_carrying_a_welcome_is_refused_and_nothing_is_stored() -> None:
    _, _, flight = server_flight()
    welcome = parsed_server_hello(flight).getExtension(EXT).extData
    hello = honest_client_hello()
    store = MemorySessionStore()
    ended = refused(connection(False, store), plaintext(with_extensions(
        hello, [e for e in hello.extensions if e.extType != EXT] + [TLSExtension(extType=EXT).create(welcome)])))
    assert ended.alert not in (AlertDescription.INTERNAL_ERROR, AlertDescription.CLOSE_NOTIFY)
    assert store.group_ids() == []


def test_plaintext_application_data_before_keys_is_unexpected() -> None:
    store = MemorySessionStore()
    ended = refused(connection(False, store), record(23, b"hello"))
    assert ended.alert == AlertDescription.UNEXPECTED_MESSAGE and store.group_ids() == []
    client = connection(True)
    client.connect()
    ended = refused(client, record(23, b"hello"))
    assert ended.alert == AlertDescription.UNEXPECTED_MESSAGE


def test_a_client_hello_in_one_byte_records_and_a_ccs_flood_still_completes() -> None:
    """Fragmentation and middlebox CCS during the handshake are legal: the honest handshake completes."""
    client, store = connection(True), MemorySessionStore()
    server = connection(False, store)
    client.connect()
    (hello,) = records(client.data_to_send())
    server.receive_data(CCS * 50 + b"".join(record(22, hello[1][i : i + 1]) for i in range(len(hello[1]))))
    client.receive_data(CCS * 50 + server.data_to_send())
    server.receive_data(client.data_to_send())
    assert client.established and server.established and store.group_ids() == [client.session.group_id]


def test_handshake_messages_before_the_clients_finished_are_unexpected_and_nothing_is_stored() -> None:
    for kind, body in ((H.handshake_type, b"\x00\x01" + H.key_switch.to_bytes(2, "big")),
                       (H.handshake_type, b"\x00\x01" + (H.tpmlsmt_base + 4).to_bytes(2, "big") + bytes(20)),
                       (H.handshake_type, b"\x00\x01" + (H.tpmlsmt_base + 3).to_bytes(2, "big") + bytes(20)),
                       (HandshakeType.key_update, b"\x01")):
        client, store = connection(True), MemorySessionStore()
        server = connection(False, store)
        real = client._send_handshake

        def early(encoded: bytes | bytearray, kind: int = kind, body: bytes = body,
                  real: Callable[[bytes | bytearray], None] = real) -> None:
            if bytes(encoded)[0] == HandshakeType.finished:
                real(bytes([kind]) + len(body).to_bytes(3, "big") + body)  # under the handshake keys, before it
            real(encoded)

        client._send_handshake = early  # type: ignore[method-assign]
        client.connect()
        server.receive_data(client.data_to_send())
        client.receive_data(server.data_to_send())
        server.receive_data(client.data_to_send())
        evs = events(server)
        ended = [e for e in evs if isinstance(e, ConnectionTerminated)]
        assert ended and ended[0].alert == AlertDescription.UNEXPECTED_MESSAGE, (kind, evs)
        assert store.group_ids() == [] and not [e for e in evs if isinstance(e, HandshakeCompleted | DataReceived)]


def test_a_plaintext_alert_while_the_server_waits_for_finished_is_unauthenticated_and_stores_nothing() -> None:
    client, store = connection(True), MemorySessionStore()
    server = connection(False, store)
    client.connect()
    server.receive_data(client.data_to_send())
    ended = refused(server, ALERT_FATAL + bytes([AlertDescription.DECRYPT_ERROR]))
    assert not ended.authenticated and store.group_ids() == []


def test_a_server_cut_off_before_the_clients_finished_stores_nothing_and_reports_nothing() -> None:
    client, store = connection(True), MemorySessionStore()
    server = connection(False, store)
    client.connect()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    finished = client.data_to_send()
    server.receive_data(finished[:-1])  # truncated: the last byte of the client's Finished record never comes
    server.connection_lost()
    evs = events(server)
    assert store.group_ids() == [] and not [e for e in evs if isinstance(e, HandshakeCompleted)]


# -- malicious or spliced ServerHello ----------------------------------------------------------------------------

def test_a_server_hello_without_supported_versions_is_protocol_version() -> None:
    client, _, flight = server_flight()
    hello = parsed_server_hello(flight)
    ended = refused(client, plaintext(with_extensions(
        hello, [e for e in hello.extensions if e.extType != ExtensionType.supported_versions])))
    assert ended.alert == AlertDescription.PROTOCOL_VERSION


def test_a_server_hello_choosing_a_suite_not_offered_is_illegal_parameter() -> None:
    client = HousleyConnection(MlsTlsConfiguration(
        connection(True).configuration.profile, True, MemorySessionStore(), housley=HousleyConfig(
            tls_suites=(0x1301,))))
    server = connection(False)
    client.connect()
    server.receive_data(client.data_to_send())
    hello = parsed_server_hello(records(server.data_to_send()))
    hello.cipher_suite = 0x1302
    ended = refused(client, plaintext(bytes(hello.write())))
    assert ended.alert == AlertDescription.ILLEGAL_PARAMETER


def test_a_server_hello_with_a_key_share_is_illegal_parameter() -> None:
    client, _, flight = server_flight()
    hello = parsed_server_hello(flight)
    share = TLSExtension(extType=ExtensionType.key_share).create(bytearray(b"\x00\x1d\x00\x20" + bytes(32)))
    ended = refused(client, plaintext(with_extensions(hello, [*hello.extensions, share])))
    assert ended.alert == AlertDescription.ILLEGAL_PARAMETER


def test_our_extension_in_encrypted_extensions_is_illegal_parameter() -> None:
    client, server = connection(True), connection(False)

    def with_extension(encoded: bytes) -> bytes:
        if encoded[0] != HandshakeType.encrypted_extensions:
            return encoded
        return bytes(EncryptedExtensions().create([TLSExtension(extType=EXT).create(bytearray(8))]).write())

    rewriting(server, with_extension)
    client.connect()
    server.receive_data(client.data_to_send())
    ended = refused(client, server.data_to_send())
    assert ended.alert == AlertDescription.ILLEGAL_PARAMETER and not client.established


def test_a_resumption_response_to_a_fresh_client_hello_is_unexpected() -> None:
    _, resuming, server = resumption_parts()
    resuming.connect()
    server.receive_data(resuming.data_to_send())
    response = parsed_server_hello(records(server.data_to_send()))
    fresh = connection(True)
    fresh.connect()
    fresh.data_to_send()
    response.session_id = bytearray(fresh._session_id)  # copied from the plaintext ClientHello by the attacker
    ended = refused(fresh, plaintext(bytes(response.write())))
    assert ended.alert == AlertDescription.UNEXPECTED_MESSAGE and not fresh.established


def test_a_welcome_to_a_resuming_client_is_unexpected_and_its_session_survives() -> None:
    pair, resuming, _ = resumption_parts()
    resuming.connect()
    resuming.data_to_send()
    before = stored(pair.client_store)
    _, _, flight = server_flight()  # a Welcome answering someone else's fresh ClientHello
    welcome = parsed_server_hello(flight)
    welcome.session_id = bytearray(resuming._session_id)  # copied from the plaintext ClientHello by the attacker
    ended = refused(resuming, plaintext(bytes(welcome.write())))
    assert ended.alert == AlertDescription.UNEXPECTED_MESSAGE and not resuming.established
    assert stored(pair.client_store) == before
    honest_resumption_works(pair)


def test_a_plaintext_alert_before_the_server_hello_ends_only_that_attempt() -> None:
    pair, resuming, _ = resumption_parts()
    resuming.connect()
    resuming.data_to_send()
    before = stored(pair.client_store)
    ended = refused(resuming, ALERT_FATAL + bytes([AlertDescription.BAD_CERTIFICATE]))
    assert not ended.authenticated and stored(pair.client_store) == before
    resuming.connection_lost()
    honest_resumption_works(pair)


# -- resumption ClientHello: spliced, replayed, tampered ---------------------------------------------------------

def test_a_resumption_request_for_an_unknown_or_spliced_group_is_refused_and_the_store_is_unchanged() -> None:
    pair, resuming, _ = resumption_parts()
    other = Pair(1)  # a second session the same server store must hold
    for group_id, state in stored(other.server_store).items():
        assert state is not None
        pair.server_store.save(group_id, state, replaces=None)
    resuming.connect()
    (hello_record,) = records(resuming.data_to_send())
    hello = ClientHello().parse(Parser(bytearray(hello_record[1][1:])))
    request = bytes(mls_extension(hello).extData)
    own, foreign = pair.client_store.group_ids()[0], other.client.session.group_id
    assert own in request and len(own) == len(foreign)
    before = stored(pair.server_store)
    for group_id in (foreign, bytes(len(own))):  # another client's stored group; a group nobody stores
        spliced = TLSExtension(extType=EXT).create(bytearray(request.replace(own, group_id)))
        server = HousleyConnection(MlsTlsConfiguration(pair.server_profile, False, pair.server_store,
                                                       housley=pair.housley))
        ended = refused(server, plaintext(with_extensions(
            hello, [e for e in hello.extensions if e.extType != EXT] + [spliced])))
        assert ended.alert not in (AlertDescription.INTERNAL_ERROR, AlertDescription.CLOSE_NOTIFY), ended
        assert stored(pair.server_store) == before
    resuming.connection_lost()
    honest_resumption_works(pair)


def test_a_replayed_resumption_client_hello_is_refused_once_the_session_moved_on() -> None:
    pair, resuming, server = resumption_parts()
    resuming.connect()
    captured = resuming.data_to_send()
    server.receive_data(captured)
    resuming.receive_data(server.data_to_send())
    server.receive_data(resuming.data_to_send())
    resuming.receive_data(server.data_to_send())
    assert resuming.established and server.established
    before = stored(pair.server_store)
    replay = HousleyConnection(MlsTlsConfiguration(pair.server_profile, False, pair.server_store,
                                                   housley=pair.housley))
    ended = refused(replay, captured)
    assert ended.alert not in (AlertDescription.INTERNAL_ERROR, AlertDescription.CLOSE_NOTIFY)
    assert stored(pair.server_store) == before
    resuming.send_data(b"still fine")
    server.receive_data(resuming.data_to_send())
    assert [e.data for e in events(server) if isinstance(e, DataReceived)] == [b"still fine"]


def test_a_tampered_resumption_client_hello_fails_and_the_client_can_resume_again() -> None:
    pair, resuming, server = resumption_parts()
    resuming.connect()
    tampered = bytearray(resuming.data_to_send())
    tampered[20] ^= 1  # inside the ClientHello's random: the transcripts differ
    server.receive_data(bytes(tampered))
    ended = refused(resuming, server.data_to_send())
    assert ended.alert in (AlertDescription.BAD_RECORD_MAC, AlertDescription.DECRYPT_ERROR)
    assert not [e for e in events(server) if isinstance(e, HandshakeCompleted)]
    server.connection_lost()
    resuming.connection_lost()
    honest_resumption_works(pair)


# -- after the handshake -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "alert"), [
    (b"\x00\x02" + (H.tpmlsmt_base + 3).to_bytes(2, "big") + bytes(8), AlertDescription.DECODE_ERROR),  # version 2
    (b"\x00\x01\x12\x34" + bytes(8), AlertDescription.DECODE_ERROR),  # unknown tpmlsmt
    (b"\x00\x01" + H.key_switch.to_bytes(2, "big") + b"\x00", AlertDescription.DECODE_ERROR),  # trailing bytes
    (b"\x00\x01\xf0", AlertDescription.DECODE_ERROR),  # truncated
    (b"\x00\x01" + (H.tpmlsmt_base + 1).to_bytes(2, "big") + bytes(8), None),  # a ClientHello after the handshake
    (b"\x00\x01" + (H.tpmlsmt_base + 5).to_bytes(2, "big") + bytes(8), None),  # a ResumptionRequest mid-connection
])
def test_malformed_mls_handshake_messages_are_refused(body: bytes, alert: AlertDescription | None) -> None:
    pair = Pair(1)
    before = stored(pair.server_store)
    pair.client._send_handshake(bytes([H.handshake_type]) + len(body).to_bytes(3, "big") + body)
    ended = refused(pair.server, pair.client.data_to_send())
    assert ended.alert != AlertDescription.INTERNAL_ERROR and (alert is None or ended.alert == alert), ended
    assert stored(pair.server_store) == before


def test_a_replayed_commit_request_flood_costs_one_commit() -> None:
    pair = Pair(1)
    (request,) = pair.server.session.rekey()
    message = ProfileMessage.from_bytes(request.data)
    assert message.msg_type == ProfileMessageType.COMMIT_REQUEST
    for _ in range(200):
        pair.server._send_mls_handshake(H.tpmlsmt_base + message.msg_type, message.body)
    pair.client.receive_data(pair.server.data_to_send())
    evs = events(pair.client)
    no_internal_error(evs)
    assert len(records(pair.client.data_to_send())) <= 1  # at most one ConnectionUpdate


def test_a_key_update_flood_is_followed_and_data_still_flows() -> None:
    from mlstls.housley_schedule import TLS_SUITES, next_traffic_secret

    pair = Pair(1)
    suite = TLS_SUITES[pair.client.tls_suite or 0]
    for _ in range(300):
        pair.client._send_handshake(bytes([HandshakeType.key_update]) + (1).to_bytes(3, "big") + b"\x00")
        pair.client._install(write=next_traffic_secret(pair.client._write_secret, suite))
    pair.pump()
    pair.exchange(1000)
    assert not [e for name in pair.events for e in pair.events[name] if isinstance(e, ConnectionTerminated)]


def test_a_forged_application_record_after_the_handshake_is_bad_record_mac() -> None:
    pair = Pair(1)
    ended = refused(pair.server, record(23, os.urandom(40)))
    assert ended.alert == AlertDescription.BAD_RECORD_MAC


def test_a_client_hello_coalesced_with_application_data_is_refused() -> None:
    client, store = connection(True), MemorySessionStore()
    server = connection(False, store)
    client.connect()
    ended = refused(server, client.data_to_send() + record(23, b"early"))
    assert ended.alert in (AlertDescription.UNEXPECTED_MESSAGE, AlertDescription.BAD_RECORD_MAC)
    assert store.group_ids() == []


# -- receive_data never raises, never internal_error (seeded fuzz of records in every state) ----------------------

def _states() -> list[tuple[str, Callable[[], HousleyConnection]]]:
    def server_start() -> HousleyConnection:
        return connection(False)

    def server_waiting_finished() -> HousleyConnection:
        return server_flight()[1]

    def client_waiting_server_hello() -> HousleyConnection:
        client = connection(True)
        client.connect()
        client.data_to_send()
        return client

    def client_waiting_encrypted_extensions() -> HousleyConnection:
        client, _, flight = server_flight()
        client.receive_data(plaintext(flight[0][1]))
        return client

    def connected_server() -> HousleyConnection:
        return Pair(1).server

    return [("server start", server_start), ("server waiting for Finished", server_waiting_finished),
            ("client waiting for ServerHello", client_waiting_server_hello),
            ("client waiting for EE", client_waiting_encrypted_extensions), ("connected server", connected_server)]


@pytest.mark.parametrize(("name", "make"), _states(), ids=[name for name, _ in _states()])
def test_random_records_never_raise_and_never_cause_internal_error(name: str,
                                                                   make: Callable[[], HousleyConnection]) -> None:
    rng = random.Random(name)
    for _ in range(25):
        target = make()
        events(target)
        kind = rng.choice([20, 21, 22, 23, 24, 0])
        if kind == 22 and rng.random() < 0.7:
            payload = bytes([rng.choice([1, 2, 4, 8, 11, 13, 15, 20, 24, H.handshake_type])]) + rng.randbytes(
                rng.randrange(0, 60))
        else:
            payload = rng.randbytes(rng.randrange(0, 60))
        data = record(kind, payload) + (rng.randbytes(rng.randrange(0, 8)) if rng.random() < 0.3 else b"")
        target.receive_data(data)  # must not raise
        evs = events(target)
        no_internal_error(evs)
        assert not [e for e in evs if isinstance(e, DataReceived | HandshakeCompleted)]
