"""Random interleavings of rekeys, deliveries, duplicates and connection breaks (hypothesis).

Checks, whatever the schedule: whenever nothing is in flight and both sides
are synced, they use the same epoch and the same keys; a duplicated message
is never accepted (it is refused or ignored, and either way the session and
its stored state are exactly as before); and resumption always brings both
sides back together.  ``MLS2P_STATE_MACHINE_EXAMPLES`` sets the number of
schedules (100 by default; raise it for a long run).
"""

from __future__ import annotations

import os

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mls2p import ResumptionIgnored, State
from mls2p.testing import Pair, sent
from mlscore.errors import MLSError

SIDES = ("alice", "bob")


class TwoSessions(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.pair = Pair()
        self.queues: dict[str, list[bytes]] = {"alice": [], "bob": []}  # messages *to* that side
        self.last_delivered: dict[str, bytes | None] = {"alice": None, "bob": None}
        self.resuming = False

    def session(self, name: str):
        return self.pair.alice if name == "alice" else self.pair.bob

    def other(self, name: str) -> str:
        return "bob" if name == "alice" else "alice"

    @precondition(lambda self: not self.resuming)
    @rule(side=st.sampled_from(SIDES))
    def rekey(self, side: str) -> None:
        session = self.session(side)
        if session.state is State.SYNCED:
            self.queues[self.other(side)] += sent(session.update())

    @rule(to=st.sampled_from(SIDES))
    def deliver(self, to: str) -> None:
        if not self.queues[to]:
            return
        message = self.queues[to].pop(0)
        self.last_delivered[to] = message
        self.queues[self.other(to)] += sent(self.session(to).receive(message))
        if self.resuming and not any(self.queues.values()) and self._synced():
            self.resuming = False

    @rule(to=st.sampled_from(SIDES))
    def duplicate(self, to: str) -> None:
        message = self.last_delivered[to]
        if message is None:
            return
        session = self.session(to)
        store = self.pair.alice_store if to == "alice" else self.pair.bob_store
        before = (session.state, session.current_role, session.epoch, session.to_state())
        stored = store.load(self.pair.group_id)
        try:
            actions = session.receive(message)
        except MLSError:
            actions = []  # refused
        # Refused, or ignored (a concurrent update the initiator drops): either way nothing changed.
        assert all(isinstance(a, ResumptionIgnored) for a in actions)
        assert (session.state, session.current_role, session.epoch, session.to_state()) == before
        assert store.load(self.pair.group_id) == stored

    @rule(resumer=st.sampled_from(SIDES), both=st.booleans())
    def break_and_resume(self, resumer: str, both: bool) -> None:
        self.pair.restart()
        self.queues = {"alice": [], "bob": []}
        self.last_delivered = {"alice": None, "bob": None}
        self.queues[self.other(resumer)] += sent(self.session(resumer).resume())
        if both:
            self.queues[resumer] += sent(self.session(self.other(resumer)).resume())
        self.resuming = True

    def _synced(self) -> bool:
        return self.pair.alice.state is State.SYNCED and self.pair.bob.state is State.SYNCED

    @invariant()
    def quiet_means_agreement(self) -> None:
        if any(self.queues.values()) or not self._synced():
            return
        assert self.pair.in_sync(), (self.pair.alice, self.pair.bob)

    def teardown(self) -> None:
        # Drain: every schedule must end with both sides together.
        for _ in range(20):
            for side in SIDES:
                while self.queues[side]:
                    self.deliver(side)
        if not self._synced():
            self.break_and_resume("alice", False)
            for _ in range(5):
                for side in SIDES:
                    while self.queues[side]:
                        self.deliver(side)
        assert self.pair.in_sync()


EXAMPLES = int(os.environ.get("MLS2P_STATE_MACHINE_EXAMPLES", "100"))
TwoSessions.TestCase.settings = settings(max_examples=EXAMPLES, stateful_step_count=30, deadline=None)
TestTwoSessions = TwoSessions.TestCase
