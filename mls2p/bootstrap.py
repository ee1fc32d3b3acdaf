"""The part of every connection that is the same for both transports.

A :class:`ProfileEndpoint` is the two-party profile as one connection sees it:
it starts the session (phase 1, or the resumption of a stored group), hands it
each profile message, keeps the session store in step, and applies the rekey
policy.  ``mlstls`` and ``mlsquic`` create one per connection and turn the
actions it returns into TLS records or QUIC frames; neither starts, resumes,
stores or rekeys a session in any other way.

Like the session, the endpoint is sans-I/O: the caller passes ``now`` (the
transport's monotonic clock, for the rekey policy).  The only I/O is the
store's, and a store is something the user handed in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from mlscore.errors import ValidationError
from mlscore.framing import MLSMessage, PrivateMessage, PublicMessage

from .config import ProfileConfig
from .errors import StateError, UnexpectedMessage
from .policy import RekeyMeter
from .session import KeysChanged, SessionAction, TwoPartySession
from .store import SessionStore
from .transitions import State
from .wire import ProfileMessage, ProfileMessageType

log = logging.getLogger(__name__)


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
        self.meter = RekeyMeter(profile.rekey)

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
        if stored is not None:
            self.session = TwoPartySession.from_state(stored, self.profile, on_state_change=self._persist_hook())
            self.session.connection_lost()
            self.resumed = True
            log.info("resuming group %s at epoch %s", self.session.group_id.hex() if self.session.group_id else "?",
                     self.session.epoch)
            return self.session.resume()
        self.session, actions = TwoPartySession.initiator(self.profile, on_state_change=self._persist_hook())
        return actions

    def _start_server(self, message: ProfileMessage) -> TwoPartySession:
        if message.msg_type == ProfileMessageType.CLIENT_HELLO:
            return TwoPartySession.responder(self.profile, on_state_change=self._persist_hook())
        if message.msg_type != ProfileMessageType.RESUMPTION_REQUEST or not self.allow_resumption:
            expected = "ClientHello or ResumptionRequest" if self.allow_resumption else "ClientHello"
            raise UnexpectedMessage(f"a connection starts with {expected}, not {message.msg_type.name}")
        group_id = group_id_of(message.body)
        stored = self._load(group_id)
        if stored is None:
            raise ValidationError(f"no stored session for group {group_id.hex()}")
        session = TwoPartySession.from_state(stored, self.profile, on_state_change=self._persist_hook())
        session.connection_lost()
        self.resumed = True
        return session

    def _load(self, group_id: bytes) -> bytes | None:
        return self.store.load(group_id) if self.store is not None else None

    # -- running -------------------------------------------------------------------------------

    def receive(self, frame: bytes | ProfileMessage, now: float) -> list[SessionAction]:
        """One profile message from the peer; a server's first one starts or resumes the session."""
        message = frame if isinstance(frame, ProfileMessage) else ProfileMessage.from_bytes(frame)
        if self.session is None:
            if self.is_client:
                raise StateError("the client has not started")
            self.session = self._start_server(message)
        actions = self.session.receive(message, now=int(self.profile.wall_clock()))
        self._observe(actions, now)
        return actions

    def rekey(self) -> list[SessionAction]:
        """A ConnectionUpdate now, if the session is synced (else nothing: one rekey at a time)."""
        if self.session is None or self.session.state is not State.SYNCED:
            return []
        return self.session.update()

    def rekey_due(self, now: float) -> bool:
        """Whether the rekey policy asks for a ConnectionUpdate now (a query: changes nothing)."""
        return self.session is not None and self.session.synced and self.meter.due(now)

    def record_sent(self, count: int) -> None:
        """Count application bytes sent under the current keys, for the byte-count policy."""
        self.meter.record_sent(count)

    def connection_lost(self) -> None:
        if self.session is not None:
            self.session.connection_lost()

    def _observe(self, actions: list[SessionAction], now: float) -> None:
        """Every new epoch (whoever committed it) restarts the rekey policy."""
        if any(isinstance(action, KeysChanged) for action in actions):
            self.meter.restart(now)

    # -- persistence ---------------------------------------------------------------------------

    def _persist_hook(self) -> Callable[[TwoPartySession], None] | None:
        return persist_to(self.store) if self.store is not None else None


def persist_to(store: SessionStore) -> Callable[[TwoPartySession], None]:
    """An ``on_state_change`` callback that keeps ``store`` in step with a session.

    Writes only when the stored form changed; a closed session's state is deleted.
    """
    saved: dict[str, bytes] = {}

    def save(session: TwoPartySession) -> None:
        state = session.to_state()
        group_id = session.group_id
        if state is not None and group_id is not None:
            if saved.get("state") != state:
                store.save(group_id, state)
                saved["state"], saved["group_id"] = state, group_id
        elif session.state is State.CLOSED and "group_id" in saved:
            store.delete(saved.pop("group_id"))
            saved.pop("state", None)

    return save


def group_id_of(body: bytes) -> bytes:
    """The group a ResumptionRequest's commit belongs to (readable before any key is known)."""
    message = MLSMessage.from_bytes(body)
    if isinstance(message.body, PrivateMessage):
        return message.body.group_id
    if isinstance(message.body, PublicMessage):
        return message.body.content.group_id
    raise ValidationError("a ResumptionRequest must carry a commit")
