"""mlsquic against RFC 9000/9001 rules that the MLS integration could break (docs/quic.md, the requirement table).

Each test is a finding of the QUIC review; all run in memory on a simulated clock.
"""

from __future__ import annotations

import pytest
from aioquic import tls
from aioquic.buffer import Buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.crypto import CryptoError, CryptoPair
from aioquic.quic.packet import QuicPacketType, pull_quic_header

from mls2p import RekeyPolicy
from mls2p.errors import AlertDescription
from mls2p.store import MemorySessionStore
from mls2p.testing import config, self_signed_server_certificate
from mlsquic import MlsQuicConfiguration
from mlsquic._aioquic_compat import MlsCryptoPair
from mlsquic.alongside import MAX_HELD_BEFORE_MLS, AlongsideQuicConnection
from mlsquic.epochs import MAX_PHASES_BEHIND, OLD_KEYS_PTO, EpochKeyedConnection
from mlsquic.errors import KeyPhaseStalled
from mlsquic.testing import CLIENT_ADDR, SERVER_ADDR, QuicPair, client_configuration, server_configuration


@pytest.fixture
def certificate(tmp_path):  # type: ignore[no-untyped-def]
    return self_signed_server_certificate(str(tmp_path), "localhost")


def _alongside_server(certificate, **kwargs) -> MlsQuicConfiguration:  # type: ignore[no-untyped-def]
    configuration = MlsQuicConfiguration(profile=config(b"server"), mode="alongside", is_client=False,
                                         alpn_protocols=["echo"], **kwargs)
    configuration.load_cert_chain(*certificate)
    return configuration


def _alongside_client(certificate) -> MlsQuicConfiguration:  # type: ignore[no-untyped-def]
    return MlsQuicConfiguration(profile=config(b"client"), mode="alongside", is_client=True,
                                alpn_protocols=["echo"], cafile=certificate[0], server_name="localhost")


def _plain_client(certificate, alpn: str) -> QuicConnection:  # type: ignore[no-untyped-def]
    return QuicConnection(configuration=QuicConfiguration(is_client=True, alpn_protocols=[alpn],
                                                          cafile=certificate[0], server_name="localhost"))


# -- 1: alongside mode holds a bounded amount for a peer that never speaks MLS ----------------------


def test_a_peer_that_never_speaks_mls_cannot_park_data_or_grow_credit(certificate) -> None:  # type: ignore[no-untyped-def]
    """Review finding 1: 92 MiB held in 8 s, and MAX_DATA doubled from 1 to 64 MiB, for an anonymous client."""
    pair = QuicPair(_plain_client(certificate, "echo+mls2p"), _alongside_server(certificate), echo=False)
    pair.run(pair.established)
    server = pair.server.connection  # type: ignore[union-attr]
    assert isinstance(server, AlongsideQuicConnection)
    initial_credit = server._local_max_data.value
    attacker = pair.client.connection
    for _ in range(64):  # 8 MiB on an application stream, never a byte of MLS on stream 0
        attacker.send_stream_data(4, bytes(128 * 1024), False)
        pair.advance(0.05)
        assert sum(len(getattr(e, "data", b"")) for e in server._held_events) <= MAX_HELD_BEFORE_MLS
        assert server._local_max_data.value == initial_credit  # credit never grew for unread data
        if pair.client.terminated is not None:
            break
    assert pair.client.terminated is not None
    assert not any(type(e).__name__ == "StreamDataReceived" for e in pair.server.events)  # type: ignore[union-attr]


def test_an_honest_alongside_peer_never_touches_the_budget(certificate) -> None:  # type: ignore[no-untyped-def]
    pair = QuicPair(_alongside_client(certificate), _alongside_server(certificate))
    client = pair.client.connection
    stream = client.get_next_available_stream_id()
    client.send_stream_data(stream, bytes(512 * 1024), True)  # written before MLS: held on the client
    assert pair.echo_of(stream) == bytes(512 * 1024)


# -- 3: the server's transport parameters are not readable by an observer -------------------------


def _initial_plaintexts(pair: QuicPair) -> list[bytes]:
    """What anyone on the path reads of the server's Initial packets (their keys come from the client's cid)."""
    first = pull_quic_header(Buffer(data=pair.client_datagrams[0]), host_cid_length=8)
    assert first.version is not None
    observer = CryptoPair()
    observer.setup_initial(cid=first.destination_cid, is_client=True, version=first.version)
    payloads = []
    for datagram in pair.server_datagrams:
        buf = Buffer(data=datagram)
        while not buf.eof() and datagram[buf.tell()]:  # zero bytes after the last packet pad the datagram
            start = buf.tell()
            header = pull_quic_header(buf, host_cid_length=8)
            if header.version is None:  # a short-header packet runs to the end of the datagram
                break
            packet = datagram[start : start + header.packet_length]
            if header.packet_type == QuicPacketType.INITIAL:
                payloads.append(observer.decrypt_packet(packet, buf.tell() - start, 0)[1])
            buf.seek(start + header.packet_length)
    return payloads


