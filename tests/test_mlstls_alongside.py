"""MLS alongside TLS 1.3 (pyOpenSSL): certificates checked, then one record layer keyed by TLS and MLS."""

from __future__ import annotations

import asyncio
import os
import ssl
from typing import cast

import pytest

from mls2p import RekeyPolicy
from mls2p.errors import AlertDescription
from mls2p.testing import config, self_signed_server_certificate
from mlstls import HandshakeError, MlsTlsConfiguration, open_connection, start_server
from mlstls.alongside import AlongsideConnection, TlsSettings
from mlstls.connection import CLIENT_LABEL, ConnectionTerminated, StreamEnded
from mlstls.record import RecordProtection, RecordSplitter, aead_spec
from mlstls.testing import TlsPair

from .test_mlstls_streams import echo

TIMEOUT = 120  # a hang guard only: nothing asserts on speed


@pytest.fixture
def certificate(tmp_path):
    return self_signed_server_certificate(str(tmp_path), "localhost")


async def alongside_server(certificate: tuple[str, str]):
    cert, key = certificate
    configuration = MlsTlsConfiguration(config(b"server"), is_client=False,
                                        tls=TlsSettings(certfile=cert, keyfile=key))
    server = await start_server(echo, "127.0.0.1", 0, configuration=configuration)
    return server, server.sockets[0].getsockname()[1]


def client_config(cafile: str, hostname: str = "localhost", **profile: object) -> MlsTlsConfiguration:
    return MlsTlsConfiguration(config(b"client", **profile), tls=TlsSettings(cafile=cafile, server_hostname=hostname))


async def test_echo_with_rekeys_inside_tls(certificate) -> None:
    server, port = await alongside_server(certificate)
    async with server:
        reader, writer = await open_connection("127.0.0.1", port, configuration=client_config(
            certificate[0], rekey=RekeyPolicy(max_bytes=64 * 1024)))
        epochs = set()
        for _ in range(20):
            chunk = os.urandom(32 * 1024)
            writer.write(chunk)
            await writer.drain()
            assert await asyncio.wait_for(reader.readexactly(len(chunk)), TIMEOUT) == chunk
            epochs.add(writer.epoch)
        assert len(epochs) >= 5
        binding = writer.connection.inner.tls_binding
        assert len(binding) == 32 and binding != bytes(32)
        writer.close()


async def test_wrong_hostname_and_untrusted_certificate_are_refused(certificate, tmp_path) -> None:
    server, port = await alongside_server(certificate)
    other_cert, _ = self_signed_server_certificate(str(tmp_path), "other.example")
    async with server:
        with pytest.raises(HandshakeError, match="not valid for elsewhere"):
            await open_connection("127.0.0.1", port, configuration=client_config(certificate[0], "elsewhere"))
        with pytest.raises(HandshakeError, match=r"certificate verify failed|TLS handshake failed"):
            await open_connection("127.0.0.1", port, configuration=client_config(other_cert))


async def test_plain_tls_client_without_our_alpn_is_refused(certificate) -> None:
    server, port = await alongside_server(certificate)
    async with server:
        context = ssl.create_default_context(cafile=certificate[0])
        context.set_alpn_protocols(["h2"])
        with pytest.raises((ssl.SSLError, ConnectionError)):
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                "127.0.0.1", port, ssl=context, server_hostname="localhost"), TIMEOUT)
            writer.write(b"hello")
            await writer.drain()
            if not await asyncio.wait_for(reader.read(10), TIMEOUT):
                raise ConnectionError("closed without data")


async def test_binding_differs_per_connection(certificate) -> None:
    server, port = await alongside_server(certificate)
    async with server:
        bindings = []
        for _ in range(2):
            _, writer = await open_connection("127.0.0.1", port, configuration=client_config(certificate[0]))
            bindings.append(writer.connection.inner.tls_binding)
            writer.close()
        assert bindings[0] != bindings[1]


# -- one record layer after the handshake (sans-I/O pairs) ------------------------------------------------

def alongside_pair(certificate: tuple[str, str]) -> TlsPair:
    cert, key = certificate
    return TlsPair(client_tls=TlsSettings(cafile=cert, server_hostname="localhost"),
                   server_tls=TlsSettings(certfile=cert, keyfile=key))


def established(certificate: tuple[str, str]) -> TlsPair:
    pair = alongside_pair(certificate)
    pair.client.connect()
    pair.pump()
    assert pair.client.established and pair.server.established
    return pair


def test_application_data_is_encrypted_once_under_keys_from_both_tls_and_mls(certificate) -> None:
    pair = established(certificate)
    client = cast(AlongsideConnection, pair.client)
    inner = client.inner
    assert inner is not None and inner._send is not None and inner.session is not None
    sequence = inner._send.sequence
    data = os.urandom(40_000)
    client.send_data(data)
    wire = client.data_to_send()
    records = -(-len(data) // (1 << 14))
    assert len(wire) == len(data) + records * (5 + 1 + 16)  # one header, type byte and tag per record: no TLS
    suite = inner.session.group.suite  # type: ignore[union-attr]
    binding = inner.tls_binding
    assert binding is not None
    secret = inner.traffic_secret(CLIENT_LABEL)
    assert secret == suite.kdf_extract(binding, inner.session.export_secret(CLIENT_LABEL, binding, suite.hash_len))
    assert secret != inner.session.export_secret(CLIENT_LABEL, b"", suite.hash_len)
    keys = RecordProtection(aead_spec(suite.id), secret)
    keys.sequence = sequence
    opened = b"".join(bytes(keys.open(header, body)[1]) for header, body in RecordSplitter().feed(wire))
    assert opened == data
    pair.server.receive_data(wire)
    pair.pump()
    assert bytes(pair.received["server"]) == data


def test_both_sides_drop_the_tls_connection_once_they_left_it(certificate) -> None:
    pair = established(certificate)
    pair.server.send_data(b"from the server")
    pair.pump()
    for side in (pair.client, pair.server):
        side = cast(AlongsideConnection, side)
        assert side.sending_raw and side.receiving_raw and side._tls is None


def test_rekeys_and_close_after_leaving_tls(certificate) -> None:
    pair = established(certificate)
    for _ in range(3):
        pair.client.rekey()
        pair.pump()
        pair.server.rekey()
        pair.pump()
    assert pair.client.epoch == pair.server.epoch and pair.client.epoch is not None and pair.client.epoch >= 7
    pair.client.send_data(b"last words")
    pair.client.close()
    pair.pump()
    assert bytes(pair.received["server"]) == b"last words"
    # the client's close_notify ends its direction (a half-close the server may still answer after)
    assert any(isinstance(e, StreamEnded) for e in pair.events["server"]) and pair.server.read_closed
    assert not any(isinstance(e, ConnectionTerminated) for e in pair.events["server"])
    pair.server.close()
    pair.pump()
    closed = [e for e in pair.events["server"] if isinstance(e, ConnectionTerminated)]
    assert closed and not closed[0].by_peer and closed[0].alert == AlertDescription.CLOSE_NOTIFY
