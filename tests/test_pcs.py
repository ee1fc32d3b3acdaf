"""The PCS experiment reproduces the expected results from real decryption attempts on real stacks, not constants."""

from __future__ import annotations

import asyncio
import csv

import pytest

from examples.pcs.mechanisms import Outcome
from examples.pcs.runner import Settings, run_all, run_mlstls, write_report

SETTINGS = Settings(records=50, rekey_every=10, theft_at=15)


@pytest.fixture(scope="module")
def outcomes() -> dict[str, Outcome]:
    return {o.mechanism: o for o in asyncio.run(run_all(SETTINGS, quick=True))}


@pytest.mark.parametrize("name", ["tls13-keyupdate", "quic-key-update (aioquic)", "tls13-resumption-psk-ke"])
def test_real_key_updates_never_heal(outcomes: dict[str, Outcome], name: str) -> None:
    """tlslite-ng's KeyUpdate, aioquic's key update, psk_ke resumption: the thief keeps reading after every update."""
    o = outcomes[name]
    assert len(o.rekey_marks) >= 3  # three updates happened after the theft...
    assert o.readable_after_theft and all(o.readable_after_theft) and not o.heals  # ...and it read through all


@pytest.mark.parametrize("name", ["tls13-rehandshake", "tls13-resumption-psk-dhe-ke", "tls-eku (model)"])
def test_fresh_key_exchange_heals_at_the_first_rekey(outcomes: dict[str, Outcome], name: str) -> None:
    o = outcomes[name]
    first_rekey = o.rekey_marks[0]
    assert o.heals and o.healed_at is not None
    # a closing connection's close_notify (under the old keys) may still be read right after the rekey
    assert first_rekey <= o.healed_at <= first_rekey + 1, (o.healed_at, o.rekey_marks)


@pytest.mark.parametrize("name", [f"mlstls (rekey every {n} records)" for n in (5, 10, 20)]
                         + ["mlstls alongside: thief with the record secret", "mlsquic (QUIC-MLS)",
                            "mlsquic alongside"])
def test_mls_locks_the_thief_out_at_the_first_confirmed_commit(outcomes: dict[str, Outcome], name: str) -> None:
    o = outcomes[name]
    assert o.heals and o.healed_at is not None and o.rekey_marks
    # The committer switches when the peer's EpochKeyUpdate arrives: the records sent between its commit
    # and that confirmation (a round trip) still use the old keys, none after it.
    assert o.rekey_marks[0] <= o.healed_at <= o.rekey_marks[0] + 4, (o.healed_at, o.rekey_marks)
    assert o.cost.cpu_seconds > 0 and 400 < o.cost.wire_bytes < 2000 and o.cost.round_trips == 1


def test_a_thief_of_every_tls_secret_reads_nothing_alongside(outcomes: dict[str, Outcome]) -> None:
    o = outcomes["mlstls alongside: thief with every TLS secret"]
    assert o.readable_after_theft and not any(o.readable_after_theft)


def test_costs_and_connections(outcomes: dict[str, Outcome]) -> None:
    assert outcomes["tls13-keyupdate"].cost.wire_bytes == 5 + 5 + 1 + 16  # one KeyUpdate record
    assert outcomes["quic-key-update (aioquic)"].cost.wire_bytes == 0  # only the Key Phase bit flips
    for name in ("tls13-rehandshake", "tls13-resumption-psk-ke", "tls13-resumption-psk-dhe-ke"):
        assert outcomes[name].new_connection and outcomes[name].cost.wire_bytes > 500
    assert not outcomes["mlsquic (QUIC-MLS)"].new_connection
    assert all(o.cost.cpu_seconds > 0 for o in outcomes.values() if o.cost.wire_bytes)


def test_report_table_figures_and_data(outcomes: dict[str, Outcome], tmp_path) -> None:
    report = write_report(list(outcomes.values()), SETTINGS, tmp_path)
    text = report.read_text()
    keyupdate = outcomes["tls13-keyupdate"]
    after = len(keyupdate.readable_after_theft)
    assert f"| tls13-keyupdate | tlslite-ng | no | never | {after}/{after} records |" in text
    assert "| tls-eku (model) | model |" in text
    with (tmp_path / "healing.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sum(1 for r in rows if r["mechanism"] == "tls13-keyupdate") == after
    assert (tmp_path / "costs.csv").read_text().count("\n") >= 9


def test_without_rekeys_the_mls_thief_reads_everything() -> None:
    """Control: the same attack on mlstls with no rekey reads every later record, so healing is the rekey's doing."""
    outcome = asyncio.run(run_mlstls(Settings(records=30, rekey_every=10_000, theft_at=10)))[0]
    assert outcome.readable_after_theft and all(outcome.readable_after_theft)


def test_quic_thief_reads_everything_without_rekeys() -> None:
    from examples.pcs.quic import run_quic

    outcome = asyncio.run(run_quic("mls", records=30, rekey_every=10_000, theft_at=10))
    assert outcome.readable_after_theft and all(outcome.readable_after_theft)


def test_throughput_series_marks_its_rekeys() -> None:
    from examples.pcs.costs import mls_rekey_cost, throughput_over_time

    series = asyncio.run(throughput_over_time(0.2, 2.0))
    assert series.epochs >= 2 and len(series.rekey_times) >= 2 and max(series.megabytes_per_second) > 0
    cost = mls_rekey_cost(rounds=5)
    assert cost.committer_ms > 0 and cost.replier_ms > 0 and 400 < cost.wire_bytes < 2000
