"""The PCS experiment over QUIC: mlsquic in both modes, a UDP relay captures client packets."""

from __future__ import annotations

import asyncio
import tempfile
import time
from typing import cast

from aioquic.quic.crypto import CryptoContext

import mlsquic
from mls2p.testing import self_signed_server_certificate
from mlscore.errors import StateError
from mlsquic import MlsQuicConfiguration, quic_of
from mlsquic._aioquic_compat import wire_position
from mlsquic.epochs import EpochKeyedConnection

from .costs import profile
from .mechanisms import Outcome, RekeyCost


class UdpRelay(asyncio.DatagramProtocol):
    """Forwards client <-> server datagrams and keeps the client's, with their arrival times."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.client: tuple[str, int] | None = None
        self.captured: list[tuple[float, bytes]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        if addr == self.server:
            if self.client is not None:
                self.transport.sendto(data, self.client)
            return
        self.client = addr
        self.captured.append((time.perf_counter(), data))
        self.transport.sendto(data, self.server)


async def run_quic(mode: str, records: int, rekey_every: int, theft_at: int, size: int = 1024) -> Outcome:
    from mlsquic.testing import Collector, EchoServer, free_udp_port

    loop = asyncio.get_running_loop()
    server_port = free_udp_port()
    server_config = MlsQuicConfiguration(profile=profile(b"s"), mode=mode, is_client=False, alpn_protocols=["pcs"])
    client_config = MlsQuicConfiguration(profile=profile(b"c"), mode=mode, is_client=True, alpn_protocols=["pcs"])
    if mode == "alongside":
        cert, key = self_signed_server_certificate(tempfile.mkdtemp(prefix="pcs-quic-"), "localhost")
        server_config.load_cert_chain(cert, key)
        client_config.cafile, client_config.server_name = cert, "localhost"
    server = await mlsquic.serve("127.0.0.1", server_port, configuration=server_config, create_protocol=EchoServer)
    transport, relay = await loop.create_datagram_endpoint(lambda: UdpRelay(("127.0.0.1", server_port)),
                                                           local_addr=("127.0.0.1", 0))
    relay_port = transport.get_extra_info("sockname")[1]
    name = "mlsquic (QUIC-MLS)" if mode == "mls" else "mlsquic alongside"
    outcome = Outcome(name, theft_at, records)
    cost = RekeyCost(round_trips=1.0, messages=2)
    async with mlsquic.connect("127.0.0.1", relay_port, configuration=client_config,
                               create_protocol=Collector) as client:
        quic = cast(EpochKeyedConnection, quic_of(client))  # mlsquic.connect() builds an epoch-keyed connection
        for _ in range(200):
            if quic.mls_epoch:
                break
            await asyncio.sleep(0.01)
        stream = quic.get_next_available_stream_id()
        loot = None
        for i in range(records):
            if i == theft_at:
                send = quic.one_rtt.send
                loot = (send.cipher_suite, send.secret, send.hp, send.key_phase, len(relay.captured),
                        *wire_position(quic))
            if i and i % rekey_every == 0:
                started = time.process_time()
                if quic.rekey():
                    outcome.rekeys += 1
                cost.cpu_seconds += time.process_time() - started
            quic.send_stream_data(stream, bytes(size), False)
            client.transmit()
            await asyncio.sleep(0.003)
        await asyncio.sleep(0.1)
    server.close()
    transport.close()
    assert loot is not None
    suite, secret, hp, phase, first, dcid, expected = loot
    if suite is None or secret is None:
        raise StateError(f"the 1-RTT send keys were not set up at record {theft_at}")
    attacker = CryptoContext(key_phase=phase)
    attacker.setup(cipher_suite=suite, secret=secret, version=1)
    attacker.hp = hp  # the header-protection key never changes, so the thief has it too
    start = relay.captured[first][0] if first < len(relay.captured) else time.perf_counter()
    sent = 0
    for when, datagram in relay.captured[first:]:
        if datagram[0] & 0x80:  # long header: not 1-RTT
            continue
        try:
            _, _, packet_number, _ = attacker.decrypt_packet(datagram, 1 + len(dcid), expected)
            expected, readable = packet_number + 1, True  # the thief reads packet numbers as it goes
        except Exception:
            readable = False
        outcome.readable_after_theft.append(readable)
        if not readable and outcome.healed_at is None:
            outcome.healed_at = len(outcome.readable_after_theft) - 1
            outcome.healed_after_bytes = sent
            outcome.healed_after_seconds = when - start
        sent += len(datagram)
    outcome.cost = RekeyCost(cost.cpu_seconds / max(outcome.rekeys, 1), 0, 1.0, 2)
    return outcome
