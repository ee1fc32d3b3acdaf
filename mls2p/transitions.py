"""The two-party profile's state machine as one table (draft-kohbrok-mls-two-party-profile-01 section 4).

In the style of h11's ``_state.py``: every (state, event) pair the draft allows
is a row naming the action the session runs and the state it ends in.  A pair
that is not in the table is an error (:class:`~mls2p.errors.UnexpectedMessage`
for a peer's message, :class:`~mlscore.errors.StateError` for a local call),
and the session is left exactly as it was.

Some rows depend on more than the state, which is the third element of their
key.  :data:`DECIDING` says what: concurrent ConnectionUpdates are settled by
the *current* roles (the current initiator's commit wins), crossed
ResumptionRequests by the *initial* roles (docs/profile.md, "Crossed
resumption requests"), and what a due rekey or the peer's CommitRequest does by
whose *turn* it is (docs/profile.md, "Taking turns": after a confirmed commit
the next one belongs to the other party).  Every other row has ``None`` there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from .config import Role
from .wire import ProfileMessageType


class State(Enum):
    AWAITING_CLIENT_HELLO = "awaiting ClientHello"
    AWAITING_SERVER_HELLO = "awaiting ServerHello"
    SYNCED = "synced"
    AWAITING_EPOCH_KEY_UPDATE = "awaiting EpochKeyUpdate"
    AWAITING_RESUMPTION_RESPONSE = "awaiting ResumptionResponse"
    CLOSED = "closed"


class Turn(Enum):
    """Whose commit is next: ping-pong means the last committer waits for the other party's commit."""

    OURS = "ours"
    PEERS = "the peer's"
    ASKED = "the peer's, and we asked for it"


class Event(Enum):
    # the peer's six messages
    CLIENT_HELLO = "ClientHello received"
    SERVER_HELLO = "ServerHello received"
    CONNECTION_UPDATE = "ConnectionUpdate received"
    EPOCH_KEY_UPDATE = "EpochKeyUpdate received"
    RESUMPTION_REQUEST = "ResumptionRequest received"
    RESUMPTION_RESPONSE = "ResumptionResponse received"
    COMMIT_REQUEST = "CommitRequest received"  # our extension (docs/profile.md, "Taking turns")
    # what the application or the transport asks for
    UPDATE = "update()"
    REKEY = "rekey()"
    RESUME = "resume()"
    CONNECTION_LOST = "connection_lost()"
    CLOSE = "close()"

    @property
    def remote(self) -> bool:
        return self in _MESSAGE_EVENTS.values()

    @classmethod
    def received(cls, msg_type: ProfileMessageType) -> Event:
        return _MESSAGE_EVENTS[msg_type]


_MESSAGE_EVENTS = {
    ProfileMessageType.CLIENT_HELLO: Event.CLIENT_HELLO,
    ProfileMessageType.SERVER_HELLO: Event.SERVER_HELLO,
    ProfileMessageType.CONNECTION_UPDATE: Event.CONNECTION_UPDATE,
    ProfileMessageType.EPOCH_KEY_UPDATE: Event.EPOCH_KEY_UPDATE,
    ProfileMessageType.RESUMPTION_REQUEST: Event.RESUMPTION_REQUEST,
    ProfileMessageType.RESUMPTION_RESPONSE: Event.RESUMPTION_RESPONSE,
    ProfileMessageType.COMMIT_REQUEST: Event.COMMIT_REQUEST,
}


