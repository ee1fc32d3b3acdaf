"""The quantum thief: who reads what after a one-time theft, against classical MLS, X-Wing MLS and APQ-MLS.

    python -m examples.pcs.quantum [--rekeys N] [--theft-at K] [--full-every N]

The thief can solve the classical problems: it computes the private key of
every X25519 public key the traditional group ever shows (simulated by handing
it, at each commit, the classical private keys the receiving member holds; it
never gets an ML-KEM or X-Wing private key, which a quantum computer cannot
compute).  Once, at epoch ``theft_at``, it also steals the victim's epoch
secrets (the traffic secret and the rest of that epoch's key schedule, not its
private keys).  From then on it runs the receiver's side of every commit with
its own key-schedule chain: it reads an epoch if the exporter it derives equals
the members' (every figure comes from these derivations, none is a constant).

Expected, and checked by tests/test_quantum_thief.py:
* classical MLS (suite 1): it reads every later epoch (no rekey heals against
  a quantum attacker);
* X-Wing MLS (0x004D) every rekey: it reads the stolen epoch only (the first
  rekey's UpdatePath is X-Wing-encrypted);
* APQ-MLS (T suite 1, PQ suite 0x0051, a FULL rekey every ``full_every``): it
  follows the PARTIAL rekeys and is locked out at the first FULL one, for good.

This is the combiner core (mlscore.apq) between two members in memory; the same
thief against a real connection is :mod:`examples.pcs.quantum_tls`.
"""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass, field
from typing import Literal

from mls2p.testing import apq_two_party, two_party
from mlscore.apq import APQPair, ApqPsks, derive_apq_psk
from mlscore.crypto import XWING_SUITE
from mlscore.errors import MLSError
from mlscore.framing import MLSMessage
from mlscore.group import CommitMessage, Group, GroupConfig
from mlscore.tree.treekem import PathState

Kind = Literal["classical", "xwing", "apq"]
EXPORT = ("pcs", b"quantum thief", 32)


@dataclass
class QuantumOutcome:
    kind: Kind
    theft_epoch: int
    readable: list[bool] = field(default_factory=list)
    """For each epoch from the theft on: whether the thief's derived exporter equals the members'."""
    full_epochs: list[int] = field(default_factory=list)
    """T epochs made by a FULL commit (APQ only)."""
    reason: str = ""
    """Why the thief was locked out, in the words of the processing that failed."""

    @property
    def epochs_read(self) -> int:
        return sum(self.readable)

    @property
    def locked_out_at(self) -> int | None:
        """The first epoch the thief cannot read (None: it reads them all)."""
        return next((self.theft_epoch + i for i, read in enumerate(self.readable) if not read), None)


class Thief:
    """The attacker's copy of the traditional group's key schedule, advanced with quantum-computed keys."""

    def __init__(self, stolen: Group) -> None:
        # the stolen epoch secrets; the private keys it holds are replaced at every step (see follow)
        self.group: Group | None = Group.from_state(stolen.to_state(), config=GroupConfig())
        self.reason = ""
        """Why it was locked out (the error of the first commit it could not process)."""

    def follow(self, commit: MLSMessage, receiver: Group, *, quantum_keys: bool,
               apq_psk: tuple[bytes, bytes] | None = None) -> None:
        """Process ``commit`` as ``receiver`` would, with the thief's own key schedule and, if the suite is
        classical (``quantum_keys``), the receiver's private keys; without them, random ones.  The thief knows
        the APQInfo logic (public), and an APQ PSK only if handed one (``apq_psk``: the control run)."""
        if self.group is None:
            return
        own = self.group
        path_state = (receiver._path_state if quantum_keys  # the attack computes these
                      else PathState.for_leaf(own.suite, receiver.own_leaf, own.suite.generate_hpke_key_pair()[0]))
        probe = Group(suite=own.suite, context=own.context, tree=own.tree, own_leaf=receiver.own_leaf,
                      signature_priv=own.suite.generate_signature_key_pair()[0], path_state=path_state,
                      secrets=own._secrets,  # the stolen chain
                      secret_tree=own._secret_tree,  # and the stolen epoch's handshake keys (PrivateMessage commits)
                      interim_transcript_hash=own.interim_transcript_hash,
                      config=APQPair.shared_config(None, psks := ApqPsks()))
        try:
            with psks.offering(*apq_psk) if apq_psk is not None else contextlib.nullcontext():
                processed = probe.process(commit)
        except MLSError as exc:
            self.group = None  # locked out: every later epoch chains from this one
            self.reason = f"{type(exc).__name__}: {exc}"
            return
        assert isinstance(processed, CommitMessage)
        self.group = processed.group

    def reads(self, honest: Group) -> bool:
        return self.group is not None and self.group.export_secret(*EXPORT) == honest.export_secret(*EXPORT)


