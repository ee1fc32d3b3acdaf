"""The quantum thief on a real connection: the records it reads after a one-time theft, per construction.

    python -m examples.pcs.quantum_tls [--rekeys N] [--theft-at K] [--full-every N]

:mod:`examples.pcs.quantum` plays the thief against the MLS core; this plays it
against a real mlstls client and server (in memory, simulated clock, request and
response once a simulated second, a rekey every second with ping-pong), and
counts the application records it opens.  The thief:

* steals the client's epoch secrets once, when the client reaches epoch
  ``theft_at`` (the traffic secret and the rest of that epoch's key schedule:
  what a memory dump gives, not its private keys);
* can solve the classical problems: at every commit it gets the X25519 private
  keys the receiving side's classical (T) group holds, recorded from the honest
  connection in that epoch; it never gets an ML-KEM or X-Wing private key;
* reads the captured records in order, as mlstls's receiver does
  (:class:`~examples.pcs.full_state.DirectionReader`), and feeds every
  ConnectionUpdate it opens (of a FULL APQ commit, the T half: the PQ half is
  ML-KEM-encrypted) to its own key schedule (:class:`~examples.pcs.quantum.Thief`);
  the record keys of the epoch it reaches come from that schedule's exporter,
  as :meth:`mlstls.connection.MlsTlsConnection.traffic_secret` derives them.

Every figure comes from these decryptions; which epoch each record belongs to
comes from the oracle of :mod:`examples.pcs.full_state`, which must open every
record with the honest keys.  Expected, and checked by
tests/test_quantum_thief.py: classical MLS (suite 1) read to the end; X-Wing
(0x004D) read until the first rekey; APQ (T suite 1, PQ suite 0x0051) read until
the first FULL commit after the theft, then nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mls2p import ProfileConfig, RekeyPolicy
from mls2p.safe_aad import decode_commit, t_half
from mls2p.testing import config
from mls2p.wire import ProfileMessage, ProfileMessageType
from mlscore.apq import APQMessagePair
from mlscore.crypto import XWING_SUITE
from mlscore.group import Group
from mlstls.connection import MlsTlsConnection
from mlstls.testing import TlsPair

from .full_state import LABELS, Direction, DirectionReader, Side, Wire, _epochs, _lookup, _request_response
from .quantum import Kind, Thief, arguments
from .tls_thief import SEQUENCE_SEARCH

RECEIVER: dict[Direction, Side] = {"c2s": "server", "s2c": "client"}
TAIL = 3
"""Simulated seconds of traffic after the last counted rekey."""


@dataclass
class ConnectionOutcome:
    kind: Kind
    theft_epoch: int
    readable: list[bool] = field(default_factory=list)
    """Every record after the theft, both directions in the order sent: whether the thief opened it."""
    epochs: list[int] = field(default_factory=list)
    """The epoch of each of those records (the oracle's)."""
    full_epochs: list[int] = field(default_factory=list)
    """Epochs made by a FULL commit after the theft (APQ)."""
    reason: str = ""

    @property
    def read(self) -> tuple[int, int]:
        """(records opened, records sent) after the theft."""
        return sum(self.readable), len(self.readable)

    @property
    def epochs_read(self) -> list[int]:
        return sorted({epoch for epoch, ok in zip(self.epochs, self.readable, strict=True) if ok})

    @property
    def locked_out_at(self) -> int | None:
        """The first epoch after the theft of which the thief opened no record (None: it read every epoch)."""
        read = set(self.epochs_read)
        return next((epoch for epoch in sorted(set(self.epochs)) if epoch not in read), None)


def _profile(side: Side, kind: Kind, full_every: int) -> ProfileConfig:
    if kind == "apq":
        return config(side.encode(), 1, apq="require", rekey=RekeyPolicy(max_seconds=1.0, full_every=full_every))
    return config(side.encode(), XWING_SUITE if kind == "xwing" else 1, rekey=RekeyPolicy(max_seconds=1.0))


def _record_groups(pair: TlsPair) -> dict[tuple[Side, int], bytes]:
    """Each side's classical group in every epoch it sends in (the keys a quantum computer would derive)."""
    held: dict[tuple[Side, int], bytes] = {}

    def tap(side: Side, connection: MlsTlsConnection) -> None:
        send = connection.data_to_send

        def data_to_send() -> bytes:
            group = connection.session.group if connection.session is not None else None
            if group is not None:
                held.setdefault((side, group.epoch), group.to_state())
            return send()

        connection.data_to_send = data_to_send  # type: ignore[method-assign]

    sides: tuple[tuple[Side, object], ...] = (("client", pair.client), ("server", pair.server))
    for side, connection in sides:
        assert isinstance(connection, MlsTlsConnection)
        tap(side, connection)
    return held


def run(kind: Kind, *, rekeys: int = 12, theft_at: int = 3, full_every: int = 4) -> ConnectionOutcome:
    """One connection, the theft at the client's epoch ``theft_at``, ``rekeys`` rekeys after it; then the thief."""
    pair = TlsPair(client_profile=_profile("client", kind, full_every),
                   server_profile=_profile("server", kind, full_every))
    wire = Wire(pair)
    held = _record_groups(pair)
    pair.client.connect(pair.now)
    pair.pump()
    theft: tuple[int, bytes, int] | None = None  # (first record after it, the stolen group, its epoch)
    for _ in range(10 * (theft_at + rekeys)):
        _request_response(pair)
        pair.advance(1.0)
        session = pair.client.session
        assert session is not None and session.group is not None
        if theft is None and session.synced and session.epoch is not None and session.epoch >= theft_at:
            theft = (len(wire.records), session.group.to_state(), session.epoch)
        if theft is not None and session.epoch is not None and session.epoch >= theft[2] + rekeys:
            break
    if theft is None:
        raise RuntimeError(f"the connection never reached epoch {theft_at}")
    for _ in range(TAIL):
        _request_response(pair)
        pair.advance(1.0)
    start, stolen, epoch = theft
    outcome = ConnectionOutcome(kind, epoch, epochs=_epochs(wire)[start:])
    _attack(outcome, wire, held, Group.from_state(stolen), start)
    return outcome


def _attack(outcome: ConnectionOutcome, wire: Wire, held: dict[tuple[Side, int], bytes], stolen: Group,
            start: int) -> None:
    thief = Thief(stolen)
    secrets: dict[int, dict[Direction, bytes]] = {}

    def learn() -> None:
        group = thief.group
        if group is not None:
            secrets.setdefault(group.epoch, {d: group.export_secret(label, b"", group.suite.hash_len)
                                             for d, label in LABELS.items()})

    learn()
    readers = {d: DirectionReader(stolen.suite.id, _lookup(secrets, d), stolen.epoch, search=SEQUENCE_SEARCH)
               for d in LABELS}
    for record in wire.records[start:]:
        frames = readers[record.direction].open(record)
        outcome.readable.append(frames is not None)
        for frame in frames or ():
            message = ProfileMessage.from_bytes(frame)
            if message.msg_type != ProfileMessageType.CONNECTION_UPDATE or thief.group is None:
                continue
            received = decode_commit(message.body)
            full = isinstance(received, APQMessagePair)
            commit = t_half(received)
            epoch = thief.group.epoch
            if full:
                outcome.full_epochs.append(epoch + 1)
            receiver = Group.from_state(held[(RECEIVER[record.direction], epoch)])
            thief.follow(commit, receiver, quantum_keys=outcome.kind != "xwing")
            learn()
    outcome.reason = thief.reason


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv, __doc__, first_theft=2)
    print(f"quantum thief on an mlstls connection: steals the client's epoch-{args.theft_at} secrets, computes "
          f"every X25519 private key; {args.rekeys} rekeys after, ping-pong; APQ: each side FULL every "
          f"{args.full_every} of its commits")
    for kind, label in (("classical", "classical MLS (suite 1)"), ("xwing", "X-Wing MLS (0x004D)"),
                        ("apq", "APQ-MLS (1 + 0x0051)")):
        outcome = run(kind, rekeys=args.rekeys, theft_at=args.theft_at, full_every=args.full_every)  # type: ignore[arg-type]
        read, total = outcome.read
        locked = outcome.locked_out_at
        print(f"  {label:26} records read {read}/{total}, epochs {outcome.epochs_read[0]}..{outcome.epochs_read[-1]}, "
              + ("never locked out" if locked is None else f"locked out at epoch {locked}")
              + (", the first FULL commit after the theft" if outcome.full_epochs else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
