"""APQ-MLS on both transports and both of their modes (docs/pq.md, "APQ in the profile"): handshake, data,
20 rekeys with ping-pong and the FULL policy, the on-demand FULL, resumption, and the downgrade in flight.

Driven in memory (TlsPair, QuicPair) with simulated time: nothing depends on the machine's speed.
"""

from __future__ import annotations

import os

import pytest

from mls2p import MemorySessionStore, RekeyPolicy
from mls2p.errors import AlertDescription
from mls2p.testing import config, self_signed_server_certificate
from mls2p.wire import ProfileMessage
from mlsquic import MlsQuicConfiguration
from mlsquic.testing import QuicPair, client_configuration, server_configuration
from mlstls import TlsSettings
from mlstls.connection import ConnectionTerminated
from mlstls.record import ContentType, plaintext_records
from mlstls.testing import TlsPair

from .test_apq_profile import stripped_hello
from .test_negotiation import _record_payloads

APQ = {"apq": "require"}


def fulls(pair: TlsPair) -> tuple[int, int]:
    return pair.client.endpoint.full_commits, pair.server.endpoint.full_commits


def test_mlstls_twenty_rekeys_full_every_four_then_resumption() -> None:
    pair = TlsPair(apq="require", rekey=RekeyPolicy(max_seconds=10, full_every=4))
    pair.client.connect()
    pair.pump()
    client, server = pair.client.session, pair.server.session
    assert client.apq and server.apq and client.pq_epoch == 1
    for _ in range(20):
        pair.advance(10)  # the policy is due; turn-taking makes the sides alternate
        data = os.urandom(3000)
        pair.client.send_data(data)
        pair.pump()
        assert bytes(pair.received["server"][-3000:]) == data
    assert client.epoch == server.epoch == 21 and client.export_secret("x", b"", 16) == server.export_secret(
        "x", b"", 16)
    # each side made 10 commits: the joiner's first FULL, then one in four of each side's own
    assert fulls(pair) == (3, 2)
    assert client.pq_epoch == 1 + 5
    pair.reconnect()
    pair.client.connect()
    pair.pump()
    resumed = pair.client.session
    assert pair.client.endpoint.resumed and resumed.epoch == 23 and resumed.pq_epoch == 1 + 5 + 2
    pair.client.send_data(b"after resumption")
    pair.pump()
    assert pair.received["server"].endswith(b"after resumption")


def test_mlstls_full_on_demand_and_by_age() -> None:
    pair = TlsPair(apq="require", rekey=RekeyPolicy(max_seconds=10, full_every=None, full_seconds=35))
    pair.client.connect()
    pair.pump()
    pair.client.rekey()  # the joiner's first commit: FULL whatever the policy
    pair.pump()
    assert fulls(pair) == (1, 0)
    pair.server.rekey(full=True)
    pair.pump()
    assert fulls(pair) == (1, 1)
    for _ in range(8):
        pair.advance(10)
    # a rekey every 10 s, the sides taking turns (client at 10, 30, 50, 70 s; server at 20, 40, 60, 80 s): a
    # side's commit is FULL once its last FULL is 35 s old: the client's at 50 s, the server's at 40 and 80 s
    assert fulls(pair) == (2, 3)


def test_mlstls_stripped_pair_is_refused_in_flight_and_nothing_is_stored() -> None:
    pair = TlsPair(apq="prefer")
    pair.client.connect()
    message = ProfileMessage.from_bytes(_record_payloads(pair.client.data_to_send()))
    pair.server.receive_data(plaintext_records(ContentType.HANDSHAKE, stripped_hello(message.to_bytes())))
    ended = [e for e in iter(pair.server.next_event, None) if isinstance(e, ConnectionTerminated)]
    assert ended and ended[0].alert == AlertDescription.ILLEGAL_PARAMETER and "downgrade" in ended[0].reason
    assert pair.server_store.group_ids() == []


