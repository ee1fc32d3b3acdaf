"""stdlib ``ssl`` over asyncio streams vs ``mlstls`` on loopback, in one run.

    python -m benchmarks.bench_tls [--megabytes N] [--rounds R]

Reports connection set-up time, bulk throughput, and throughput while
rekeying every second, each as a ratio to stdlib ssl measured in the same run.
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

from benchmarks.report import interleaved, print_ratios
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


async def run(megabytes: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        cert, key = self_signed(Path(folder))
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(cert, key)
        client_ctx = ssl.create_default_context(cafile=str(cert))
        server_ctx.minimum_version = client_ctx.minimum_version = ssl.TLSVersion.TLSv1_3

        done = asyncio.Event()
        expected = megabytes * (1 << 20)

        async def counting_sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter | MlsTlsWriter) -> None:
            total = 0
            while total < expected and (data := await reader.read(1 << 20)):
                total += len(data)
            writer.write(b"%d" % total)
            await writer.drain()
            done.set()

        tls_server = await asyncio.start_server(counting_sink, "127.0.0.1", 0, ssl=server_ctx)
        tls_port = tls_server.sockets[0].getsockname()[1]
        mls_server = await start_server(counting_sink, "127.0.0.1", 0, configuration=MlsTlsConfiguration(
            config(b"server"), is_client=False))
        mls_port = mls_server.sockets[0].getsockname()[1]
        along_server = await start_server(counting_sink, "127.0.0.1", 0, configuration=MlsTlsConfiguration(
            config(b"server"), is_client=False, tls=TlsSettings(certfile=str(cert), keyfile=str(key))))
        along_port = along_server.sockets[0].getsockname()[1]

        async def push(connect: Connect, rekey: float | None) -> tuple[float, float]:
            started = time.perf_counter()
            reader, writer = await connect()
            setup = time.perf_counter() - started
            payload = bytes(CHUNK)
            last = started = time.perf_counter()
            for _ in range(expected // CHUNK):
                writer.write(payload)
                await writer.drain()
                if rekey is not None and time.perf_counter() - last >= rekey:
                    cast(MlsTlsWriter, writer).rekey()  # only the mlstls modes have a rekey interval
                    last = time.perf_counter()
            count = int(await reader.read(100))
            elapsed = time.perf_counter() - started
            assert count == expected, count
            writer.close()
            return setup, megabytes / elapsed

        def tls() -> Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
            return asyncio.open_connection("127.0.0.1", tls_port, ssl=client_ctx, server_hostname="localhost")

        def mls() -> Awaitable[tuple[asyncio.StreamReader, MlsTlsWriter]]:
            return open_connection("127.0.0.1", mls_port, configuration=MlsTlsConfiguration(
                config(b"client", rekey=RekeyPolicy())))

        def along() -> Awaitable[tuple[asyncio.StreamReader, MlsTlsWriter]]:
            return open_connection("127.0.0.1", along_port, configuration=MlsTlsConfiguration(
                config(b"client", rekey=RekeyPolicy()), tls=TlsSettings(cafile=str(cert), server_hostname="localhost")))

        modes: dict[str, tuple[Connect, float | None]] = {
            "ssl": (tls, None), "mlstls in place": (mls, None), "in place+rekey/1s": (mls, 1.0),
            "mlstls alongside": (along, None), "alongside+rekey/1s": (along, 1.0)}
        results = await interleaved(
            {name: partial(push, connect, rekey)
             for name, (connect, rekey) in modes.items()}, rounds)
        for server in (tls_server, mls_server, along_server):
            server.close()
    print_ratios(results, "ssl", "set-up")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--megabytes", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    if args.megabytes < 1 or args.rounds < 1:
        parser.error("--megabytes and --rounds must be at least 1")
    return run_command(functools.partial(run, args.megabytes, args.rounds), prog="bench_tls", verbose=args.verbose)


if __name__ == "__main__":
    raise SystemExit(main())
