"""The PCS experiment reproduces the expected results from real decryption attempts on real stacks, not constants."""

from __future__ import annotations

import asyncio
import csv

import pytest

from examples.pcs import full_state
from examples.pcs.full_state import FullStateOutcome, Mode
from examples.pcs.mechanisms import Outcome
from examples.pcs.runner import Settings, run_all, run_mlstls, write_report

SETTINGS = Settings(records=50, rekey_every=10, theft_at=15)


@pytest.fixture(scope="module")
def outcomes() -> dict[str, Outcome]:
    return {o.mechanism: o for o in asyncio.run(run_all(SETTINGS, quick=True))}


@pytest.fixture(scope="module")
def thieves() -> dict[Mode, FullStateOutcome]:
    """Every full-state mode on a simulated clock (well under a second, whatever the machine)."""
    return {o.mode: o for o in full_state.run_modes()}


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
    # and that confirmation (a round trip: up to 4 records on an idle machine, more on a loaded one, so the
    # mlstls runs count it) still use the old keys, none after it.
    round_trip = o.confirmation_lags[0] if o.confirmation_lags else 4
    assert o.rekey_marks[0] <= o.healed_at <= o.rekey_marks[0] + max(4, round_trip) + 2, (
        o.healed_at, o.rekey_marks, o.confirmation_lags)
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


def test_report_table_figures_and_data(outcomes: dict[str, Outcome], thieves: dict[Mode, FullStateOutcome],
                                      tmp_path) -> None:
    report = write_report(list(outcomes.values()), SETTINGS, tmp_path, full_state=list(thieves.values()))
    text = report.read_text()
    keyupdate = outcomes["tls13-keyupdate"]
    after = len(keyupdate.readable_after_theft)
    assert f"| tls13-keyupdate | tlslite-ng | no | never | {after}/{after} records |" in text
    assert "| tls-eku (model) | model |" in text
    with (tmp_path / "healing.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sum(1 for r in rows if r["mechanism"] == "tls13-keyupdate") == after
    assert (tmp_path / "costs.csv").read_text().count("\n") >= 9
    control = thieves[Mode("server", False, "client")]
    read, captured = control.read()
    n = control.rekeys
    assert (f"| (b) server only | off | client | at a key switch | {n} | {control.committers} | {n}/{n} | 0/0 | "
            f"{control.followed} | never | never | {read}/{captured} |") in text
    with (tmp_path / "full_state.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["mode"] == control.mode.label]
    assert len(rows) == captured and sum(int(r["readable_by_thief"]) for r in rows) == read


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


# -- the full-state thief: a copy of the victim's whole session, on a simulated clock ---------------------------

TURNS_ON = [Mode(policy, True, victim) for policy in full_state.POLICIES for victim in ("client", "server")]


@pytest.mark.parametrize("mode", TURNS_ON, ids=lambda m: m.label)
def test_with_turns_the_full_state_thief_is_locked_out_at_the_victims_first_commit(
        thieves: dict[Mode, FullStateOutcome], mode: Mode) -> None:
    o = thieves[mode]
    assert o.rekeys >= 10, o.committers
    assert o.victim_commit is not None and o.victim_commit <= 2, o.committers  # turn-taking's bound
    assert o.locked_out_at == o.victim_commit  # exactly at the victim's own commit...
    assert o.read_from_epoch(o.theft_epoch + o.victim_commit) == 0  # ...and nothing from it on
    # Before it, the thief read every record, the peer's commit included: it is a full-state thief.
    before = [ok for ok, epoch in zip(o.readable, o.epochs, strict=True) if epoch < o.theft_epoch + o.victim_commit]
    assert before and all(before)
    assert o.followed == o.victim_commit - 1
    assert o.commits[mode.victim, False] >= 1 and not o.commits[mode.victim, True]  # its own commit: refused
    assert o.pre_theft_records > 0 and o.pre_theft_read == 0  # nothing from before the theft


def test_without_turns_a_thief_of_the_client_reads_to_the_end_when_only_the_server_rekeys(
        thieves: dict[Mode, FullStateOutcome]) -> None:
    """Control: the old behaviour with the README's configuration; the client never commits."""
    o = thieves[Mode("server", False, "client")]
    assert o.committers == "s" * o.rekeys and o.rekeys >= 10
    assert o.victim_commit is None and o.locked_out_at is None
    assert o.readable and all(o.readable) and o.followed == o.rekeys
    assert o.pre_theft_read == 0


def test_without_turns_the_side_that_commits_every_time_locks_its_thief_out_at_once(
        thieves: dict[Mode, FullStateOutcome]) -> None:
    for mode in (Mode("server", False, "server"), Mode("client", False, "client")):
        o = thieves[mode]
        assert o.victim_commit == o.locked_out_at == 1 and o.read_from_epoch(o.theft_epoch + 1) == 0


def test_a_theft_in_the_middle_of_an_epoch_reads_that_epochs_earlier_records_and_nothing_older(
        thieves: dict[Mode, FullStateOutcome]) -> None:
    """An epoch's record keys do not change within it: what was sent under them before the theft opens too."""
    for victim in ("client", "server"):
        o = thieves[Mode("both", True, victim, full_state.Settings().mid_epoch)]
        assert o.pre_theft_same_epoch > 0 and o.pre_theft_read == o.pre_theft_same_epoch
        assert o.locked_out_at == o.victim_commit and o.victim_commit is not None and o.victim_commit <= 2