@pytest.mark.parametrize("resume", [False, True], ids=["first handshake", "resumption"])
def test_the_servers_transport_parameters_are_not_in_its_initial_packets(resume: bool) -> None:
    """Review finding 3: an observer read the server's parameters, stateless_reset_token included (RFC 9000 7.3)."""
    client_store, profile = MemorySessionStore(), config(b"client")
    server = server_configuration(store=MemorySessionStore())
    pair = QuicPair(client_configuration(profile=profile, store=client_store), server)
    pair.run(pair.established)
    if resume:
        group_id = pair.client.connection.mls_session.group_id  # type: ignore[attr-defined]
        pair = QuicPair(client_configuration(profile=profile, store=client_store, resume_group_id=group_id), server)
        pair.run(pair.established)
        assert pair.client.connection.endpoint.resumed  # type: ignore[attr-defined]
    server = pair.server.connection  # type: ignore[union-attr]
    token = server._host_cids[0].stateless_reset_token
    parameters = server.tls.handshake_extensions[0][1]
    assert len(token) == 16 and token in parameters
    plaintexts = _initial_plaintexts(pair)
    assert plaintexts  # the observer did read the Initial packets
    assert not any(token in payload or parameters in payload for payload in plaintexts)
    # and the client has them, authenticated: it knows the token the server would reset with
    assert pair.client.connection._peer_cid.stateless_reset_token == token


# -- 4: key updates -------------------------------------------------------------------------------


def test_a_stock_peers_key_update_is_answered_when_plain_peers_are_allowed(certificate) -> None:  # type: ignore[no-untyped-def]
    """Review finding 4: an RFC 9001 key update from a stock aioquic peer killed the connection."""
    pair = QuicPair(_plain_client(certificate, "echo"), _alongside_server(certificate, allow_plain_peers=True))
    pair.run(pair.established)
    for round_ in range(3):
        pair.client.connection.request_key_update()
        data = f"after key update {round_}".encode()
        assert pair.echo_of(pair.send(data)) == data
    assert pair.client.terminated is None


def _record_flips(pair: QuicPair, monkeypatch: pytest.MonkeyPatch) -> list[tuple[bool, bool, bool]]:
    """At every Key Phase flip either side starts: (client?, handshake confirmed, current phase acked)."""
    flips: list[tuple[bool, bool, bool]] = []
    original = MlsCryptoPair.update_key

    def update_key(self: MlsCryptoPair) -> None:
        connection = next(side.connection for side in (pair.client, pair.server)
                          if side is not None and side.connection.one_rtt is self)  # type: ignore[attr-defined]
        space = connection._spaces.get(tls.Epoch.ONE_RTT)
        acked = self.first_sealed is not None and space is not None and space.largest_acked_packet >= self.first_sealed
        flips.append((connection.is_client, bool(connection._handshake_confirmed), acked))
        original(self)

    monkeypatch.setattr(MlsCryptoPair, "update_key", update_key)
    return flips


