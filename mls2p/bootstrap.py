"""The part of every connection that is the same for both transports.

A :class:`ProfileEndpoint` is the two-party profile as one connection sees it:
it starts the session (phase 1, or the resumption of a stored group), hands it
each profile message, keeps the session store in step, and applies the rekey
policy.  ``mlstls`` and ``mlsquic`` create one per connection and turn the
actions it returns into TLS records or QUIC frames; neither starts, resumes,
stores or rekeys a session in any other way.

**Confirmation.**  A connection is *confirmed* once the peer has proven that
it holds the current epoch's keys: for a client, when its first epoch arrives
(the server made it); for a resuming server, when the client's EpochKeyUpdate
opens under the new epoch; for a server in phase 1, when the transport reports
the client's first message under the new keys (:meth:`peer_confirmed`).  Until
then a phase-1 server stores nothing (a replayed ClientHello leaves no trace)
and the transport tells its application nothing; a rekey asked for before
confirmation waits for it.  A resumed session is stored as the draft requires
(the peer's commit was authenticated with the current epoch), through fenced
writes (:class:`StoreWriter`).

Like the session, the endpoint is sans-I/O: the caller passes ``now`` (the
transport's monotonic clock, for the rekey policy).  The only I/O is the
store's, and a store is something the user handed in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from mlscore.errors import ValidationError
from mlscore.framing import PrivateMessage, PublicMessage

from . import safe_aad
from .config import ProfileConfig
from .errors import (
    NOT_DURABLE,
    PeerRateExceeded,
    PeerSkippedTurn,
    StateError,
    StoreError,
    StoreUnavailable,
    UnexpectedMessage,
)
from .policy import PeerCommitBudget, RekeyMeter
from .session import KeysChanged, SendMessage, SessionAction, TwoPartySession, peer_leaves
from .store import SessionStore
from .transitions import State, Turn
from .trust import RecordsConfirmedPeers
from .wire import ProfileMessage, ProfileMessageType

log = logging.getLogger(__name__)

STORE_RETRY = 1.0
"""Seconds before work the store could not take (our rekey, the peer's commit) is tried again."""


class ProfileEndpoint:
    """Start, resume, feed, persist and rekey one connection's two-party session."""

    def __init__(self, profile: ProfileConfig, *, is_client: bool, store: SessionStore | None = None,
                 resume_group_id: bytes | None = None) -> None:
        self.profile = profile
        self.is_client = is_client
        self.store = store
        self.resume_group_id = resume_group_id
        self.session: TwoPartySession | None = None
        self.resumed = False
        self.allow_resumption = True
        self.confirmed = False
        self.meter = RekeyMeter(profile.rekey)
        self.peer_budget = PeerCommitBudget(profile.rekey)
        self._writer: StoreWriter | None = None
        self._rekey_waiting = False
        self._held: ProfileMessage | None = None  # a peer ConnectionUpdate or CommitRequest waiting for its budget
        self._asked_at: float | None = None  # when our CommitRequest went out (it is the peer's turn)
        self.commit_requests = 0
        """CommitRequests sent: the policy was due on the peer's turn."""
        self.unanswered_requests = 0
        """CommitRequests the peer left unanswered for ``RekeyPolicy.turn_timeout``."""
        self.abandoned_rekeys = 0
        """Our commits abandoned because the store could not take them (the keys stayed; tried again later)."""
        self.deferred_commits = 0
        """Peer commits that waited because the store could not take the new epoch."""
        self.late_confirmations = 0
        """Our commits the peer confirmed whose new epoch the store took only later (see :meth:`_process`)."""
        self._store_retry_at: float | None = None  # the store was unavailable: work it refused waits until then
        self._withheld: list[SessionAction] | None = None  # a peer commit's answer, until its epoch is stored
        self._commit_owed = False  # the peer's CommitRequest was answered by a commit the store could not take
        self._full_since: float | None = None  # APQ: when our last FULL commit went out (or the keys came)
        self._full_waiting = False  # APQ: a FULL rekey was asked for before confirmation
        self.full_commits = 0
        """APQ: our FULL commits on this connection (the PQ group's new epochs we made)."""

    def __repr__(self) -> str:
        side = "client" if self.is_client else "server"
        return f"ProfileEndpoint({side}, session={self.session!r}, resumed={self.resumed})"

    # -- starting --------------------------------------------------------------------------

    def start(self) -> list[SessionAction]:
        """Client: the ClientHello, or a ResumptionRequest when the store holds ``resume_group_id``."""
        if not self.is_client:
            raise StateError("only the client starts a connection")
        if self.session is not None:
            raise StateError("this connection has started already")
        stored = self._load(self.resume_group_id) if self.resume_group_id is not None else None
        if stored is not None and self.resume_group_id is not None:
            self.session = TwoPartySession.from_state(stored, self.profile,
                                                      on_state_change=self._writer_for(stored, self.resume_group_id))
            self.session.connection_lost()
            self.resumed = True
            log.info("resuming group %s at epoch %s", self.session.group_id.hex() if self.session.group_id else "?",
                     self.session.epoch)
            actions = self.session.resume(now=self._wall_now())
            self._count_full(actions)
            return actions
        self.session, actions = TwoPartySession.initiator(self.profile, on_state_change=self._writer_for(None))
        return actions

    def _start_server(self, message: ProfileMessage) -> TwoPartySession:
        if message.msg_type == ProfileMessageType.CLIENT_HELLO:
            # Nothing is stored before the client confirms: a replayed ClientHello leaves no trace.
            return TwoPartySession.responder(self.profile, on_state_change=self._writer_for(None, enabled=False))
        if message.msg_type != ProfileMessageType.RESUMPTION_REQUEST or not self.allow_resumption:
            expected = "ClientHello or ResumptionRequest" if self.allow_resumption else "ClientHello"
            raise UnexpectedMessage(f"a connection starts with {expected}, not {message.msg_type.name}")
        group_id = group_id_of(message.body)
        stored = self._load(group_id)
        if stored is None:
            raise ValidationError(f"no stored session for group {group_id.hex()}")
        session = TwoPartySession.from_state(stored, self.profile, on_state_change=self._writer_for(stored, group_id))
        session.connection_lost()
        self.resumed = True
        return session

    def _load(self, group_id: bytes) -> bytes | None:
        return self.store.load(group_id) if self.store is not None else None

    # -- running -------------------------------------------------------------------------------

    def receive(self, frame: bytes | ProfileMessage, now: float) -> list[SessionAction]:
        """One profile message from the peer; a server's first one starts or resumes the session.

        A ConnectionUpdate, or a CommitRequest we would answer with a commit
        (each costs us a commit's work), that finds the peer's commit budget
        spent is held (nothing is returned) until :meth:`poll` finds a token;
        a second one while one is held is refused with PeerRateExceeded.  A
        request we ignore costs nothing and is not charged.
        """
        message = frame if isinstance(frame, ProfileMessage) else ProfileMessage.from_bytes(frame)
        if self.session is None:
            if self.is_client:
                raise StateError("the client has not started")
            self.session = self._start_server(message)
        forced = self._forces_commit(message)
        if self._held is not None:
            if forced:
                raise PeerRateExceeded(f"a second {message.msg_type.name} while one waits for the peer's commit "
                                       f"budget ({self.profile.rekey.peer_commit_interval} s per commit)")
            held, self._held = self._held, None  # the held commit came first: it is processed first
            return self._process(held, now) + self._process(message, now)
        if forced and not self.peer_budget.take(now):
            self._held = message
            self.peer_budget.deferred += 1
            log.info("the peer forces commits faster than one per %s s: its %s waits",
                     self.profile.rekey.peer_commit_interval, message.msg_type.name)
            return []
        return self._process(message, now)

    def _forces_commit(self, message: ProfileMessage) -> bool:
        if message.msg_type == ProfileMessageType.CONNECTION_UPDATE:
            return True
        session = self.session
        return (message.msg_type == ProfileMessageType.COMMIT_REQUEST and session is not None and session.synced
                and session.turn is Turn.OURS)

    def _process(self, message: ProfileMessage, now: float) -> list[SessionAction]:
        session = self.session
        assert session is not None
        if message.msg_type == ProfileMessageType.COMMIT_REQUEST:  # answered with our commit, or ignored
            return self._after_receive(self._our_commit(lambda: self._answer_request(message, now), now, owed=True),
                                       now)
        # The peer keeps its old keys until our EpochKeyUpdate, so the new epoch of its ConnectionUpdate can wait
        # in memory if the store cannot take it yet, its EpochKeyUpdate and key change withheld (a message's keys
        # are used up once it is read: it could not be read again later).  The peer's EpochKeyUpdate confirming
        # our commit needs no write before we act on it: the store holds that commit, pending, and a resumption
        # from it recovers the epoch (the profile's commit in flight), so the keys change and the write waits.
        # Any other write failure ends the connection, and the client resumes.
        deferrable = (ProfileMessageType.CONNECTION_UPDATE, ProfileMessageType.EPOCH_KEY_UPDATE)
        writer = self._writer if message.msg_type in deferrable else None
        if writer is not None:
            writer.deferring = True
        try:
            actions = session.receive(message, now=self._wall_now())
        finally:
            if writer is not None:
                writer.deferring = False
        if message.msg_type == ProfileMessageType.RESUMPTION_REQUEST:
            self._count_full(actions)  # our answer, a FULL commit in an APQ session
        if writer is not None and writer.unstored and message.msg_type == ProfileMessageType.EPOCH_KEY_UPDATE:
            self._store_retry_at = now + STORE_RETRY
            self.late_confirmations += 1
            log.info("the new epoch is stored once the session store answers (retried in %.1f s); until then it "
                     "holds our commit, pending, from which a resumption recovers it", STORE_RETRY)
        elif writer is not None and writer.unstored:
            self._withheld = actions
            self._store_retry_at = now + STORE_RETRY
            self.deferred_commits += 1
            log.info("the peer's commit waits for the session store (retried in %.1f s); the keys stay as they are",
                     STORE_RETRY)
            return []
        return self._after_receive(actions, now)

    def _answer_request(self, message: ProfileMessage, now: float) -> list[SessionAction]:
        """The peer's CommitRequest: our commit if it is our turn (FULL if ``full_seconds`` say so)."""
        session = self.session
        assert session is not None
        return session.receive(message, now=self._wall_now(), full=self._full_due(now))

    def _after_receive(self, actions: list[SessionAction], now: float) -> list[SessionAction]:
        if any(isinstance(action, KeysChanged) for action in actions):
            self.meter.restart(now)
            if self._full_since is None:
                self._full_since = now
            self._commit_owed = False  # new keys: whatever the peer asked for happened
            if self.is_client or self.resumed:  # the peer made this epoch, or proved it holds it
                actions += self._confirm()
        return actions

    def poll(self, now: float) -> list[SessionAction]:
        """Timers (call from the transport's timer, at :meth:`next_timer`).

        In order: a peer commit whose epoch waits for the store (once the
        retry time has come; likewise a confirmed epoch of ours), our answer to the peer's CommitRequest that the
        store could not take (likewise), a held peer commit once its budget allows, then a
        CommitRequest left unanswered for ``turn_timeout`` (per
        ``on_unanswered``: our own commit, or PeerSkippedTurn), then the time
        trigger of the rekey policy.
        """
        actions: list[SessionAction] = []
        if self._withheld is not None and not self._store_waits(now):
            actions += self._store_withheld(now)
        elif self._unstored() and not self._store_waits(now):
            self._flush(now)
        if self._commit_owed and not self._store_waits(now) and self._may_rekey():
            self._commit_owed = False  # the peer asked for it: it waits for our commit, not its own timer
            session = self.session
            assert session is not None
            actions += self._our_commit(lambda: session.update(now=self._wall_now(), full=self._full_due(now)),
                                        now, owed=True)
        if self._held is not None and self.peer_budget.take(now):
            held, self._held = self._held, None
            actions += self._process(held, now)
        actions += self._check_request(now)
        if self.rekey_due(now):
            actions += self.want_new_keys(now)
        return actions

    def _store_withheld(self, now: float) -> list[SessionAction]:
        """Try again to store the epoch of a peer commit we read; once stored, its answer goes out."""
        assert self._withheld is not None
        if not self._flush(now):
            self.deferred_commits += 1
            return []
        actions, self._withheld = self._withheld, None
        return self._after_receive(actions, now)

    def _flush(self, now: float) -> bool:
        """Write the state that waits in memory; False, and a new retry time, if the store still cannot take it."""
        assert self._writer is not None and self.session is not None
        try:
            self._writer.flush(self.session)
        except StoreUnavailable:
            self._store_retry_at = now + STORE_RETRY
            return False
        return True

    def _unstored(self) -> bool:
        """A confirmed epoch waits in memory for the store (see :meth:`_process`)."""
        return self._withheld is None and self._writer is not None and self._writer.unstored

    def _store_work_waits(self) -> bool:
        """Something the store refused waits for the retry time: a peer commit's answer, a commit we owe the
        peer, or a confirmed epoch of ours."""
        return self._withheld is not None or self._commit_owed or self._unstored()

    def _our_commit(self, step: Callable[[], list[SessionAction]], now: float | None, *,
                    owed: bool = False) -> list[SessionAction]:
        """Run a step that commits (or asks for a commit); if the store cannot take it, abandon it: the keys
        stay as they are (the session is unchanged) and the policy tries again after STORE_RETRY.  A commit
        ``owed`` to the peer (the answer to its CommitRequest) is tried again then whatever the policy says:
        the peer waits for it."""
        try:
            actions = step()
        except StoreUnavailable as exc:
            self.abandoned_rekeys += 1
            self._commit_owed = self._commit_owed or owed
            if now is not None:
                self._store_retry_at = now + STORE_RETRY
            log.info("rekey abandoned, the keys stay as they are: %s", exc)
            return []
        if self._count_full(actions) and now is not None:
            self._full_since = now
        return actions

    def _count_full(self, actions: list[SessionAction]) -> bool:
        """Count a FULL commit of ours among ``actions`` (a rekey, or a resumption's request or response)."""
        pending = self.session.pending if self.session is not None else None
        ours = (ProfileMessageType.CONNECTION_UPDATE, ProfileMessageType.RESUMPTION_REQUEST,
                ProfileMessageType.RESUMPTION_RESPONSE)
        if pending is not None and pending.full and any(isinstance(a, SendMessage) and a.msg_type in ours
                                                        for a in actions):
            self.full_commits += 1
            return True
        return False

    def _full_due(self, now: float | None) -> bool:
        """APQ: ``RekeyPolicy.full_seconds`` have passed since our last FULL commit (or the keys came)."""
        seconds = self.profile.rekey.full_seconds
        return (seconds is not None and now is not None and self._full_since is not None
                and now - self._full_since >= seconds)

    def next_timer(self, now: float) -> float | None:
        """When :meth:`poll` has something to do (None: nothing waits)."""
        times = []
        if self._store_retry_at is not None and (self._store_waits(now) or self._store_work_waits()):
            times.append(self._store_retry_at)
        if self._held is not None:
            times.append(self.peer_budget.ready_at(now))
        if self._request_waits():
            assert self._asked_at is not None
            times.append(self._asked_at + self.profile.rekey.turn_timeout)
        due_at = self.meter.due_at()
        if due_at is not None and self._may_rekey() and not self._store_waits(now):
            times.append(due_at)
        return min(times, default=None)

    def _request_waits(self) -> bool:
        """Whether our CommitRequest still waits for the peer's commit (forgets one that was answered)."""
        if self._asked_at is not None and (self.session is None or self.session.turn is not Turn.ASKED):
            self._asked_at = None  # answered: the peer committed (or the connection went)
        return self._asked_at is not None

    def _check_request(self, now: float) -> list[SessionAction]:
        if not self._request_waits():
            return []
        session = self.session
        assert session is not None and self._asked_at is not None
        policy = self.profile.rekey
        if now - self._asked_at < policy.turn_timeout:
            return []
        self._asked_at = None
        self.unanswered_requests += 1
        if policy.on_unanswered == "close":
            raise PeerSkippedTurn(f"the peer did not commit within {policy.turn_timeout} s of our request "
                                  "(its turn); the rekey policy closes such connections")
        log.warning("the peer did not commit within %s s of our request (its turn): committing ourselves "
                    "(%d unanswered on this connection)", policy.turn_timeout, self.unanswered_requests)
        return self._our_commit(lambda: session.update(now=self._wall_now(), full=self._full_due(now)), now)

    def check_peer(self) -> None:
        """Ask the trust configuration in force whether it still accepts the peer (RevokedPeer if not).

        Transports call this when the configuration is replaced at run time, and close on refusal.
        """
        if self.session is not None and self.session.group is not None:
            self.session.authorize_peer(self._wall_now())

    def _wall_now(self) -> int:
        return int(self.profile.wall_clock())

    def peer_confirmed(self) -> list[SessionAction]:
        """The transport saw the peer use the current keys (a phase-1 server's confirmation).

        Stores the session from now on, and returns a rekey that was asked for
        before confirmation, if any.  Idempotent.
        """
        if self.session is None or self.session.group is None:
            raise StateError("nothing to confirm before keys exist")
        return self._confirm()

    def _confirm(self) -> list[SessionAction]:
        if self.confirmed:
            return []
        self._record_first_use()  # a key first seen is pinned only now that its holder proved the epoch
        if self._writer is not None and self.session is not None:
            self._writer.enable(self.session)  # stored first: a failed write leaves us unconfirmed
        self.confirmed = True
        if self._rekey_waiting:
            self._rekey_waiting, full, self._full_waiting = False, self._full_waiting, False
            return self.rekey(full=full)
        return []

    def _record_first_use(self) -> None:
        service = self.profile.authentication_service
        group = self.session.group if self.session is not None else None
        if not isinstance(service, RecordsConfirmedPeers) or group is None:
            return
        for leaf in peer_leaves(group):
            service.confirmed(leaf.credential, leaf.signature_key)

    def rekey(self, *, full: bool = False, now: float | None = None) -> list[SessionAction]:
        """Our own ConnectionUpdate now, whoever's turn it is, if the session is synced (else nothing: one
        rekey at a time).  The application's explicit rekey; the policy goes through :meth:`want_new_keys`.
        ``full`` makes it FULL in an APQ session (``now``, the transport's clock, restarts ``full_seconds``).

        Before the connection is confirmed the rekey waits, and happens at confirmation.
        """
        if self.session is None or self.session.group is None:
            return []
        if not self.confirmed:
            self._rekey_waiting = True
            self._full_waiting = self._full_waiting or full
            return []
        if self.session.state is not State.SYNCED or self._held is not None or self._withheld is not None:
            return []  # one commit at a time: a held peer commit goes first
        session = self.session
        full = full or self._full_due(now)
        return self._our_commit(lambda: session.update(now=self._wall_now(), full=full), now)

    def want_new_keys(self, now: float) -> list[SessionAction]:
        """The rekey policy (or a key-usage limit) wants new keys: our commit on our turn, a CommitRequest on
        the peer's.  Nothing before confirmation, while a commit is in flight, while a held peer commit waits,
        or while our request waits for its answer."""
        if not self._may_rekey():
            return []
        session = self.session
        assert session is not None
        full = self._full_due(now)
        actions = self._our_commit(lambda: session.rekey(now=self._wall_now(), full=full), now)
        if any(isinstance(a, SendMessage) and a.msg_type == ProfileMessageType.COMMIT_REQUEST for a in actions):
            self._asked_at = now
            self.commit_requests += 1
        return actions

    def _may_rekey(self) -> bool:
        session = self.session
        return (session is not None and self.confirmed and session.synced and session.turn is not Turn.ASKED
                and self._held is None and self._withheld is None)

    def rekey_due(self, now: float) -> bool:
        """Whether the rekey policy wants new keys now and nothing it started is still waiting (a query)."""
        return self._may_rekey() and not self._store_waits(now) and self.meter.due(now)

    def _store_waits(self, now: float) -> bool:
        """The store was unavailable and its retry time has not come (a passed one is forgotten once nothing
        held waits for it)."""
        if self._store_retry_at is None:
            return False
        if now < self._store_retry_at:
            return True
        if not self._store_work_waits():
            self._store_retry_at = None
        return False

    def record_sent(self, count: int) -> None:
        """Count application bytes sent under the current keys, for the byte-count policy."""
        self.meter.record_sent(count)

    def connection_lost(self) -> None:
        """The transport broke.  A store that cannot take the session's state now changes nothing: what it holds
        is still a point a resumption recovers from (an epoch waiting to be stored is either the peer's commit,
        which the peer holds pending too, or ours that the store holds pending)."""
        if self.session is not None:
            try:
                self.session.connection_lost()
            except StoreUnavailable as exc:
                log.info("the session store could not take the state at the connection's end (%s): it keeps the "
                         "last state it took", exc)

    # -- persistence ---------------------------------------------------------------------------

    def _writer_for(self, loaded: bytes | None, group_id: bytes | None = None, *,
                    enabled: bool = True) -> StoreWriter | None:
        if self.store is None:
            return None
        self._writer = StoreWriter(self.store, loaded=loaded, group_id=group_id, enabled=enabled)
        return self._writer


class StoreWriter:
    """A session's ``on_state_change``: keeps ``store`` in step with it, by fenced writes.

    ``loaded`` is what the session was read from (None for a new one): every
    write replaces exactly what this writer last saw, so a connection whose
    session continued elsewhere fails with StaleStateError instead of
    overwriting newer state.  Writes only when the stored form changed; a
    closed session's state is deleted.  A disabled writer writes nothing
    until :meth:`enable`.
    """

    def __init__(self, store: SessionStore, *, loaded: bytes | None = None, group_id: bytes | None = None,
                 enabled: bool = True) -> None:
        self.store = store
        self.enabled = enabled
        self.failed = False
        self.deferring = False
        """Set by the endpoint while a write may wait: StoreUnavailable then marks the state unstored."""
        self.unstored = False
        """The session's state could not be written yet (it waits in memory; see :meth:`flush`)."""
        self._late: tuple[bytes, bytes, Any] | None = None  # a save that timed out: (group, state, its call)
        self._rewrite = False  # what is stored is not durable yet (too few replicas acknowledged it): write again
        self._stored = loaded
        self._group_id = group_id

    def enable(self, session: TwoPartySession) -> None:
        self.enabled = True
        self(session)

    def __call__(self, session: TwoPartySession) -> None:
        """Write ``session``'s state.  After one failed write (the connection then ends) it writes
        nothing more: what it last saw is no longer what is stored, so every later write would fail too."""
        if not self.enabled or self.failed:
            return
        try:
            self._write(session)
        except StoreUnavailable:
            if self.deferring:
                self.unstored = True
                return
            raise  # nothing was written (as far as we know) and the session stays as it was: writes may go on
        except StoreError:
            self.failed = True
            raise
        self.unstored = False

    def flush(self, session: TwoPartySession) -> None:
        """Write a state that waited in memory (StoreUnavailable again if the store still cannot take it)."""
        if self.unstored:
            self.__call__(session)

    def _write(self, session: TwoPartySession) -> None:
        state = session.to_state()
        group_id = session.group_id
        if state is not None and group_id is not None:
            self._settle_late()
            if state != self._stored or self._rewrite:
                try:
                    self.store.save(group_id, state, replaces=self._stored)
                except StoreUnavailable as exc:
                    if exc.late is not None:
                        self._late = (group_id, state, exc.late)
                    raise
                self._stored, self._group_id, self._rewrite = state, group_id, False
        elif session.state is State.CLOSED and self._group_id is not None:
            self.store.delete(self._group_id, replaces=self._stored)
            self._stored = self._group_id = None


    def _settle_late(self) -> None:
        """A save that timed out may have landed since: if it did, it is what is stored now (the next fenced
        write replaces it); while it is still outstanding, no other write may race it.  One that ended in an
        error may have landed too (Redis runs a command it had received before its client gave up), so
        then the stored state is read back once."""
        if self._late is None:
            return
        group_id, state, call = self._late
        if not call.done():
            raise StoreUnavailable("an earlier write to the session store is still outstanding")
        error = call.exception()
        if error is None or self.store.load(group_id) == state:
            # It is what is stored now; unless it ended well it may not be durable (a replica may not have it):
            # write it again before it counts.
            self._stored = state
            self._rewrite = error is not None or call.result() == NOT_DURABLE
        self._late = None


def persist_to(store: SessionStore, *, loaded: bytes | None = None,
               group_id: bytes | None = None) -> Callable[[TwoPartySession], None]:
    """An ``on_state_change`` callback that keeps ``store`` in step (fenced) with a session read from ``loaded``."""
    return StoreWriter(store, loaded=loaded, group_id=group_id)


def group_id_of(body: bytes) -> bytes:
    """The group a ResumptionRequest's commit belongs to (readable before any key is known; of an APQ FULL
    commit, the T group, under which the session is stored)."""
    message = safe_aad.t_half(safe_aad.decode_commit(body))
    if isinstance(message.body, PrivateMessage):
        return message.body.group_id
    if isinstance(message.body, PublicMessage):
        return message.body.content.group_id
    raise ValidationError("a ResumptionRequest must carry a commit")
