"""Post-compromise security, measured: steal keys mid-connection, try to read everything after.

    python -m examples.pcs.runner --out report/ [--quick]

Every mechanism runs over loopback through a relay that captures what the
client sends.  At record ``theft_at`` the thief receives what a key log (or a
memory dump of the client) holds at that moment; after the run it tries to
decrypt every later captured record (packet, for QUIC) with what it stole and
whatever it can derive from it.  Baselines run on real stacks: TLS 1.3
KeyUpdate and PSK resumption on tlslite-ng, full re-handshakes on OpenSSL,
RFC 9001 key updates on aioquic; Extended Key Update has no implementation and
is a model, labelled so.  MLS runs as this project's mlstls and mlsquic.  The
report (Markdown, CSV and PNG) is written to ``--out``; docs/pcs.md explains
the method.  A second experiment plays a thief of one side's whole stored
session against mlstls on a simulated clock, with turn-taking on and off
(:mod:`examples.pcs.full_state`).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

from mls2p.command import run_command
from mls2p.errors import ConfigurationError
from mlstls import MlsTlsConfiguration, MlsTlsWriter, TlsSettings, open_connection, start_server
from mlstls.alongside import AlongsideConnection
from mlstls.config import HousleyConfig
from mlstls.connection import CLIENT_LABEL, MlsTlsConnection
from mlstls.record import aead_spec

from . import full_state
from .costs import (
    Series,
    eku_model_cost,
    keyupdate_cost,
    mls_rekey_cost,
    profile,
    quic_rekey_cost,
    rehandshake_cost,
    resumption_cost,
    throughput_over_time,
)
from .mechanisms import EkuModel, Outcome, RekeyCost, StolenKeys
from .quic import run_aioquic_key_update, run_quic
from .real_tls import Certificate, run_real_tls
from .relay import SETTLE, TO_SERVER, TcpRelay
from .report import write_report
from .tls_thief import APPLICATION_DATA, SEQUENCE_SEARCH, KeyFollower, suite_spec


@dataclass(frozen=True)
class Settings:
    records: int = 120
    record_size: int = 1024
    rekey_every: int = 20
    theft_at: int = 30
    interval: float = 0.001


async def run_eku_model(settings: Settings) -> Outcome:
    """The EKU model: records sealed in memory (no network: nothing implements EKU to talk to)."""
    model = EkuModel()
    outcome = Outcome(model.name, settings.theft_at, settings.records, stack="model")
    thief: StolenKeys | None = None
    for i in range(settings.records):
        if i == settings.theft_at:
            thief = StolenKeys(model.secret, model.keys.sequence)
        if i and i % settings.rekey_every == 0:
            model.rekey()
            outcome.rekeys += 1
            if thief is not None:
                outcome.rekey_marks.append(len(outcome.readable_after_theft))
        record = model.seal(bytes(settings.record_size))
        if thief is not None:
            outcome.record(time.perf_counter(), thief.read(record[:5], record[5:]), len(record))
    return outcome


async def run_mlstls(settings: Settings, *, alongside: bool = False, housley: bool = False) -> list[Outcome]:
    """A real mlstls connection through the relay, in place of TLS, alongside TLS 1.3, or inside the TLS 1.3
    handshake (``housley``: tlslite-ng's TLS 1.3 records, keys from the MLS exporter)."""
    keylog: list[bytes] = []
    server_tls = client_tls = None
    if alongside:
        certificate = Certificate()
        server_tls = TlsSettings(certfile=certificate.cert, keyfile=certificate.key)
        client_tls = TlsSettings(cafile=certificate.cert, server_hostname="localhost", keylog=keylog.append)

    async def drain(reader: asyncio.StreamReader, writer: MlsTlsWriter) -> None:
        while await reader.read(1 << 16):
            pass

    mode = HousleyConfig(tls_suites=(0x1301,)) if housley else None  # TLS_AES_128_GCM_SHA256
    server = await start_server(drain, "127.0.0.1", 0, configuration=MlsTlsConfiguration(
        profile(b"s"), is_client=False, tls=server_tls, housley=mode))
    relay = TcpRelay(("127.0.0.1", server.sockets[0].getsockname()[1]))
    port = await relay.start()
    _, writer = await open_connection("127.0.0.1", port, configuration=MlsTlsConfiguration(
        profile(b"c"), tls=client_tls, housley=mode))
    loot: tuple[bytes, bytes | None, str | None] | None = None
    theft_time, rekey_times = 0.0, []
    lags: list[int] = []  # records written after each rekey before its confirmation switched our keys
    for i in range(settings.records):
        if i == settings.theft_at:
            await asyncio.sleep(SETTLE)
            loot, theft_time = _steal(writer.connection, keylog), time.perf_counter()
        if i and i % settings.rekey_every == 0:
            await asyncio.sleep(SETTLE)
            rekey_times.append(time.perf_counter())
            epoch_before = writer.epoch
            writer.rekey()
            lags.append(0)
        writer.write(bytes(settings.record_size))
        if lags and writer.epoch == epoch_before:
            lags[-1] += 1
        await writer.drain()
        await asyncio.sleep(settings.interval)
    await asyncio.sleep(0.1)
    writer.close()
    server.close()
    relay.close()
    if loot is None:
        raise RuntimeError(f"the run ended before record {settings.theft_at}")
    record_secret, tls_secret, tls_cipher = loot
    records = [r for capture in relay.captures for r in capture.records(TO_SERVER)
               if r[1][0] == APPLICATION_DATA and r[0] > theft_time]
    thieves = [(f"mlstls (rekey every {settings.rekey_every} records)", KeyFollower(aead_spec(1), record_secret,
                                                                                    search=SEQUENCE_SEARCH))]
    if housley:
        thieves = [("TLS 1.3 using MLS handshake: thief with the TLS traffic secret",
                    KeyFollower(suite_spec("TLS_AES_128_GCM_SHA256"), record_secret, search=SEQUENCE_SEARCH))]
    if alongside:
        assert tls_secret is not None and tls_cipher is not None
        thieves = [("mlstls alongside: thief with the record secret",
                    KeyFollower(aead_spec(1), record_secret, search=SEQUENCE_SEARCH)),
                   ("mlstls alongside: thief with every TLS secret",
                    KeyFollower(suite_spec(tls_cipher), tls_secret, search=SEQUENCE_SEARCH))]
    outcomes = []
    for name, thief in thieves:
        outcome = Outcome(name, settings.theft_at, settings.records, rekeys=len(rekey_times),
                          stack="mlstls alongside pyOpenSSL" if alongside else
                          "mlstls inside a tlslite-ng TLS 1.3 handshake" if housley else "mlstls")
        for when, header, body in records:
            outcome.record(when, thief.open(header, body) is not None, len(header) + len(body))
        outcome.mark_rekeys([r[0] for r in records], [t for t in rekey_times if t > theft_time])
        outcome.confirmation_lags = [lag for t, lag in zip(rekey_times, lags, strict=True) if t > theft_time]
        outcomes.append(outcome)
    return outcomes


def _steal(connection: object, keylog: list[bytes]) -> tuple[bytes, bytes | None, str | None]:
    """(the client's current record secret, its TLS traffic secret, the TLS cipher) at the theft."""
    if isinstance(connection, AlongsideConnection):
        inner = connection.inner
        if inner is None:
            raise RuntimeError("no MLS connection inside TLS after the handshake")
        tls = next(bytes.fromhex(line.split()[-1].decode()) for line in keylog
                   if line.startswith(b"CLIENT_TRAFFIC_SECRET_0"))
        return inner.traffic_secret(CLIENT_LABEL), tls, connection.tls_cipher
    if isinstance(connection, MlsTlsConnection):
        return connection.traffic_secret(CLIENT_LABEL), None, None
    if hasattr(connection, "traffic_secret"):  # the Housley mode: the client's TLS application traffic secret
        return connection.traffic_secret(True), None, None
    raise TypeError(f"no thief for a {type(connection).__name__} here")


Step = tuple[str, Callable[[], Awaitable[list[Outcome]]]]


def _one(coroutine: Callable[[], Awaitable[Outcome]]) -> Callable[[], Awaitable[list[Outcome]]]:
    async def run() -> list[Outcome]:
        return [await coroutine()]
    return run


def steps(settings: Settings) -> list[Step]:
    """Every mechanism's run, in report order."""
    s = settings
    found: list[Step] = [
        ("TLS 1.3 KeyUpdate (tlslite-ng)",
         _one(lambda: run_real_tls("keyupdate", s.records, s.record_size, s.rekey_every, s.theft_at))),
        ("TLS 1.3 full re-handshake (OpenSSL)",
         _one(lambda: run_real_tls("rehandshake", s.records, s.record_size, s.rekey_every, s.theft_at))),
        ("TLS 1.3 resumption, psk_ke (tlslite-ng)",
         _one(lambda: run_real_tls("psk_ke", s.records, s.record_size, s.rekey_every, s.theft_at))),
        ("TLS 1.3 resumption, psk_dhe_ke (tlslite-ng)",
         _one(lambda: run_real_tls("psk_dhe_ke", s.records, s.record_size, s.rekey_every, s.theft_at))),
        ("Extended Key Update (model)", _one(lambda: run_eku_model(s))),
    ]
    for every in sorted({max(2, s.rekey_every // 2), s.rekey_every, s.rekey_every * 2}):
        found.append((f"mlstls, rekey every {every} records",
                      functools.partial(run_mlstls, replace(s, rekey_every=every))))
    found += [
        ("mlstls alongside TLS 1.3", functools.partial(run_mlstls, s, alongside=True)),
        ("TLS 1.3 using MLS handshake (tlslite-ng)", functools.partial(run_mlstls, s, housley=True)),
        ("QUIC key update (aioquic)",
         _one(lambda: run_aioquic_key_update(s.records, s.rekey_every, s.theft_at, s.record_size))),
        ("mlsquic QUIC-MLS", _one(lambda: run_quic("mls", s.records, s.rekey_every, s.theft_at, s.record_size))),
        ("mlsquic alongside", _one(lambda: run_quic("alongside", s.records, s.rekey_every, s.theft_at,
                                                    s.record_size))),
    ]
    return found


def attach_costs(outcomes: list[Outcome], quick: bool) -> None:
    """Each mechanism's cost per rekey, measured alone with both sides in this process."""
    rounds = 5 if quick else 30
    side = mls_rekey_cost(rounds)
    mls = RekeyCost((side.committer_ms + side.replier_ms) / 1000, side.wire_bytes, 1.0, 2,
                    "two-party profile, sans-I/O, committer + replier")
    costs = {"tls13-keyupdate": keyupdate_cost(rounds), "tls13-rehandshake": rehandshake_cost(rounds * 3),
             "tls13-resumption-psk-ke": resumption_cost("psk_ke", max(3, rounds // 3)),
             "tls13-resumption-psk-dhe-ke": resumption_cost("psk_dhe_ke", max(3, rounds // 3)),
             "tls-eku (model)": eku_model_cost(rounds * 3),
             "quic-key-update (aioquic)": quic_rekey_cost("aioquic", rounds),
             "mlsquic (QUIC-MLS)": quic_rekey_cost("mls", rounds),
             "mlsquic alongside": quic_rekey_cost("alongside", rounds)}
    for outcome in outcomes:
        outcome.cost = costs.get(outcome.mechanism, mls)
        outcome.new_connection = outcome.mechanism.startswith(("tls13-rehandshake", "tls13-resumption"))


async def run_all(settings: Settings, *, quick: bool = True,
                  status: Callable[[str], None] = lambda line: None) -> list[Outcome]:
    """Every mechanism, then the costs; ``status`` hears one line per step."""
    outcomes: list[Outcome] = []
    plan = steps(settings)
    started = time.monotonic()
    for number, (label, step) in enumerate(plan, 1):
        status(f"[{number}/{len(plan) + 1}] {label}")
        outcomes += await step()
    status(f"[{len(plan) + 1}/{len(plan) + 1}] cost of one rekey per mechanism")
    await asyncio.to_thread(attach_costs, outcomes, quick)
    status(f"done in {time.monotonic() - started:.0f} s")
    return outcomes


async def run_series(quick: bool) -> list[Series]:
    schedule = (0.25, 1.0, None) if quick else (1.0, 10.0, 60.0)
    duration = 1.5 if quick else 70.0
    return [await throughput_over_time(interval, duration) for interval in schedule]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="pcs-report", help="folder for report.md, the CSV files and figures")
    parser.add_argument("--quick", action="store_true", help="a small run (seconds), as CI uses")
    parser.add_argument("--no-turns", action="store_true",
                        help="full-state thief: only the modes without turn-taking (RekeyPolicy(take_turns=False))")
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

    def status(line: str) -> None:
        print(f"pcs {line}", file=sys.stderr, flush=True)

    outcomes = await run_all(settings, quick=args.quick, status=status)
    status("full-state thief, turn-taking on and off (simulated clock)")
    thieves = full_state.run_modes(turns=(False,) if args.no_turns else (False, True))
    status("throughput over time while rekeying")
    series = await run_series(args.quick)
    report = write_report(outcomes, settings, out, series, thieves)
    print(f"report: {report} (figures and CSV data beside it)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

