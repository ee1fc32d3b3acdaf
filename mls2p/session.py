"""The MLS two-party profile session (draft-kohbrok-mls-two-party-profile-01).

One sans-I/O object runs the profile for one two-member group across any
number of connections: key establishment (ClientHello/ServerHello), ping-pong
PCS rekeying (ConnectionUpdate/EpochKeyUpdate) and resumption
(ResumptionRequest/ResumptionResponse).  Transports feed it whole
:class:`~mls2p.wire.ProfileMessage` bytes and the current time and act on
what it returns, in order:

* :class:`SendMessage`: write these bytes to the peer under the transport keys
  currently in use;
* :class:`KeysChanged`: from now on protect and unprotect with keys exported
  from ``epoch`` (the draft's key-switch points: the replier after sending its
  EpochKeyUpdate, the committer after receiving it);
* :class:`ResumptionIgnored`: a colliding resumption lost the tie-break.

What may happen in which state is the table in :mod:`mls2p.transitions`; this
class runs the table's actions.  Every action computes the next
:class:`_Progress` without touching the current one, and the session swaps it
in only when the action succeeded, so a message that is refused (not allowed
now, malformed, forged, replayed) raises and leaves the session exactly as it
was.  That is a deliberate deviation from the draft's "delete the group state
on any failure" (docs/profile.md): deleting on unauthenticated input would let
anyone who can replay a message destroy a session.  Replaced epochs are
destroyed as soon as the swap makes them unreachable.

**APQ-MLS** (docs/pq.md, "APQ in the profile"): a session may run a PQ group
beside its group (then the T group).  The T group gives the record keys, the
epochs, the EpochKeyUpdates and the exporter exactly as without APQ; our commit
is PARTIAL (the T group alone) or FULL (both groups, the PQ group's exporter
as a PSK in the T commit, carried as one APQMessagePair), per
``RekeyPolicy.full_every`` and ``rekey(full=True)``.  The joiner's first
commit and every resumption commit are FULL.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from mlscore.apq import APQ_COMPONENT, APQMessagePair, APQMode, APQPair, ApqPsks, apq_info_of, is_message_pair
from mlscore.crypto import get_suite
from mlscore.errors import CredentialError, EpochError, MLSError, StateError, ValidationError
from mlscore.framing import MLSMessage, PrivateMessage
from mlscore.group import ApplicationMessage, CommitMessage, Group, GroupConfig
from mlscore.key_package import KeyPackageBundle, create_key_package
from mlscore.leaf_node import LeafNode
from mlscore.messages import Add, AppDataUpdate, PreSharedKey, Welcome

from . import negotiation, persistence, safe_aad
from .actions import OUR_COMMIT_CONFIRMED, KeysChanged, ResumptionIgnored, SendMessage, SessionAction
from .config import ProfileConfig, Role
from .errors import ReplayedMessage, RevokedPeer, StoredStateError, UnexpectedMessage
from .persistence import PendingCommit, StoredSession
from .transitions import Action, Event, State, Transition, Turn, authorizes, lookup
from .wire import CommitRequest, EpochKeyUpdate, ProfileMessage, ProfileMessageType, TwoPartyMessageType

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class _Progress:
    """The session's protocol state; replaced whole, never modified."""

    state: State
    current_role: Role
    group: Group | None = None
    pending: PendingCommit | None = None
    last_applied_commit: bytes | None = field(default=None, repr=False)
    key_packages: tuple[KeyPackageBundle, ...] = field(default=(), repr=False)
    heard: bool = False  # a message from the peer arrived on the current connection
    our_turn: bool = True  # the last confirmed commit was the peer's (docs/profile.md, "Taking turns")
    asked: bool = False  # we sent a CommitRequest on this connection and the peer has not committed since
    pq: Group | None = None  # APQ: the PQ group beside ``group`` (the T group)
    partials: int | None = 0  # APQ: our PARTIAL commits since our last FULL one (None: we never made a FULL one)

    def group_objects(self) -> list[Group]:
        pending = self.pending
        candidates = (self.group, self.pq, pending.group if pending else None, pending.pq if pending else None)
        return [g for g in candidates if g is not None]

    def groups(self) -> set[int]:
        return {id(g) for g in self.group_objects()}


_Outcome = tuple[_Progress, list[SessionAction]]


def _destroy_unless_kept(progress: _Progress, kept: set[int]) -> None:
    """Wipe the secrets of ``progress``'s groups that the state in force does not hold."""
    for group in progress.group_objects():
        if id(group) not in kept:
            group.destroy()


