"""A session store that hangs or fails must not stall other links, lose sessions, or leave a half-made state.

Issue 24's first step: a failed write leaves the session exactly as it was; a store
that does not answer holds its caller for at most a deadline, then fails at once
while it is down (GuardedStore); our rekey is abandoned and tried again later, a
peer's commit waits for the store (mls2p.bootstrap).  In memory, on simulated
clocks; the blocking store below is released by the test, never by a timer.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future

import pytest

import mlstls.testing
from mls2p import RekeyPolicy
from mls2p.bootstrap import STORE_RETRY, StoreWriter
from mls2p.errors import NOT_DURABLE, StaleStateError, StoreError, StoreUnavailable
from mls2p.session import State
from mls2p.store import MemorySessionStore
from mls2p.store_guard import GuardedStore
from mls2p.testing import Pair, config, sent
from mlstls.connection import ConnectionTerminated, EpochChanged
from mlstls.testing import TlsPair

GUARD = 30.0

# -- the session: a failed write changes nothing --------------------------------------------------------


class FailingOnce(MemorySessionStore):
    def __init__(self) -> None:
        super().__init__()
        self.fail_next = False

    def save(self, group_id: bytes, state: bytes, *, replaces: bytes | None) -> None:
        if self.fail_next:
            self.fail_next = False
            raise StoreError("disk full")
        super().save(group_id, state, replaces=replaces)


def test_a_failed_write_leaves_the_session_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mlstls.testing, "MemorySessionStore", FailingOnce)
    import mls2p.testing

    monkeypatch.setattr(mls2p.testing, "MemorySessionStore", FailingOnce)
    pair = Pair()
    store = pair.alice_store
    assert isinstance(store, FailingOnce)
    before = (pair.alice.state, pair.alice.epoch, pair.alice.pending, pair.alice.turn)
    store.fail_next = True
    with pytest.raises(StoreError, match="disk full"):
        pair.alice.update()
    # (the sender ratchet generation the unsent commit used stays used: keys only ever move forward)
    assert (pair.alice.state, pair.alice.epoch, pair.alice.pending, pair.alice.turn) == before
    assert pair.alice.export_secret("x", b"", 16) == pair.bob.export_secret("x", b"", 16)  # keys still usable
    update = sent(pair.alice.update())  # and the next attempt works
    ack = sent(pair.bob.receive(update[0]))
    pair.alice.receive(ack[0])
    assert pair.in_sync()


# -- GuardedStore: a deadline per call, fail fast while down, probe after a cool-down -------------------


class Hanging(MemorySessionStore):
    """A store whose calls block until the test releases them (a SIGSTOPped Redis)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.release.set()
        self.entered = 0

    def load(self, group_id: bytes) -> bytes | None:
        self.entered += 1
        self.release.wait()
        return super().load(group_id)


def test_a_hanging_store_costs_one_deadline_then_fails_at_once_until_it_answers() -> None:
    clock = [0.0]
    inner = Hanging()
    guard = GuardedStore(inner, deadline=0.01, cool_down=0.5, clock=lambda: clock[0])
    assert guard.load(b"g") is None
    inner.release.clear()  # the store hangs
    with pytest.raises(StoreUnavailable, match="did not answer"):
        guard.load(b"g")
    assert guard.is_open and inner.entered == 2
    for _ in range(100):  # while open: no call reaches (or waits for) the store
        with pytest.raises(StoreUnavailable, match="marked down"):
            guard.load(b"g")
    assert inner.entered == 2 and guard.counters.fast_failures == 100
    clock[0] = 0.6  # after the cool-down one call probes it, and finds it still hung
    with pytest.raises(StoreUnavailable, match="did not answer"):
        guard.load(b"g")
    assert inner.entered == 3 and guard.is_open  # open again, for twice as long
    clock[0] = 1.0
    with pytest.raises(StoreUnavailable):
        guard.load(b"g")
    assert inner.entered == 3
    inner.release.set()  # it answers again; the abandoned calls finish in their workers
    clock[0] = 1.7
    assert guard.load(b"g") is None and not guard.is_open
    assert guard.counters.timeouts == 2 and guard.counters.circuit_opened == 2
    guard.close()


