"""Plain aioquic (TLS 1.3) vs mlsquic (QUIC-MLS) on loopback, in one run.

    python -m benchmarks.bench_quic [--megabytes N] [--rounds R]

Handshake latency, bulk throughput, and throughput while rekeying every second,
each as a ratio to plain aioquic measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from functools import partial
from typing import Any, cast

from aioquic.asyncio import QuicConnectionProtocol
from aioquic.asyncio import connect as aioquic_connect
from aioquic.asyncio import serve as aioquic_serve
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent, StreamDataReceived

import mlsquic
from benchmarks.report import interleaved, print_ratios
from mls2p.command import run_command
from mls2p.testing import config, self_signed_server_certificate
from mlsquic import MlsQuicConfiguration, quic_of
from mlsquic.epochs import EpochKeyedConnection
from mlsquic.testing import client_configuration, free_udp_port, server_configuration

CHUNK = 256 * 1024

Connect = Callable[[], AbstractAsyncContextManager[QuicConnectionProtocol]]


class Sink(QuicConnectionProtocol):
    """Counts a stream and answers with the count when it ends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.count = 0

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):
            self.count += len(event.data)
            if event.end_stream:
                quic_of(self).send_stream_data(event.stream_id, b"%d" % self.count, True)
                self.transmit()


class Pusher(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answer = asyncio.get_running_loop().create_future()

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived) and event.end_stream and not self.answer.done():
            self.answer.set_result(int(event.data))


async def push(connect: Connect, total: int, rekey_every: float | None) -> tuple[float, float]:
    started = time.perf_counter()
    async with connect() as protocol:
        client = cast(Pusher, protocol)  # every mode connects with create_protocol=Pusher
        setup = time.perf_counter() - started
        quic = quic_of(client)
        stream = quic.get_next_available_stream_id()
        payload = bytes(CHUNK)
        started = last = time.perf_counter()
        for _ in range(total // CHUNK):
            quic.send_stream_data(stream, payload, False)
            client.transmit()
            if rekey_every is not None and time.perf_counter() - last >= rekey_every:
                cast(EpochKeyedConnection, quic).rekey()  # only the mlsquic modes have a rekey interval
                last = time.perf_counter()
            await asyncio.sleep(0)  # let the loop send and receive, as a chunked writer would
        quic.send_stream_data(stream, b"", True)
        client.transmit()
        count = await asyncio.wait_for(client.answer, 120)
        elapsed = time.perf_counter() - started
        assert count == total, count
        return setup, total / (1 << 20) / elapsed


async def run(megabytes: int, rounds: int) -> None:
    total = megabytes * (1 << 20)
    with tempfile.TemporaryDirectory() as folder:
        cert, key = self_signed_server_certificate(folder, "localhost")
        tls_server_config = QuicConfiguration(is_client=False, alpn_protocols=["bench"])
        tls_server_config.load_cert_chain(cert, key)
        tls_port, mls_port = free_udp_port(), free_udp_port()
        tls_server = await aioquic_serve("127.0.0.1", tls_port, configuration=tls_server_config, create_protocol=Sink)
        mls_config = server_configuration()
        mls_config.alpn_protocols = ["bench"]
        mls_server = await mlsquic.serve("127.0.0.1", mls_port, configuration=mls_config, create_protocol=Sink)
        along_port = free_udp_port()
        along_config = MlsQuicConfiguration(profile=config(b"server"), mode="alongside", is_client=False,
                                            alpn_protocols=["bench"])
        along_config.load_cert_chain(cert, key)
        along_server = await mlsquic.serve("127.0.0.1", along_port, configuration=along_config, create_protocol=Sink)

        def plain() -> AbstractAsyncContextManager[QuicConnectionProtocol]:
            config = QuicConfiguration(is_client=True, alpn_protocols=["bench"], cafile=cert, server_name="localhost")
            return aioquic_connect("127.0.0.1", tls_port, configuration=config, create_protocol=Pusher)

        def mls() -> AbstractAsyncContextManager[QuicConnectionProtocol]:
            config = client_configuration()
            config.alpn_protocols = ["bench"]
            return mlsquic.connect("127.0.0.1", mls_port, configuration=config, create_protocol=Pusher)

        def along() -> AbstractAsyncContextManager[QuicConnectionProtocol]:
            config_ = MlsQuicConfiguration(profile=config(b"client"), mode="alongside", is_client=True,
                                           alpn_protocols=["bench"], cafile=cert, server_name="localhost")
            return mlsquic.connect("127.0.0.1", along_port, configuration=config_, create_protocol=Pusher)

        modes: dict[str, tuple[Connect, float | None]] = {
            "aioquic (TLS 1.3)": (plain, None), "QUIC-MLS": (mls, None), "QUIC-MLS+rekey/1s": (mls, 1.0),
            "alongside": (along, None), "alongside+rekey/1s": (along, 1.0)}
        results = await interleaved(
            {name: partial(push, connect, total, rekey)
             for name, (connect, rekey) in modes.items()}, rounds)
        for server in (tls_server, mls_server, along_server):
            server.close()
    print_ratios(results, "aioquic (TLS 1.3)", "handshake")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--megabytes", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    if args.megabytes < 1 or args.rounds < 1:
        parser.error("--megabytes and --rounds must be at least 1")
    return run_command(functools.partial(run, args.megabytes, args.rounds), prog="bench_quic", verbose=args.verbose)


if __name__ == "__main__":
    raise SystemExit(main())
