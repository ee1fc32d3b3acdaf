"""MLS alongside the QUIC TLS handshake: TLS first, then MLS rekeys as Key Phase flips."""

from __future__ import annotations

import asyncio
import os

import pytest
from aioquic.asyncio import connect as aioquic_connect
from aioquic.asyncio import serve as aioquic_serve
from aioquic.quic.configuration import QuicConfiguration

import mlsquic
from mls2p.testing import config, self_signed_server_certificate
from mlsquic import MlsQuicConfiguration
from mlsquic.testing import Collector, EchoServer, echo_through, free_udp_port

TIMEOUT = 30


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


async def test_tls_then_mls_rekeys_with_every_byte_intact(certificate) -> None:
    port = free_udp_port()
    server = await mlsquic.serve("127.0.0.1", port, configuration=server_config(certificate),
                                 create_protocol=EchoServer)
    try:
        async with mlsquic.connect("127.0.0.1", port, configuration=client_config(certificate),
                                   create_protocol=Collector) as client:
            for _ in range(100):
                if client._quic.mls_epoch:
                    break
                await asyncio.sleep(0.01)
            assert client._quic.mls_epoch == 1  # the TLS keys were replaced by MLS epoch 1's
            data = os.urandom(1024 * 1024)
            assert await echo_through(client, data, rekey_every=3) == data
            assert len(client.epochs) >= 3 and client._quic.mls_session.epoch == client._quic.mls_epoch
    finally:
        server.close()


async def test_standard_aioquic_client_works_when_plain_peers_are_allowed(certificate) -> None:
    port = free_udp_port()
    server = await mlsquic.serve("127.0.0.1", port, configuration=server_config(certificate, allow_plain_peers=True),
                                 create_protocol=EchoServer)
    try:
        plain = QuicConfiguration(is_client=True, alpn_protocols=["echo"], cafile=certificate[0],
                                  server_name="localhost")
        async with aioquic_connect("127.0.0.1", port, configuration=plain, create_protocol=Collector) as client:
            assert await echo_through(client, b"plain TLS QUIC") == b"plain TLS QUIC"
    finally:
        server.close()


async def test_standard_aioquic_client_refused_by_default(certificate) -> None:
    port = free_udp_port()
    server = await mlsquic.serve("127.0.0.1", port, configuration=server_config(certificate),
                                 create_protocol=EchoServer)
    try:
        plain = QuicConfiguration(is_client=True, alpn_protocols=["echo"], cafile=certificate[0],
                                  server_name="localhost")
        async with aioquic_connect("127.0.0.1", port, configuration=plain, create_protocol=Collector) as client:
            await asyncio.wait_for(client._closed.wait(), TIMEOUT)
            assert "does not run MLS" in (client.terminated.reason_phrase if client.terminated else
                                          client._quic._close_event.reason_phrase)
    finally:
        server.close()


async def test_mlsquic_client_against_a_standard_aioquic_server(certificate) -> None:
    port = free_udp_port()
    plain_server = QuicConfiguration(is_client=False, alpn_protocols=["echo"])
    plain_server.load_cert_chain(*certificate)
    server = await aioquic_serve("127.0.0.1", port, configuration=plain_server, create_protocol=EchoServer)
    try:
        async with mlsquic.connect("127.0.0.1", port, configuration=client_config(certificate, allow_plain_peers=True),
                                   create_protocol=Collector) as client:
            assert await echo_through(client, b"falls back to TLS") == b"falls back to TLS"
            assert client._quic.mls_session is None
    finally:
        server.close()




async def test_untrusted_server_certificate_is_refused(certificate, tmp_path) -> None:
    (tmp_path / "other").mkdir()
    other_cert, _ = self_signed_server_certificate(str(tmp_path / "other"), "localhost")  # another key, same name
    port = free_udp_port()
    server = await mlsquic.serve("127.0.0.1", port, configuration=server_config(certificate),
                                 create_protocol=EchoServer)
    try:
        with pytest.raises(ConnectionError):
            async with mlsquic.connect("127.0.0.1", port, configuration=client_config((other_cert, None)),
                                       create_protocol=Collector):
                pass
    finally:
        server.close()
