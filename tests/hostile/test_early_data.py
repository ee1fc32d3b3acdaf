"""MLS alongside QUIC: no application byte crosses before MLS is confirmed, in either direction.

The attacks: a stock aioquic client that negotiates ``<alpn>+mls2p`` and never
speaks MLS; a plain-TLS peer when plain peers are not allowed; a client whose
application writes before anything is established.
"""

from __future__ import annotations

import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from mls2p.errors import StateError
from mls2p.testing import config, self_signed_server_certificate
from mlsquic import MlsQuicConfiguration
from mlsquic.testing import QuicPair

APP_STREAM = 4


@pytest.fixture
def certificate(tmp_path) -> tuple[str, str]:
    return self_signed_server_certificate(str(tmp_path), "localhost")


def server(certificate: tuple[str, str], **kwargs: object) -> MlsQuicConfiguration:
    configuration = MlsQuicConfiguration(profile=config(b"server"), mode="alongside", is_client=False,
                                         alpn_protocols=["echo"], **kwargs)  # type: ignore[arg-type]
    configuration.load_cert_chain(*certificate)
    return configuration


def stock_client(certificate: tuple[str, str], alpn: str) -> QuicConnection:
    return QuicConnection(configuration=QuicConfiguration(is_client=True, alpn_protocols=[alpn],
                                                          cafile=certificate[0], server_name="localhost"))


def test_a_client_that_claims_mls_but_never_speaks_it_gets_nothing_through(certificate) -> None:
    pair = QuicPair(stock_client(certificate, "echo+mls2p"), server(certificate))
    pair.run(pair.established)
    pair.client.connection.send_stream_data(APP_STREAM, b"GET /secret", True)
    pair.advance(9.0)
    assert pair.server is not None and APP_STREAM not in pair.server.streams  # held, never delivered
    assert APP_STREAM not in pair.client.streams  # so nothing was echoed either
    pair.advance(2.0)  # past mls_handshake_timeout (10 s after TLS)
    closed = pair.client.terminated
    assert closed is not None and "did not complete the MLS handshake in time" in closed.reason_phrase
    assert APP_STREAM not in pair.server.streams


def test_a_plain_tls_peer_is_closed_before_its_data_reaches_the_application(certificate) -> None:
    pair = QuicPair(stock_client(certificate, "echo"), server(certificate))
    pair.run(pair.established)
    pair.client.connection.send_stream_data(0, b"plain data", True)
    pair.run(lambda: pair.client.terminated is not None)
    pair.advance(1.0)
    assert "does not run MLS" in pair.client.terminated.reason_phrase  # type: ignore[union-attr]
    assert pair.server is not None and not pair.server.streams


def test_writes_before_the_handshake_wait_for_mls_and_never_fall_back(certificate) -> None:
    client = MlsQuicConfiguration(profile=config(b"client"), mode="alongside", is_client=True,
                                  alpn_protocols=["echo"], cafile=certificate[0], server_name="localhost")
    pair = QuicPair(client, server(certificate))
    stream = pair.send(b"written before anything was established")  # before HandshakeCompleted
    assert stream == APP_STREAM  # stream 0 is reserved for MLS
    echoed = pair.echo_of(stream)
    assert echoed == b"written before anything was established"
    assert pair.client.connection.mls_epoch == 1 and pair.server is not None  # MLS ran; no TLS-only fallback
    assert pair.server.connection.mls_session is not None and pair.server.connection.mls_session.epoch == 1


def test_the_application_cannot_write_on_the_mls_stream(certificate) -> None:
    client = MlsQuicConfiguration(profile=config(b"client"), mode="alongside", is_client=True,
                                  alpn_protocols=["echo"], cafile=certificate[0], server_name="localhost")
    connection = QuicPair(client, server(certificate)).client.connection
    with pytest.raises(StateError, match="stream 0"):
        connection.send_stream_data(0, b"x")
