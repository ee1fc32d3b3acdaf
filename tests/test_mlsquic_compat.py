"""mlsquic leaves aioquic alone, and every private aioquic name it relies on still exists.

If an aioquic release renames one of the touch points listed in
mlsquic._aioquic_compat, the matching test here fails with its name.
"""

from __future__ import annotations

import asyncio
import inspect
from importlib.metadata import version

import aioquic.asyncio.client
import aioquic.asyncio.server
import pytest
from aioquic import tls
from aioquic.asyncio import QuicConnectionProtocol
from aioquic.asyncio import connect as aioquic_connect
from aioquic.asyncio import serve as aioquic_serve
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.crypto import CryptoContext, CryptoPair

import mlsquic  # noqa: F401  (imported for its side effects, of which there must be none)
from mls2p.testing import self_signed_server_certificate
from mlsquic._aioquic_compat import TESTED_AIOQUIC, may_initiate_key_update
from mlsquic.testing import Collector, EchoServer, echo_through, free_udp_port


def _release(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.lstrip("<>=").split(".")[:3] if part.isdigit())


def test_installed_aioquic_is_in_the_tested_range() -> None:
    installed = _release(version("aioquic"))
    low, high = (_release(bound) for bound in TESTED_AIOQUIC)
    assert low <= installed < high, f"aioquic {installed} is outside {TESTED_AIOQUIC}"


def test_importing_mlsquic_replaces_nothing_in_aioquic() -> None:
    assert aioquic.asyncio.client.QuicConnection is QuicConnection
    assert aioquic.asyncio.server.QuicConnection is QuicConnection


async def test_stock_aioquic_still_makes_plain_tls_connections(tmp_path) -> None:
    cert, key = self_signed_server_certificate(str(tmp_path), "localhost")
    server_config = QuicConfiguration(is_client=False, alpn_protocols=["echo"])
    server_config.load_cert_chain(cert, key)
    created: list[QuicConnectionProtocol] = []

    def server_protocol(*args, **kwargs) -> EchoServer:
        created.append(EchoServer(*args, **kwargs))
        return created[-1]

    port = free_udp_port()
    server = await aioquic_serve("127.0.0.1", port, configuration=server_config, create_protocol=server_protocol)
    try:
        client_config = QuicConfiguration(is_client=True, alpn_protocols=["echo"], cafile=cert,
                                          server_name="localhost")
        async with aioquic_connect("127.0.0.1", port, configuration=client_config,
                                   create_protocol=Collector) as client:
            assert await asyncio.wait_for(echo_through(client, b"plain TLS 1.3"), 60) == b"plain TLS 1.3"
            assert type(client._quic) is QuicConnection
            assert client._quic.tls.__class__.__module__ == "aioquic.tls"
        assert created and type(created[0]._quic) is QuicConnection
    finally:
        server.close()


@pytest.mark.parametrize("name", ["_initialize", "_handle_crypto_frame"])
def test_connection_methods_we_hook_exist(name: str) -> None:
    assert callable(getattr(QuicConnection, name, None)), f"touch point QuicConnection.{name} is gone"


def test_connection_attributes_we_read_exist() -> None:
    connection = QuicConnection(configuration=QuicConfiguration(is_client=True))
    for name in ("_cryptos", "_crypto_streams", "_events", "_is_client", "_configuration"):
        assert hasattr(connection, name), f"touch point QuicConnection.{name} is gone"
    connection.connect(("127.0.0.1", 4433), now=0.0)  # _initialize has run: the crypto streams exist
    assert callable(getattr(connection._crypto_streams[tls.Epoch.INITIAL].sender, "write", None))
    assert list(inspect.signature(QuicConnection._handle_crypto_frame).parameters) == [
        "self", "context", "frame_type", "buf"]
    # touch point 11: what RFC 9001 section 6.1's gate on Key Phase flips reads
    assert connection._handshake_confirmed is False
    assert isinstance(connection._spaces[tls.Epoch.INITIAL].largest_acked_packet, int)
    assert may_initiate_key_update(connection, first_sealed=1) is False  # no 1-RTT space, not confirmed


def test_crypto_pair_touch_points_exist() -> None:
    pair = CryptoPair()
    assert callable(getattr(pair, "_update_key", None))
    assert hasattr(pair, "_update_key_requested")
    assert hasattr(CryptoContext(), "_setup_cb") and hasattr(CryptoContext(), "_teardown_cb")
    assert "trigger" in inspect.signature(CryptoPair._update_key).parameters


async def test_protocol_callbacks_we_set_exist() -> None:
    protocol = QuicConnectionProtocol(QuicConnection(configuration=QuicConfiguration(is_client=True)))
    for name in ("_connection_id_issued_handler", "_connection_id_retired_handler",
                 "_connection_terminated_handler"):
        assert hasattr(protocol, name), f"touch point QuicConnectionProtocol.{name} is gone"