@pytest.mark.parametrize(("client", "server", "who"), [("require", "off", "client"), ("off", "require", "server")])
def test_mlstls_a_side_that_requires_apq_ends_the_handshake(client: str, server: str, who: str) -> None:
    pair = TlsPair(client_profile=config(b"client", apq=client), server_profile=config(b"server", apq=server))
    pair.client.connect()
    pair.pump()
    refusing = pair.client if who == "client" else pair.server
    assert refusing.closed and not pair.client.established
    assert pair.client_store.group_ids() == [] and pair.server_store.group_ids() == []


@pytest.fixture
def certificate(tmp_path):
    return self_signed_server_certificate(str(tmp_path), "localhost")


def test_mlsquic_apq_rekeys_full_on_demand_and_resumes() -> None:
    client_store, server_store = MemorySessionStore(), MemorySessionStore()
    client_profile = config(b"client", rekey=RekeyPolicy(full_every=None), **APQ)
    server = server_configuration(profile=config(b"server", rekey=RekeyPolicy(full_every=None), **APQ),
                                  store=server_store)
    first = QuicPair(client_configuration(profile=client_profile, store=client_store), server)
    first.run(first.established)
    quic = first.client.connection
    session = quic.mls_session
    assert session.apq and session.pq_epoch == 1
    data = os.urandom(200_000)
    assert first.echo_of(first.send(data, rekey_every=4)) == data
    first.run(lambda: session.synced)
    assert session.pq_epoch == 2  # only the joiner's first commit was FULL (full_every=None)
    assert quic.rekey(full=True)
    first.run(lambda: session.synced and session.pq_epoch == 3)
    assert first.echo_of(first.send(b"after FULL")) == b"after FULL"
    epoch, group_id = session.epoch, session.group_id
    assert epoch is not None
    second = QuicPair(client_configuration(profile=client_profile, store=client_store, resume_group_id=group_id),
                      server)
    second.run(second.established)
    resumed = second.client.connection.mls_session
    assert resumed.group_id == group_id and resumed.epoch == epoch + 2 and resumed.pq_epoch == 5
    assert second.echo_of(second.send(b"resumed")) == b"resumed"


def test_mlsquic_alongside_carries_apq(certificate) -> None:
    server = MlsQuicConfiguration(profile=config(b"server", **APQ), mode="alongside", is_client=False,
                                  alpn_protocols=["echo"])
    server.load_cert_chain(*certificate)
    client = MlsQuicConfiguration(profile=config(b"client", **APQ), mode="alongside", is_client=True,
                                  alpn_protocols=["echo"], cafile=certificate[0], server_name="localhost")
    pair = QuicPair(client, server)
    pair.run(lambda: pair.client.connection.mls_epoch == 1 and pair.server.connection.mls_epoch == 1)
    data = os.urandom(256 * 1024)
    assert pair.echo_of(pair.send(data, rekey_every=3)) == data
    session = pair.client.connection.mls_session
    assert session.apq and session.pq_epoch >= 2 and session.epoch == pair.client.connection.mls_epoch


def test_mlstls_alongside_carries_apq(certificate) -> None:
    cert, key = certificate
    pair = TlsPair(client_tls=TlsSettings(cafile=cert, server_hostname="localhost"),
                   server_tls=TlsSettings(certfile=cert, keyfile=key), apq="require",
                   rekey=RekeyPolicy(max_seconds=10, full_every=2))
    pair.client.connect()
    pair.pump()
    for _ in range(6):
        pair.advance(10)
        pair.client.send_data(b"inside TLS")
        pair.pump()
        assert pair.received["server"].endswith(b"inside TLS")
    client, server = pair.client.session, pair.server.session
    assert client.apq and client.epoch == server.epoch == 7
    assert client.pq_epoch == server.pq_epoch == 1 + 1 + 1 + 1  # the joiner's first, then one in two of each side