def run(kind: Kind, *, rekeys: int = 12, theft_at: int = 3, full_every: int = 4,
        pq_broken: bool = False) -> QuantumOutcome:
    """Alternate rekeys between the two members (ping-pong); the thief steals the victim's (bob's) epoch
    secrets once the T group reaches ``theft_at``.  ``pq_broken`` is the control: the thief also gets every
    APQ PSK (as if ML-KEM fell too), and must then read APQ like classical MLS."""
    if kind == "apq":
        pairs = list(apq_two_party(1, 0x0051))
    else:
        groups = list(two_party(1 if kind == "classical" else XWING_SUITE))
    thief: Thief | None = None
    outcome = QuantumOutcome(kind, theft_at)
    for number in range(rekeys):
        sender, receiver = number % 2, 1 - number % 2
        if kind == "apq":
            if pairs[1].t.epoch == theft_at and thief is None:
                thief = Thief(pairs[1].t)
            if (number + 1) % full_every == 0:
                full = pairs[sender].commit_full()
                t_commit = full.t_message
                before = pairs[receiver].t
                pairs[receiver] = pairs[receiver].process_full(full.pq_message, t_commit)
                pairs[sender] = full.pair
                outcome.full_epochs.append(pairs[sender].t.epoch)
            else:
                t_commit, pairs[sender] = pairs[sender].commit_partial()
                before = pairs[receiver].t
                pairs[receiver] = pairs[receiver].process_partial(t_commit)
            if thief is not None:
                handed = None  # the thief has no PQ secret, except in the control run (ML-KEM broken)
                if pq_broken and outcome.full_epochs and outcome.full_epochs[-1] == pairs[sender].t.epoch:
                    handed = derive_apq_psk(Group.from_state(pairs[sender].pq.to_state()), 1)
                thief.follow(t_commit, before, quantum_keys=True, apq_psk=handed)
                outcome.readable.append(thief.reads(pairs[1].t))
        else:
            if groups[1].epoch == theft_at and thief is None:
                thief = Thief(groups[1])
            result = groups[sender].commit()
            before = groups[receiver]
            processed = before.process(result.message)
            assert isinstance(processed, CommitMessage)
            groups[sender], groups[receiver] = result.group, processed.group
            if thief is not None:
                thief.follow(result.message, before, quantum_keys=kind == "classical")
                outcome.readable.append(thief.reads(groups[1]))
    # the stolen epoch itself, read by definition of the theft, leads the list
    outcome.readable.insert(0, True)
    outcome.reason = thief.reason if thief is not None else ""
    return outcome


def arguments(argv: list[str] | None, description: str | None, *, first_theft: int = 1) -> argparse.Namespace:
    """The quantum thief's options (this command's and examples.pcs.quantum_tls's)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rekeys", type=int, default=12)
    parser.add_argument("--theft-at", type=int, default=3)
    parser.add_argument("--full-every", type=int, default=4)
    args = parser.parse_args(argv)
    if args.rekeys < 1 or args.theft_at < first_theft or args.full_every < 1:
        parser.error(f"--rekeys and --full-every must be at least 1, --theft-at at least {first_theft}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv, __doc__)
    print(f"quantum thief: steals epoch {args.theft_at}'s secrets, computes every X25519 private key; "
          f"{args.rekeys} rekeys, ping-pong; APQ: one rekey in {args.full_every} FULL, whoever commits it "
          "(examples.pcs.quantum_tls counts each side's own commits, as RekeyPolicy.full_every does)")
    for kind, label in (("classical", "classical MLS (suite 1)"), ("xwing", "X-Wing MLS (0x004D)"),
                        ("apq", f"APQ-MLS (1 + 0x0051), FULL every {args.full_every}")):
        outcome = run(kind, rekeys=args.rekeys, theft_at=args.theft_at, full_every=args.full_every)  # type: ignore[arg-type]
        marks = "".join("R" if read else "." for read in outcome.readable)
        locked = outcome.locked_out_at
        print(f"  {label:36} epochs {outcome.theft_epoch}..: {marks}  read {outcome.epochs_read}, "
              + ("never locked out" if locked is None else f"locked out at epoch {locked}")
              + (f" (FULL at {outcome.full_epochs})" if outcome.full_epochs else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
