"""A thief of one side's *whole* state: when does MLS lock it out, with and without turn-taking?

The traffic-secret thief of :mod:`examples.pcs.runner` holds one epoch's record
secret, so the first confirmed commit of *either* side locks it out.  A thief
that copies the victim's stored session (``TwoPartySession.to_state()``: the
group state with the victim's leaf private key and the epoch secrets) is
stronger: in a two-member group the peer's commit is encrypted to the
victim's leaf key, so the thief processes every commit the *peer* makes and
derives the next epoch's record keys as the victim does.  Only the victim's
own commit (a fresh UpdatePath the thief cannot open) locks it out, which is
why the profile takes turns (docs/profile.md, "Taking turns").

Each run drives a real mlstls client and server in memory on a simulated clock
(:class:`mlstls.testing.TlsPair`), request/response traffic once a simulated
second, and captures every protected record both sides send, in the order
they were sent.  After three rekeys the thief copies the victim's session
exactly when the rekey completed (both directions have just switched keys, no
record uses the new keys yet).  Afterwards it opens the captured records in
order with its own code, the receiver logic of :mod:`mlstls.connection`:
per direction the record keys of the epoch it knows, a key switch frame moves
that direction to the next epoch's keys *if it knows them*, and every
ConnectionUpdate it reads is fed to its session copy (the peer's succeed; the
victim's own are tried too and refused).  Every figure is counted from these
decryption attempts; which epoch each record belongs to comes from an
*oracle* that runs the same reader with every epoch's keys (taken from the
honest endpoints) and must open every record, so a record the thief cannot
open fails for want of keys, not for a bug in the reader.

The session state holds no record sequence numbers; the thief finds them by
trying a window of them for its first record per direction, as the
traffic-secret thief does (:data:`examples.pcs.tls_thief.SEQUENCE_SEARCH`).
It also tries the stolen keys on every record from before the theft: none
opens when the theft is at a key switch; two extra modes steal a few seconds
into an epoch, and then that epoch's earlier records open (its record keys do
not change within it), nothing older.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from mls2p import ProfileConfig, RekeyPolicy, TwoPartySession
from mls2p.actions import OUR_COMMIT_CONFIRMED
from mls2p.testing import config
from mls2p.wire import MessageBuffer, ProfileMessage, ProfileMessageType
from mlscore.errors import MLSError
from mlstls.connection import CLIENT_LABEL, KEY_SWITCH_FRAME, SERVER_LABEL, EpochChanged, MlsTlsConnection
from mlstls.record import ContentType, RecordProtection, RecordSplitter, aead_spec
from mlstls.testing import Connection, TlsPair

from .tls_thief import APPLICATION_DATA, SEQUENCE_SEARCH

Side = Literal["client", "server"]
Direction = Literal["c2s", "s2c"]
LABELS: dict[Direction, str] = {"c2s": CLIENT_LABEL, "s2c": SERVER_LABEL}
SENDER: dict[Direction, Side] = {"c2s": "client", "s2c": "server"}
COMMITTED = OUR_COMMIT_CONFIRMED
"""The reason of the committer's EpochChanged (mls2p.session); the replier's names the peer's ConnectionUpdate."""

POLICIES: dict[str, tuple[bool, bool]] = {"both": (True, True), "server": (False, True), "client": (True, False)}
"""Which sides (client, server) have a time-based rekey policy: (a) both, (b) only the server, (c) only the client."""
POLICY_NAMES = {"both": "(a) both sides", "server": "(b) server only", "client": "(c) client only"}


@dataclass(frozen=True)
class Settings:
    """One run's shape; the defaults are the report's (a run takes well under a second)."""

    max_seconds: float = 10.0
    rekeys_before: int = 3
    """The theft happens when this many rekeys have completed."""
    rekeys_after: int = 12
    """The run goes on until this many rekeys after the theft (or ``limit`` seconds), then ``tail`` seconds."""
    tail: int = 5
    limit: int = 600
    mid_epoch: int = 5
    """The extra modes' theft: this many seconds into an epoch (the main modes steal at the key switch)."""