class HangingWithPing(Hanging):
    """A hanging store with a ping, as the Redis store has: the guard probes it in a thread of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.pings = 0

    def ping(self) -> None:
        self.pings += 1
        self.release.wait()


def test_a_store_with_a_ping_is_probed_by_the_guard_never_by_a_caller() -> None:
    """Once the circuit is open no caller waits again, however long the outage: one deadline per outage."""
    inner = HangingWithPing()
    guard = GuardedStore(inner, deadline=0.01, cool_down=0.01)
    inner.release.clear()
    with pytest.raises(StoreUnavailable, match="did not answer"):
        guard.load(b"g")
    for _ in range(200):
        with pytest.raises(StoreUnavailable, match="marked down"):
            guard.load(b"g")
    assert inner.entered == 1 and guard.counters.timeouts == 1  # only the first call ever waited
    for _ in range(int(GUARD / 0.01)):  # the prober is pinging (and hanging) meanwhile
        if inner.pings:
            break
        threading.Event().wait(0.01)
    assert inner.pings >= 1 and guard.is_open
    inner.release.set()
    for _ in range(int(GUARD / 0.01)):
        if not guard.is_open:
            break
        threading.Event().wait(0.01)
    assert not guard.is_open and guard.load(b"g") is None
    guard.close()


def test_outstanding_calls_are_bounded() -> None:
    inner = Hanging()
    inner.release.clear()
    guard = GuardedStore(inner, deadline=0.01, max_in_flight=2, cool_down=0.0)
    for _ in range(2):
        with pytest.raises(StoreUnavailable, match="did not answer"):
            guard.load(b"g")
    with pytest.raises(StoreUnavailable, match="too many store calls outstanding"):
        guard.load(b"g")
    assert inner.entered == 2  # the third never reached a worker
    inner.release.set()
    guard.close()


def test_a_store_that_answers_no_is_up() -> None:
    """A fenced write that loses (StaleStateError) is an answer: the circuit stays closed."""
    inner = MemorySessionStore()
    guard = GuardedStore(inner, deadline=1.0)
    guard.save(b"g", b"one", replaces=None)
    with pytest.raises(StaleStateError):
        guard.save(b"g", b"two", replaces=None)
    assert not guard.is_open and guard.counters.fast_failures == 0
    guard.close()


# -- the endpoint over a store that is down: rekeys abandoned, peer commits wait, nothing lost --------


class Switchable(MemorySessionStore):
    """A store the test takes down (every call: StoreUnavailable, as a GuardedStore says) and brings back."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def save(self, group_id: bytes, state: bytes, *, replaces: bytes | None) -> None:
        if self.down:
            raise StoreUnavailable("the session store is unavailable (test)")
        super().save(group_id, state, replaces=replaces)


@pytest.fixture
def pair(monkeypatch: pytest.MonkeyPatch) -> TlsPair:
    monkeypatch.setattr(mlstls.testing, "MemorySessionStore", Switchable)
    pair = TlsPair(rekey=RekeyPolicy(max_seconds=1.0, turn_timeout=30))
    pair.client.connect(pair.now)
    pair.pump()
    assert pair.client.established and pair.server.established
    return pair


def _epochs(pair: TlsPair, side: str) -> list[int]:
    return [e.epoch for e in pair.events[side] if isinstance(e, EpochChanged)]


def _store(pair: TlsPair, side: str) -> Switchable:
    store = pair.server_store if side == "server" else pair.client_store
    assert isinstance(store, Switchable)
    return store


