"""stdlib ``ssl`` over asyncio streams vs ``mlstls`` on loopback, in one run.

    python -m benchmarks.bench_tls [--seconds S] [--rounds R] [--json FILE]

Reports connection set-up time, bulk throughput (each transfer lasts S
seconds), and throughput while rekeying every second, each as a ratio to
stdlib ssl measured in the same run (modes take turns round by round).  JSON
keys: ``<mode>_setup_ms``, ``<mode>_throughput_mb_s``, ``<mode>_setup_vs_ssl``
and ``<mode>_throughput_vs_ssl`` for the modes in_place, in_place_rekey,
alongside and alongside_rekey; ``alongside_throughput_vs_ssl`` and
``alongside_rekey_throughput_vs_ssl`` are the issue's headline ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import functools
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from benchmarks.report import Figure, interleaved, medians, print_ratios, versions, write_json
from mls2p import RekeyPolicy
from mls2p.command import run_command
from mls2p.testing import config
from mlstls import MlsTlsConfiguration, MlsTlsWriter, open_connection, start_server
from mlstls.alongside import TlsSettings

CHUNK = 256 * 1024

Connect = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter | MlsTlsWriter]]]


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


MODES = {  # JSON key prefix: (label, server kind, rekey every N seconds)
    "ssl": ("ssl", "ssl", None),
    "in_place": ("mlstls in place", "in_place", None),
    "in_place_rekey": ("in place+rekey/1s", "in_place", 1.0),
    "alongside": ("mlstls alongside", "alongside", None),
    "alongside_rekey": ("alongside+rekey/1s", "alongside", 1.0),
}
END = b"\x01"  # the last byte of a transfer; every other byte is zero


async def counting_sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter | MlsTlsWriter) -> None:
    """Count bytes until the transfer's END byte, then answer with the count."""
    total = 0
    while data := await reader.read(1 << 20):
        total += len(data)
        if data[-1:] == END:
            break
    writer.write(b"%d" % total)
    await writer.drain()


async def push(connect: Connect, seconds: float, rekey: float | None) -> tuple[float, float]:
    """Connect (timed), then write zeros for ``seconds`` (rekeying every ``rekey`` s): (set-up s, MB/s)."""
    started = time.perf_counter()
    reader, writer = await connect()
    setup = time.perf_counter() - started
    payload = bytes(CHUNK)
    sent = 0
    last = started = time.perf_counter()
    while (now := time.perf_counter()) - started < seconds:
        writer.write(payload)
        await writer.drain()
        sent += CHUNK
        if rekey is not None and now - last >= rekey:
            cast(MlsTlsWriter, writer).rekey()  # only the mlstls modes have a rekey interval
            last = now
    writer.write(END)
    count = int(await reader.read(100))
    elapsed = time.perf_counter() - started
    if count != sent + 1:
        raise RuntimeError(f"the server counted {count} bytes of {sent + 1}")
    writer.close()
    return setup, sent / (1 << 20) / elapsed


async def run(seconds: float, rounds: int) -> dict[str, Figure]:
    with tempfile.TemporaryDirectory() as folder:
        cert, key = self_signed(Path(folder))
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(cert, key)
        client_ctx = ssl.create_default_context(cafile=str(cert))
        server_ctx.minimum_version = client_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        servers = {
            "ssl": await asyncio.start_server(counting_sink, "127.0.0.1", 0, ssl=server_ctx),
            "in_place": await start_server(counting_sink, "127.0.0.1", 0, configuration=MlsTlsConfiguration(
                config(b"server"), is_client=False)),
            "alongside": await start_server(counting_sink, "127.0.0.1", 0, configuration=MlsTlsConfiguration(
                config(b"server"), is_client=False, tls=TlsSettings(certfile=str(cert), keyfile=str(key)))),
        }
        ports = {kind: server.sockets[0].getsockname()[1] for kind, server in servers.items()}
        clients: dict[str, Connect] = {
            "ssl": lambda: asyncio.open_connection("127.0.0.1", ports["ssl"], ssl=client_ctx,
                                                   server_hostname="localhost"),
            "in_place": lambda: open_connection("127.0.0.1", ports["in_place"], configuration=MlsTlsConfiguration(
                config(b"client", rekey=RekeyPolicy()))),
            "alongside": lambda: open_connection("127.0.0.1", ports["alongside"], configuration=MlsTlsConfiguration(
                config(b"client", rekey=RekeyPolicy()),
                tls=TlsSettings(cafile=str(cert), server_hostname="localhost"))),
        }
        results = await interleaved({label: partial(push, clients[kind], seconds, rekey)
                                     for label, kind, rekey in MODES.values()}, rounds)
        for server in servers.values():
            server.close()
    print_ratios(results, "ssl", "set-up")
    table = medians(results)
    base_setup, base_rate = table["ssl"]
    figures: dict[str, Figure] = {"seconds_per_transfer": seconds, "rounds": rounds, **versions("pyOpenSSL")}
    for mode, (label, _, _) in MODES.items():
        setup, rate = table[label]
        figures[f"{mode}_setup_ms"] = 1000 * setup
        figures[f"{mode}_throughput_mb_s"] = rate
        if mode != "ssl":
            figures[f"{mode}_setup_vs_ssl"] = setup / base_setup
            figures[f"{mode}_throughput_vs_ssl"] = rate / base_rate
    return figures


async def report(args: argparse.Namespace) -> int:
    write_json(args.json, await run(args.seconds, args.rounds))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each bulk transfer (default 3)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="also write every figure to this file (stable keys)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.rounds < 1:
        parser.error("--seconds must be positive and --rounds at least 1")
    return run_command(functools.partial(report, args), prog="bench_tls", verbose=args.verbose)


if __name__ == "__main__":
    raise SystemExit(main())