@dataclass(frozen=True)
class Mode:
    policy: str  # a key of POLICIES
    take_turns: bool
    victim: Side
    theft_delay: int = 0
    """Seconds after the rekey completed that the theft happens; 0 is at the key switch."""

    @property
    def theft(self) -> str:
        return "at a key switch" if not self.theft_delay else f"{self.theft_delay} s into an epoch"

    @property
    def label(self) -> str:
        label = f"{POLICY_NAMES[self.policy]}, turns {'on' if self.take_turns else 'off'}, victim {self.victim}"
        return label + (f", theft {self.theft}" if self.theft_delay else "")


@dataclass(frozen=True)
class Record:
    """One protected record as it went on the wire."""

    direction: Direction
    header: bytes
    body: bytes


@dataclass
class FullStateOutcome:
    """What one full-state thief read, record by record, both directions in the order they were sent."""

    mode: Mode
    theft_epoch: int
    committers: str
    """Who committed each epoch after the theft: 'c' or 's', in order."""
    commits: Counter[tuple[Side, bool]] = field(default_factory=Counter)
    """ConnectionUpdates the thief read and fed to its session copy: (sender, accepted) -> how many.  A peer
    commit that lost a crossing to the victim's is accepted too, and leads to keys nobody uses."""
    readable: list[bool] = field(default_factory=list)
    directions: list[Direction] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)
    """The epoch whose keys protect each record (from the oracle)."""
    pre_theft_records: int = 0
    pre_theft_read: int = 0
    pre_theft_same_epoch: int = 0
    """Records from before the theft protected with the keys of the theft's own epoch."""

    @property
    def rekeys(self) -> int:
        return len(self.committers)

    @property
    def victim_commit(self) -> int | None:
        """The rekey (1 = the first after the theft) that was the victim's own first commit; None: never."""
        index = self.committers.find(self.mode.victim[0])
        return None if index < 0 else index + 1

    @property
    def locked_out_at(self) -> int | None:
        """The first rekey after the theft from whose epoch on the thief read nothing; None: it read to the end."""
        read = [epoch for epoch, ok in zip(self.epochs, self.readable, strict=True) if ok]
        last = max(read, default=self.theft_epoch - 1)
        return None if last >= self.theft_epoch + self.rekeys else last + 1 - self.theft_epoch

    def read(self, direction: Direction | None = None) -> tuple[int, int]:
        """(records read, records captured) after the theft, in one direction or both."""
        rows = [ok for ok, d in zip(self.readable, self.directions, strict=True) if direction in (None, d)]
        return sum(rows), len(rows)

    def read_from_epoch(self, epoch: int) -> int:
        """Records of ``epoch`` or later that the thief read."""
        return sum(ok for ok, e in zip(self.readable, self.epochs, strict=True) if e >= epoch)

    @property
    def followed(self) -> int:
        """Epochs after the theft's that the thief read records of (each one a peer commit it processed)."""
        return len({e for e, ok in zip(self.epochs, self.readable, strict=True) if ok and e > self.theft_epoch})

    def marks(self, committer: str) -> list[int]:
        """Index of the first record of each epoch ``committer`` ('c' or 's') made after the theft."""
        first: dict[int, int] = {}
        for index, epoch in enumerate(self.epochs):
            first.setdefault(epoch, index)
        made = (self.theft_epoch + n + 1 for n, who in enumerate(self.committers) if who == committer)
        return sorted(first[epoch] for epoch in made if epoch in first)


# -- reading records as a receiver does -------------------------------------------------------------------

def _open(keys: RecordProtection, header: bytes, body: bytes, search: int) -> tuple[ContentType, bytes] | None:
    """Open one record trying sequence numbers ``keys.sequence`` .. ``+ search``; None if none fits."""
    start = keys.sequence
    for sequence in range(start, start + search + 1):
        keys.sequence = sequence
        try:
            kind, payload = keys.open(header, body)
        except MLSError:
            continue
        return kind, bytes(payload)
    keys.sequence = start
    return None