def test_our_rekey_is_abandoned_while_the_store_is_down_and_done_after(pair: TlsPair) -> None:
    server = pair.server.endpoint
    pair.advance(1.1)  # the client's turn first (the initiator commits first)
    pair.advance(0.1)
    assert _epochs(pair, "server") == [2]
    _store(pair, "server").down = True
    stored = pair.server_store.load(pair.server.session.group_id)  # type: ignore[union-attr]
    for _ in range(5):
        pair.advance(1.1)  # the server's policy is due on its turn: its commit cannot be stored
        pair.client.send_data(b"data flows", pair.now)  # the link carries data all along
        pair.pump()
    assert pair.received["server"].endswith(b"data flows")
    assert server.abandoned_rekeys >= 2 and _epochs(pair, "server") == [2]
    assert pair.server_store.load(pair.server.session.group_id) == stored  # type: ignore[union-attr]
    assert not any(isinstance(e, ConnectionTerminated) for side in ("client", "server") for e in pair.events[side])
    _store(pair, "server").down = False
    pair.advance(STORE_RETRY + 1.1)
    pair.advance(0.1)
    assert len(_epochs(pair, "server")) >= 2 and _epochs(pair, "server")[1] == 3  # the rekey happened after all


def test_a_peers_commit_waits_for_the_store_and_completes_after(pair: TlsPair) -> None:
    server = pair.server.endpoint
    _store(pair, "server").down = True
    pair.client.rekey()  # the client's ConnectionUpdate: the server cannot store the new epoch yet
    pair.pump()
    assert server.deferred_commits == 1 and _epochs(pair, "client") == [] and _epochs(pair, "server") == []
    pair.client.send_data(b"still the old keys", pair.now)
    pair.server.send_data(b"both ways", pair.now)
    pair.pump()
    assert pair.received["server"].endswith(b"still the old keys")
    assert pair.received["client"].endswith(b"both ways")
    pair.advance(STORE_RETRY + 0.1)  # retried while still down: it waits again
    assert server.deferred_commits == 2 and _epochs(pair, "server") == [] and _epochs(pair, "client") == []
    _store(pair, "server").down = False
    pair.advance(STORE_RETRY + 0.1)
    assert _epochs(pair, "server") == [2] and _epochs(pair, "client") == [2]
    pair.client.send_data(b"new keys", pair.now)
    pair.pump()
    assert pair.received["server"].endswith(b"new keys")
    assert not any(isinstance(e, ConnectionTerminated) for side in ("client", "server") for e in pair.events[side])


class HangingSaves(MemorySessionStore):
    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.release.set()

    def save(self, group_id: bytes, state: bytes, *, replaces: bytes | None) -> None:
        self.release.wait()
        super().save(group_id, state, replaces=replaces)


class FakeSession:
    group_id = b"g"
    state = State.SYNCED

    def __init__(self) -> None:
        self.value = b""

    def to_state(self) -> bytes:
        return self.value


def test_a_write_that_lands_late_is_known_to_the_next_one() -> None:
    """Found by the SIGSTOP run: a save that timed out landed when Redis continued, the connection's next fenced
    write named the older state and failed as stale, and the link had to resume."""
    inner = HangingSaves()
    guard = GuardedStore(inner, deadline=0.01, cool_down=0.0)
    writer = StoreWriter(guard)
    session = FakeSession()
    session.value = b"one"
    writer(session)  # type: ignore[arg-type]
    inner.release.clear()  # Redis stops
    session.value = b"two"
    with pytest.raises(StoreUnavailable) as caught:
        writer(session)  # type: ignore[arg-type]
    session.value = b"three"
    with pytest.raises(StoreUnavailable, match="still outstanding"):
        writer(session)  # type: ignore[arg-type]  # never races the write that may still land
    inner.release.set()  # Redis continues: the timed-out write lands
    caught.value.late.result(timeout=GUARD)
    writer(session)  # type: ignore[arg-type]
    assert inner.load(b"g") == b"three"
    guard.close()


class NotDurable(MemorySessionStore):
    """A primary whose replicas do not acknowledge (Redis WAIT): the write lands, the store says it is not durable."""

    def __init__(self) -> None:
        super().__init__()
        self.durable = False
        self.saves = 0

    def save(self, group_id: bytes, state: bytes, *, replaces: bytes | None) -> None:
        super().save(group_id, state, replaces=replaces)
        self.saves += 1
        if not self.durable:
            landed: Future[str] = Future()
            landed.set_result(NOT_DURABLE)
            error = StoreUnavailable("only 0 of 1 Redis replica(s) acknowledged the write")
            error.late = landed
            raise error


