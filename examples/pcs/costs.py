"""Cost of one rekey on each side, and throughput over time while rekeying at a fixed interval."""

from __future__ import annotations

import asyncio
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from mls2p import ProfileConfig, RekeyPolicy, SendMessage, TwoPartySession
from mls2p.testing import config, self_signed_server_certificate

from .mechanisms import RekeyCost


def profile(name: bytes, rekey: RekeyPolicy | None = None) -> ProfileConfig:
    """A profile whose peer is any key made here (both ends of every experiment pin each other)."""
    return config(name, rekey=rekey or RekeyPolicy())


@dataclass
class SideCost:
    committer_ms: float
    replier_ms: float
    wire_bytes: int
    messages: int = 2
    round_trips: float = 1.0


def mls_rekey_cost(rounds: int = 50) -> SideCost:
    """CPU of each side for one ConnectionUpdate + EpochKeyUpdate (median), and its bytes."""
    alice, hello = TwoPartySession.initiator(profile(b"a"))
    bob = TwoPartySession.responder(profile(b"b"))
    # initiator() and update() return the SendMessage of their profile message first
    alice.receive(next(a for a in bob.receive(cast(SendMessage, hello[0]).data) if isinstance(a, SendMessage)).data)
    committer, replier, size = [], [], 0
    for _ in range(rounds):
        t0 = time.process_time()
        update = alice.update()
        t1 = time.process_time()
        reply = bob.receive(cast(SendMessage, update[0]).data)
        t2 = time.process_time()
        alice.receive(next(a for a in reply if isinstance(a, SendMessage)).data)
        t3 = time.process_time()
        committer.append((t1 - t0) + (t3 - t2))
        replier.append(t2 - t1)
        size = len(cast(SendMessage, update[0]).data) + sum(len(a.data) for a in reply if isinstance(a, SendMessage))
    committer.sort()
    replier.sort()
    return SideCost(1000 * committer[len(committer) // 2], 1000 * replier[len(replier) // 2], size)


def _median(samples: list[float]) -> float:
    return statistics.median(samples)


def _paired_difference(with_rekey: Callable[[], object], without: Callable[[], object], rounds: int) -> float:
    """Median CPU seconds of ``with_rekey`` minus that of ``without`` (the same work but the rekey), interleaved."""
    extra: list[float] = []
    plain: list[float] = []
    for _ in range(rounds):
        for run, samples in ((with_rekey, extra), (without, plain)):
            started = time.process_time()
            run()
            samples.append(time.process_time() - started)
    return max(0.0, _median(extra) - _median(plain))


class CountingSocket:
    """A socket that counts the bytes it sends and receives (tlslite writes through send/sendall)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.sent = self.received = 0

    def send(self, data: bytes) -> int:
        count = self._sock.send(data)
        self.sent += count
        return count

    def sendall(self, data: bytes) -> None:
        self._sock.sendall(data)
        self.sent += len(data)

    def recv(self, size: int) -> bytes:
        data = self._sock.recv(size)
        self.received += len(data)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _tlslite_pair(resume_mode: str | None = None, session: Any = None) -> tuple[Any, Any, CountingSocket]:
    """A tlslite-ng client and server over a socket pair, handshaken (in two threads)."""
    from tlslite import HandshakeSettings, TLSConnection

    from .real_tls import READY, Certificate, tlslite_credentials

    chain, key, server_settings = tlslite_credentials(_CERTIFICATE.setdefault("tlslite", Certificate()))
    a, b = socket.socketpair()
    counted = CountingSocket(a)
    client, server = TLSConnection(counted), TLSConnection(b)
    settings = HandshakeSettings()
    settings.cipherNames = ["aes128gcm"]
    if resume_mode:
        settings.psk_modes = [resume_mode]

    def serve() -> None:
        server.handshakeServer(certChain=chain, privateKey=key, settings=server_settings)
        server.write(READY)

    thread = threading.Thread(target=serve)
    thread.start()
    client.handshakeClientCert(settings=settings, session=session)
    client.read(max=1)
    thread.join()
    return client, server, counted


_CERTIFICATE: dict[str, Any] = {}


def keyupdate_cost(rounds: int = 50) -> RekeyCost:
    """tlslite-ng: one KeyUpdate (sent, then processed by the peer with the next record), both sides."""
    from tlslite.constants import KeyUpdateMessageType

    client, server, counted = _tlslite_pair()

    def exchange(update: bool) -> None:
        if update:
            for _ in client.send_keyupdate_request(KeyUpdateMessageType.update_not_requested):
                pass
        client.write(b"x")
        server.read(max=1)

    before = counted.sent
    exchange(True)
    exchange(False)
    wire = counted.sent - before - 2 * (5 + 1 + 1 + 16)  # minus the two one-byte data records
    cpu = _paired_difference(lambda: exchange(True), lambda: exchange(False), rounds)
    return RekeyCost(cpu, wire, 0.0, 1, "tlslite-ng (pure Python), sent and processed, both sides")


def resumption_cost(mode: str, rounds: int = 10) -> RekeyCost:
    """tlslite-ng: one resumed handshake from a ticket (``psk_ke`` or ``psk_dhe_ke``), both sides."""
    client, _, _ = _tlslite_pair(mode)
    session = client.session
    samples, wire = [], 0
    for _ in range(rounds):
        started = time.process_time()
        resumed, _, counted = _tlslite_pair(mode, session)
        samples.append(time.process_time() - started)
        wire = counted.sent + counted.received
        if not resumed.resumed:
            raise RuntimeError(f"tlslite-ng did not resume ({mode})")
    return RekeyCost(_median(samples), wire, 2.0, 6,
                     "tlslite-ng (pure Python), a resumed handshake incl. TCP-less set-up, both sides")


def rehandshake_cost(rounds: int = 100) -> RekeyCost:
    """OpenSSL (stdlib ssl, memory BIOs): a full TLS 1.3 handshake, both sides (benchmarks.baselines)."""
    from benchmarks.baselines import OpenSslHandshake, median_cpu_ms

    handshake = OpenSslHandshake()
    try:
        cpu = median_cpu_ms(handshake, rounds) / 1000
        wire = handshake.bytes_on_wire
    finally:
        handshake.close()
    return RekeyCost(cpu, wire, 2.0, 6, "OpenSSL full handshake (Ed25519 certificate), both sides")


def quic_rekey_cost(kind: str, rounds: int = 30) -> RekeyCost:
    """One rekey of a QUIC connection pair in memory, both sides: the cost of a round with it minus one without.

    ``kind``: "aioquic" (RFC 9001 key update), "mls" or "alongside" (mlsquic, an MLS commit round)."""
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection

    from mlsquic import MlsQuicConfiguration
    from mlsquic.epochs import EpochKeyedConnection
    from mlsquic.testing import QuicPair

    folder = tempfile.mkdtemp(prefix="pcs-cost-")
    cert, key = self_signed_server_certificate(folder, "localhost")
    client: MlsQuicConfiguration | QuicConnection
    if kind == "aioquic":
        server = QuicConfiguration(is_client=False, alpn_protocols=["pcs"])
        client = QuicConnection(configuration=QuicConfiguration(is_client=True, alpn_protocols=["pcs"],
                                                                cafile=cert, server_name="localhost"))
    else:
        server = MlsQuicConfiguration(profile=profile(b"s"), mode=kind, is_client=False, alpn_protocols=["pcs"])
        client = MlsQuicConfiguration(profile=profile(b"c"), mode=kind, is_client=True, alpn_protocols=["pcs"],
                                      cafile=cert, server_name="localhost")
    if kind != "mls":
        server.load_cert_chain(cert, key)
    pair = QuicPair(client, server, echo=False)
    pair.run(pair.established)
    pair.advance(0.5)
    quic = pair.client.connection
    stream = quic.get_next_available_stream_id()

    def round_trip(rekey: bool) -> None:
        if rekey:
            if kind == "aioquic":
                quic.request_key_update()
            else:
                cast(EpochKeyedConnection, quic).rekey()
        quic.send_stream_data(stream, bytes(100), False)
        pair.advance(0.05)

    cpu = _paired_difference(lambda: round_trip(True), lambda: round_trip(False), rounds)
    if kind == "aioquic":
        return RekeyCost(cpu, 0, 0.0, 0, "aioquic key update: the Key Phase bit, no message; both sides")
    wire = mls_rekey_cost(5).wire_bytes
    return RekeyCost(cpu, wire, 1.0, 2, "mlsquic in memory, a commit round minus a plain round; both sides")


def eku_model_cost(rounds: int = 200) -> RekeyCost:
    """The EKU model: both sides' key schedule and one X25519 exchange; bytes from the draft's messages."""
    from .mechanisms import EkuModel

    model = EkuModel()
    samples = []
    wire = 0
    for _ in range(rounds):
        started = time.process_time()
        wire = model.rekey()
        samples.append(time.process_time() - started)
    return RekeyCost(_median(samples), wire, 1.0, 3, "model (no implementation exists); X25519 exchange and "
                     "key schedule once, as both sides together would do it")


@dataclass
class Series:
    label: str
    times: list[float] = field(default_factory=list)
    megabytes_per_second: list[float] = field(default_factory=list)
    epochs: int = 0
    longest_gap: float = 0.0  # the longest pause in delivery (a stall)
    rekey_times: list[float] = field(default_factory=list)  # seconds from the start, when the epoch changed


async def throughput_over_time(rekey_seconds: float | None, duration: float, bucket: float = 0.1) -> Series:
    """Push data through a real mlstls connection; sample the receiver's rate every ``bucket`` seconds."""
    from mlstls import MlsTlsConfiguration, MlsTlsWriter, open_connection, start_server

    arrivals: list[tuple[float, int]] = []

    async def sink(reader: asyncio.StreamReader, writer: MlsTlsWriter) -> None:
        while data := await reader.read(1 << 20):
            arrivals.append((time.perf_counter(), len(data)))

    server = await start_server(sink, "127.0.0.1", 0, configuration=MlsTlsConfiguration(profile(b"s"),
                                                                                         is_client=False))
    port = server.sockets[0].getsockname()[1]
    policy = RekeyPolicy(max_seconds=rekey_seconds) if rekey_seconds else RekeyPolicy()
    _, writer = await open_connection("127.0.0.1", port, configuration=MlsTlsConfiguration(profile(b"c", policy)))
    chunk = bytes(64 * 1024)
    started = time.perf_counter()
    epoch, rekey_times = writer.epoch, []
    while (now := time.perf_counter()) - started < duration:
        writer.write(chunk)
        await writer.drain()
        await asyncio.sleep(0)
        if writer.epoch != epoch:
            epoch = writer.epoch
            rekey_times.append(now - started)
    epochs = writer.epoch or 0
    writer.close()
    await asyncio.sleep(0.2)
    server.close()
    label = f"rekey every {rekey_seconds:g} s" if rekey_seconds else "no rekey"
    series = Series(label, epochs=epochs - 1, rekey_times=rekey_times)
    buckets: dict[int, int] = {}
    previous = started
    for when, size in arrivals:
        buckets[int((when - started) / bucket)] = buckets.get(int((when - started) / bucket), 0) + size
        series.longest_gap = max(series.longest_gap, when - previous)
        previous = when
    for index in range(int(duration / bucket)):
        series.times.append(index * bucket)
        series.megabytes_per_second.append(buckets.get(index, 0) / bucket / (1 << 20))
    return series