@pytest.mark.parametrize("mode", ["quic-mls", "alongside"])
def test_flips_wait_for_a_confirmed_handshake_and_an_ack_of_the_current_phase(mode: str, certificate,  # type: ignore[no-untyped-def]
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Review finding 4: 70 of 74 replier flips came before any ack of the current phase, and the client
    flipped before HANDSHAKE_DONE (RFC 9001 6.1)."""
    if mode == "alongside":
        pair = QuicPair(_alongside_client(certificate), _alongside_server(certificate), loss=0.03, seed=3)
    else:
        pair = QuicPair(client_configuration(), server_configuration(), loss=0.03, seed=3)
    flips = _record_flips(pair, monkeypatch)
    data = bytes(range(256)) * 2048
    assert pair.echo_of(pair.send(data, rekey_every=1, chunk=16 * 1024), max_seconds=120) == data
    assert len(pair.client.epochs) >= 20 and len(flips) >= 20  # rekeys back to back, each one a flip
    assert all(confirmed and acked for _, confirmed, acked in flips), flips


def test_a_key_phase_held_back_too_long_closes_the_connection() -> None:
    """Flips wait for acks; a peer withholding them would leave us on old keys while MLS moves on: capped."""
    pair = QuicPair(client_configuration(), server_configuration())
    pair.run(pair.established)
    client = pair.client.connection
    assert isinstance(client, EpochKeyedConnection)
    phase = client.one_rtt.epoch
    assert phase is not None
    client.flip_to(phase + MAX_PHASES_BEHIND, "test")  # within the cap: kept for later
    assert client.mls_failure is None
    client.flip_to(phase + MAX_PHASES_BEHIND + 1, "test")
    assert isinstance(client.mls_failure, KeyPhaseStalled)
    pair.run(lambda: pair.server.terminated is not None)  # type: ignore[union-attr]
    assert pair.server.terminated.error_code == 0x100 + AlertDescription.INSUFFICIENT_SECURITY  # type: ignore[union-attr]


def test_the_previous_phase_opens_late_packets_for_three_pto_then_goes() -> None:
    """Review finding 4: old keys were dropped at the peer's first new-phase packet (0 of 188 late packets)."""
    pair = QuicPair(client_configuration(), server_configuration())
    pair.run(pair.established)
    client, server = pair.client.connection, pair.server.connection  # type: ignore[union-attr]
    client.send_stream_data(client.get_next_available_stream_id(), b"late", True)
    late = [data for data, _ in client.datagrams_to_send(now=pair.now)]  # captured, delivered later
    assert len(late) == 1
    client.rekey()
    assert pair.echo_of(pair.send(b"new phase")) == b"new phase"  # both flipped, and packets crossed
    assert server.mls_epoch == 2

    def opens() -> bool:
        try:
            server.one_rtt.decrypt_packet(late[0], 1 + len(server.host_cid), 0)
        except CryptoError:
            return False
        return True

    assert opens()
    pto = server._loss.get_probe_timeout()
    pair.advance(OLD_KEYS_PTO * pto + 0.01)
    assert server.one_rtt.previous_aead is None and not opens()


# -- 6: timers and polling ------------------------------------------------------------------------------


def test_a_time_policy_fires_on_an_idle_connection() -> None:
    """Review finding 6: the connection's timer ignored the rekey deadline, so nothing woke it."""
    pair = QuicPair(client_configuration(profile=config(b"client", rekey=RekeyPolicy(max_seconds=2.0))),
                    server_configuration())
    pair.run(pair.established)
    pair.run(lambda: len(pair.client.epochs) >= 2, max_seconds=5.0)  # jumps from timer to timer, no traffic
    assert pair.client.epochs == [2, 3]  # the client's commit, then (its turn over) the server's


def test_alongside_client_reaches_its_first_epoch_without_polling_events(certificate) -> None:  # type: ignore[no-untyped-def]
    """Review finding 6: the client's first flip waited for the application to poll (10 of 50 handshakes lost)."""
    client = AlongsideQuicConnection(configuration=_alongside_client(certificate))
    now = 0.0
    client.connect(SERVER_ADDR, now=now)
    server: QuicConnection | None = None
    for _ in range(50):
        for data, _ in client.datagrams_to_send(now=now):
            if server is None:
                configuration = _alongside_server(certificate)
                header = pull_quic_header(Buffer(data=data), host_cid_length=configuration.connection_id_length)
                server = AlongsideQuicConnection(configuration=configuration,
                                                 original_destination_connection_id=header.destination_cid)
            server.receive_datagram(data, CLIENT_ADDR, now=now)
        if server is not None:
            while server.next_event() is not None:
                pass  # the server application polls; the client's never does
            for data, _ in server.datagrams_to_send(now=now):
                client.receive_datagram(data, SERVER_ADDR, now=now)
        now += 0.01
        if client.mls_epoch == 1:
            break
    assert client.mls_epoch == 1


# -- 5: what a refusal tells a stranger -------------------------------------------------------------


def test_a_refusal_tells_an_unauthenticated_peer_only_the_code(caplog: pytest.LogCaptureFixture) -> None:
    """Review finding 5: the reason phrase said whether a name is pinned and 40 hex digits of its key."""
    from mls2p.testing import impersonator

    caplog.set_level("INFO", logger="mlsquic")
    pair = QuicPair(client_configuration(profile=impersonator(b"client")), server_configuration())
    pair.run(lambda: pair.client.terminated is not None)
    closed = pair.client.terminated
    assert closed is not None and closed.error_code == 0x100 + 42 and closed.frame_type is not None
    assert closed.reason_phrase == "bad_certificate" and "sha256" not in closed.reason_phrase
    assert any("CredentialError" in r.getMessage() and "client" in r.getMessage() for r in caplog.records)


def test_mls_errors_close_as_transport_errors_with_their_code() -> None:
    """Review finding 5: CRYPTO_ERROR codes went out in application closes, which Initial packets turn into 0xc."""
    pair = QuicPair(client_configuration(profile=config(b"client", rekey=RekeyPolicy())), server_configuration())
    pair.run(pair.established)
    server = pair.server.connection  # type: ignore[union-attr]
    from mls2p.errors import RevokedPeer

    server._close_for(RevokedPeer("the peer is no longer trusted: test"))
    pair.run(lambda: pair.client.terminated is not None)
    closed = pair.client.terminated
    assert closed is not None and closed.error_code == 0x100 + 44 and closed.frame_type is not None
    assert "RevokedPeer" in closed.reason_phrase  # the peer was authenticated: it may know why


def test_new_keys_are_asked_for_long_before_the_aead_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 9001 section 6.6: no more than 2^23 packets under one AES-GCM key; a policy-less connection rekeys."""
    import mlsquic.epochs

    monkeypatch.setattr(mlsquic.epochs, "PACKETS_PER_PHASE", 40)  # the real margin is 2^22 packets
    pair = QuicPair(client_configuration(), server_configuration())  # no rekey policy on either side
    pair.run(pair.established)
    data = bytes(200 * 1024)
    assert pair.echo_of(pair.send(data, chunk=16 * 1024)) == data
    assert len(pair.client.epochs) >= 2  # the sealed-packet count alone moved the keys on
    assert pair.client.connection.one_rtt.packets_sealed <= 40 + 20  # never far beyond the margin
