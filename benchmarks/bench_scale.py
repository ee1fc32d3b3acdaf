"""N concurrent mlstls connections to one server process, rekeying every second: rekeys per core, memory per connection.

    python -m benchmarks.bench_scale [--connections 100,1000] [--window S] [--json FILE]

The server runs in a child process (so its CPU time and resident memory are
its own); the clients run here.  For each N:

1. *idle*: a server without a rekey policy; resident memory before and after N
   connections are established and idle gives the memory per connection;
2. *rekeying*: a server that commits a PCS rekey on every connection once a
   second (the client answers, as the profile's ping-pong allows either side to
   commit); over a window of S seconds the server's CPU time and the rekeys it
   completed give rekeys per second and rekeys per CPU-second (per core).

JSON keys, per N: ``rss_per_idle_connection_kb_n<N>``, ``rekeys_per_second_n<N>``,
``rekeys_per_cpu_second_n<N>``, ``server_cpu_per_wall_second_n<N>``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks.peers import make_keys, profile
from benchmarks.report import Figure, versions, write_json
from mls2p import RekeyPolicy
from mls2p.command import run_command
from mlstls import MlsTlsConfiguration, MlsTlsWriter, open_connection, start_server

OPEN_AT_ONCE = 32
"""Connections opened concurrently by the client side (the server admits 64 handshakes at once)."""


def raise_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def resident_kb() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() // 1024


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- the server process ------------------------------------------------------------------------

async def serve(folder: Path, rekey_seconds: float) -> None:
    """Serve until stdin closes; answer each line on stdin with this process's figures as JSON."""
    raise_file_limit()
    writers: list[MlsTlsWriter] = []
    first_epochs: list[int] = []

    async def idle(reader: asyncio.StreamReader, writer: MlsTlsWriter) -> None:
        writers.append(writer)
        first_epochs.append(writer.epoch or 0)
        with contextlib.suppress(ConnectionError):
            while await reader.read(1 << 16):
                pass

    rekey = RekeyPolicy(max_seconds=rekey_seconds) if rekey_seconds > 0 else RekeyPolicy()
    server = await start_server(idle, "127.0.0.1", 0, configuration=MlsTlsConfiguration(
        profile(folder, "server", rekey=rekey), is_client=False))
    print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
    loop = asyncio.get_running_loop()
    while await loop.run_in_executor(None, sys.stdin.readline):
        epochs = sum(w.epoch or 0 for w in writers) - sum(first_epochs)
        print(json.dumps({"rss_kb": resident_kb(), "cpu_seconds": cpu_seconds(), "rekeys": epochs,
                          "connections": len(writers)}), flush=True)
    server.close()


class ServerProcess:
    def __init__(self, folder: Path, rekey_seconds: float) -> None:
        self.child = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bench_scale", "--serve", str(folder), "--rekey-seconds",
             str(rekey_seconds)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.port = int(self._line()["port"])

    def _line(self) -> dict[str, float]:
        assert self.child.stdout is not None
        line = self.child.stdout.readline()
        if not line:
            raise RuntimeError("the server process exited")
        return dict(json.loads(line))

    def stats(self) -> dict[str, float]:
        assert self.child.stdin is not None
        self.child.stdin.write("stats\n")
        self.child.stdin.flush()
        return self._line()

    def stop(self) -> None:
        if self.child.stdin is not None:
            self.child.stdin.close()
        try:
            self.child.wait(10)
        except subprocess.TimeoutExpired:
            self.child.kill()


@contextlib.contextmanager
def server_process(folder: Path, rekey_seconds: float) -> Iterator[ServerProcess]:
    server = ServerProcess(folder, rekey_seconds)
    try:
        yield server
    finally:
        server.stop()


# -- the client side -----------------------------------------------------------------------------

async def open_many(port: int, count: int, folder: Path) -> list[MlsTlsWriter]:
    configuration = MlsTlsConfiguration(profile(folder, "client"))
    gate = asyncio.Semaphore(OPEN_AT_ONCE)

    async def one() -> MlsTlsWriter:
        async with gate:
            _, writer = await open_connection("127.0.0.1", port, configuration=configuration, handshake_timeout=60)
            return writer

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def measure(count: int, window: float, folder: Path) -> dict[str, Figure]:
    with server_process(folder, 0) as server:
        await asyncio.sleep(0.2)
        before = server.stats()
        writers = await open_many(server.port, count, folder)
        await asyncio.sleep(1.0)
        after = server.stats()
        if after["connections"] != count:
            raise RuntimeError(f"the server holds {after['connections']} connections, not {count}")
        for writer in writers:
            writer.close()
    rss_per_connection = (after["rss_kb"] - before["rss_kb"]) / count
    with server_process(folder, 1.0) as server:
        writers = await open_many(server.port, count, folder)
        await asyncio.sleep(2.0)  # every connection is past its first rekey
        start, started = server.stats(), time.monotonic()
        await asyncio.sleep(window)
        end, elapsed = server.stats(), time.monotonic() - started
        for writer in writers:
            writer.close()
    rekeys, cpu = end["rekeys"] - start["rekeys"], end["cpu_seconds"] - start["cpu_seconds"]
    print(f"N={count:5}: {rss_per_connection:6.1f} KiB resident per idle connection; rekeying every second: "
          f"{rekeys / elapsed:7.1f} rekeys/s using {cpu / elapsed:4.2f} of a core, "
          f"{rekeys / cpu if cpu else 0:7.1f} rekeys per CPU-second")
    return {f"rss_per_idle_connection_kb_n{count}": rss_per_connection,
            f"rekeys_per_second_n{count}": rekeys / elapsed,
            f"rekeys_per_cpu_second_n{count}": rekeys / cpu if cpu else 0.0,
            f"server_cpu_per_wall_second_n{count}": cpu / elapsed}


async def run(counts: list[int], window: float) -> dict[str, Figure]:
    raise_file_limit()
    figures: dict[str, Figure] = {"window_seconds": window, **versions()}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as name:
        folder = Path(name)
        make_keys(folder)
        for count in counts:
            figures.update(await measure(count, window, folder))
    return figures


async def report(args: argparse.Namespace) -> int:
    if args.serve:
        await serve(Path(args.serve), args.rekey_seconds)
        return 0
    write_json(args.json, await run(args.connections, args.window))
    return 0


def connection_counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",")]
    if not counts or min(counts) < 1:
        raise ValueError("connection counts must be positive")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=connection_counts, default=[100, 1000],
                        help="comma-separated connection counts (default 100,1000)")
    parser.add_argument("--window", type=float, default=10.0, help="seconds of rekeying measured (default 10)")
    parser.add_argument("--json", help="also write every figure to this file (stable keys)")
    parser.add_argument("--serve", metavar="FOLDER", help=argparse.SUPPRESS)  # the server process
    parser.add_argument("--rekey-seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    if args.window <= 0:
        parser.error("--window must be positive")
    return run_command(functools.partial(report, args), prog="bench_scale", verbose=args.verbose)


if __name__ == "__main__":
    raise SystemExit(main())
