"""MLS alongside the QUIC TLS handshake: TLS first, then MLS rekeys as Key Phase flips (in memory)."""

from __future__ import annotations

import os

import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from mls2p import ConfigurationError
from mls2p.testing import config, self_signed_server_certificate
from mlsquic import MlsQuicConfiguration
from mlsquic.testing import QuicPair


@pytest.fixture
def certificate(tmp_path):
    return self_signed_server_certificate(str(tmp_path), "localhost")


def server_config(certificate, **kwargs) -> MlsQuicConfiguration:
    configuration = MlsQuicConfiguration(profile=config(b"server"), mode="alongside", is_client=False,
                                         alpn_protocols=["echo"], **kwargs)
    configuration.load_cert_chain(*certificate)
    return configuration


def client_config(certificate, **kwargs) -> MlsQuicConfiguration:
    return MlsQuicConfiguration(profile=config(b"client"), mode="alongside", is_client=True,
                                alpn_protocols=["echo"], cafile=certificate[0], server_name="localhost", **kwargs)


def plain_client(certificate) -> QuicConnection:
    return QuicConnection(configuration=QuicConfiguration(is_client=True, alpn_protocols=["echo"],
                                                          cafile=certificate[0], server_name="localhost"))


def test_tls_then_mls_rekeys_with_every_byte_intact(certificate) -> None:
    pair = QuicPair(client_config(certificate), server_config(certificate))
    pair.run(lambda: pair.client.connection.mls_epoch == 1 and pair.server.connection.mls_epoch == 1)
    data = os.urandom(1024 * 1024)
    assert pair.echo_of(pair.send(data, rekey_every=3)) == data
    quic = pair.client.connection
    assert len(pair.client.epochs) >= 3 and quic.mls_session.epoch == quic.mls_epoch


def test_standard_aioquic_client_works_when_plain_peers_are_allowed(certificate) -> None:
    pair = QuicPair(plain_client(certificate), server_config(certificate, allow_plain_peers=True))
    pair.run(pair.established)
    assert pair.echo_of(pair.send(b"plain TLS QUIC")) == b"plain TLS QUIC"


def test_standard_aioquic_client_refused_by_default(certificate) -> None:
    pair = QuicPair(plain_client(certificate), server_config(certificate))
    pair.run(lambda: pair.client.terminated is not None)
    assert "does not run MLS" in pair.client.terminated.reason_phrase
    assert pair.client.terminated.error_code == 0x100 + 120  # no_application_protocol


def test_mlsquic_client_against_a_standard_aioquic_server(certificate) -> None:
    plain_server = QuicConfiguration(is_client=False, alpn_protocols=["echo"])
    plain_server.load_cert_chain(*certificate)
    pair = QuicPair(client_config(certificate, allow_plain_peers=True), plain_server)
    pair.run(pair.established)
    assert pair.echo_of(pair.send(b"falls back to TLS")) == b"falls back to TLS"
    assert pair.client.connection.mls_session is None


def test_untrusted_server_certificate_is_refused(certificate, tmp_path) -> None:
    (tmp_path / "other").mkdir()
    other_cert, _ = self_signed_server_certificate(str(tmp_path / "other"), "localhost")  # another key, same name
    pair = QuicPair(client_config((other_cert, None)), server_config(certificate))
    pair.run(lambda: pair.client.terminated is not None)
    assert pair.client.connection.mls_session is None


def test_alongside_refuses_resumption_in_its_configuration(certificate) -> None:
    with pytest.raises(ConfigurationError, match="QUIC-MLS mode"):
        client_config(certificate, resume_group_id=b"x" * 16)


def test_a_reset_of_the_profile_stream_closes_and_never_reaches_the_application(certificate) -> None:
    """Security round 3: RESET_STREAM on stream 0 reached the application as StreamReset(0)."""
    from aioquic.quic.events import StreamReset

    pair = QuicPair(client_config(certificate), server_config(certificate))
    pair.run(pair.established)
    pair.client.connection.reset_stream(0, 0x42)
    pair.run(lambda: pair.server is not None and pair.server.terminated is not None)
    assert pair.server is not None and pair.server.terminated is not None
    assert pair.server.terminated.error_code == 0x100 + 10  # unexpected_message
    assert not any(isinstance(e, StreamReset) and e.stream_id == 0 for e in pair.server.events)
