"""A rekey asked for before the peer confirmed the keys waits for the confirmation (both transports).

Found by soak testing: a QUIC-MLS server that rekeyed right after its ServerHello
killed the connection ("client key confirmation does not match").
"""

from __future__ import annotations

from mls2p import RekeyPolicy
from mls2p.testing import config
from mlsquic.testing import QuicPair, client_configuration, server_configuration
from mlstls.testing import TlsPair


def test_mlstls_server_rekey_right_after_server_hello() -> None:
    pair = TlsPair()
    pair.client.connect()
    pair.server.receive_data(pair.client.data_to_send())
    pair.server.rekey()  # before the client confirmed: waits
    pair.pump()
    assert pair.server.epoch == pair.client.epoch == 2  # and happened at confirmation
    pair.client.send_data(b"still fine")
    pair.pump()
    assert pair.received["server"] == b"still fine"


def test_quic_server_rekey_right_after_server_hello() -> None:
    pair = QuicPair(client_configuration(), server_configuration())
    pair.run(lambda: pair.server is not None and pair.server.connection.mls_epoch == 1)
    assert pair.server.connection.rekey() is False  # not confirmed yet: it waits
    pair.run(lambda: pair.client.connection.mls_epoch == 2 and pair.server.connection.mls_epoch == 2)
    assert pair.echo_of(pair.send(b"still fine")) == b"still fine"


def test_quic_rekey_policy_of_zero_seconds() -> None:
    pair = QuicPair(client_configuration(), server_configuration(
        profile=config(b"server", rekey=RekeyPolicy(max_seconds=0.0))))
    pair.run(pair.established)
    pair.advance(0.5)
    assert pair.client.terminated is None and (pair.client.connection.mls_epoch or 0) >= 2
    assert pair.echo_of(pair.send(b"still fine")) == b"still fine"