class Action(Enum):
    """What the session does; each member has one method in :class:`~mls2p.session.TwoPartySession`."""

    CREATE_GROUP = "create the group, answer with a Welcome"
    JOIN_GROUP = "join from the Welcome"
    APPLY_AND_CONFIRM = "apply the peer's commit, answer with EpochKeyUpdate"
    DROP_PENDING_APPLY_AND_CONFIRM = "drop our pending commit, apply the peer's, answer with EpochKeyUpdate"
    IGNORE_COMMIT = "ignore the peer's commit (ours wins)"
    ADOPT_PENDING = "authenticate the EpochKeyUpdate with our pending epoch and switch to it"
    ANSWER_RESUMPTION = "classify the request (rules 1-3), apply it, answer with a fresh commit"
    IGNORE_RESUMPTION = "ignore the crossed request (tie-break)"
    FINISH_RESUMPTION = "apply our pending commit and the peer's response, answer with EpochKeyUpdate"
    SEND_COMMIT = "send a ConnectionUpdate"
    REQUEST_COMMIT = "ask the peer to commit: the turn is its own"
    ANSWER_COMMIT_REQUEST = "check the request names our epoch, send a ConnectionUpdate"
    IGNORE_COMMIT_REQUEST = "ignore the request: the turn is not ours, or our commit is on its way"
    SEND_RESUMPTION_COMMIT = "send a fresh commit in a ResumptionRequest"
    RESEND_PENDING = "send the pending commit again in a ResumptionRequest"
    RESET_CONNECTION = "forget per-connection state, keep the group"
    FORGET = "delete the group state"
    NOTHING = "nothing"


@dataclass(frozen=True)
class Transition:
    action: Action
    next_state: State


S = State
E = Event
A = Action
RESUMABLE = (S.SYNCED, S.AWAITING_EPOCH_KEY_UPDATE, S.AWAITING_RESUMPTION_RESPONSE)

Guard = Role | Turn | None

TABLE: Mapping[tuple[State, Event, Guard], Transition] = {
    # phase 1: key establishment (section 5)
    (S.AWAITING_CLIENT_HELLO, E.CLIENT_HELLO, None): Transition(A.CREATE_GROUP, S.SYNCED),
    (S.AWAITING_SERVER_HELLO, E.SERVER_HELLO, None): Transition(A.JOIN_GROUP, S.SYNCED),
    # phase 2: ping-pong rekeying (section 6)
    (S.SYNCED, E.UPDATE, None): Transition(A.SEND_COMMIT, S.AWAITING_EPOCH_KEY_UPDATE),
    (S.SYNCED, E.CONNECTION_UPDATE, None): Transition(A.APPLY_AND_CONFIRM, S.SYNCED),
    (S.AWAITING_EPOCH_KEY_UPDATE, E.CONNECTION_UPDATE, Role.INITIATOR):
        Transition(A.IGNORE_COMMIT, S.AWAITING_EPOCH_KEY_UPDATE),
    (S.AWAITING_EPOCH_KEY_UPDATE, E.CONNECTION_UPDATE, Role.RESPONDER):
        Transition(A.DROP_PENDING_APPLY_AND_CONFIRM, S.SYNCED),
    (S.AWAITING_EPOCH_KEY_UPDATE, E.EPOCH_KEY_UPDATE, None): Transition(A.ADOPT_PENDING, S.SYNCED),
    # taking turns (our extension): the policy's rekey() commits on our turn and asks the peer on its turn
    (S.SYNCED, E.REKEY, Turn.OURS): Transition(A.SEND_COMMIT, S.AWAITING_EPOCH_KEY_UPDATE),
    (S.SYNCED, E.REKEY, Turn.PEERS): Transition(A.REQUEST_COMMIT, S.SYNCED),
    (S.SYNCED, E.REKEY, Turn.ASKED): Transition(A.NOTHING, S.SYNCED),
    (S.AWAITING_EPOCH_KEY_UPDATE, E.REKEY, None): Transition(A.NOTHING, S.AWAITING_EPOCH_KEY_UPDATE),
    (S.SYNCED, E.COMMIT_REQUEST, Turn.OURS): Transition(A.ANSWER_COMMIT_REQUEST, S.AWAITING_EPOCH_KEY_UPDATE),
    (S.SYNCED, E.COMMIT_REQUEST, Turn.PEERS): Transition(A.IGNORE_COMMIT_REQUEST, S.SYNCED),
    (S.SYNCED, E.COMMIT_REQUEST, Turn.ASKED): Transition(A.IGNORE_COMMIT_REQUEST, S.SYNCED),
    (S.AWAITING_EPOCH_KEY_UPDATE, E.COMMIT_REQUEST, None):
        Transition(A.IGNORE_COMMIT_REQUEST, S.AWAITING_EPOCH_KEY_UPDATE),
    # phase 3: resumption (section 7)
    (S.SYNCED, E.RESUME, None): Transition(A.SEND_RESUMPTION_COMMIT, S.AWAITING_RESUMPTION_RESPONSE),
    (S.AWAITING_EPOCH_KEY_UPDATE, E.RESUME, None): Transition(A.RESEND_PENDING, S.AWAITING_RESUMPTION_RESPONSE),
    (S.AWAITING_RESUMPTION_RESPONSE, E.RESUME, None):
        Transition(A.RESEND_PENDING, S.AWAITING_RESUMPTION_RESPONSE),
    (S.SYNCED, E.RESUMPTION_REQUEST, None): Transition(A.ANSWER_RESUMPTION, S.AWAITING_EPOCH_KEY_UPDATE),
    (S.AWAITING_EPOCH_KEY_UPDATE, E.RESUMPTION_REQUEST, None):
        Transition(A.ANSWER_RESUMPTION, S.AWAITING_EPOCH_KEY_UPDATE),
    (S.AWAITING_RESUMPTION_RESPONSE, E.RESUMPTION_REQUEST, Role.INITIATOR):
        Transition(A.IGNORE_RESUMPTION, S.AWAITING_RESUMPTION_RESPONSE),
    (S.AWAITING_RESUMPTION_RESPONSE, E.RESUMPTION_REQUEST, Role.RESPONDER):
        Transition(A.ANSWER_RESUMPTION, S.AWAITING_EPOCH_KEY_UPDATE),
    (S.AWAITING_RESUMPTION_RESPONSE, E.RESUMPTION_RESPONSE, None): Transition(A.FINISH_RESUMPTION, S.SYNCED),
    # the connection ends: phase 1 state is discarded (section 5), a group is kept for resumption
    (S.AWAITING_CLIENT_HELLO, E.CONNECTION_LOST, None): Transition(A.FORGET, S.CLOSED),
    (S.AWAITING_SERVER_HELLO, E.CONNECTION_LOST, None): Transition(A.FORGET, S.CLOSED),
    **{(state, E.CONNECTION_LOST, None): Transition(A.RESET_CONNECTION, state) for state in RESUMABLE},
    (S.CLOSED, E.CONNECTION_LOST, None): Transition(A.NOTHING, S.CLOSED),
    # the relationship ends
    **{(state, E.CLOSE, None): Transition(A.FORGET, S.CLOSED) for state in State if state is not S.CLOSED},
    (S.CLOSED, E.CLOSE, None): Transition(A.NOTHING, S.CLOSED),
}

