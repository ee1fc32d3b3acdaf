"""A peer that abuses CommitRequest (our turn-taking extension): it cannot buy work, state or a close.

A request is tiny and makes its receiver commit (HPKE and two signatures), so
the receiver must never answer more than the turn allows, must not validate a
credential for a request it ignores, and charges the requests it answers to the
peer's commit budget like ConnectionUpdates.
"""

from __future__ import annotations

from dataclasses import replace

from mls2p.actions import OUR_COMMIT_CONFIRMED
from mls2p.policy import RekeyPolicy
from mls2p.testing import Pair, trusted_test_peers
from mls2p.transitions import Turn
from mls2p.wire import CommitRequest, ProfileMessage, ProfileMessageType
from mlscore.credentials import Credential, PinnedKeys
from mlstls.connection import MlsTlsConnection
from mlstls.testing import TlsPair


class CountingPins(PinnedKeys):
    """The test pins, counting how often a credential is validated."""

    def __init__(self) -> None:
        super().__init__(trusted_test_peers().pins)
        self.calls = 0

    def validate(self, credential: Credential, signature_key: bytes, suite_id: int, now: int | None = None) -> None:
        self.calls += 1
        super().validate(credential, signature_key, suite_id, now)


def _request(epoch: int) -> bytes:
    return ProfileMessage(ProfileMessageType.COMMIT_REQUEST, CommitRequest(epoch).to_bytes()).to_bytes()


def test_requests_on_the_requesters_own_turn_change_nothing_and_validate_nothing() -> None:
    pair = Pair()
    counting = CountingPins()
    pair.bob.config = replace(pair.bob.config, authentication_service=counting)
    assert pair.bob.turn is Turn.PEERS and pair.bob.epoch is not None
    before = pair.bob.to_state()
    for _ in range(1000):
        assert pair.bob.receive(_request(pair.bob.epoch)) == []
    assert pair.bob.to_state() == before and pair.bob.turn is Turn.PEERS
    assert counting.calls == 0


def _inject(connection: MlsTlsConnection, frame: bytes) -> None:
    """The attacker holds its own side's keys: it writes any profile frame into its protected stream."""
    connection._send_handshake(frame)


def test_a_request_flood_buys_one_commit_per_turn() -> None:
    pair = TlsPair()
    pair.client.connect()
    pair.pump()
    start = pair.server.epoch
    assert start is not None
    for _ in range(200):  # requests for the epoch in force, as fast as the server reads them
        _inject(pair.client, _request(pair.server.epoch or 0))
        pair.pump()
    # After the handshake the turn is the client's: the server answers nothing until the client commits.
    assert pair.server.epoch == start and not pair.server.closed
    for _ in range(20):  # each client commit hands the server one turn, and one request uses it
        pair.client.rekey()
        pair.pump()
        for _ in range(50):
            _inject(pair.client, _request(pair.server.epoch or 0))
        pair.pump()
    server_commits = sum(1 for e in pair.events["server"] if getattr(e, "reason", "") == OUR_COMMIT_CONFIRMED)
    client_commits = sum(1 for e in pair.events["client"] if getattr(e, "reason", "") == OUR_COMMIT_CONFIRMED)
    assert server_commits <= client_commits  # never more than one answer per turn handed over
    assert pair.server.epoch == pair.client.epoch and not pair.server.closed
    assert pair.server.epoch is not None and pair.server.epoch - start == server_commits + client_commits


def test_requests_the_server_would_answer_are_charged_to_the_peers_budget() -> None:
    pair = TlsPair(rekey=RekeyPolicy(peer_commit_interval=0.1, peer_commit_burst=2))
    pair.client.connect()
    pair.pump()
    pair.client.rekey()
    pair.pump()  # one token spent on the client's commit; the server's turn
    pair.server.endpoint.peer_budget.take(pair.now)  # and the other one
    _inject(pair.client, _request(pair.server.epoch or 0))
    pair.pump()
    assert pair.server.session is not None and pair.server.session.pending is None  # held, not answered yet
    assert pair.server.endpoint.peer_budget.deferred == 1
    pair.advance(0.1)  # a token: the held request goes, and is answered
    assert pair.server.epoch == pair.client.epoch == 3 and not pair.server.closed


def test_a_request_in_a_stale_epoch_closes_only_this_connection() -> None:
    pair = TlsPair()
    pair.client.connect()
    pair.pump()
    pair.client.rekey()
    pair.pump()  # the server's turn now
    stored = pair.server_store.load(pair.server.session.group_id)  # type: ignore[union-attr]
    _inject(pair.client, _request(0))
    pair.pump()
    assert pair.server.closed
    assert pair.server_store.load(pair.server.session.group_id) == stored  # type: ignore[union-attr]
