"""The quantum thief (examples/pcs/quantum.py): classical MLS never heals, X-Wing heals at the first rekey,
APQ-MLS at the first FULL rekey; and the control, a thief who also gets the PQ PSKs, reads APQ throughout
(so the lock-out comes from the PQ secret, not from the experiment); and the same on a real mlstls connection
(examples/pcs/quantum_tls.py), counted in records the thief opens."""

from __future__ import annotations

from examples.pcs import quantum_tls
from examples.pcs.quantum import main, run


def test_classical_mls_never_heals_against_a_quantum_thief() -> None:
    outcome = run("classical", rekeys=10, theft_at=3)
    assert len(outcome.readable) == 10 - 3 + 2 and all(outcome.readable) and outcome.locked_out_at is None


def test_x_wing_heals_at_the_first_rekey() -> None:
    outcome = run("xwing", rekeys=10, theft_at=3)
    assert outcome.readable[0] and not any(outcome.readable[1:]) and outcome.locked_out_at == 4
    assert "cannot decrypt the UpdatePath" in outcome.reason  # no X-Wing private key, no path secret


def test_apq_heals_at_the_first_full_rekey_and_never_lets_the_thief_back() -> None:
    outcome = run("apq", rekeys=12, theft_at=3, full_every=4)
    first_full = outcome.full_epochs[0]
    assert first_full > 4  # at least one PARTIAL rekey after the theft, which the thief follows
    assert outcome.locked_out_at == first_full
    assert all(outcome.readable[:first_full - 3]) and not any(outcome.readable[first_full - 3:])
    assert "unknown application PSK" in outcome.reason  # the PQ group's secret, nothing else, keeps it out


def test_the_control_a_thief_with_the_pq_psks_reads_apq_throughout() -> None:
    outcome = run("apq", rekeys=12, theft_at=3, full_every=4, pq_broken=True)
    assert all(outcome.readable) and outcome.locked_out_at is None


def test_the_command_prints_one_row_per_construction(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["--rekeys", "6", "--theft-at", "2", "--full-every", "3"]) == 0
    out = capsys.readouterr().out
    assert "never locked out" in out and "locked out at epoch 3" in out and "FULL at" in out


# -- the same thief against a real mlstls connection (examples/pcs/quantum_tls.py) ---------------------------

def test_on_a_connection_classical_mls_is_read_to_the_end() -> None:
    outcome = quantum_tls.run("classical", rekeys=6)
    read, total = outcome.read
    assert read == total > 0 and outcome.locked_out_at is None
    assert outcome.epochs_read == sorted(set(outcome.epochs)) and len(outcome.epochs_read) >= 1 + 6


def test_on_a_connection_x_wing_is_read_until_the_first_rekey() -> None:
    outcome = quantum_tls.run("xwing", rekeys=6)
    assert outcome.epochs_read == [outcome.theft_epoch] and outcome.locked_out_at == outcome.theft_epoch + 1
    assert "cannot decrypt the UpdatePath" in outcome.reason


def test_on_a_connection_apq_is_read_until_the_first_full_commit_and_never_after() -> None:
    outcome = quantum_tls.run("apq", rekeys=10, full_every=3)
    (first_full,) = outcome.full_epochs  # the thief sees no commit after it: every later record is closed to it
    assert first_full > outcome.theft_epoch + 1  # PARTIAL rekeys after the theft, which it follows
    assert outcome.epochs_read == list(range(outcome.theft_epoch, first_full))
    assert outcome.locked_out_at == first_full and "unknown application PSK" in outcome.reason
    assert not any(ok for ok, epoch in zip(outcome.readable, outcome.epochs, strict=True) if epoch >= first_full)