AUTHORIZED_EVENTS = frozenset(event for event in Event
                              if event not in (E.CONNECTION_LOST, E.CLOSE, E.REKEY, E.COMMIT_REQUEST))
"""Events after which the session asks the trust configuration in force whether it still accepts the peer
(mls2p.trust): every handshake, resumption, commit and confirmation, so a revoked peer cannot reach or keep
an epoch.  A ResumptionRequest is, besides, valid only as a connection's first message.  A due rekey and a
CommitRequest are checked only when they lead to a commit (:func:`authorizes`): a request that is ignored
costs no credential validation, so a flood of them cannot make us verify certificate chains."""

_COMMITTING = frozenset({A.SEND_COMMIT, A.ANSWER_COMMIT_REQUEST})

DECIDING: Mapping[tuple[State, Event], str] = {
    (S.AWAITING_EPOCH_KEY_UPDATE, E.CONNECTION_UPDATE): "current",
    (S.AWAITING_RESUMPTION_RESPONSE, E.RESUMPTION_REQUEST): "initial",
    (S.SYNCED, E.REKEY): "turn",
    (S.SYNCED, E.COMMIT_REQUEST): "turn",
}


def authorizes(event: Event, action: Action) -> bool:
    """Whether the session re-checks the peer's credential after running ``action`` for ``event``."""
    return event in AUTHORIZED_EVENTS or action in _COMMITTING


def lookup(state: State, event: Event, *, current_role: Role, initial_role: Role,
           turn: Turn = Turn.OURS) -> Transition | None:
    """The row for ``event`` in ``state``, or None when the profile does not allow it."""
    deciding = DECIDING.get((state, event))
    guard: Guard = {None: None, "current": current_role, "initial": initial_role, "turn": turn}[deciding]
    return TABLE.get((state, event, guard))
