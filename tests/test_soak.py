"""Soak: many rekeys from both sides at random, data checked byte for byte, resumptions in between.

``MLS_SOAK_REKEYS`` sets the number of rounds (60 by default; a long run,
e.g. 20000, is how the soak that found the rekey-before-confirmation bug ran).
Seeded, in memory, on simulated time: a failure reproduces exactly.
"""

from __future__ import annotations

import hashlib
import os
import random

from mlsquic.testing import QuicPair, client_configuration, server_configuration
from mlstls.testing import TlsPair

ROUNDS = int(os.environ.get("MLS_SOAK_REKEYS", "60"))


def test_mlstls_soak() -> None:
    rng = random.Random(1)
    pair = TlsPair()
    pair.client.connect()
    pair.pump()
    sent = {"client": hashlib.sha256(), "server": hashlib.sha256()}
    for round_ in range(ROUNDS):
        choice = rng.random()
        if choice < 0.4:
            pair.client.rekey()
        elif choice < 0.8:
            pair.server.rekey()
        elif choice < 0.95:
            pair.client.rekey()
            pair.server.rekey()  # at once: the current initiator's commit wins
        else:
            pair.pump()
            pair.reconnect()  # a cut connection: the client resumes the group
            pair.client.connect()
            pair.received = {"client": bytearray(), "server": bytearray()}
            sent = {"client": hashlib.sha256(), "server": hashlib.sha256()}
            pair.pump()
        for side, connection in (("client", pair.client), ("server", pair.server)):
            data = rng.randbytes(rng.randrange(1, 3000)) + b"%d" % round_
            connection.send_data(data)
            sent[side].update(data)
        pair.pump()
    assert hashlib.sha256(pair.received["server"]).digest() == sent["client"].digest()
    assert hashlib.sha256(pair.received["client"]).digest() == sent["server"].digest()
    assert pair.client.epoch == pair.server.epoch and not pair.client.closed and not pair.server.closed


def test_mlsquic_soak() -> None:
    rng = random.Random(2)
    pair = QuicPair(client_configuration(), server_configuration(), loss=0.02, reorder=0.05, seed=3)
    pair.run(pair.established)
    client, server = pair.client.connection, pair.server.connection  # type: ignore[union-attr]
    for _ in range(max(1, ROUNDS // 3)):
        if rng.random() < 0.5:
            client.rekey()  # type: ignore[attr-defined]
        if rng.random() < 0.5:
            server.rekey()  # type: ignore[attr-defined]
        data = rng.randbytes(rng.randrange(1, 20000))
        assert pair.echo_of(pair.send(data, chunk=4096), max_seconds=120) == data
    pair.advance(1.0)
    assert client.mls_epoch == server.mls_epoch and client.mls_epoch > 1  # type: ignore[attr-defined]
    assert pair.client.terminated is None
