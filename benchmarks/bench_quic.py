"""Plain aioquic (TLS 1.3) vs mlsquic (QUIC-MLS, and alongside TLS) on loopback, client and server in two processes.

    python -m benchmarks.bench_quic [--seconds S] [--rounds R] [--json FILE]

The servers run in a child process and the clients here, so each side has a
core of its own, as a user would run them.  Reported, as ratios to plain
aioquic measured in the same run (modes take turns round by round): the
handshake (connect until the handshake is complete), bulk throughput over one
stream for S seconds (the sink acknowledges every 1 MiB; at most 8 MiB in
flight), and the same while rekeying every second.  JSON keys:
``quic_handshake_vs_aioquic``, ``quic_bulk_vs_aioquic``,
``quic_bulk_rekey_vs_aioquic``, the same with ``alongside_`` for alongside
mode, the absolute medians and the versions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, cast

from aioquic.asyncio import QuicConnectionProtocol
from aioquic.asyncio import connect as aioquic_connect
from aioquic.asyncio import serve as aioquic_serve
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent, StreamDataReceived

import mlsquic
from benchmarks.peers import make_keys, profile
from benchmarks.report import Figure, interleaved, medians, print_ratios, versions, write_json
from mls2p.command import run_command
from mls2p.testing import self_signed_server_certificate
from mlsquic import MlsQuicConfiguration, quic_of
from mlsquic.epochs import EpochKeyedConnection
from mlsquic.testing import free_udp_port

CHUNK = 64 * 1024
ACK_EVERY = 1 << 20
WINDOW = 8 << 20
ALPN = ["bench"]
MODES = {  # JSON key: (label, server, rekey every N seconds)
    "aioquic": ("aioquic (TLS 1.3)", "aioquic", None),
    "quic": ("QUIC-MLS", "mls", None),
    "quic_rekey": ("QUIC-MLS+rekey/1s", "mls", 1.0),
    "alongside": ("alongside", "alongside", None),
    "alongside_rekey": ("alongside+rekey/1s", "alongside", 1.0),
}

Connect = Callable[[], AbstractAsyncContextManager[QuicConnectionProtocol]]


# -- the server process ----------------------------------------------------------------------------

class Sink(QuicConnectionProtocol):
    """Counts a stream; acknowledges every ACK_EVERY bytes and at its end with the 8-byte count."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.count = self.acked = 0

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):
            self.count += len(event.data)
            if self.count - self.acked >= ACK_EVERY or event.end_stream:
                quic_of(self).send_stream_data(event.stream_id, self.count.to_bytes(8, "big"), event.end_stream)
                self.acked = self.count
                self.transmit()


