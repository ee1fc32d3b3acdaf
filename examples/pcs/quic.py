"""The PCS experiment over QUIC: plain aioquic with RFC 9001 key updates, and mlsquic in both modes.

A UDP relay captures the client's datagrams.  The thief holds the client's
1-RTT send secret at the moment of compromise (for plain aioquic, from
aioquic's own secrets log, the SSLKEYLOGFILE format) and the header-protection
key that comes with it, and follows Key Phase flips the way RFC 9001 section 6
derives them (``"quic ku"``); it reads packet numbers as it goes.
"""

from __future__ import annotations

import asyncio
import io
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, cast

from aioquic.asyncio import QuicConnectionProtocol
from aioquic.asyncio import connect as aioquic_connect
from aioquic.asyncio import serve as aioquic_serve
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.crypto import CryptoContext, next_key_phase
from aioquic.quic.events import QuicEvent
from aioquic.tls import CipherSuite

import mlsquic
from mls2p.testing import self_signed_server_certificate
from mlsquic import MlsQuicConfiguration, quic_of
from mlsquic._aioquic_compat import wire_position
from mlsquic.epochs import EpochKeyedConnection

from .costs import profile
from .mechanisms import Outcome
from .relay import SETTLE, UdpRelay

SUITE = CipherSuite.AES_128_GCM_SHA256
CATCH_UP = 64
"""Key Phase flips the thief may have to derive forward to reach the first packet after the theft."""


class QuicThief:
    """Opens captured 1-RTT packets with a stolen secret, following "quic ku" Key Phase flips."""

    def __init__(self, secret: bytes, key_phase: int, dcid_length: int, expected: int, *,
                 cipher_suite: CipherSuite = SUITE, hp: Any | None = None) -> None:
        self.crypto = CryptoContext(key_phase=key_phase)
        self.crypto.setup(cipher_suite=cipher_suite, secret=secret, version=1)
        if hp is not None:
            self.crypto.hp = hp
        self.offset, self.expected = 1 + dcid_length, expected
        self._catch_up = CATCH_UP

    def read(self, datagram: bytes) -> bool:
        for _ in range(self._catch_up + 1):
            try:
                _, _, number, flipped = self.crypto.decrypt_packet(datagram, self.offset, self.expected)
            except Exception:  # a failed AEAD open or a header that does not parse: unreadable
                if not self._catch_up:
                    return False
                self._flip()  # still catching up with flips that happened before the theft
                continue
            self._catch_up = 0
            self.expected = number + 1
            if flipped:
                self._flip()
            return True
        self._catch_up = 0
        return False

    def _flip(self) -> None:
        hp = self.crypto.hp  # the header-protection key never changes (RFC 9001 section 6)
        self.crypto = next_key_phase(self.crypto)
        self.crypto.hp = hp


class Sink(QuicConnectionProtocol):
    """Drops every event (no stream readers or writers are made, so no stream is ever closed by us)."""

    def quic_event_received(self, event: QuicEvent) -> None:
        pass


async def _send_records(quic: QuicConnection, protocol: QuicConnectionProtocol, outcome: Outcome, records: int,
                        rekey_every: int, theft_at: int, size: int, rekey: Callable[[], bool],
                        steal: Callable[[], Callable[[bytes], bool]], relay: UdpRelay) -> None:
    stream = quic.get_next_available_stream_id()
    thief: Callable[[bytes], bool] | None = None
    first = 0
    rekey_times: list[float] = []
    for i in range(records):
        if i == theft_at:
            await asyncio.sleep(SETTLE)
            thief, first = steal(), len(relay.captured)
        if i and i % rekey_every == 0:
            await asyncio.sleep(SETTLE)
            at = time.perf_counter()
            if rekey():
                outcome.rekeys += 1
                rekey_times.append(at)
        quic.send_stream_data(stream, bytes(size), False)
        protocol.transmit()
        await asyncio.sleep(0.003)
    await asyncio.sleep(0.1)
    if thief is None:
        raise RuntimeError(f"the run ended before record {theft_at}")
    times = []
    for when, datagram in relay.captured[first:]:
        if datagram[0] & 0x80:  # long header: not a 1-RTT packet
            continue
        outcome.record(when, thief(datagram), len(datagram))
        times.append(when)
    outcome.mark_rekeys(times, [t for t in rekey_times if times and t > times[0]])