def test_a_write_its_replicas_did_not_acknowledge_is_written_again_before_it_counts() -> None:
    """Found by the failover test: a state on the primary only was taken as stored, the peer was answered, and
    the failover lost the epoch the client had moved to."""
    store = NotDurable()
    writer = StoreWriter(store)
    session = FakeSession()
    session.value = b"epoch 5"
    with pytest.raises(StoreUnavailable):
        writer(session)  # type: ignore[arg-type]
    store.durable = True
    writer(session)  # type: ignore[arg-type]  # the same state: written again, this time acknowledged
    assert store.saves == 2 and store.load(b"g") == b"epoch 5"
    writer(session)  # type: ignore[arg-type]  # durable now: nothing more to write
    assert store.saves == 2


def test_a_commit_request_the_store_could_not_answer_is_answered_once_it_can(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The client rekeys every second, the server only when asked: a CommitRequest whose answer (the server's
    commit) the store could not take must be answered when the store is back, not left for the client's
    turn_timeout (30 s) while the keys stay old (found by the fleet hang test)."""
    monkeypatch.setattr(mlstls.testing, "MemorySessionStore", Switchable)
    pair = TlsPair(client_profile=config(b"client", rekey=RekeyPolicy(max_seconds=1.0, turn_timeout=30)),
                   server_profile=config(b"server", rekey=RekeyPolicy(max_seconds=3600, turn_timeout=30)))
    pair.client.connect(pair.now)
    pair.pump()
    pair.advance(1.1)  # the client's turn first: its own commit
    pair.advance(0.1)
    assert _epochs(pair, "server") == [2]
    _store(pair, "server").down = True
    pair.advance(1.1)  # the client's policy is due on the server's turn: a CommitRequest the server cannot answer
    assert pair.client.endpoint.commit_requests == 1 and pair.server.endpoint.abandoned_rekeys == 1
    pair.advance(STORE_RETRY + 0.1)  # tried again, still down
    assert pair.server.endpoint.abandoned_rekeys == 2 and _epochs(pair, "server") == [2]
    _store(pair, "server").down = False
    pair.advance(STORE_RETRY + 0.1)
    pair.advance(0.1)
    assert _epochs(pair, "server") == [2, 3] and _epochs(pair, "client") == [2, 3]  # well before turn_timeout
    assert pair.client.endpoint.unanswered_requests == 0


class NotDurableWithCheck(NotDurable):
    """The Redis store's shape with replica acknowledgement: a check that asks the replicas, as the prober does."""

    def __init__(self) -> None:
        super().__init__()
        self.checks = 0

    def check_writable(self) -> None:
        self.checks += 1
        if not self.durable:
            raise StoreUnavailable("only 0 of 1 Redis replica(s) acknowledge writes")


def test_replicas_that_do_not_acknowledge_open_the_circuit_until_they_do() -> None:
    """Each unacknowledged write holds its caller for the replica timeout (WAIT): after the first, calls fail at
    once while the prober asks the replicas, and go through again once they acknowledge (found by review of the
    hang test: a stopped replica cost the loop 100 ms per write, every write)."""
    inner = NotDurableWithCheck()
    guard = GuardedStore(inner, deadline=1.0, cool_down=0.01)
    with pytest.raises(StoreUnavailable, match="acknowledged"):
        guard.save(b"g", b"epoch 1", replaces=None)
    assert guard.is_open
    for _ in range(5):
        with pytest.raises(StoreUnavailable, match="marked down"):
            guard.save(b"g", b"epoch 1", replaces=b"epoch 1")
    assert inner.saves == 1  # none of them reached the store
    for _ in range(int(GUARD / 0.01)):
        if inner.checks:
            break
        threading.Event().wait(0.01)
    assert inner.checks >= 1 and guard.is_open  # asked, and the replicas still do not answer
    inner.durable = True
    for _ in range(int(GUARD / 0.01)):
        if not guard.is_open:
            break
        threading.Event().wait(0.01)
    assert not guard.is_open
    guard.save(b"g", b"epoch 2", replaces=b"epoch 1")
    assert inner.load(b"g") == b"epoch 2"
    guard.close()


class DownAfterOneSave(Switchable):
    """Takes one more save, then goes down (the store hangs between our commit and its confirmation)."""

    def __init__(self) -> None:
        super().__init__()
        self.saves_left: int | None = None

    def save(self, group_id: bytes, state: bytes, *, replaces: bytes | None) -> None:
        if self.saves_left is not None:
            self.down = self.saves_left <= 0
            self.saves_left -= 1
        super().save(group_id, state, replaces=replaces)


def test_a_confirmation_the_store_cannot_take_keeps_the_connection_and_is_stored_later(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by the fleet hang test: the server's commit was stored (pending), the store hung, and the client's
    EpochKeyUpdate ended the connection because the new epoch could not be written; the link was down for the
    whole outage.  The pending commit in the store already recovers the epoch, so the keys change now and the
    write waits for the store."""
    monkeypatch.setattr(mlstls.testing, "MemorySessionStore", DownAfterOneSave)
    pair = TlsPair(rekey=RekeyPolicy(max_seconds=3600, turn_timeout=30))
    pair.client.connect(pair.now)
    pair.pump()
    store = _store(pair, "server")
    assert isinstance(store, DownAfterOneSave)
    group = pair.server.session.group_id  # type: ignore[union-attr]
    store.saves_left = 1
    pair.server.rekey()  # its pending commit is stored; the client's confirmation then finds the store down
    pair.pump()
    assert _epochs(pair, "server") == [2] and _epochs(pair, "client") == [2]
    assert pair.server.endpoint.late_confirmations == 1
    assert not any(isinstance(e, ConnectionTerminated) for side in ("client", "server") for e in pair.events[side])
    pending = store.load(group)  # what a resumption would start from: our commit, pending
    pair.client.send_data(b"new keys, store down", pair.now)
    pair.pump()
    assert pair.received["server"].endswith(b"new keys, store down")
    pair.advance(STORE_RETRY + 0.1)  # still down: it waits
    assert store.load(group) == pending
    store.saves_left, store.down = None, False
    pair.advance(STORE_RETRY + 0.1)
    assert store.load(group) == pair.server.session.to_state() != pending  # type: ignore[union-attr]


def test_a_store_that_was_only_slow_is_up_again_as_soon_as_its_call_returns() -> None:
    """Found by the fleet test on a loaded machine: one Redis call slower than the deadline opened the circuit
    for the whole cool-down, and every resumption meanwhile failed.  The late answer itself closes it."""
    clock = [0.0]
    inner = Hanging()
    guard = GuardedStore(inner, deadline=0.01, cool_down=100.0, clock=lambda: clock[0])
    inner.release.clear()
    with pytest.raises(StoreUnavailable, match="did not answer"):
        guard.load(b"g")
    assert guard.is_open
    inner.release.set()  # the slow call returns (in its worker): no cool-down, no probe needed
    for _ in range(int(GUARD / 0.01)):
        if not guard.is_open:
            break
        threading.Event().wait(0.01)
    assert not guard.is_open and guard.load(b"g") is None
    guard.close()


def test_a_connection_lost_while_an_epoch_waits_for_the_store_resumes_from_what_it_holds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The seams of a late confirmation: the connection ends while the store is still down (that must not raise
    out of the transport's connection_lost), then the client resumes from the server's stored pending commit."""
    monkeypatch.setattr(mlstls.testing, "MemorySessionStore", DownAfterOneSave)
    pair = TlsPair(rekey=RekeyPolicy(max_seconds=3600, turn_timeout=30))
    pair.client.connect(pair.now)
    pair.pump()
    store = _store(pair, "server")
    assert isinstance(store, DownAfterOneSave)
    store.saves_left = 1
    pair.server.rekey()
    pair.pump()
    assert pair.server.endpoint.late_confirmations == 1 and pair.client.epoch == 2
    pair.reconnect()  # the server's connection_lost finds the store still down: no exception
    store.saves_left, store.down = None, False
    pair.client.connect(pair.now)
    pair.pump()
    assert pair.client.established and pair.server.established
    assert pair.server.endpoint.resumed and pair.server.epoch == pair.client.epoch >= 2
    pair.client.send_data(b"after the resumption", pair.now)
    pair.pump()
    assert pair.received["server"].endswith(b"after the resumption")