class DirectionReader:
    """One direction's records as mlstls's receiver opens them, with the keys ``secret_of`` knows.

    Keys are those of one epoch; the key switch frame moves to the next
    epoch's, looked up when the next record arrives (``secret_of`` may learn
    them meanwhile: the thief does when it processes a peer commit).  Returns
    the profile frames each record carries; a direction whose keys are unknown
    stays unreadable, because its stream cannot be followed past a lost record.
    """

    def __init__(self, suite_id: int, secret_of: Callable[[int], bytes | None], epoch: int, *,
                 search: int = 0) -> None:
        self.spec = aead_spec(suite_id)
        self.secret_of = secret_of
        self.epoch = epoch
        self.keys: RecordProtection | None = None
        self.frames = MessageBuffer()
        self._search = search

    def open(self, record: Record) -> list[bytes] | None:
        """The profile frames in ``record`` (none for application data), or None if it cannot be opened."""
        if self.keys is None:
            secret = self.secret_of(self.epoch)
            if secret is None:
                return None
            self.keys = RecordProtection(self.spec, secret, epoch=self.epoch)
        opened = _open(self.keys, record.header, record.body, self._search)
        if opened is None:
            return None
        self._search = 0  # found: from now on the sequence numbers are known
        kind, payload = opened
        if kind != ContentType.HANDSHAKE:
            return []
        frames = []
        for frame in self.frames.feed_frames(payload):
            if frame == KEY_SWITCH_FRAME:
                self.epoch, self.keys = self.epoch + 1, None
            else:
                frames.append(frame)
        return frames


# -- the run ---------------------------------------------------------------------------------------------

class Wire:
    """Every protected record both connections send, in order, and every epoch's record secrets (for the oracle).

    It wraps each connection's ``data_to_send``, which :meth:`TlsPair.pump` calls
    after every ``receive_data``: the bytes are split into records as a
    passive observer would, and the sender's current epoch secrets are noted.
    """

    def __init__(self, pair: TlsPair) -> None:
        self.records: list[Record] = []
        self.secrets: dict[int, dict[Direction, bytes]] = {}
        self.suite_id: int | None = None
        client, server = pair.client, pair.server
        if not (isinstance(client, MlsTlsConnection) and isinstance(server, MlsTlsConnection)):
            raise TypeError("the full-state thief reads mlstls in place of TLS (alongside, TLS 1.3 protects it too)")
        self._tap(client, "c2s")
        self._tap(server, "s2c")

    def _tap(self, connection: MlsTlsConnection, direction: Direction) -> None:
        send, splitter = connection.data_to_send, RecordSplitter()

        def data_to_send() -> bytes:
            self._learn(connection)
            data = send()
            self.records += [Record(direction, header, body) for header, body in splitter.feed(data)
                             if header[0] == APPLICATION_DATA]
            return data

        connection.data_to_send = data_to_send  # type: ignore[method-assign]

    def _learn(self, connection: MlsTlsConnection) -> None:
        session = connection.session
        if session is None or session.group is None or session.epoch in self.secrets:
            return
        self.suite_id = session.group.suite.id
        self.secrets[session.group.epoch] = {d: connection.traffic_secret(label) for d, label in LABELS.items()}


@dataclass
class Theft:
    """What the thief copied, and where in the capture it starts."""

    state: dict[Side, bytes]
    record: int
    event: int  # index into the client's events
    epoch: int


def _profile(side: Side, policy: str, take_turns: bool, max_seconds: float) -> ProfileConfig:
    has_policy = POLICIES[policy][0 if side == "client" else 1]
    return config(side.encode(), rekey=RekeyPolicy(max_seconds=max_seconds if has_policy else None,
                                                   take_turns=take_turns))