@asynccontextmanager
async def _relayed(server_port: int) -> AsyncIterator[tuple[int, UdpRelay]]:
    loop = asyncio.get_running_loop()
    transport, relay = await loop.create_datagram_endpoint(lambda: UdpRelay(("127.0.0.1", server_port)),
                                                           local_addr=("127.0.0.1", 0))
    try:
        yield transport.get_extra_info("sockname")[1], relay
    finally:
        transport.close()


async def run_aioquic_key_update(records: int, rekey_every: int, theft_at: int, size: int = 1024) -> Outcome:
    """Plain aioquic (TLS 1.3 handshake), rekeyed by RFC 9001 key updates; the thief has the secrets log."""
    from mlsquic.testing import free_udp_port

    cert, key = self_signed_server_certificate(tempfile.mkdtemp(prefix="pcs-quic-"), "localhost")
    server_config = QuicConfiguration(is_client=False, alpn_protocols=["pcs"], cipher_suites=[SUITE])
    server_config.load_cert_chain(cert, key)
    secrets_log = io.StringIO()
    client_config = QuicConfiguration(is_client=True, alpn_protocols=["pcs"], cafile=cert, server_name="localhost",
                                      cipher_suites=[SUITE], secrets_log_file=secrets_log)
    server_port = free_udp_port()
    server = await aioquic_serve("127.0.0.1", server_port, configuration=server_config, create_protocol=Sink)
    outcome = Outcome("quic-key-update (aioquic)", theft_at, records, unit="packets", stack="aioquic")
    try:
        async with _relayed(server_port) as (relay_port, relay), aioquic_connect(
                "127.0.0.1", relay_port, configuration=client_config, create_protocol=Sink) as client:
            quic = quic_of(client)
            updates = [0]

            def rekey() -> bool:
                quic.request_key_update()
                updates[0] += 1
                return True

            def steal() -> Callable[[bytes], bool]:
                line = next(line.split() for line in secrets_log.getvalue().splitlines()
                            if line.startswith("CLIENT_TRAFFIC_SECRET_0"))
                dcid, expected = wire_position(quic)
                return QuicThief(bytes.fromhex(line[2]), 0, len(dcid), expected).read

            await _send_records(quic, client, outcome, records, rekey_every, theft_at, size, rekey, steal, relay)
    finally:
        server.close()
    return outcome


async def run_quic(mode: str, records: int, rekey_every: int, theft_at: int, size: int = 1024) -> Outcome:
    """mlsquic, QUIC-MLS (``mode="mls"``) or alongside TLS; the thief has the current 1-RTT send secret."""
    from mlsquic.testing import free_udp_port

    server_port = free_udp_port()
    server_config = MlsQuicConfiguration(profile=profile(b"s"), mode=mode, is_client=False, alpn_protocols=["pcs"])
    client_config = MlsQuicConfiguration(profile=profile(b"c"), mode=mode, is_client=True, alpn_protocols=["pcs"])
    if mode == "alongside":
        cert, key = self_signed_server_certificate(tempfile.mkdtemp(prefix="pcs-quic-"), "localhost")
        server_config.load_cert_chain(cert, key)
        client_config.cafile, client_config.server_name = cert, "localhost"
    server = await mlsquic.serve("127.0.0.1", server_port, configuration=server_config, create_protocol=Sink)
    name = "mlsquic (QUIC-MLS)" if mode == "mls" else "mlsquic alongside"
    outcome = Outcome(name, theft_at, records, unit="packets", stack="mlsquic on aioquic")
    try:
        async with _relayed(server_port) as (relay_port, relay), mlsquic.connect(
                "127.0.0.1", relay_port, configuration=client_config, create_protocol=Sink) as client:
            quic = cast(EpochKeyedConnection, quic_of(client))  # mlsquic.connect() builds an epoch-keyed connection
            for _ in range(200):
                if quic.mls_epoch:
                    break
                await asyncio.sleep(0.01)

            def steal() -> Callable[[bytes], bool]:
                send = quic.one_rtt.send
                if send.secret is None or send.cipher_suite is None:
                    raise RuntimeError("the 1-RTT send keys are not set up")
                dcid, expected = wire_position(quic)
                return QuicThief(send.secret, send.key_phase, len(dcid), expected, cipher_suite=send.cipher_suite,
                                 hp=send.hp).read

            await _send_records(quic, client, outcome, records, rekey_every, theft_at, size, quic.rekey, steal, relay)
    finally:
        server.close()
    return outcome
