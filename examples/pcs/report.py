"""The PCS report: one table for every mechanism, figures (PNG) and the CSV data behind each figure."""

from __future__ import annotations

import csv
import platform
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from .costs import Series
from .full_state import POLICY_NAMES, FullStateOutcome, Side
from .mechanisms import Outcome


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def table(outcomes: list[Outcome]) -> list[str]:
    lines = ["| mechanism | stack | heals | first unreadable record after compromise | read by the thief "
             "| CPU per rekey, both sides (ms) | bytes per rekey | round trips | new connection |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for o in outcomes:
        first = "never" if o.healed_at is None else f"{o.unit[:-1]} {o.healed_at + 1}"
        lines.append(
            f"| {o.mechanism} | {o.stack} | {'yes' if o.heals else 'no'} | {first} | "
            f"{sum(o.readable_after_theft)}/{len(o.readable_after_theft)} {o.unit} | "
            f"{1000 * o.cost.cpu_seconds:.3f} | {o.cost.wire_bytes} | {o.cost.round_trips:g} | "
            f"{'yes' if o.new_connection else 'no'} |")
    return lines


def write_report(outcomes: list[Outcome], settings: Any, out: Path, series: list[Series] | None = None,
                 full_state: list[FullStateOutcome] | None = None) -> Path:
    """report.md, healing/full_state/throughput/costs as PNG (with matplotlib) and CSV; returns report.md's path."""
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Post-compromise security: measured healing", "",
        f"Run {time.strftime('%Y-%m-%d %H:%M:%S')} on {platform.platform()}, Python {sys.version.split()[0]}; "
        f"cryptography {_version('cryptography')}, tlslite-ng {_version('tlslite-ng')}, aioquic "
        f"{_version('aioquic')}, mls-transport {_version('mls-transport')}.",
        f"{settings.records} application records of {settings.record_size} bytes, a rekey every "
        f"{settings.rekey_every} records, the thief's loot taken at record {settings.theft_at}.", "",
        *table(outcomes), "",
        "**Columns.** *heals*: from some record on, the thief reads nothing more. *first unreadable after "
        "compromise*: counting the records the client sent after the compromise, the first one the thief could "
        "not decrypt (\"never\" if it read them all). *read by the thief*: of the records (QUIC: 1-RTT packets) "
        "captured after the compromise. TLS rows count every protected client-to-server record: KeyUpdate "
        "messages and, on a new connection, the client's Finished record count as records too; QUIC rows count "
        "packets, so their numbers are not comparable with the TLS rows, only their shape is. The EKU row is a "
        "model on this project's record layer (no implementation of draft-ietf-tls-extended-key-update exists), "
        "its bytes are the draft's three messages.", "",
        "**Costs** are measured per mechanism with both sides in one process, apart from the run: "
        + _sources(outcomes) + ". tlslite-ng is pure Python, so its CPU figures are far above what OpenSSL "
        "would need for the same messages; the OpenSSL re-handshake row is the fair reference for a TLS "
        "handshake's cost.", "",
        "**What the thief holds.** KeyUpdate, re-handshake and QUIC: the client's current application traffic "
        "secret (as SSLKEYLOGFILE lines give it). Resumption: that, plus the PSK of the ticket the client will "
        "resume with (its resumption secret and ticket nonce, as a memory dump gives them). mlstls/mlsquic: the "
        "client's current record (1-RTT) secret. mlstls alongside: the record secret in one row, every TLS "
        "secret of the connection in the other. Every thief also tries every key it can derive (TLS KeyUpdate's "
        "\"traffic upd\", QUIC's \"quic ku\", a psk_ke connection's whole key schedule).", ""]
    lines += _healing(outcomes, out)
    if full_state:
        lines += _full_state(full_state, out)
    lines += _costs(outcomes, out)
    if series:
        lines += _throughput(series, out)
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return report


def _sources(outcomes: list[Outcome]) -> str:
    """Each cost source once, with the mechanisms it is for."""
    grouped: dict[str, list[str]] = {}
    for o in outcomes:
        grouped.setdefault(o.cost.source, []).append(o.mechanism)
    return "; ".join(f"{', '.join(names)}: {source}" for source, names in grouped.items() if source)


def _pyplot() -> Any | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _healing(outcomes: list[Outcome], out: Path) -> list[str]:
    _csv(out / "healing.csv", ["mechanism", "unit", "index_after_compromise", "seconds_after_compromise",
                               "readable_by_thief", "rekey_before"],
         [(o.mechanism, o.unit, i, f"{o.seconds_after_theft[i]:.4f}", int(ok), int(i in o.rekey_marks))
          for o in outcomes for i, ok in enumerate(o.readable_after_theft)])
    plt = _pyplot()
    if plt is None:
        return ["Healing timeline: healing.csv (install matplotlib for the figure)."]
    fig = _timeline(plt, [(o.mechanism, o.readable_after_theft, {"black": o.rekey_marks}) for o in outcomes],
                    "records (QUIC: packets) after the compromise — red: the thief reads it; ▼ rekey",
                    "Healing timeline")
    return _save(plt, fig, out, "healing", "healing timeline")


