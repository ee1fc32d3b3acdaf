"""QUIC-MLS on loopback: handshake, bulk data across many Key Phase flips, refusals, loss during rekeys."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random

import pytest
from aioquic.asyncio import connect as aioquic_connect
from aioquic.quic.configuration import QuicConfiguration

import mlsquic
from mls2p import RekeyPolicy
from mls2p.testing import config
from mlscore.credentials import BasicCredentialPolicy
from mlsquic.testing import Collector, client_configuration, echo_server, echo_through, server_configuration

TIMEOUT = 30


async def test_handshake_and_bulk_transfer_across_rekeys() -> None:
    async with echo_server() as port, mlsquic.connect("127.0.0.1", port, configuration=client_configuration(),
                                                       create_protocol=Collector) as client:
        assert client._quic.mls_epoch == 1
        assert client._quic.mls_session.group.members()
        data = os.urandom(4 * 1024 * 1024)
        echoed = await echo_through(client, data, rekey_every=4)
        assert hashlib.sha256(echoed).digest() == hashlib.sha256(data).digest()
        assert len(client.epochs) >= 5 and client._quic.mls_epoch == client.epochs[-1]


async def test_time_policy_rekeys_without_being_asked() -> None:
    profile = config(b"client", rekey=RekeyPolicy(max_seconds=0.2))
    async with echo_server() as port, mlsquic.connect("127.0.0.1", port, configuration=client_configuration(
            profile=profile), create_protocol=Collector) as client:
        await echo_through(client, os.urandom(512 * 1024), chunk=8 * 1024)
        assert client.epochs, "the time-based policy should have rekeyed during the transfer"


async def test_wrong_credential_is_refused_with_a_reason() -> None:
    strict = server_configuration(profile=config(b"server", authentication_service=BasicCredentialPolicy({b"alice"})))
    async with echo_server(strict) as port:
        with pytest.raises(ConnectionError):
            async with mlsquic.connect("127.0.0.1", port, configuration=client_configuration(),
                                       create_protocol=Collector, wait_connected=True):
                pass


async def test_standard_aioquic_client_is_refused_not_hung() -> None:
    async with echo_server() as port:
        plain = QuicConfiguration(is_client=True, alpn_protocols=["echo"], idle_timeout=5.0)
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(_plain_connect(port, plain), TIMEOUT)


async def _plain_connect(port: int, configuration: QuicConfiguration) -> None:
    async with aioquic_connect("127.0.0.1", port, configuration=configuration):
        pass


async def test_packet_loss_and_reordering_during_rekeys_lose_no_data() -> None:
    rng = random.Random(7)

    class Lossy(Collector):
        def datagram_received(self, data, addr) -> None:
            if rng.random() < 0.05:
                return  # dropped
            if rng.random() < 0.1:
                asyncio.get_running_loop().call_later(0.01, super().datagram_received, data, addr)  # late
                return
            super().datagram_received(data, addr)

    async with echo_server() as port, mlsquic.connect("127.0.0.1", port, configuration=client_configuration(),
                                                       create_protocol=Lossy) as client:
        data = os.urandom(1024 * 1024)
        echoed = await echo_through(client, data, rekey_every=2, chunk=32 * 1024, timeout=60)
        assert echoed == data
        assert len(client.epochs) >= 3  # rekeys completed while packets were lost and reordered


async def test_resumption_without_a_new_key_package() -> None:
    from mls2p.store import MemorySessionStore

    server_store, client_store = MemorySessionStore(), MemorySessionStore()
    profile = config(b"client")
    async with echo_server(server_configuration(store=server_store)) as port:
        async with mlsquic.connect("127.0.0.1", port, configuration=client_configuration(
                profile=profile, store=client_store), create_protocol=Collector) as client:
            await echo_through(client, b"first connection")
            client._quic.rekey()
            client.transmit()
            await asyncio.sleep(0.2)
            group_id = client._quic.mls_session.group_id
            first_epoch = client._quic.mls_epoch
        async with mlsquic.connect("127.0.0.1", port, configuration=client_configuration(
                profile=profile, store=client_store, resume_group_id=group_id), create_protocol=Collector) as client:
            session = client._quic.mls_session
            assert session.group_id == group_id and client._quic.tls.session_resumed
            assert client._quic.mls_epoch >= first_epoch + 2  # resumption advances two epochs
            assert await echo_through(client, b"resumed") == b"resumed"


async def test_both_sides_rekeying_at_once_converge() -> None:
    server_profile = config(b"server", rekey=RekeyPolicy(max_seconds=0.03))
    client_profile = config(b"client", rekey=RekeyPolicy(max_seconds=0.02))
    async with echo_server(server_configuration(profile=server_profile)) as port, mlsquic.connect(
            "127.0.0.1", port, configuration=client_configuration(profile=client_profile),
            create_protocol=Collector) as client:
        for _ in range(5):
            client.received.clear()
            client.finished.clear()
            data = os.urandom(20000)
            assert await echo_through(client, data, timeout=10) == data
            await asyncio.sleep(0.05)
        assert len(client.epochs) >= 3
