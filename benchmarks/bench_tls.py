"""stdlib ``ssl`` over asyncio streams vs ``mlstls`` on loopback, in one run.

    python -m benchmarks.bench_tls [--seconds S] [--rounds R] [--json FILE]

Reports connection set-up time, bulk throughput (each transfer lasts S
seconds), and throughput while rekeying every second, each as a ratio to
stdlib ssl measured in the same run (modes take turns round by round).  JSON
keys: ``<mode>_setup_ms``, ``<mode>_throughput_mb_s``, ``<mode>_setup_vs_ssl``
and ``<mode>_throughput_vs_ssl`` for the modes in_place, in_place_rekey,
alongside, alongside_rekey, housley, housley_rekey and tlslite;
``alongside_throughput_vs_ssl`` and ``alongside_rekey_throughput_vs_ssl`` are
the issue's headline ratios.

The Housley mode (MLS inside the TLS 1.3 handshake) runs on tlslite-ng, whose
record protection is pure Python: its figures are bounded by that, so they are
also given against plain tlslite-ng TLS 1.3 (certificate, ECDHE) in the same run
(``housley_setup_vs_tlslite``, ``housley_throughput_vs_tlslite``,
``housley_rekey_throughput_vs_tlslite``), the fair comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import functools
import socket
import ssl
import tempfile
import threading
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
from mlstls.config import HousleyConfig

CHUNK = 256 * 1024
HOUSLEY = HousleyConfig(tls_suites=(0x1301,))  # TLS_AES_128_GCM_SHA256, as the baselines

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
    "housley": ("mlstls housley", "housley", None),
    "housley_rekey": ("housley+rekey/1s", "housley", 1.0),
    "tlslite": ("tlslite-ng", "tlslite", None),
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


class TlsliteBaseline:
    """Plain tlslite-ng TLS 1.3 (certificate, x25519): a blocking server thread, and a blocking client run in a
    worker thread per transfer (tlslite-ng has no asyncio integration)."""

    def __init__(self, cert: Path, key: Path) -> None:
        from tlslite import HandshakeSettings, X509CertChain, parsePEMKey

        self.chain = X509CertChain()
        self.chain.parsePemList(cert.read_text())
        self.key = parsePEMKey(key.read_text(), private=True)
        self.settings = HandshakeSettings()
        self.settings.cipherNames = ["aes128gcm"]
        self.settings.keyShares = ["x25519"]
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        from tlslite import TLSConnection

        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            with sock:
                tls = TLSConnection(sock)
                tls.handshakeServer(certChain=self.chain, privateKey=self.key, settings=self.settings)
                total = 0
                while data := tls.read(max=1 << 20):
                    total += len(data)
                    if data[-1:] == END:
                        break
                tls.write(b"%d" % total)
                tls.close()

    def push(self, seconds: float) -> tuple[float, float]:
        from tlslite import TLSConnection

        started = time.perf_counter()
        tls = TLSConnection(socket.create_connection(("127.0.0.1", self.port)))
        tls.handshakeClientCert(settings=self.settings)
        setup = time.perf_counter() - started
        payload, sent = bytes(CHUNK), 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            tls.write(payload)
            sent += CHUNK
        tls.write(END)
        count = int(tls.read(max=100))
        elapsed = time.perf_counter() - started
        tls.close()
        if count != sent + 1:
            raise RuntimeError(f"the tlslite-ng server counted {count} bytes of {sent + 1}")
        return setup, sent / (1 << 20) / elapsed

    def close(self) -> None:
        self.listener.close()


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
            "housley": await start_server(counting_sink, "127.0.0.1", 0, configuration=MlsTlsConfiguration(
                config(b"server"), is_client=False, housley=HOUSLEY)),
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
            "housley": lambda: open_connection("127.0.0.1", ports["housley"], configuration=MlsTlsConfiguration(
                config(b"client", rekey=RekeyPolicy()), housley=HOUSLEY)),
        }
        tlslite = TlsliteBaseline(cert, key)
        runs: dict[str, Callable[[], Awaitable[tuple[float, float]]]] = {
            label: partial(push, clients[kind], seconds, rekey)
            for label, kind, rekey in MODES.values() if kind != "tlslite"}
        runs[MODES["tlslite"][0]] = partial(asyncio.to_thread, tlslite.push, seconds)
        results = await interleaved(runs, rounds)
        tlslite.close()
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
    tlslite_setup, tlslite_rate = table[MODES["tlslite"][0]]
    figures["housley_setup_vs_tlslite"] = table[MODES["housley"][0]][0] / tlslite_setup
    figures["housley_throughput_vs_tlslite"] = table[MODES["housley"][0]][1] / tlslite_rate
    figures["housley_rekey_throughput_vs_tlslite"] = table[MODES["housley_rekey"][0]][1] / tlslite_rate
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
