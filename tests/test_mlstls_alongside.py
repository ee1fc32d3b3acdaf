"""MLS alongside TLS 1.3 (pyOpenSSL): certificates checked, MLS keys bound to the TLS connection."""

from __future__ import annotations

import asyncio
import os
import ssl

import pytest

from mls2p import RekeyPolicy
from mls2p.testing import config, self_signed_server_certificate
from mlstls import HandshakeError, MlsTlsConfiguration, open_connection, start_server
from mlstls.alongside import TlsSettings

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
        binding = writer.connection.inner.binding
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
            bindings.append(writer.connection.inner.binding)
            writer.close()
        assert bindings[0] != bindings[1]