def _epoch_changes(pair: TlsPair) -> list[EpochChanged]:
    return [e for e in pair.events["client"] if isinstance(e, EpochChanged)]


def _request_response(pair: TlsPair) -> None:
    """The client asks, the server answers: the workload under which one side used to commit every time."""
    pair.client.send_data(b"request", pair.now)
    pair.pump()
    pair.server.send_data(b"response", pair.now)
    pair.pump()


@dataclass
class Run:
    """One connection's capture and the theft in it; any number of thieves can be played against it."""

    pair: TlsPair
    wire: Wire
    theft: Theft
    epochs: list[int]
    """Every captured record's epoch, from the oracle."""


def run_connection(policy: str, take_turns: bool, theft_delay: int = 0, settings: Settings = Settings()) -> Run:
    """Drive one mlstls connection on a simulated clock; copy both sides' sessions at the theft."""
    pair = TlsPair(client_profile=_profile("client", policy, take_turns, settings.max_seconds),
                   server_profile=_profile("server", policy, take_turns, settings.max_seconds))
    wire = Wire(pair)
    pair.client.connect(pair.now)
    pair.pump()
    theft: Theft | None = None
    due: int | None = None
    for second in range(settings.limit):
        _request_response(pair)
        pair.advance(1.0)
        changes = _epoch_changes(pair)
        if theft is None and due is None and len(changes) >= settings.rekeys_before:
            due = second + theft_delay
        if theft is None and due is not None and second >= due:
            theft = _steal(pair, wire)
        if theft is not None and len(changes) - theft.event >= settings.rekeys_after:
            break
    if theft is None:
        raise RuntimeError(f"fewer than {settings.rekeys_before} rekeys in {settings.limit} simulated seconds")
    for _ in range(settings.tail):
        _request_response(pair)
        pair.advance(1.0)
    return Run(pair, wire, theft, _epochs(wire))


def _steal(pair: TlsPair, wire: Wire) -> Theft:
    """Copy both sessions' stored state now (each run serves a thief of either side)."""
    state: dict[Side, bytes] = {}
    sides: tuple[tuple[Side, Connection], ...] = (("client", pair.client), ("server", pair.server))
    for side, connection in sides:
        session = connection.session
        stored = session.to_state() if session is not None else None
        if session is None or stored is None or not session.synced:
            raise RuntimeError(f"the {side} has no settled state to steal")
        state[side] = stored
    epochs = {connection.session.epoch for _, connection in sides if connection.session is not None}
    if len(epochs) != 1:
        raise RuntimeError(f"the two sides are in different epochs at the theft: {epochs}")
    epoch = epochs.pop()
    assert epoch is not None
    return Theft(state, len(wire.records), len(_epoch_changes(pair)), epoch)


def _lookup(secrets: dict[int, dict[Direction, bytes]], direction: Direction) -> Callable[[int], bytes | None]:
    """``direction``'s secret of an epoch in ``secrets`` as the table is *then* (it grows while a reader reads)."""
    return lambda epoch: secrets.get(epoch, {}).get(direction)


def _epochs(wire: Wire) -> list[int]:
    """The oracle: every record's epoch, read with every epoch's keys; it must open all of them."""
    assert wire.suite_id is not None
    first = min(wire.secrets)
    readers = {d: DirectionReader(wire.suite_id, _lookup(wire.secrets, d), first) for d in LABELS}
    epochs = []
    for number, record in enumerate(wire.records):
        reader = readers[record.direction]
        epoch = reader.epoch
        if reader.open(record) is None:
            raise RuntimeError(f"the oracle could not open record {number} ({record.direction}, epoch {epoch})")
        epochs.append(epoch)
    return epochs