class TwoPartySession:
    """One side of a two-party MLS group, across connections."""

    def __init__(self, config: ProfileConfig, *, initial_role: Role, progress: _Progress,
                 on_state_change: Callable[[TwoPartySession], None] | None = None,
                 psks: ApqPsks | None = None) -> None:
        self.config = config
        self.initial_role = initial_role
        self._progress = progress
        self._on_state_change = on_state_change
        self._psks = psks if psks is not None else ApqPsks()  # APQ: how our T groups read the PQ group's PSK
        self._full_asked = False  # APQ: the commit being made was asked to be FULL (update/rekey(full=True))

    def __repr__(self) -> str:
        return (f"TwoPartySession(state={self.state.value!r}, epoch={self.epoch}, "
                f"initial_role={self.initial_role.value}, current_role={self.current_role.value})")

    # -- construction ------------------------------------------------------------------

    @classmethod
    def initiator(cls, config: ProfileConfig, *,
                  on_state_change: Callable[[TwoPartySession], None] | None = None
                  ) -> tuple[TwoPartySession, list[SessionAction]]:
        """Start phase 1: one KeyPackage per suite we offer (mls2p.negotiation), and the ClientHello."""
        apq = config.apq != "off"
        offered = config.suite_preference
        signed = (*offered, config.apq_suite) if apq else offered  # APQ's mark: the PQ suite, signed (negotiation)
        bundles = tuple(_own_key_package(config, suite_id, signed, apq=apq) for suite_id in offered)
        pq_bundle = _own_key_package(config, config.apq_suite, signed, apq=True) if apq else None
        progress = _Progress(State.AWAITING_SERVER_HELLO, Role.INITIATOR,
                             key_packages=bundles + ((pq_bundle,) if pq_bundle else ()))
        session = cls(config, initial_role=Role.INITIATOR, progress=progress, on_state_change=on_state_change)
        hello = negotiation.client_hello([bundle.key_package for bundle in bundles],
                                         pq_bundle.key_package if pq_bundle else None)
        return session, [_send(ProfileMessageType.CLIENT_HELLO, hello)]

    @classmethod
    def responder(cls, config: ProfileConfig, *,
                  on_state_change: Callable[[TwoPartySession], None] | None = None) -> TwoPartySession:
        """Wait for a ClientHello."""
        return cls(config, initial_role=Role.RESPONDER, progress=_Progress(State.AWAITING_CLIENT_HELLO,
                                                                           Role.RESPONDER),
                   on_state_change=on_state_change)

    # -- persistence -----------------------------------------------------------------------

    def to_state(self) -> bytes | None:
        """The resumable state (mls2p.persistence format 1), or None when there is nothing to resume."""
        p = self._progress
        if p.group is None or p.state not in persistence.STATE_CODES:
            return None
        return persistence.encode(StoredSession(p.state, self.initial_role, p.current_role, p.group,
                                                p.last_applied_commit, p.pending, p.pq, p.partials))

    @classmethod
    def from_state(cls, data: bytes, config: ProfileConfig, *,
                   on_state_change: Callable[[TwoPartySession], None] | None = None) -> TwoPartySession:
        """Rebuild a session from :meth:`to_state`; raises StoredStateError for anything unreadable."""
        psks = ApqPsks()
        stored = persistence.decode(data, APQPair.shared_config(config.group_config(None), psks))
        if stored.pq is None and apq_info_of(stored.group) is not None:
            raise StoredStateError("stored session state is corrupt: its group belongs to an APQ pair, but the "
                                   "state holds no PQ group")
        if stored.pq is None and config.apq == "require":
            raise StoredStateError("the stored session is classical, and this configuration requires APQ: start "
                                   "a new session")
        if stored.pq is not None:
            pending = stored.pending
            try:
                APQPair.of(stored.group, stored.pq, psks)
                if pending is not None and pending.pq is not None:
                    APQPair.of(pending.group, pending.pq, psks)
            except MLSError as exc:
                raise StoredStateError(f"stored session state is corrupt: {exc}") from None
        progress = _Progress(stored.state, stored.current_role, stored.group, stored.pending,
                             stored.last_applied_commit, pq=stored.pq, partials=stored.partials)
        return cls(config, initial_role=stored.initial_role, progress=progress, on_state_change=on_state_change,
                   psks=psks)

    # -- queries (never change anything) -------------------------------------------------------

    @property
    def state(self) -> State:
        return self._progress.state

    @property
    def current_role(self) -> Role:
        return self._progress.current_role

    @property
    def group(self) -> Group | None:
        return self._progress.group

    @property
    def pending(self) -> PendingCommit | None:
        return self._progress.pending

    @property
    def last_applied_commit(self) -> bytes | None:
        return self._progress.last_applied_commit

    @property
    def epoch(self) -> int | None:
        return self.group.epoch if self.group else None

    @property
    def apq(self) -> bool:
        """Whether this session runs APQ-MLS (a PQ group beside its group)."""
        return self._progress.pq is not None

    @property
    def pq_epoch(self) -> int | None:
        """APQ: the PQ group's epoch (it moves at FULL commits only)."""
        return self._progress.pq.epoch if self._progress.pq is not None else None

    @property
    def group_id(self) -> bytes | None:
        return self.group.group_id if self.group else None

    @property
    def established(self) -> bool:
        return self.group is not None and self.state is not State.CLOSED

    @property
    def synced(self) -> bool:
        return self.state is State.SYNCED

    @property
    def turn(self) -> Turn:
        """Whose commit is next; always ours when the rekey policy does not take turns."""
        p = self._progress
        if p.our_turn or not self.config.rekey.take_turns:
            return Turn.OURS
        return Turn.ASKED if p.asked else Turn.PEERS

    def next_epoch_group(self, epoch: int) -> Group | None:
        """The group whose keys epoch ``epoch`` uses: the current one, or our pending commit's."""
        if self.group is not None and self.group.epoch == epoch:
            return self.group
        if self.pending is not None and self.pending.group.epoch == epoch:
            return self.pending.group
        return None

    def export_secret(self, label: bytes | str, context: bytes, length: int) -> bytes:
        """MLS-Exporter of the epoch whose keys are in use."""
        return self._keyed_group().export_secret(label, context, length)

    def safe_export(self) -> bytes:
        """This profile's safe-exporter secret for the current epoch (once per epoch)."""
        return self._keyed_group().safe_export(self.config.component_id)

    def _keyed_group(self) -> Group:
        if self.group is None or self.state is State.CLOSED:
            raise StateError(f"no keys in state {self.state.value}")
        return self.group

    # -- events --------------------------------------------------------------------------------

    def receive(self, data: bytes | ProfileMessage, *, now: int | None = None,
                full: bool = False) -> list[SessionAction]:
        """Process one profile message from the peer.

        Raises a :class:`~mlscore.errors.RemoteError` (UnexpectedMessage when
        the state does not allow the message) and changes nothing when the
        message is refused.  ``full``: a commit of ours it leads to (the answer to a CommitRequest) is FULL in
        an APQ session.
        """
        message = data if isinstance(data, ProfileMessage) else ProfileMessage.from_bytes(data)
        return self._run_asking_full(Event.received(message.msg_type), now, full, message.body)

    def update(self, *, now: int | None = None, full: bool = False) -> list[SessionAction]:
        """Send a ConnectionUpdate (a commit with a fresh UpdatePath) now, whoever's turn it is; only when synced.

        Our own commit is what locks out a thief of our state, so an application that fears one calls this.
        ``now`` (seconds since the Unix epoch) is the time the peer's credential is re-checked at.  ``full``
        makes an APQ session's commit FULL (a quantum thief of our state is locked out too).
        """
        return self._run_asking_full(Event.UPDATE, now, full)

    def rekey(self, *, now: int | None = None, full: bool = False) -> list[SessionAction]:
        """The rekey policy wants new keys: commit on our turn, else ask the peer to (one CommitRequest).

        Nothing while a commit is in flight or a request waits.  Taking turns
        is what makes each side commit at least every second rekey
        (docs/profile.md, "Taking turns").  ``full``: as for :meth:`update`.
        """
        return self._run_asking_full(Event.REKEY, now, full)

    def _run_asking_full(self, event: Event, now: int | None, full: bool, body: bytes = b"") -> list[SessionAction]:
        self._full_asked = full
        try:
            return self._run(event, body, now)
        finally:
            self._full_asked = False

    def resume(self, *, now: int | None = None) -> list[SessionAction]:
        """Start phase 3 on a new connection: we become the current initiator (the peer is re-checked first)."""
        return self._run(Event.RESUME, now=now)

    def connection_lost(self) -> None:
        """The transport broke: forget per-connection state, keep the group (phase 1 state is dropped)."""
        self._run(Event.CONNECTION_LOST)

    def close(self) -> None:
        """End the relationship: the group state is deleted and can never be resumed.

        To keep it for a later resumption, call :meth:`connection_lost` instead.
        """
        self._run(Event.CLOSE)

    def _run(self, event: Event, body: bytes = b"", now: int | None = None) -> list[SessionAction]:
        current = self._progress
        transition = lookup(current.state, event, current_role=current.current_role,
                            initial_role=self.initial_role, turn=self.turn)
        if transition is None:
            error = UnexpectedMessage if event.remote else StateError
            raise error(f"{event.value} is not allowed in state {current.state.value}")
        if event is Event.RESUMPTION_REQUEST and current.heard:
            # Only a connection's first message: mid-connection, its answer would go nowhere useful
            # (in QUIC-MLS to a packet space whose keys are gone) and leave the session waiting.
            raise ReplayedMessage("a ResumptionRequest is valid only as the first message of a connection")
        new, actions = self._ACTIONS[transition.action](self, current, body, now)
        if event.remote:
            new = replace(new, heard=True)
        if authorizes(event, transition.action) and new.group is not None:
            self._authorize_or_discard(current, new, now)
        self._swap(transition, new)
        return actions

    def authorize_peer(self, now: int | None) -> None:
        """Raise :class:`~mls2p.trust.RevokedPeer` unless the trust configuration in force accepts the peer.

        The session asks this at every event that reaches or keeps an epoch; a
        transport asks it again when the trust configuration is replaced.
        """
        for group in self._progress.group_objects():
            self._authorize(group, now)

    def _authorize(self, group: Group, now: int | None) -> None:
        for leaf in peer_leaves(group):
            try:
                self.config.peer_authentication.validate(leaf.credential, leaf.signature_key, group.suite.id, now)
            except CredentialError as exc:
                raise RevokedPeer(f"the peer is no longer trusted: {exc}") from None

    def _authorize_or_discard(self, current: _Progress, new: _Progress, now: int | None) -> None:
        try:
            for group in new.group_objects():
                self._authorize(group, now)
        except RevokedPeer:
            _destroy_unless_kept(new, current.groups())
            raise

    def _swap(self, transition: Transition, new: _Progress) -> None:
        """Move to ``new``; the store callback runs first, and if it raises the session stays as it was
        (the new state's own groups are destroyed, the old ones kept): a write that failed changes nothing."""
        assert new.state is transition.next_state, (transition, new.state)
        old = self._progress
        self._progress = new
        if old != new and self._on_state_change is not None:
            try:
                self._on_state_change(self)
            except BaseException:
                self._progress = old
                _destroy_unless_kept(new, old.groups())
                raise
        _destroy_unless_kept(old, new.groups())

    # -- actions: (current progress, message body, now) -> (next progress, what to do) -----------

    def _create_group(self, p: _Progress, body: bytes, now: int | None) -> _Outcome:
        config = self.config
        offer = negotiation.parse_client_hello(body)
        if config.apq == "off":
            key_package, pq_key_package = negotiation.choose(offer.key_packages, config.suite_preference), None
        else:
            key_package, pq_key_package = negotiation.choose_apq(offer, config.suite_preference, config.apq_suite,
                                                                 required=config.apq == "require")
        for offered in (key_package, pq_key_package):
            if offered is not None:
                safe_aad.require_component(offered.leaf_node.extensions, config.component_id,
                                           "the initiator's KeyPackage")
        suite_id = key_package.cipher_suite
        own = _own_key_package(config, suite_id, (suite_id,), apq=pq_key_package is not None)
        # The Add commit is ours: the initiator's turn comes first.
        ready = replace(p, state=State.SYNCED, our_turn=False)
        if pq_key_package is not None:
            own_pq = _own_key_package(config, config.apq_suite, (config.apq_suite,), apq=True)
            founding = APQPair.create(own, own_pq, mode=config.apq_mode, extensions=safe_aad.group_extensions(config),
                                      config=self._group_config(now), psks=self._psks, t_group_id=self._new_group_id())
            with self._pq_key_hint():
                added = founding.commit_full(add=(key_package, pq_key_package))
            for group in (founding.t, founding.pq):
                group.destroy()
            welcomes = added.welcomes()
            assert welcomes is not None
            ready = replace(ready, group=added.pair.t, pq=added.pair.pq, partials=0)
            welcome = welcomes.to_message_bytes()
        else:
            founding_group = Group.create(own, group_id=self._new_group_id(),
                                          extensions=safe_aad.group_extensions(config), config=self._group_config(now))
            result = founding_group.commit([Add(key_package)], force_path=False, include_tree_in_welcome=True)
            founding_group.destroy()
            assert result.welcome is not None
            ready, welcome = replace(ready, group=result.group), result.welcome.to_bytes()
        assert ready.group is not None
        return ready, [_send(ProfileMessageType.SERVER_HELLO, welcome), KeysChanged(ready.group.epoch,
                                                                                   "key establishment")]

    def _join_group(self, p: _Progress, body: bytes, now: int | None) -> _Outcome:
        config = self.config
        if is_message_pair(body):
            welcomes = APQMessagePair.from_message_bytes(body)
            if config.apq == "off":
                raise ValidationError("the server answered with APQ Welcomes, which we did not offer")
            t_bundle = self._offered_bundle(p, welcomes.t_message, config.suite_preference[:1])
            pq_bundle = self._offered_bundle(p, welcomes.pq_message, (config.apq_suite,))
            with self._pq_key_hint():
                pair = APQPair.join_pair(welcomes, t_bundle, pq_bundle, config=self._group_config(now),
                                         psks=self._psks)
            try:
                _check_pair_keys(pair)
            except ValidationError:
                for group in (pair.t, pair.pq):
                    group.destroy()
                raise
            joined = [(pair.t, t_bundle), (pair.pq, pq_bundle)]
            # our first commit is FULL (the combiner's section 3.2): partials=None
            ready = replace(p, group=pair.t, pq=pair.pq, partials=None)
        else:
            if config.apq == "require":
                raise negotiation.DowngradeError("the server answered without APQ, which we require")
            welcome = safe_aad.decode_as(body, Welcome, "ServerHello")
            bundle = self._offered_bundle(p, MLSMessage(welcome), config.suite_preference)
            group = Group.join(welcome, bundle, config=self._group_config(now))
            joined, ready = [(group, bundle)], replace(p, group=group)
        try:
            for group, bundle in joined:
                members = group.members()
                if len(members) != 2:
                    raise ValidationError(f"the group has {len(members)} members, the profile needs exactly two")
                if group.own_leaf_node.encryption_key != bundle.key_package.leaf_node.encryption_key:
                    raise ValidationError("our leaf in the group is not the KeyPackage we sent")
                safe_aad.require_component(group.context.extensions, config.component_id, "the GroupContext")
            assert ready.group is not None
            if not ready.group.group_id.startswith(config.group_id_prefix):  # the session's group (APQ: the T group)
                raise ValidationError(f"the group id does not start with {config.group_id_prefix!r}")
        except ValidationError:
            for group, _ in joined:
                group.destroy()
            raise
        assert ready.group is not None
        return (replace(ready, state=State.SYNCED, key_packages=(), our_turn=True),
                [KeysChanged(ready.group.epoch, "key establishment")])

    @contextlib.contextmanager
    def _pq_key_hint(self) -> Iterator[None]:
        """In mode 1 the peer signs the PQ group with a second (ML-DSA) key: a refusal says so, since one the
        user forgot to pin reads like a changed or stolen key otherwise."""
        try:
            yield
        except CredentialError as exc:
            if self.config.apq_mode != APQMode.CONFIDENTIALITY_AND_AUTHENTICITY:
                raise
            suite = self.config.apq_suite
            raise CredentialError(f"{exc} (with APQ suite {suite} each end signs the post-quantum group with a "
                                  f"second, {get_suite(suite).signature_scheme} key, which the other pins too: "
                                  f"'mls-tunnel fingerprint --suite {suite}' prints it)") from None

    def _new_group_id(self) -> bytes | None:
        """The id of a group we create: the configured prefix and 16 random bytes (None: Group.create's own)."""
        prefix = self.config.group_id_prefix
        return prefix + os.urandom(16) if prefix else None

    @staticmethod
    def _offered_bundle(p: _Progress, welcome: MLSMessage, suites: tuple[int, ...]) -> KeyPackageBundle:
        """Our KeyPackage of the suite a Welcome from the server uses, one of ``suites`` (the classical ones we
        offered, or APQ's PQ suite: a Welcome on our PQ KeyPackage is no classical answer)."""
        body = welcome.body
        if not isinstance(body, Welcome):
            raise ValidationError(f"ServerHello must carry a Welcome, got {welcome.wire_format.name}")
        bundle = next((b for b in p.key_packages
                       if b.key_package.cipher_suite == body.cipher_suite and body.cipher_suite in suites), None)
        if bundle is None:
            raise ValidationError(f"the server chose cipher suite {body.cipher_suite}, which we did not offer")
        return bundle

    def _apply_and_confirm(self, p: _Progress, body: bytes, now: int | None) -> _Outcome:
        assert p.group is not None
        message = self._checked_commit(body, {TwoPartyMessageType.CONNECTION_UPDATE})
        new_group, new_pq, digest = self._apply_peer_commit(p.group, p.pq, message, body, now)
        return self._confirm(replace(p, last_applied_commit=digest, pending=None, pq=new_pq), new_group,
                             "peer ConnectionUpdate")

    def _ignore_commit(self, p: _Progress, body: bytes, now: int | None) -> _Outcome:
        log.debug("ignoring a concurrent ConnectionUpdate: the current initiator's commit wins")
        return p, []

    def _adopt_pending(self, p: _Progress, body: bytes, now: int | None) -> _Outcome:
        assert p.pending is not None
        pending = p.pending.group
        message = safe_aad.decode_as(body, PrivateMessage, "EpochKeyUpdate")
        safe_aad.check_type(message.authenticated_data, self.config.component_id,
                         {TwoPartyMessageType.EPOCH_KEY_UPDATE})
        if message.epoch != pending.epoch:
            raise EpochError(f"EpochKeyUpdate for epoch {message.epoch}, expected {pending.epoch}")
        processed = pending.process(MLSMessage(message), now=now)
        if not isinstance(processed, ApplicationMessage):
            raise ValidationError("an EpochKeyUpdate must be an application message")
        update = EpochKeyUpdate.from_bytes(processed.data)
        if update.epoch != pending.epoch:
            raise EpochError(f"EpochKeyUpdate names epoch {update.epoch}, expected {pending.epoch}")
        return (replace(_ours_confirmed(p, p.pending), state=State.SYNCED, our_turn=False, asked=False),
                [KeysChanged(pending.epoch, OUR_COMMIT_CONFIRMED)])

    def _answer_resumption(self, p: _Progress, body: bytes, now: int | None) -> _Outcome:
        assert p.group is not None
        allowed = {TwoPartyMessageType.RESUMPTION_REQUEST, TwoPartyMessageType.CONNECTION_UPDATE,
                   TwoPartyMessageType.RESUMPTION_RESPONSE}
        message = self._checked_commit(body, allowed)
        epoch = safe_aad.message_epoch(message)
        digest = safe_aad.commit_hash(body)
        base = replace(p, current_role=Role.RESPONDER)
        if (p.state is State.AWAITING_EPOCH_KEY_UPDATE and digest == p.last_applied_commit
                and epoch + 1 == p.group.epoch and p.pending is not None
                and p.pending.msg_type is TwoPartyMessageType.RESUMPTION_RESPONSE):
            # The very request our pending response answers, again: the peer lost the response (its
            # connection timed out and it resends), or this is a replay.  Answer with the same
            # response, so every connection that carries this request leads the peer to the same
            # epoch.  (A fresh answer here split client and store whenever a client's old and new
            # connection both got through: the fleet test lost sessions that way.)  At most one such
            # connection can continue: the others' fenced writes at the EpochKeyUpdate fail.
            return base, [_send(ProfileMessageType.RESUMPTION_RESPONSE, p.pending.message)]
        if digest == p.last_applied_commit and epoch + 1 == p.group.epoch:
            # Rule 1: we applied it before the break; its confirmation was lost.  (Had the peer
            # confirmed anything after it, we would be past epoch + 1: then this is a replay.)
            base = replace(base, pending=None)
        elif p.pending is not None and epoch == p.pending.group.epoch:
            # Rule 2: the peer applied our pending commit; its confirmation was lost.
            group, pq, applied = self._apply_peer_commit(p.pending.group, p.pending.pq, message, body, now)
            base = replace(_ours_confirmed(base, p.pending), group=group, pq=pq, last_applied_commit=applied)
        else:
            if epoch != p.group.epoch:
                raise EpochError(f"ResumptionRequest commit for epoch {epoch}, we are at {p.group.epoch}")
            group, pq, applied = self._apply_peer_commit(p.group, p.pq, message, body, now)
            base = replace(base, group=group, pq=pq, pending=None, last_applied_commit=applied)
        return self._commit(base, TwoPartyMessageType.RESUMPTION_RESPONSE)

    def _ignore_resumption(self, p: _Progress, body: bytes, now: int | None) -> _Outcome:
        # Both requests crossed, so the peer is processing ours: exactly one side may process,
        # and it is the initial responder (docs/profile.md, "Crossed resumption requests").
        assert p.group is not None
        log.info("crossed resumption: we are the initial initiator, ignoring the peer's request")
        return p, [ResumptionIgnored(p.group.epoch)]

    def _finish_resumption(self, p: _Progress, body: bytes, now: int | None) -> _Outcome:
        assert p.pending is not None
        message = self._checked_commit(body, {TwoPartyMessageType.RESUMPTION_RESPONSE})
        own = _ours_confirmed(p, p.pending)  # the response was made in the epoch of our request
        assert own.group is not None
        new_group, new_pq, digest = self._apply_peer_commit(own.group, own.pq, message, body, now)
        return self._confirm(replace(own, pq=new_pq, last_applied_commit=digest), new_group, "resumption")

    def _send_commit(self, p: _Progress, body: bytes, now: int | None) -> _Outcome:
        return self._commit(p, TwoPartyMessageType.CONNECTION_UPDATE)

    def _request_commit(self, p: _Progress, body: bytes, now: int | None) -> _Outcome:
        assert p.group is not None
        log.debug("rekey due on the peer's turn: asking it to commit in epoch %d", p.group.epoch)
        return replace(p, asked=True), [_send(ProfileMessageType.COMMIT_REQUEST,
                                              CommitRequest(p.group.epoch).to_bytes())]

    def _answer_commit_request(self, p: _Progress, body: bytes, now: int | None) -> _Outcome:
        assert p.group is not None
        request = CommitRequest.from_bytes(body)
        if request.epoch != p.group.epoch:
            # Requests travel in order with the commits (one stream), so an honest peer's names our epoch.
            raise EpochError(f"CommitRequest for epoch {request.epoch}, we are at {p.group.epoch}")
        return self._commit(p, TwoPartyMessageType.CONNECTION_UPDATE)

    def _ignore_commit_request(self, p: _Progress, body: bytes, now: int | None) -> _Outcome:
        CommitRequest.from_bytes(body)  # well-formed, or the connection fails with decode_error
        log.debug("ignoring a CommitRequest in state %s: %s", p.state.value,
                  "our commit is on its way" if p.pending else "the turn is the peer's")
        return p, []

    def _send_resumption_commit(self, p: _Progress, body: bytes, now: int | None) -> _Outcome:
        return self._commit(replace(p, current_role=Role.INITIATOR, heard=False, asked=False),
                            TwoPartyMessageType.RESUMPTION_REQUEST)

    def _resend_pending(self, p: _Progress, body: bytes, now: int | None) -> _Outcome:
        assert p.pending is not None
        return (replace(p, state=State.AWAITING_RESUMPTION_RESPONSE, current_role=Role.INITIATOR, heard=False),
                [_send(ProfileMessageType.RESUMPTION_REQUEST, p.pending.message)])

    def _reset_connection(self, p: _Progress, body: bytes, now: int | None) -> _Outcome:
        return replace(p, heard=False, asked=False), []

    def _forget(self, p: _Progress, body: bytes, now: int | None) -> _Outcome:
        return _Progress(State.CLOSED, p.current_role), []

    def _nothing(self, p: _Progress, body: bytes, now: int | None) -> _Outcome:
        return p, []

    _ACTIONS: dict[Action, Callable[[TwoPartySession, _Progress, bytes, int | None], _Outcome]] = {
        Action.CREATE_GROUP: _create_group,
        Action.JOIN_GROUP: _join_group,
        Action.APPLY_AND_CONFIRM: _apply_and_confirm,
        Action.DROP_PENDING_APPLY_AND_CONFIRM: _apply_and_confirm,  # _apply_and_confirm clears pending
        Action.IGNORE_COMMIT: _ignore_commit,
        Action.ADOPT_PENDING: _adopt_pending,
        Action.ANSWER_RESUMPTION: _answer_resumption,
        Action.IGNORE_RESUMPTION: _ignore_resumption,
        Action.FINISH_RESUMPTION: _finish_resumption,
        Action.SEND_COMMIT: _send_commit,
        Action.REQUEST_COMMIT: _request_commit,
        Action.ANSWER_COMMIT_REQUEST: _answer_commit_request,
        Action.IGNORE_COMMIT_REQUEST: _ignore_commit_request,
        Action.SEND_RESUMPTION_COMMIT: _send_resumption_commit,
        Action.RESEND_PENDING: _resend_pending,
        Action.RESET_CONNECTION: _reset_connection,
        Action.FORGET: _forget,
        Action.NOTHING: _nothing,
    }

    # -- helpers -------------------------------------------------------------------------------

    def _commit(self, p: _Progress, msg_type: TwoPartyMessageType) -> _Outcome:
        """A fresh commit with an UpdatePath from ``p.group``, kept pending until confirmed."""
        assert p.group is not None
        aad = self._safe_aad(msg_type)
        if p.pq is None:
            result = p.group.commit(force_path=True, authenticated_data=aad)
            pending = PendingCommit(result.message.to_bytes(), msg_type, result.group)
        elif self._full_commit(p, msg_type):
            full = self._pair(p.group, p.pq).commit_full(authenticated_data=aad)
            pending = PendingCommit(full.messages().to_message_bytes(), msg_type, full.pair.t, full.pair.pq, full=True)
        else:
            message, pair = self._pair(p.group, p.pq).commit_partial(authenticated_data=aad)
            pending = PendingCommit(message.to_bytes(), msg_type, pair.t, pair.pq)
        encoded = pending.message
        if msg_type is TwoPartyMessageType.RESUMPTION_REQUEST:
            state, wire = State.AWAITING_RESUMPTION_RESPONSE, ProfileMessageType.RESUMPTION_REQUEST
        elif msg_type is TwoPartyMessageType.CONNECTION_UPDATE:
            state, wire = State.AWAITING_EPOCH_KEY_UPDATE, ProfileMessageType.CONNECTION_UPDATE
        else:
            state, wire = State.AWAITING_EPOCH_KEY_UPDATE, ProfileMessageType.RESUMPTION_RESPONSE
        return replace(p, state=state, pending=pending), [_send(wire, encoded)]

    def _confirm(self, p: _Progress, new_group: Group, reason: str) -> _Outcome:
        """Reply with EpochKeyUpdate in the new epoch, then switch (the replier switches after sending)."""
        aad = self._safe_aad(TwoPartyMessageType.EPOCH_KEY_UPDATE)
        ack = new_group.protect(EpochKeyUpdate(new_group.epoch).to_bytes(), authenticated_data=aad)
        # The peer's commit is the last confirmed one: the next is ours (after a resumption, too).
        return (replace(p, state=State.SYNCED, group=new_group, pending=None, our_turn=True, asked=False),
                [_send(ProfileMessageType.EPOCH_KEY_UPDATE, ack.to_bytes()), KeysChanged(new_group.epoch, reason)])

    def _full_commit(self, p: _Progress, msg_type: TwoPartyMessageType) -> bool:
        """Whether our next commit in an APQ session is FULL: when asked, for resumption, for our first
        commit after joining, and for one of every ``RekeyPolicy.full_every`` of our commits."""
        if self._full_asked or msg_type is not TwoPartyMessageType.CONNECTION_UPDATE or p.partials is None:
            return True
        every = self.config.rekey.full_every
        return every is not None and p.partials + 1 >= every

    def _apply_peer_commit(self, group: Group, pq: Group | None, message: safe_aad.Commit, encoded: bytes,
                           now: int | None) -> tuple[Group, Group | None, bytes]:
        """Validate a peer commit against ``group`` (and, in an APQ session, the PQ group ``pq``): an
        UpdatePath, our component, no proposals but a FULL commit's own.

        Returns the next epoch's groups and the commit's digest (the draft's "last applied commit").
        """
        digest = safe_aad.commit_hash(encoded)
        if pq is not None:
            pair = self._pair(group, pq)
            if isinstance(message, APQMessagePair):
                new = pair.process_full_pair(message, now=now, check=self._check_full_half)
            else:
                new = pair.process_partial(message, now=now, check=self._check_plain_commit)
            return new.t, new.pq, digest
        if isinstance(message, APQMessagePair):
            raise ValidationError("an APQ FULL commit in a session without APQ")
        processed = group.process(message, now=now)
        if not isinstance(processed, CommitMessage):
            raise ValidationError("expected a commit")
        self._check_plain_commit(processed, "")
        return processed.group, None, digest

    def _check_plain_commit(self, processed: CommitMessage, half: str) -> None:
        """A profile commit (or an APQ PARTIAL one): no proposals, an UpdatePath, our component."""
        self._check_commit(processed, ())

    def _check_full_half(self, processed: CommitMessage, half: str) -> None:
        """One half of an APQ FULL commit: only the combiner's proposals (APQInfo's update; in the T half, the
        PQ group's PSK), an UpdatePath, our component."""
        self._check_commit(processed, (AppDataUpdate, PreSharedKey) if half == "T" else (AppDataUpdate,))

    def _check_commit(self, processed: CommitMessage, allowed: tuple[type, ...]) -> None:
        commit = processed.commit
        try:
            for item in commit.proposals:
                proposal = item.proposal
                if proposal is None or not isinstance(proposal, allowed) or (
                        isinstance(proposal, AppDataUpdate) and proposal.component_id != APQ_COMPONENT):
                    raise ValidationError("profile commits must have no proposals (but an APQ FULL commit's own)")
            if commit.path is None:
                raise ValidationError("profile commits must have an UpdatePath")
            safe_aad.require_component(commit.path.leaf_node.extensions, self.config.component_id,
                                       "the peer's new LeafNode")
        except ValidationError:
            processed.group.destroy()
            raise

    def _pair(self, group: Group, pq: Group) -> APQPair:
        return APQPair.of(group, pq, self._psks)

    def _group_config(self, now: int | None) -> GroupConfig:
        """The profile's group configuration, able to read APQ's PSK and APQInfo (classical groups never do)."""
        return APQPair.shared_config(self.config.group_config(now), self._psks)

    def _safe_aad(self, msg_type: TwoPartyMessageType) -> bytes:
        return safe_aad.authenticated_data(self.config.component_id, msg_type)

    def _checked_commit(self, body: bytes, allowed: set[TwoPartyMessageType]) -> safe_aad.Commit:
        return safe_aad.checked_commit(body, self.config.component_id, allowed)


