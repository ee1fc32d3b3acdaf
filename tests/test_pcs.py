"""The PCS experiment reproduces the expected results from real decryption attempts, not constants."""

from __future__ import annotations

import asyncio

from examples.pcs.runner import Settings, run_all, write_report

SETTINGS = Settings(records=50, rekey_every=10, theft_at=15)


def test_healing_matches_the_theory(tmp_path) -> None:
    outcomes = {o.mechanism: o for o in asyncio.run(run_all(SETTINGS))}
    keyupdate = outcomes["tls13-keyupdate"]
    assert keyupdate.healed_at is None and all(keyupdate.readable_after_theft)  # never heals
    psk_only = outcomes["tls13-psk-ke"]  # the stolen resumption secret predicts the next keys
    assert psk_only.healed_at is None and all(psk_only.readable_after_theft)
    for name in ("tls13-rehandshake", "tls13-psk-dhe", "tls-eku"):
        o = outcomes[name]
        # Readable exactly until the first rekey after the theft (record 20), unreadable after.
        assert o.healed_at == 5 and not any(o.readable_after_theft[5:]), name
    mls = outcomes[f"mlstls (rekey every {SETTINGS.rekey_every} records)"]
    assert mls.healed_at is not None and 0 < mls.healed_at <= SETTINGS.rekey_every + 5
    assert not any(mls.readable_after_theft[mls.healed_at:])  # heals for good at the confirmed commit
    assert mls.rekeys >= 3 and mls.cost.wire_bytes > 0
    heal = [outcomes[f"mlstls (rekey every {n} records)"].healed_at for n in (5, 10, 20)]
    assert all(h is not None for h in heal) and heal[0] <= heal[2]  # rekeying more often heals sooner
    both = outcomes["mlstls alongside (TLS + MLS secrets)"]
    assert both.healed_at is not None and not any(both.readable_after_theft[both.healed_at:])
    tls_only = outcomes["mlstls alongside (TLS secret only)"]
    # The thief opened the outer TLS records (so it saw the inner records) but read none of them.
    assert tls_only.readable_after_theft and not any(tls_only.readable_after_theft)
    for name in ("mlsquic (QUIC-MLS)", "mlsquic alongside"):
        quic = outcomes[name]  # the thief reads packets until the first Key Phase flip, none after
        assert quic.healed_at is not None and quic.healed_at > 0, name
        assert not any(quic.readable_after_theft[quic.healed_at:]), name
    report = write_report(list(outcomes.values()), SETTINGS, tmp_path)
    text = report.read_text()
    after = len(keyupdate.readable_after_theft)
    assert after == 35 + 3  # every data record after the theft, and the three KeyUpdate messages
    assert f"| tls13-keyupdate | {after}/{after} | never |" in text


def test_throughput_series_and_rekey_costs_are_measured() -> None:
    from examples.pcs.costs import mls_rekey_cost, throughput_over_time

    series = asyncio.run(throughput_over_time(0.2, 2.0))
    assert series.epochs >= 2 and max(series.megabytes_per_second) > 0
    cost = mls_rekey_cost(rounds=5)
    assert cost.committer_ms > 0 and cost.replier_ms > 0 and 400 < cost.wire_bytes < 2000


def test_quic_thief_reads_everything_without_rekeys() -> None:
    """Control: with no rekey the same attack reads every later packet, so healing is the rekey's doing."""
    from examples.pcs.quic import run_quic

    outcome = asyncio.run(run_quic("mls", records=30, rekey_every=10_000, theft_at=10))
    assert outcome.readable_after_theft and all(outcome.readable_after_theft)