class FullStateThief:
    """The thief: a copy of the victim's session and its own readers, fed the capture in order."""

    def __init__(self, state: bytes, profile: ProfileConfig) -> None:
        self.session = TwoPartySession.from_state(state, profile)
        group = self.session.group
        assert group is not None
        self.secrets: dict[int, dict[Direction, bytes]] = {}
        self._learn()
        self.readers = {d: DirectionReader(group.suite.id, _lookup(self.secrets, d), group.epoch,
                                           search=SEQUENCE_SEARCH) for d in LABELS}
        self.commits: Counter[tuple[Side, bool]] = Counter()

    def _learn(self) -> None:
        """The record secrets of the epoch the session copy is in, as MlsTlsConnection.traffic_secret has them."""
        group = self.session.group
        assert group is not None
        self.secrets.setdefault(group.epoch, {d: self.session.export_secret(label, b"", group.suite.hash_len)
                                              for d, label in LABELS.items()})

    def read(self, record: Record) -> bool:
        frames = self.readers[record.direction].open(record)
        if frames is None:
            return False
        for frame in frames:
            if frame[0] == ProfileMessageType.CONNECTION_UPDATE:
                self._commit(frame, SENDER[record.direction])
        return True

    def _commit(self, frame: bytes, sender: Side) -> None:
        """Process a commit as the victim does; the victim's own too: trying is how we know it fails."""
        try:
            self.session.receive(ProfileMessage.from_bytes(frame))
        except MLSError:
            self.commits[sender, False] += 1
            return
        self.commits[sender, True] += 1
        self._learn()


def pre_theft_read(records: list[Record], secrets: dict[Direction, bytes], suite_id: int, epoch: int) -> int:
    """How many records from before the theft the stolen keys open.

    The i-th record of a direction has a sequence number of at most i (numbers
    restart at 0 with each key), so each is tried with every one of them.
    """
    keys = {d: RecordProtection(aead_spec(suite_id), secret, epoch=epoch) for d, secret in secrets.items()}
    read = 0
    seen = dict.fromkeys(LABELS, 0)
    for record in records:
        protection = keys[record.direction]
        protection.sequence = 0
        read += _open(protection, record.header, record.body, seen[record.direction]) is not None
        seen[record.direction] += 1
    return read


def measure(run: Run, mode: Mode) -> FullStateOutcome:
    """Play a full-state thief of ``mode.victim`` against ``run``'s capture."""
    victim = mode.victim
    theft, wire = run.theft, run.wire
    before, epochs = run.epochs[: theft.record], run.epochs[theft.record :]
    changes = _epoch_changes(run.pair)[theft.event :]
    profile = run.pair.client_profile if victim == "client" else run.pair.server_profile
    thief = FullStateThief(theft.state[victim], profile)
    assert wire.suite_id is not None
    outcome = FullStateOutcome(mode, theft.epoch, "".join("c" if e.reason == COMMITTED else "s" for e in changes),
                               epochs=epochs, pre_theft_records=theft.record,
                               pre_theft_same_epoch=before.count(theft.epoch),
                               pre_theft_read=pre_theft_read(wire.records[: theft.record], thief.secrets[theft.epoch],
                                                             wire.suite_id, theft.epoch))
    for record in wire.records[theft.record :]:
        outcome.readable.append(thief.read(record))
        outcome.directions.append(record.direction)
    outcome.commits = thief.commits
    return outcome


def run_modes(settings: Settings = Settings(), *, turns: tuple[bool, ...] = (False, True)) -> list[FullStateOutcome]:
    """Every mode: each policy with and without turn-taking, a thief of the client and one of the server, stealing
    at a key switch; then, with both policies and turns on, the same thieves stealing in the middle of an epoch."""
    runs = [(policy, take_turns, 0) for take_turns in turns for policy in POLICIES]
    if settings.mid_epoch and True in turns:
        runs.append(("both", True, settings.mid_epoch))
    outcomes = []
    for policy, take_turns, delay in runs:
        run = run_connection(policy, take_turns, delay, settings)
        outcomes += [measure(run, Mode(policy, take_turns, victim, delay)) for victim in ("client", "server")]
    return outcomes
