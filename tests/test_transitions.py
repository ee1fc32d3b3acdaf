"""Every row of the profile's transition table, and every pair that is not in it.

Each row gets a scenario that brings a real session into the row's state (and
deciding role) and fires the row's event with a genuine message; the session
must end in the row's next state.  Every (state, event) pair without a row is
refused with UnexpectedMessage (a peer's message) or StateError (a local call)
and leaves the session exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mls2p import Role, State, TwoPartySession, UnexpectedMessage
from mls2p.testing import Pair, config, sent
from mls2p.transitions import DECIDING, TABLE, Event, Guard, Turn, lookup
from mls2p.wire import CommitRequest, ProfileMessage, ProfileMessageType
from mlscore.errors import StateError

Scenario = Callable[[], tuple[TwoPartySession, Callable[[], object]]]


def _phase1_responder() -> tuple[TwoPartySession, Callable[[], object]]:
    _, hello = TwoPartySession.initiator(config(b"alice"))
    bob = TwoPartySession.responder(config(b"bob"))
    return bob, lambda: bob.receive(hello[0].data)  # type: ignore[union-attr]


def _phase1_initiator() -> tuple[TwoPartySession, Callable[[], object]]:
    alice, hello = TwoPartySession.initiator(config(b"alice"))
    bob = TwoPartySession.responder(config(b"bob"))
    reply = sent(bob.receive(hello[0].data))  # type: ignore[union-attr]
    return alice, lambda: alice.receive(reply[0])


def _synced(event: Event) -> tuple[TwoPartySession, Callable[[], object]]:
    pair = Pair()
    if event is Event.UPDATE:
        return pair.alice, pair.alice.update
    if event is Event.CONNECTION_UPDATE:
        update = sent(pair.alice.update())
        return pair.bob, lambda: pair.bob.receive(update[0])
    if event is Event.RESUME:
        pair.restart()
        return pair.alice, pair.alice.resume
    pair.restart()
    request = sent(pair.alice.resume())
    return pair.bob, lambda: pair.bob.receive(request[0])


def _forged_request(session: TwoPartySession) -> bytes:
    """A well-formed CommitRequest for the session's epoch (an honest peer sends none on its own turn)."""
    assert session.epoch is not None
    return ProfileMessage(ProfileMessageType.COMMIT_REQUEST, CommitRequest(session.epoch).to_bytes()).to_bytes()


def _turns(event: Event, turn: Turn | None) -> tuple[TwoPartySession, Callable[[], object]]:
    """Rows of the turn-taking extension: after the handshake it is alice's (the initiator's) turn."""
    pair = Pair()
    if event is Event.REKEY:
        if turn is Turn.OURS:
            return pair.alice, pair.alice.rekey
        if turn is Turn.PEERS:
            return pair.bob, pair.bob.rekey
        if turn is Turn.ASKED:
            sent(pair.bob.rekey())
            return pair.bob, pair.bob.rekey
        sent(pair.alice.update())
        return pair.alice, pair.alice.rekey
    if turn is Turn.OURS:
        request = sent(pair.bob.rekey())
        return pair.alice, lambda: pair.alice.receive(request[0])
    if turn is Turn.PEERS:
        return pair.bob, lambda: pair.bob.receive(_forged_request(pair.bob))
    if turn is Turn.ASKED:
        sent(pair.bob.rekey())
        return pair.bob, lambda: pair.bob.receive(_forged_request(pair.bob))
    request = sent(pair.bob.rekey())
    sent(pair.alice.update())  # our own commit crossed the request: it answers it
    return pair.alice, lambda: pair.alice.receive(request[0])


def _crossed_updates(role: Role) -> tuple[TwoPartySession, Callable[[], object]]:
    pair = Pair()  # alice is the current initiator
    a_update, b_update = sent(pair.alice.update()), sent(pair.bob.update())
    if role is Role.INITIATOR:
        return pair.alice, lambda: pair.alice.receive(b_update[0])
    return pair.bob, lambda: pair.bob.receive(a_update[0])


def _awaiting_eku(event: Event) -> tuple[TwoPartySession, Callable[[], object]]:
    pair = Pair()
    if event is Event.EPOCH_KEY_UPDATE:
        ack = sent(pair.bob.receive(sent(pair.alice.update())[0]))
        return pair.alice, lambda: pair.alice.receive(ack[0])
    if event is Event.RESUME:
        sent(pair.alice.update())
        pair.restart()
        return pair.alice, pair.alice.resume
    sent(pair.bob.update())  # bob waits for an EpochKeyUpdate that never comes
    pair.restart()
    request = sent(pair.alice.resume())
    return pair.bob, lambda: pair.bob.receive(request[0])


