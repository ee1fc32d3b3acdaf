"""Run each mechanism over a real loopback TCP connection, steal keys mid-way, try to read the rest.

    python -m examples.pcs.runner --out report/ [--quick]

A relay between the two endpoints captures every byte the client sends.  At
record ``theft_at`` the attacker receives the client's current traffic secret
(and for EKU the main secret as well).  After the run the attacker tries to
decrypt every later captured record with what it stole and what it can derive
from it.  The report (Markdown, and PNG figures when matplotlib is installed)
says which records it read and when healing happened.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import cast

from mls2p import ProfileConfig
from mls2p.command import run_command
from mls2p.errors import ConfigurationError
from mlscore.errors import StateError
from mlstls.alongside import AlongsideConnection
from mlstls.connection import CLIENT_LABEL, MlsTlsConfiguration, MlsTlsConnection
from mlstls.record import ContentType, RecordProtection, RecordSplitter, aead_spec

from .costs import Series, SideCost, mls_rekey_cost, throughput_over_time
from .mechanisms import (
    ChainAttacker,
    EkuSender,
    KeyUpdateSender,
    ModelSender,
    Outcome,
    PskOnlySender,
    PskSender,
    RehandshakeSender,
    RekeyCost,
)
from .quic import run_quic


@dataclass
class Settings:
    records: int = 120
    record_size: int = 1024
    rekey_every: int = 20
    theft_at: int = 30
    interval: float = 0.001


class Relay:
    """A loopback TCP relay that keeps the client-to-server bytes with their arrival times."""

    def __init__(self) -> None:
        self.captured: list[tuple[float, bytes]] = []
        self.server: asyncio.Server | None = None
        self.sink = bytearray()

    async def start(self) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(1 << 16):
                self.captured.append((time.perf_counter(), data))
                self.sink += data
            writer.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    def records(self, *, any_version: bool = False) -> list[tuple[float, bytes, bytes]]:
        """(arrival time, header, body) of every record, in order.

        ``any_version`` parses a real TLS stream, whose ClientHello record says 0x0301.
        """
        out: list[tuple[float, bytes, bytes]]
        if not any_version:
            splitter, out = RecordSplitter(), []
            for when, chunk in self.captured:
                out.extend((when, header, body) for header, body in splitter.feed(chunk))
            return out
        stream, times, out, position = b"", [], [], 0
        for when, chunk in self.captured:
            stream += chunk
            times.append((len(stream), when))
        while position + 5 <= len(stream):
            length = int.from_bytes(stream[position + 3 : position + 5], "big")
            end = position + 5 + length
            if end > len(stream):
                break
            when = next(t for size, t in times if size >= end)
            out.append((when, stream[position : position + 5], stream[position + 5 : end]))
            position = end
        return out


async def run_model(sender: ModelSender, settings: Settings) -> Outcome:
    relay = Relay()
    port = await relay.start()
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    outcome = Outcome(sender.name, settings.theft_at, settings.records)
    loot = None
    record_index = 0
    cost = RekeyCost(round_trips=sender.round_trips, messages=sender.messages)
    for i in range(settings.records):
        if i == settings.theft_at:
            loot = sender.steal()
            theft_record = record_index
        if i and i % settings.rekey_every == 0:
            started = time.process_time()
            wire = sender.rekey()
            cost.cpu_seconds += time.process_time() - started
            cost.wire_bytes += len(wire)
            outcome.rekeys += 1
            if sender.name == "tls13-keyupdate":  # the only mechanism whose rekey travels in-record
                writer.write(wire)
                record_index += 1
        writer.write(sender.seal(bytes(settings.record_size)))
        record_index += 1
        await writer.drain()
        await asyncio.sleep(settings.interval)
    writer.close()
    await asyncio.sleep(0.05)
    if relay.server is None:
        raise StateError("the relay was not started")
    relay.server.close()
    if loot is None:
        raise StateError(f"nothing was stolen: the run ended before record {settings.theft_at}")
    attacker = ChainAttacker(loot, type(sender))
    outcome.cost = _per_rekey(cost, outcome.rekeys)
    _attack(outcome, relay.records()[theft_record:], attacker.read)
    return outcome


async def run_mlstls(settings: Settings, profile_factory: Callable[[bytes], ProfileConfig]) -> Outcome:
    """The real MLS-TLS connection; the relay sits between the client and a server endpoint."""
    from mlstls.streams import MlsTlsProtocol, MlsTlsWriter, start_server

    relay = Relay()
    relay_port = await relay.start()
    outcome = Outcome("mlstls", settings.theft_at, settings.records)
    server_received = asyncio.Event()

    async def drain(reader: asyncio.StreamReader, writer: MlsTlsWriter) -> None:
        while await reader.read(1 << 16):
            pass
        server_received.set()

    server = await start_server(drain, "127.0.0.1", 0, configuration=MlsTlsConfiguration(profile_factory(b"s"),
                                                                                          is_client=False))
    server_port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    # Client bytes go to the server and, copied, to the relay (the capture point of the attacker).
    _, capture_writer = await asyncio.open_connection("127.0.0.1", relay_port)

    counted = [0]

    class Tapped(MlsTlsProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            original_write = transport.write  # type: ignore[attr-defined]

            def tapped(data: bytes) -> None:
                counted[0] += len(data)
                capture_writer.write(data)
                original_write(data)

            transport.write = tapped  # type: ignore[attr-defined]
            super().connection_made(transport)

    protocol = Tapped(MlsTlsConfiguration(profile_factory(b"c")))
    transport, _ = await loop.create_connection(lambda: protocol, "127.0.0.1", server_port)
    await asyncio.wait_for(protocol.handshake, 10)
    connection = cast(MlsTlsConnection, protocol.connection)  # no TlsSettings: MLS in place of TLS
    loot = None
    cost = RekeyCost(round_trips=1.0, messages=2)
    theft_bytes = 0
    for i in range(settings.records):
        if i == settings.theft_at:
            session = connection.session
            if session is None or session.group is None or connection._send is None:
                raise StateError("the client has no MLS keys after its handshake")
            loot = session.export_secret(CLIENT_LABEL, b"", session.group.suite.hash_len)
            loot_sequence = connection._send.sequence  # the thief counts records on the wire
            theft_bytes = sum(len(c) for _, c in relay.captured)
        if i and i % settings.rekey_every == 0:
            started, before = time.process_time(), counted[0]
            connection.rekey()
            protocol._flush()
            cost.cpu_seconds += time.process_time() - started
            cost.wire_bytes += counted[0] - before  # the ConnectionUpdate; the peer's ack adds ~180 B
            outcome.rekeys += 1
        protocol.write(bytes(settings.record_size))
        await asyncio.sleep(settings.interval)
    await asyncio.sleep(0.1)
    capture_writer.close()
    transport.close()
    server.close()
    if relay.server is None:
        raise StateError("the relay was not started")
    relay.server.close()
    await asyncio.sleep(0.05)
    records = relay.records()
    offset, theft_record = 0, 0
    for theft_record, (_, header, body) in enumerate(records):  # noqa: B007
        if offset >= theft_bytes:
            break
        offset += len(header) + len(body)
    if loot is None:
        raise StateError(f"nothing was stolen: the run ended before record {settings.theft_at}")
    keys = RecordProtection(aead_spec(1), loot)
    keys.sequence = loot_sequence

    def read(header: bytes, body: bytes) -> bool:
        try:
            keys.open(header, body)
            return True
        except Exception:
            return False

    outcome.cost = _per_rekey(cost, outcome.rekeys)
    _attack(outcome, records[theft_record:], read)
    return outcome


async def run_alongside(settings: Settings, profile_factory: Callable[[bytes], ProfileConfig]) -> list[Outcome]:
    """mlstls alongside TLS 1.3: the thief gets the TLS traffic secret, or the record secret itself.

    After the profile's handshake each side leaves TLS (mlstls.alongside), so the records after the theft
    are MLS-TLS records keyed from both the TLS exporter and the MLS epoch.
    """
    import tempfile

    from cryptography.hazmat.primitives import hashes

    from mls2p.testing import self_signed_server_certificate
    from mlstls.alongside import TlsSettings
    from mlstls.record import AeadSpec, ContentType
    from mlstls.streams import MlsTlsProtocol, MlsTlsWriter, start_server

    folder = tempfile.mkdtemp(prefix="pcs-")
    cert, key = self_signed_server_certificate(folder, "localhost")
    keylog: list[bytes] = []

    async def drain(reader: asyncio.StreamReader, writer: MlsTlsWriter) -> None:
        while await reader.read(1 << 16):
            pass

    server = await start_server(drain, "127.0.0.1", 0, configuration=MlsTlsConfiguration(
        profile_factory(b"s"), is_client=False, tls=TlsSettings(certfile=cert, keyfile=key)))
    server_port = server.sockets[0].getsockname()[1]
    relay = Relay()
    relay_port = await relay.start()
    _, capture_writer = await asyncio.open_connection("127.0.0.1", relay_port)
    counted = [0]

    class Tapped(MlsTlsProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            original_write = transport.write  # type: ignore[attr-defined]

            def tapped(data: bytes) -> None:
                counted[0] += len(data)
                capture_writer.write(data)
                original_write(data)

            transport.write = tapped  # type: ignore[attr-defined]
            super().connection_made(transport)

    protocol = Tapped(MlsTlsConfiguration(profile_factory(b"c"), tls=TlsSettings(
        cafile=cert, server_hostname="localhost", keylog=keylog.append)))
    transport, _ = await asyncio.get_running_loop().create_connection(lambda: protocol, "127.0.0.1", server_port)
    await asyncio.wait_for(protocol.handshake, 10)
    outer = cast(AlongsideConnection, protocol.connection)  # TlsSettings given: MLS alongside TLS
    theft: dict = {}
    rekeys = 0
    cost = RekeyCost(round_trips=1.0, messages=2)
    for i in range(settings.records):
        if i == settings.theft_at:
            inner = outer.inner
            if inner is None:
                raise StateError("no MLS connection inside TLS after the handshake")
            if inner._send is None or outer.tls_cipher is None:
                raise StateError("the client has no MLS keys after its handshake")
            theft = {"bytes": counted[0],
                     "tls": next(bytes.fromhex(line.split()[-1].decode()) for line in keylog
                                 if line.startswith(b"CLIENT_TRAFFIC_SECRET_0")),
                     "record": inner.traffic_secret(CLIENT_LABEL),
                     "record_sequence": inner._send.sequence, "cipher": outer.tls_cipher}
        if i and i % settings.rekey_every == 0:
            started, before = time.process_time(), counted[0]
            outer.rekey()
            protocol._flush()
            cost.cpu_seconds += time.process_time() - started
            cost.wire_bytes += counted[0] - before
            rekeys += 1
        protocol.write(bytes(settings.record_size))
        await asyncio.sleep(settings.interval)
    await asyncio.sleep(0.1)
    capture_writer.close()
    transport.close()
    server.close()
    if relay.server is None:
        raise StateError("the relay was not started")
    relay.server.close()
    await asyncio.sleep(0.05)

    records = relay.records(any_version=True)
    offset, index = 0, 0
    for index, (_, header, body) in enumerate(records):  # noqa: B007
        if offset >= theft["bytes"]:
            break
        offset += len(header) + len(body)
    after = records[index:]
    aes256 = "AES_256" in theft["cipher"]
    spec = AeadSpec("aes-256-gcm" if aes256 else "aes-128-gcm", 32 if aes256 else 16,
                    hashes.SHA384 if aes256 else hashes.SHA256, 1 << 62)
    outcomes = []
    tls_keys = RecordProtection(spec, theft["tls"])
    tls_keys.sequence = sum(1 for _, h, _b in records[:index] if h[0] == ContentType.APPLICATION_DATA) - 2
    record_keys = RecordProtection(aead_spec(1), theft["record"])
    record_keys.sequence = theft["record_sequence"]
    for label, keys in (("mlstls alongside (TLS + MLS secrets)", record_keys),
                        ("mlstls alongside (TLS secret only)", tls_keys)):
        outcome = Outcome(label, settings.theft_at, settings.records, rekeys=rekeys, cost=_per_rekey(cost, rekeys))

        def read(header: bytes, body: bytes, keys: RecordProtection = keys) -> bool:
            return _open_at_some_sequence(keys, header, body) is not None

        _attack(outcome, after, read)
        outcomes.append(outcome)
    return outcomes


def _open_at_some_sequence(keys: RecordProtection, header: bytes,
                           body: bytes) -> tuple[ContentType, memoryview] | None:
    """The thief knows roughly how many records passed; allow for the handshake's few."""
    for _ in range(8):
        try:
            return keys.open(header, body)
        except Exception:
            keys.sequence += 1
    keys.sequence -= 8
    return None