async def serve(folder: Path) -> None:
    """Start the three servers, print their ports as one JSON line, run until stdin closes."""
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    plain = QuicConfiguration(is_client=False, alpn_protocols=ALPN)
    plain.load_cert_chain(cert, key)
    mls = MlsQuicConfiguration(profile=profile(folder, "server"), is_client=False, alpn_protocols=ALPN)
    along = MlsQuicConfiguration(profile=profile(folder, "server"), mode="alongside", is_client=False,
                                 alpn_protocols=ALPN)
    along.load_cert_chain(cert, key)
    ports = {name: free_udp_port() for name in ("aioquic", "mls", "alongside")}
    plain_server = await aioquic_serve("127.0.0.1", ports["aioquic"], configuration=plain, create_protocol=Sink)
    mls_servers = [await mlsquic.serve("127.0.0.1", ports[mode], configuration=configuration, create_protocol=Sink)
                   for mode, configuration in (("mls", mls), ("alongside", along))]
    print(json.dumps(ports), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    plain_server.close()
    for server in mls_servers:
        server.close()


# -- the client process ----------------------------------------------------------------------------

class Pusher(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.acked = 0
        self.acks = asyncio.Event()
        self.answer = asyncio.get_running_loop().create_future()
        self._pending = b""

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):
            self._pending += event.data
            while len(self._pending) >= 8:
                self.acked, self._pending = int.from_bytes(self._pending[:8], "big"), self._pending[8:]
                self.acks.set()
            if event.end_stream and not self.answer.done():
                self.answer.set_result(self.acked)


async def push(connect: Connect, seconds: float, rekey_every: float | None) -> tuple[float, float]:
    started = time.perf_counter()
    async with connect() as protocol:
        client = cast(Pusher, protocol)  # every mode connects with create_protocol=Pusher
        setup = time.perf_counter() - started
        quic = quic_of(client)
        stream = quic.get_next_available_stream_id()
        payload = bytes(CHUNK)
        sent = 0
        started = last = time.perf_counter()
        while (now := time.perf_counter()) - started < seconds:
            while sent - client.acked > WINDOW:
                client.acks.clear()
                await asyncio.wait_for(client.acks.wait(), 60)
            quic.send_stream_data(stream, payload, False)
            sent += CHUNK
            if rekey_every is not None and now - last >= rekey_every:
                cast(EpochKeyedConnection, quic).rekey()  # only the mlsquic modes have a rekey interval
                last = now
            client.transmit()
            await asyncio.sleep(0)
        quic.send_stream_data(stream, b"", True)
        client.transmit()
        count = await asyncio.wait_for(client.answer, 120)
        elapsed = time.perf_counter() - started
        if count != sent:
            raise RuntimeError(f"the server counted {count} bytes of {sent}")
        return setup, sent / (1 << 20) / elapsed


@contextlib.contextmanager
def server_process(folder: Path) -> Any:
    child = subprocess.Popen([sys.executable, "-m", "benchmarks.bench_quic", "--serve", str(folder)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        if not line:
            raise RuntimeError("the server process exited before it listened")
        yield json.loads(line)
    finally:
        if child.stdin is not None:
            child.stdin.close()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()


async def run(seconds: float, rounds: int) -> dict[str, Figure]:
    with tempfile.TemporaryDirectory(prefix="bench-quic-") as name:
        folder = Path(name)
        cert, key = self_signed_server_certificate(name, "localhost")
        Path(cert).rename(folder / "cert.pem")
        Path(key).rename(folder / "key.pem")
        make_keys(folder)
        with server_process(folder) as ports:
            cafile = str(folder / "cert.pem")
            clients: dict[str, Connect] = {
                "aioquic": lambda: aioquic_connect("127.0.0.1", ports["aioquic"], create_protocol=Pusher,
                                                   configuration=QuicConfiguration(
                                                       is_client=True, alpn_protocols=ALPN, cafile=cafile,
                                                       server_name="localhost")),
                "mls": lambda: mlsquic.connect("127.0.0.1", ports["mls"], create_protocol=Pusher,
                                               configuration=MlsQuicConfiguration(
                                                   profile=profile(folder, "client"), is_client=True,
                                                   alpn_protocols=ALPN)),
                "alongside": lambda: mlsquic.connect("127.0.0.1", ports["alongside"], create_protocol=Pusher,
                                                     configuration=MlsQuicConfiguration(
                                                         profile=profile(folder, "client"), mode="alongside",
                                                         is_client=True, alpn_protocols=ALPN, cafile=cafile,
                                                         server_name="localhost")),
            }
            results = await interleaved({label: functools.partial(push, clients[server], seconds, rekey)
                                         for label, server, rekey in MODES.values()}, rounds)
    print_ratios(results, MODES["aioquic"][0], "handshake")
    table = medians(results)
    base_setup, base_rate = table[MODES["aioquic"][0]]
    figures: dict[str, Figure] = {"seconds_per_transfer": seconds, "rounds": rounds, **versions("aioquic")}
    for mode, (label, _, _) in MODES.items():
        setup, rate = table[label]
        figures[f"{mode}_handshake_ms"] = 1000 * setup
        figures[f"{mode}_bulk_mb_s"] = rate
    figures.update(
        quic_handshake_vs_aioquic=table["QUIC-MLS"][0] / base_setup,
        quic_bulk_vs_aioquic=table["QUIC-MLS"][1] / base_rate,
        quic_bulk_rekey_vs_aioquic=table["QUIC-MLS+rekey/1s"][1] / base_rate,
        alongside_handshake_vs_aioquic=table["alongside"][0] / base_setup,
        alongside_bulk_vs_aioquic=table["alongside"][1] / base_rate,
        alongside_bulk_rekey_vs_aioquic=table["alongside+rekey/1s"][1] / base_rate,
    )
    return figures


async def report(args: argparse.Namespace) -> int:
    if args.serve:
        await serve(Path(args.serve))
        return 0
    write_json(args.json, await run(args.seconds, args.rounds))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each bulk transfer (default 3)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="also write every figure to this file (stable keys)")
    parser.add_argument("--serve", metavar="FOLDER", help=argparse.SUPPRESS)  # the server process
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.rounds < 1:
        parser.error("--seconds must be positive and --rounds at least 1")
    return run_command(functools.partial(report, args), prog="bench_quic", verbose=args.verbose)


if __name__ == "__main__":
    raise SystemExit(main())
