"""Alongside TLS, each side leaves TLS with END_OF_TLS; a peer that bends that switch gets nothing.

The attacker holds a valid TLS connection (the server's certificate is not
the point here) and plays with the moment the stream leaves TLS: bytes after
END_OF_TLS inside TLS, or MLS-TLS records on TCP while still inside TLS.
Each must close the connection with nothing delivered, no session stored and
no handshake reported.
"""

from __future__ import annotations

import os

import pytest

from mls2p.testing import self_signed_server_certificate
from mlstls import TlsSettings
from mlstls.alongside import END_OF_TLS, AlongsideConnection
from mlstls.connection import ConnectionTerminated, DataReceived, HandshakeCompleted
from mlstls.testing import TlsPair


@pytest.fixture
def pair(tmp_path) -> TlsPair:
    cert, key = self_signed_server_certificate(str(tmp_path), "localhost")
    return TlsPair(client_tls=TlsSettings(cafile=cert, server_hostname="localhost"),
                   server_tls=TlsSettings(certfile=cert, keyfile=key))


def _client_inside_tls(pair: TlsPair) -> tuple[AlongsideConnection, bytes]:
    """Run the TLS handshake; return the client and its first bytes after it (the ClientHello, in TLS)."""
    client = pair.client
    assert isinstance(client, AlongsideConnection)
    client.connect()
    for _ in range(10):
        data = client.data_to_send()
        if client.inner is not None:
            return client, data
        pair.server.receive_data(data)
        client.receive_data(pair.server.data_to_send())
    raise AssertionError("the TLS handshake did not finish")


def _refused_by_server(pair: TlsPair, wire: bytes) -> None:
    pair.server.receive_data(wire)
    events = []
    while (event := pair.server.next_event()) is not None:
        events.append(event)
    assert pair.server.closed and any(isinstance(e, ConnectionTerminated) for e in events), events
    assert not any(isinstance(e, (DataReceived, HandshakeCompleted)) for e in events)
    assert pair.server_store.group_ids() == []


def test_bytes_after_end_of_tls_inside_tls_are_refused(pair: TlsPair) -> None:
    client, hello = _client_inside_tls(pair)
    assert client._tls is not None
    client._tls.sendall(END_OF_TLS + b"\x16\x03\x03\x00\x01x")
    _refused_by_server(pair, hello + client.data_to_send())


def test_mls_tls_records_before_leaving_tls_are_refused(pair: TlsPair) -> None:
    _, hello = _client_inside_tls(pair)
    forged = b"\x17\x03\x03\x00\x40" + os.urandom(0x40)  # looks like a record, was never TLS-protected
    _refused_by_server(pair, hello + forged)


def test_an_oversized_tls_record_is_refused_before_it_is_buffered(pair: TlsPair) -> None:
    _, hello = _client_inside_tls(pair)
    _refused_by_server(pair, hello + b"\x17\x03\x03\xff\xff")  # 65535 > 2^14 + 256: refused on the header