def _per_rekey(total: RekeyCost, rekeys: int) -> RekeyCost:
    n = max(rekeys, 1)
    return RekeyCost(total.cpu_seconds / n, total.wire_bytes // n, total.round_trips, total.messages)


def _attack(outcome: Outcome, records: list[tuple[float, bytes, bytes]],
            read: Callable[[bytes, bytes], bool]) -> None:
    start_time = records[0][0] if records else 0.0
    sent = 0
    for index, (when, header, body) in enumerate(records):
        ok = read(header, body)
        outcome.readable_after_theft.append(ok)
        if not ok and outcome.healed_at is None:
            outcome.healed_at = index
            outcome.healed_after_bytes = sent
            outcome.healed_after_seconds = when - start_time
        sent += len(header) + len(body)


def write_report(outcomes: list[Outcome], settings: Settings, out: Path, costs: SideCost | None = None,
                 series: list[Series] | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# Post-compromise security: measured healing", "",
             f"Run: {time.strftime('%Y-%m-%d %H:%M:%S')}, {platform.platform()}, Python {sys.version.split()[0]}, "
             f"cryptography {metadata.version('cryptography')}, mls-transport {metadata.version('mls-transport')}.",
             f"{settings.records} records of {settings.record_size} bytes, a rekey every {settings.rekey_every} "
             f"records, theft of the client's traffic secret at record {settings.theft_at}.", "",
             "TLS 1.3 KeyUpdate, re-handshake, PSK resumption (with and without DHE) and Extended Key "
             "Update are *models* of their key schedules on this project's TLS 1.3 record layer (no Python "
             "TLS stack offers KeyUpdate control or EKU); mlstls and mlsquic are the real connections "
             "(for QUIC the rows count packets, not records). The attacker holds "
             "the client's traffic secret and, for the models, the session's main/resumption secret.", "",
             "| mechanism | records read after theft | healed at record (after theft) | bytes until healed "
             "| seconds until healed | CPU per rekey (ms) | bytes per rekey | round trips |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for o in outcomes:
        read = sum(o.readable_after_theft)
        healed = "never" if o.healed_at is None else str(o.healed_at)
        lines.append(f"| {o.mechanism} | {read}/{len(o.readable_after_theft)} | {healed} | "
                     f"{o.healed_after_bytes if o.healed_after_bytes is not None else '-'} | "
                     f"{f'{o.healed_after_seconds:.3f}' if o.healed_after_seconds is not None else '-'} | "
                     f"{1000 * o.cost.cpu_seconds:.3f} | {o.cost.wire_bytes or '-'} | {o.cost.round_trips} |")
    if costs is not None:
        models = {o.mechanism: o for o in outcomes}
        eku = models.get("tls-eku")
        lines += ["", "## Cost of one MLS rekey on each side (two-party profile, suite 1, sans-I/O, median)", "",
                  "| side | CPU ms | messages | bytes on the wire | round trips |", "| --- | --- | --- | --- | --- |",
                  f"| committer (ConnectionUpdate, then checks the ack) | {costs.committer_ms:.3f} | 1 | | |",
                  f"| replier (applies it, sends EpochKeyUpdate) | {costs.replier_ms:.3f} | 1 | | |",
                  f"| both | {costs.committer_ms + costs.replier_ms:.3f} | {costs.messages} | {costs.wire_bytes} "
                  f"| {costs.round_trips} |"]
        if eku is not None and eku.cost.cpu_seconds:
            ratio = (costs.committer_ms + costs.replier_ms) / (1000 * eku.cost.cpu_seconds)
            lines += ["", f"MLS rekey CPU / EKU-model rekey CPU = {ratio:.1f} (MLS also re-authenticates: "
                      "signatures on the new leaf and the commit)."]
    if series:
        lines += ["", "## Throughput over time (mlstls, real loopback)", "",
                  "| schedule | epochs | median MB/s | longest delivery gap (s) |", "| --- | --- | --- | --- |"]
        for one in series:
            rates = sorted(one.megabytes_per_second)
            lines.append(f"| {one.label} | {one.epochs} | {rates[len(rates) // 2]:.1f} | {one.longest_gap:.3f} |")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        if series:
            fig, ax = plt.subplots(figsize=(8, 3))
            for one in series:
                ax.plot(one.times, one.megabytes_per_second, label=one.label)
            ax.set_xlabel("seconds")
            ax.set_ylabel("MB/s")
            ax.set_title("mlstls throughput while rekeying")
            ax.legend()
            fig.tight_layout()
            fig.savefig(out / "throughput.png", dpi=120)
            lines += ["", "![throughput over time](throughput.png)"]

        fig, ax = plt.subplots(figsize=(8, 0.6 + 0.5 * len(outcomes)))
        for row, o in enumerate(outcomes):
            xs = [i for i, ok in enumerate(o.readable_after_theft) if ok]
            ax.scatter(xs, [row] * len(xs), marker="|", color="crimson")
        ax.set_yticks(range(len(outcomes)), [o.mechanism for o in outcomes])
        ax.set_xlabel("records after the theft (red: the attacker reads it)")
        ax.set_title("Healing timeline")
        fig.tight_layout()
        fig.savefig(out / "healing.png", dpi=120)
        lines += ["", "![healing timeline](healing.png)"]
    except ImportError:
        lines += ["", "(figures need matplotlib: pip install matplotlib)"]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


async def run_series(quick: bool) -> list[Series]:
    schedule = (0.25, 1.0, None) if quick else (1.0, 10.0, 60.0)
    duration = 1.5 if quick else 70.0
    return [await throughput_over_time(interval, duration) for interval in schedule]


async def run_all(settings: Settings) -> list[Outcome]:
    from mls2p.testing import config as profile  # the two ends pin each other's keys

    models = (KeyUpdateSender, RehandshakeSender, PskSender, PskOnlySender, EkuSender)
    outcomes = [await run_model(cls(), settings) for cls in models]
    for every in sorted({max(2, settings.rekey_every // 2), settings.rekey_every, settings.rekey_every * 2}):
        varied = Settings(settings.records, settings.record_size, every, settings.theft_at, settings.interval)
        outcome = await run_mlstls(varied, profile)
        outcome.mechanism = f"mlstls (rekey every {every} records)"
        outcomes.append(outcome)
    outcomes += await run_alongside(settings, profile)
    for mode in ("mls", "alongside"):
        outcomes.append(await run_quic(mode, settings.records, settings.rekey_every, settings.theft_at,
                                       settings.record_size))
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="pcs-report", help="folder for report.md and figures")
    parser.add_argument("--quick", action="store_true", help="a small run (seconds), as CI uses")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    return run_command(functools.partial(experiment, args), prog="pcs.runner", verbose=args.verbose)


async def experiment(args: argparse.Namespace) -> int:
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / ".write-test").touch()
        (out / ".write-test").unlink()
    except OSError as exc:
        raise ConfigurationError(f"cannot write the report to {out}: {exc.strerror} (choose another --out)") from None
    settings = Settings(records=60, rekey_every=10, theft_at=15) if args.quick else Settings()
    outcomes = await run_all(settings)
    series = await run_series(args.quick)
    report = write_report(outcomes, settings, out, mls_rekey_cost(), series)
    print(report.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