Timeline = tuple[str, Sequence[bool], dict[str, Sequence[int]]]
"""One row of a timeline figure: its label, whether the thief read each record, and ▼ marks by colour."""


def _timeline(plt: Any, rows: list[Timeline], xlabel: str, title: str) -> Any:
    """Records the thief reads (red) or not (grey), one row each, marked where something happened."""
    fig, ax = plt.subplots(figsize=(9, 0.8 + 0.45 * len(rows)))
    for row, (_, readable, marks) in enumerate(rows):
        read = [i for i, ok in enumerate(readable) if ok]
        unread = [i for i, ok in enumerate(readable) if not ok]
        ax.scatter(read, [row] * len(read), marker="|", color="crimson", s=60, label="read" if row == 0 else None)
        ax.scatter(unread, [row] * len(unread), marker="|", color="lightgrey", s=60)
        for color, at in marks.items():
            ax.scatter(at, [row + 0.3] * len(at), marker="v", color=color, s=14)
    ax.set_yticks(range(len(rows)), [label for label, _, _ in rows], fontsize=7)
    ax.set_xlim(left=0)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return fig


def _rekey(number: int | None) -> str:
    return "never" if number is None else f"rekey {number}"


def full_state_table(outcomes: list[FullStateOutcome]) -> list[str]:
    lines = ["| rekey policy | turns | victim | theft | rekeys after the theft | committers after the theft "
             "| peer's commits its copy accepted | victim's commits its copy refused | epochs the thief follows "
             "| victim's first own commit | thief locked out at | read after the theft | of them client-to-server "
             "| read from before the theft |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for o in outcomes:
        (read, captured), (c2s, c2s_captured) = o.read(), o.read("c2s")
        m = o.mode
        peer: Side = "server" if m.victim == "client" else "client"
        own = o.commits[m.victim, False] + o.commits[m.victim, True]
        lines.append(
            f"| {POLICY_NAMES[m.policy]} | {'on' if m.take_turns else 'off'} | {m.victim} | {m.theft} | {o.rekeys} | "
            f"{o.committers} | {o.commits[peer, True]}/{o.commits[peer, True] + o.commits[peer, False]} | "
            f"{o.commits[m.victim, False]}/{own} | {o.followed} | {_rekey(o.victim_commit)} | "
            f"{_rekey(o.locked_out_at)} | {read}/{captured} | {c2s}/{c2s_captured} | "
            f"{o.pre_theft_read}/{o.pre_theft_records} |")
    return lines


def _full_state(outcomes: list[FullStateOutcome], out: Path) -> list[str]:
    lines = ["## Full-state thief (mlstls, simulated clock)", "",
             "The thief copies the victim's stored session (`TwoPartySession.to_state()`: the group state with its "
             "leaf private key and epoch secrets) and reads every later record of both directions with its own "
             "receiver code, processing every ConnectionUpdate it reads as the victim would. Each row's figures are "
             "counted from its decryption attempts; an oracle with every epoch's keys opened every record. Request/"
             "response traffic once a simulated second, `RekeyPolicy(max_seconds=10)` on the sides the policy "
             "names, `take_turns` as the turns column says.", "",
             *full_state_table(outcomes), "",
             "**Columns.** *committers*: who made each epoch after the theft (c: client, s: server). *commits its "
             "copy accepted / refused*: of the ConnectionUpdates the thief read and fed to its session copy; a "
             "peer's commit that lost a crossing to the victim's is accepted too, and leads to keys nobody uses. "
             "*epochs the thief follows*: epochs after the theft's of which it read records (each is a commit of "
             "the peer's it processed). *locked out at*: from that rekey's epoch on it read nothing (\"never\": it "
             "read to the end); rekeys count from the theft. *read*: protected records of both directions captured"
             " after the theft. *read from before the theft*: the stolen keys tried on every earlier record with "
             "every sequence number it could have; a theft in the middle of an epoch opens that epoch's earlier "
             "records (an epoch's record keys do not change within it), none older.", ""]
    rows = []
    for o in outcomes:
        victim, peer = _commit_marks(o)
        rows += [(o.mode.label, o.mode.policy, int(o.mode.take_turns), o.mode.victim, o.mode.theft, i, direction,
                  epoch, int(ok), int(i in victim), int(i in peer))
                 for i, (ok, direction, epoch) in enumerate(zip(o.readable, o.directions, o.epochs, strict=True))]
    _csv(out / "full_state.csv", ["mode", "policy", "take_turns", "victim", "theft", "index_after_theft", "direction",
                                  "epoch", "readable_by_thief", "victim_commit_starts", "peer_commit_starts"], rows)
    plt = _pyplot()
    if plt is None:
        return [*lines, "Full-state thief: full_state.csv (install matplotlib for the figure)."]
    fig = _timeline(plt, [(o.mode.label, o.readable, dict(zip(("black", "darkgrey"), _commit_marks(o), strict=True)))
                          for o in outcomes],
                    "records after the theft, both directions — red: read; ▼ victim's commit (grey: peer's)",
                    "Full-state thief: what it reads after the theft")
    return [*lines, *_save(plt, fig, out, "full_state", "full-state thief")]


def _commit_marks(o: FullStateOutcome) -> tuple[list[int], list[int]]:
    """The first record of each epoch after the theft made by the victim's commit, and by the peer's."""
    victim = o.mode.victim[0]
    return o.marks(victim), o.marks("s" if victim == "c" else "c")


def _save(plt: Any, fig: Any, out: Path, name: str, title: str) -> list[str]:
    """Write ``fig`` as ``name``.png beside its ``name``.csv; the report's lines that show it."""
    fig.tight_layout()
    fig.savefig(out / f"{name}.png", dpi=120)
    plt.close(fig)
    return [f"![{title}]({name}.png) (data: {name}.csv)", ""]


def _costs(outcomes: list[Outcome], out: Path) -> list[str]:
    seen: dict[str, Outcome] = {}
    for o in outcomes:  # one bar per mechanism (the mlstls rows share their cost)
        seen.setdefault(o.cost.source + o.mechanism.split(" (")[0].split(":")[0], o)
    rows = list(seen.values())
    _csv(out / "costs.csv", ["mechanism", "cpu_ms_per_rekey_both_sides", "bytes_per_rekey", "round_trips",
                             "new_connection", "source"],
         [(o.mechanism, f"{1000 * o.cost.cpu_seconds:.4f}", o.cost.wire_bytes, o.cost.round_trips,
           int(o.new_connection), o.cost.source) for o in rows])
    plt = _pyplot()
    if plt is None:
        return ["Cost per rekey: costs.csv (install matplotlib for the figure)."]
    fig, (cpu, wire) = plt.subplots(1, 2, figsize=(11, 0.8 + 0.4 * len(rows)))
    names = [o.mechanism for o in rows]
    cpu.barh(names, [1000 * o.cost.cpu_seconds for o in rows], color="steelblue")
    cpu.set_xscale("log")
    cpu.set_xlabel("CPU ms per rekey, both sides (log scale)")
    wire.barh(names, [o.cost.wire_bytes for o in rows], color="darkorange")
    wire.set_xlabel("bytes on the wire per rekey")
    wire.set_xlim(left=0)
    wire.set_yticks([])
    for axis in (cpu, wire):
        axis.tick_params(axis="y", labelsize=7)
    fig.suptitle("Cost of one rekey")
    return _save(plt, fig, out, "costs", "cost per rekey")


def _throughput(series: list[Series], out: Path) -> list[str]:
    lines = ["## Throughput over time (mlstls, real loopback)", "",
             "| schedule | rekeys | median MB/s | longest delivery gap (s) |", "| --- | --- | --- | --- |"]
    for one in series:
        rates = sorted(one.megabytes_per_second)
        lines.append(f"| {one.label} | {one.epochs} | {rates[len(rates) // 2]:.1f} | {one.longest_gap:.3f} |")
    _csv(out / "throughput.csv", ["schedule", "seconds", "megabytes_per_second", "rekey_in_bucket"],
         [(one.label, f"{t:.2f}", f"{rate:.3f}",
           int(any(t <= r < t + (one.times[1] - one.times[0] if len(one.times) > 1 else 0) for r in one.rekey_times)))
          for one in series for t, rate in zip(one.times, one.megabytes_per_second, strict=True)])
    plt = _pyplot()
    if plt is None:
        return [*lines, "", "Throughput: throughput.csv (install matplotlib for the figure)."]
    fig, axes = plt.subplots(len(series), 1, figsize=(9, 1.8 * len(series)), sharex=True, squeeze=False)
    for axis, one in zip(axes[:, 0], series, strict=True):
        axis.plot(one.times, one.megabytes_per_second, color="steelblue")
        for at in one.rekey_times:
            axis.axvline(at, color="crimson", linewidth=0.6)
        axis.set_ylim(bottom=0)
        axis.set_ylabel("MB/s")
        axis.set_title(f"{one.label} (red lines: rekeys)", fontsize=9)
    axes[-1, 0].set_xlabel("seconds")
    return [*lines, "", *_save(plt, fig, out, "throughput", "throughput over time")]
