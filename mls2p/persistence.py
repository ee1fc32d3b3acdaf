"""The stored form of a two-party session: explicit, versioned, with fixed codes.

The draft requires both sides to keep the group state, the initial role, the
last applied commit (we keep its SHA-256) and any pending commit with its
type.  Format 2 is written for APQ sessions; a classical session is written in format 1, the same without
the last field, exactly as before (a release without APQ still reads it)::

    uint16 format = 2;
    uint8  state;            /* 3 synced, 4 awaiting EpochKeyUpdate, 5 awaiting ResumptionResponse */
    uint8  initial_role;     /* 1 initiator, 2 responder */
    uint8  current_role;
    opaque group<V>;         /* Group.to_state(): group state format 2 (format 1 is still read) */
    optional<opaque last_applied_commit<V>>;
    optional<struct { opaque message<V>; uint8 safe_aad_type; opaque group<V>; }> pending;
    optional<struct {                 /* APQ-MLS (docs/pq.md): the PQ group beside ``group`` (the T group) */
        opaque pq_group<V>;
        optional<opaque pending_pq_group<V>>;  /* the pending commit is FULL: its PQ epoch; else it keeps pq_group */
        optional<uint32> partials;    /* our PARTIAL commits since our last FULL; absent: we never made a FULL */
    }> apq;

A group state holds what resuming its epoch needs and no more (see
:meth:`Group.to_state <mlscore.group.Group.to_state>`): the secret tree as it
is held, never its root, no welcome_secret and, for the profile, no
resumption PSK (``ProfileConfig.group_config`` keeps none).

The codes are written out below and never derived from an enum's order
(release 0.1 derived them from ``enumerate(State, start=1)``; the values here
are exactly those, so its files load).  Only resumable states are stored; any
other code, an unknown format or trailing bytes raise
:class:`~mls2p.errors.StoredStateError` naming the problem.  So does a group
state its reader refuses: an inconsistent secret tree (format 2, which loads
without deriving anything whatever its generations), or a format-1 sending
generation beyond what a secret tree accepts ahead
(:meth:`Group.max_restored_generation <mlscore.group.Group.max_restored_generation>`):
format 1 held only our generations, restoring replays the ratchet, and a
tampered value must not buy 2^32 derivations; it is refused before any.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TypeVar

from mlscore.codec import Reader, Writer, decode_enum
from mlscore.errors import MLSError
from mlscore.group import Group, GroupConfig

from .config import Role
from .errors import StoredStateError
from .transitions import State
from .wire import TwoPartyMessageType

FORMAT = 1
"""The format of a classical session (unchanged since release 0.1)."""
APQ_FORMAT = 2
"""The format of an APQ session: format 1 and the PQ group."""
READABLE_FORMATS = (FORMAT, APQ_FORMAT)

STATE_CODES = {
    State.SYNCED: 3,
    State.AWAITING_EPOCH_KEY_UPDATE: 4,
    State.AWAITING_RESUMPTION_RESPONSE: 5,
}
ROLE_CODES = {Role.INITIATOR: 1, Role.RESPONDER: 2}

T = TypeVar("T")


@dataclass(frozen=True)
class PendingCommit:
    """A commit we sent and the epoch it creates, kept until the peer confirms it."""

    message: bytes = field(repr=False)  # the encoded MLSMessage, resent byte for byte on resumption
    msg_type: TwoPartyMessageType
    group: Group
    pq: Group | None = None  # APQ: the PQ group of the pending epoch (the current one unless the commit is FULL)
    full: bool = False  # APQ: a FULL commit


@dataclass(frozen=True)
class StoredSession:
    """Everything format 2 holds."""

    state: State
    initial_role: Role
    current_role: Role
    group: Group
    last_applied_commit: bytes | None
    pending: PendingCommit | None
    pq: Group | None = None
    partials: int | None = 0


def encode(stored: StoredSession) -> bytes:
    w = Writer().u16(FORMAT if stored.pq is None else APQ_FORMAT)
    w.u8(STATE_CODES[stored.state]).u8(ROLE_CODES[stored.initial_role]).u8(ROLE_CODES[stored.current_role])
    w.opaque(stored.group.to_state()).optional(stored.last_applied_commit, Writer.opaque)
    w.optional(stored.pending, lambda w2, p: w2.opaque(p.message).u8(p.msg_type).opaque(p.group.to_state()))
    if stored.pq is not None:
        w.optional(stored.pq, lambda w2, pq: _encode_apq(w2, pq, stored))
    return w.getvalue()


def _encode_apq(w: Writer, pq: Group, stored: StoredSession) -> None:
    pending = stored.pending
    w.opaque(pq.to_state())
    w.optional(pending.pq if pending is not None and pending.full else None, lambda w2, g: w2.opaque(g.to_state()))
    w.optional(stored.partials, Writer.u32)


def decode(data: bytes, group_config: GroupConfig) -> StoredSession:
    """Read format 2 or 1; any problem is a StoredStateError that says what is wrong."""
    try:
        return _decode(data, group_config)
    except StoredStateError:
        raise
    except MLSError as exc:
        raise StoredStateError(f"stored session state is corrupt: {exc}") from None


def _decode(data: bytes, group_config: GroupConfig) -> StoredSession:
    r = Reader(data)
    version = r.u16()
    if version not in READABLE_FORMATS:
        raise StoredStateError(f"stored session state has format {version}; this release reads formats "
                               f"{', '.join(map(str, READABLE_FORMATS))} (start a new session, or use the release "
                               "that wrote it)")
    state = _code(STATE_CODES, r.u8(), "state")
    initial_role = _code(ROLE_CODES, r.u8(), "role")
    current_role = _code(ROLE_CODES, r.u8(), "role")
    group = Group.from_state(r.opaque(), group_config)
    last_applied = r.optional(Reader.opaque)

    def pending(r2: Reader) -> PendingCommit:
        message = r2.opaque()
        msg_type = decode_enum(TwoPartyMessageType, r2.u8(), "two-party message type")
        return PendingCommit(message, msg_type, Group.from_state(r2.opaque(), group_config))

    pending_commit = r.optional(pending)
    apq = r.optional(lambda r2: (Group.from_state(r2.opaque(), group_config),
                                 r2.optional(lambda r3: Group.from_state(r3.opaque(), group_config)),
                                 r2.optional(Reader.u32))) if version == APQ_FORMAT else None
    r.finish()
    if (pending_commit is None) != (state is State.SYNCED):
        raise StoredStateError(f"stored state {state.value!r} and its pending commit disagree")
    if apq is None:
        return StoredSession(state, initial_role, current_role, group, last_applied, pending_commit)
    pq, pending_pq, partials = apq
    if pending_pq is not None and pending_commit is None:
        raise StoredStateError("stored state has a pending PQ epoch but no pending commit")
    if pending_commit is not None:
        pending_commit = replace(pending_commit, pq=pending_pq or pq, full=pending_pq is not None)
    return StoredSession(state, initial_role, current_role, group, last_applied, pending_commit, pq, partials)


def _code(codes: dict[T, int], value: int, what: str) -> T:
    for item, code in codes.items():
        if code == value:
            return item
    raise StoredStateError(f"stored session state has unknown {what} code {value}")