# -- module helpers ------------------------------------------------------------------------------

def peer_leaves(group: Group) -> list[LeafNode]:
    """The leaves of ``group`` that are not ours (in the profile: the one peer)."""
    return [leaf for index, leaf in group.members() if index != group.own_leaf]


MAX_PARTIALS = 2**32 - 1
"""The count of our PARTIAL commits since our last FULL one stops here (it is stored as a uint32)."""


def _check_pair_keys(pair: APQPair) -> None:
    """Mode 0: the peer signs both groups with one key (the offer's rule, :func:`mls2p.negotiation.check_pair`)."""
    if pair.t.suite.signature_scheme != pair.pq.suite.signature_scheme:
        return
    if [leaf.signature_key for leaf in peer_leaves(pair.t)] != [leaf.signature_key for leaf in peer_leaves(pair.pq)]:
        raise ValidationError("the peer signs the T and PQ groups with different keys")


def _own_key_package(config: ProfileConfig, suite_id: int, signed_suites: tuple[int, ...], *,
                     apq: bool) -> KeyPackageBundle:
    """Our KeyPackage for ``suite_id``, listing ``signed_suites`` and, when APQ is offered, its component."""
    return create_key_package(suite_id, config.credential, config.signing_key(suite_id), lifetime=config.lifetime,
                              capabilities=safe_aad.capabilities(suite_id, signed_suites),
                              leaf_extensions=safe_aad.leaf_extensions(config, apq=apq))


def _ours_confirmed(p: _Progress, pending: PendingCommit | None) -> _Progress:
    """``p`` once the peer holds our pending commit's epoch: its groups in force, and, in an APQ session, our
    count of PARTIAL commits since our last FULL one moved on."""
    assert pending is not None
    partials = p.partials
    if pending.pq is not None:
        partials = 0 if pending.full else (None if partials is None else min(partials + 1, MAX_PARTIALS))
    return replace(p, group=pending.group, pq=pending.pq or p.pq, pending=None, partials=partials)


def _send(msg_type: ProfileMessageType, body: bytes) -> SendMessage:
    return SendMessage(ProfileMessage(msg_type, body).to_bytes(), msg_type)


__all__ = [
    "KeysChanged",
    "PendingCommit",
    "ResumptionIgnored",
    "SendMessage",
    "SessionAction",
    "TwoPartySession",
]