def _awaiting_rr(event: Event, role: Role | None) -> tuple[TwoPartySession, Callable[[], object]]:
    pair = Pair()
    pair.restart()
    if event is Event.RESUME:
        sent(pair.alice.resume())  # lost
        return pair.alice, pair.alice.resume
    if event is Event.RESUMPTION_RESPONSE:
        response = sent(pair.bob.receive(sent(pair.alice.resume())[0]))
        return pair.alice, lambda: pair.alice.receive(response[0])
    a_request, b_request = sent(pair.alice.resume()), sent(pair.bob.resume())  # crossed
    if role is Role.INITIATOR:  # alice is the initial initiator
        return pair.alice, lambda: pair.alice.receive(b_request[0])
    return pair.bob, lambda: pair.bob.receive(a_request[0])


def _in_state(state: State) -> TwoPartySession:
    """A session in ``state`` (for the local events and for pairs that are not in the table)."""
    if state is State.AWAITING_CLIENT_HELLO:
        return TwoPartySession.responder(config(b"bob"))
    if state is State.AWAITING_SERVER_HELLO:
        return TwoPartySession.initiator(config(b"alice"))[0]
    pair = Pair()
    if state is State.AWAITING_EPOCH_KEY_UPDATE:
        pair.alice.update()
    elif state is State.AWAITING_RESUMPTION_RESPONSE:
        pair.alice.resume()
    elif state is State.CLOSED:
        pair.alice.close()
    return pair.alice


def _local(state: State, event: Event) -> tuple[TwoPartySession, Callable[[], object]]:
    session = _in_state(state)
    run = {Event.CONNECTION_LOST: session.connection_lost, Event.CLOSE: session.close,
           Event.UPDATE: session.update, Event.RESUME: session.resume, Event.REKEY: session.rekey}[event]
    return session, run


def scenario(state: State, event: Event, role: Guard) -> tuple[TwoPartySession, Callable[[], object]]:
    if event in (Event.CONNECTION_LOST, Event.CLOSE):
        return _local(state, event)
    if event in (Event.REKEY, Event.COMMIT_REQUEST):
        assert role is None or isinstance(role, Turn)
        return _turns(event, role)
    if state is State.AWAITING_CLIENT_HELLO:
        return _phase1_responder()
    if state is State.AWAITING_SERVER_HELLO:
        return _phase1_initiator()
    if state is State.SYNCED:
        return _synced(event)
    if state is State.AWAITING_EPOCH_KEY_UPDATE and event is Event.CONNECTION_UPDATE:
        assert isinstance(role, Role)
        return _crossed_updates(role)
    if state is State.AWAITING_EPOCH_KEY_UPDATE:
        return _awaiting_eku(event)
    assert not isinstance(role, Turn)
    return _awaiting_rr(event, role)


def _row_id(key: tuple[State, Event, Guard]) -> str:
    state, event, guard = key
    return f"{state.name}-{event.name}" + (f"-{guard.name}" if guard else "")


@pytest.mark.parametrize("key", sorted(TABLE, key=_row_id), ids=_row_id)
def test_every_row(key: tuple[State, Event, Guard]) -> None:
    state, event, guard = key
    session, run = scenario(state, event, guard)
    assert session.state is state
    if guard is not None:
        deciding = DECIDING[(state, event)]
        assert {"current": session.current_role, "initial": session.initial_role,
                "turn": session.turn}[deciding] is guard
    run()
    assert session.state is TABLE[key].next_state


def _body_of(event: Event) -> bytes:
    msg_type = next(t for t in ProfileMessageType if Event.received(t) is event)
    return ProfileMessage(msg_type, b"\x00\x01").to_bytes()


MISSING = [(state, event) for state in State for event in Event
           if all(lookup(state, event, current_role=c, initial_role=i, turn=t) is None
                  for c in Role for i in Role for t in Turn)]


@pytest.mark.parametrize(("state", "event"), MISSING, ids=[f"{s.name}-{e.name}" for s, e in MISSING])
def test_pairs_not_in_the_table_are_refused_and_change_nothing(state: State, event: Event) -> None:
    session = _in_state(state)
    before = (session.state, session.current_role, session.epoch, session.pending, session.to_state())
    if event.remote:
        with pytest.raises(UnexpectedMessage, match=f"not allowed in state {state.value}"):
            session.receive(_body_of(event))
    else:
        with pytest.raises(StateError, match=f"not allowed in state {state.value}"):
            {Event.UPDATE: session.update, Event.RESUME: session.resume, Event.REKEY: session.rekey}[event]()
    assert (session.state, session.current_role, session.epoch, session.pending, session.to_state()) == before


def test_the_table_covers_every_state_and_event() -> None:
    assert {key[0] for key in TABLE} == set(State)
    assert {key[1] for key in TABLE} == set(Event)
    assert len(MISSING) > 10  # the refusals above are a real set, not an empty parametrization
