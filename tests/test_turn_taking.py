"""Ping-pong as turn-taking: after a confirmed commit the next one belongs to the other party.

A thief of one side's whole state (its leaf private key included) follows every
commit the *peer* makes, because in a two-member group that commit is encrypted
to the victim's leaf key; only the victim's own next commit locks it out.  So
the property that matters is: whatever the two rekey policies, each side
commits at least every second rekey.  These tests drive real transports on a
simulated clock and read who committed each epoch from the EpochChanged events.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace

import pytest

from mls2p import RekeyPolicy, State
from mls2p.actions import OUR_COMMIT_CONFIRMED
from mls2p.errors import AlertDescription, UnexpectedMessage
from mls2p.testing import Pair, config, sent
from mls2p.transitions import Turn
from mls2p.wire import CommitRequest, ProfileMessage, ProfileMessageType
from mlscore.errors import DecodeError, EpochError
from mlstls.connection import ConnectionTerminated, EpochChanged, MlsTlsConnection
from mlstls.testing import TlsPair

COMMITTED = OUR_COMMIT_CONFIRMED  # the reason a committer's EpochChanged carries


def committers(pair: TlsPair) -> str:
    """Who committed each epoch after the handshake, from the client's events: 'c' or 's'."""
    return "".join("c" if e.reason == COMMITTED else "s" for e in pair.events["client"] if isinstance(e, EpochChanged))


def assert_alternating(sequence: str) -> None:
    assert all(a != b for a, b in itertools.pairwise(sequence)), sequence


# -- the session: whose turn, and what rekey() does on each -------------------------------------------


def test_after_the_handshake_the_initiator_commits_first() -> None:
    pair = Pair()
    assert (pair.alice.turn, pair.bob.turn) == (Turn.OURS, Turn.PEERS)


def test_rekey_on_the_peers_turn_asks_once_and_the_answer_hands_the_turn_back() -> None:
    pair = Pair()
    request = sent(pair.bob.rekey())
    assert ProfileMessage.from_bytes(request[0]).msg_type is ProfileMessageType.COMMIT_REQUEST
    assert (pair.bob.state, pair.bob.turn) == (State.SYNCED, Turn.ASKED)
    assert pair.bob.rekey() == []  # one request at a time
    update = sent(pair.alice.receive(request[0]))
    assert ProfileMessage.from_bytes(update[0]).msg_type is ProfileMessageType.CONNECTION_UPDATE
    ack = sent(pair.bob.receive(update[0]))
    pair.alice.receive(ack[0])
    assert pair.in_sync()
    assert (pair.alice.turn, pair.bob.turn) == (Turn.PEERS, Turn.OURS)
    assert ProfileMessage.from_bytes(sent(pair.bob.rekey())[0]).msg_type is ProfileMessageType.CONNECTION_UPDATE


def test_an_explicit_update_commits_whoever_s_turn_it_is() -> None:
    pair = Pair()
    assert pair.bob.turn is Turn.PEERS
    update = sent(pair.bob.update())
    assert ProfileMessage.from_bytes(update[0]).msg_type is ProfileMessageType.CONNECTION_UPDATE


def test_without_turns_rekey_always_commits() -> None:
    pair = Pair()
    pair.bob.config = replace(pair.bob.config, rekey=RekeyPolicy(take_turns=False))
    assert pair.bob.turn is Turn.OURS
    assert ProfileMessage.from_bytes(sent(pair.bob.rekey())[0]).msg_type is ProfileMessageType.CONNECTION_UPDATE


def test_after_a_resumption_the_resuming_side_commits_next() -> None:
    pair = Pair()
    pair.restart()
    request = sent(pair.bob.resume())  # bob resumes: he commits, alice answers with her commit
    response = sent(pair.alice.receive(request[0]))
    ack = sent(pair.bob.receive(response[0]))
    pair.alice.receive(ack[0])
    assert pair.in_sync()
    assert (pair.bob.turn, pair.alice.turn) == (Turn.OURS, Turn.PEERS)


@pytest.mark.parametrize(("body", "error"), [
    (CommitRequest(7).to_bytes(), EpochError),  # an epoch we are not in
    (b"\x00" * 7, DecodeError),
    (CommitRequest(0).to_bytes() + b"\x00", DecodeError),
])
def test_a_bad_request_is_refused_and_changes_nothing(body: bytes, error: type[Exception]) -> None:
    pair = Pair()
    before = (pair.alice.state, pair.alice.turn, pair.alice.epoch, pair.alice.to_state())
    with pytest.raises(error):
        pair.alice.receive(ProfileMessage(ProfileMessageType.COMMIT_REQUEST, body))
    assert (pair.alice.state, pair.alice.turn, pair.alice.epoch, pair.alice.to_state()) == before


def test_a_request_before_the_group_exists_is_unexpected() -> None:
    pair = Pair()
    pair.restart()
    sent(pair.alice.resume())
    with pytest.raises(UnexpectedMessage):
        pair.alice.receive(ProfileMessage(ProfileMessageType.COMMIT_REQUEST, CommitRequest(1).to_bytes()))


# -- both transports, on a simulated clock: committers alternate whatever the policies ------------------


def _tls_run(client_policy: RekeyPolicy | None, server_policy: RekeyPolicy | None, *, seconds: int,
             traffic: Callable[[TlsPair], None]) -> TlsPair:
    profiles = {}
    for side, policy in (("client", client_policy), ("server", server_policy)):
        profiles[f"{side}_profile"] = config(side.encode(), **({"rekey": policy} if policy else {}))
    pair = TlsPair(**profiles)
    pair.client.connect(pair.now)
    pair.pump()
    assert pair.client.established and pair.server.established
    for _ in range(seconds):
        traffic(pair)
        pair.advance(1.0)
    return pair


def _request_response(pair: TlsPair) -> None:
    """The workload the experiment used: the client asks, the server answers (only the server receives first)."""
    pair.client.send_data(b"request", pair.now)
    pair.pump()
    pair.server.send_data(b"response", pair.now)
    pair.pump()


def _client_sends_only(pair: TlsPair) -> None:
    pair.client.send_data(b"upload", pair.now)
    pair.pump()


POLICY = RekeyPolicy(max_seconds=10)
CASES = {
    "server-policy-only": (None, POLICY, _request_response),
    "client-policy-only": (POLICY, None, _request_response),
    "both-same": (POLICY, POLICY, _request_response),
    "both-different": (RekeyPolicy(max_seconds=7), RekeyPolicy(max_seconds=11), _request_response),
    "both-sending-client": (POLICY, POLICY, _client_sends_only),
}


@pytest.mark.parametrize("case", CASES)
def test_mlstls_committers_alternate(case: str) -> None:
    client_policy, server_policy, traffic = CASES[case]
    pair = _tls_run(client_policy, server_policy, seconds=125, traffic=traffic)
    sequence = committers(pair)
    assert len(sequence) >= 8, sequence  # rekeys happened at about the policy's pace
    assert_alternating(sequence)
    assert pair.client.epoch == pair.server.epoch
    assert pair.received["server"].count(b"request") + pair.received["server"].count(b"upload") == 125


def test_without_turns_one_side_commits_every_time() -> None:
    """The comparison the flag is for: the old behaviour, where the server's policy alone commits."""
    pair = _tls_run(None, RekeyPolicy(max_seconds=10, take_turns=False), seconds=65, traffic=_request_response)
    assert set(committers(pair)) == {"s"} and len(committers(pair)) >= 5


def test_a_sending_only_side_rekeys_on_time() -> None:
    """send_data(now) moves the policy's clock: no receive and no poll needed."""
    pair = _tls_run(RekeyPolicy(max_seconds=5), None, seconds=0, traffic=_client_sends_only)
    session = pair.client.session
    assert session is not None
    pair.client.send_data(b"x", 4.0)
    assert session.state is State.SYNCED
    pair.client.send_data(b"x", 6.0)
    assert session.state is State.AWAITING_EPOCH_KEY_UPDATE


def _silence_requests(connection: MlsTlsConnection) -> None:
    """Make ``connection`` a peer that never answers a CommitRequest (it drops them unread)."""
    receive = connection.endpoint.receive

    def dropping(frame: bytes | ProfileMessage, now: float) -> list:  # type: ignore[type-arg]
        kind = frame.msg_type if isinstance(frame, ProfileMessage) else frame[0]
        return [] if kind == ProfileMessageType.COMMIT_REQUEST else receive(frame, now)

    connection.endpoint.receive = dropping  # type: ignore[method-assign]


def test_an_unanswered_request_leads_to_our_own_commit() -> None:
    pair = _tls_run(None, RekeyPolicy(max_seconds=10, turn_timeout=5), seconds=0, traffic=_request_response)
    _silence_requests(pair.client)
    for _ in range(40):
        _request_response(pair)
        pair.advance(1.0)
    assert pair.server.endpoint.commit_requests >= 2
    assert pair.server.endpoint.unanswered_requests >= 2
    assert committers(pair) and set(committers(pair)) == {"s"}  # the server still rekeys, on its own
    assert not pair.server.closed


def test_an_unanswered_request_closes_when_the_policy_says_so() -> None:
    pair = _tls_run(None, RekeyPolicy(max_seconds=10, turn_timeout=5, on_unanswered="close"), seconds=0,
                    traffic=_request_response)
    _silence_requests(pair.client)
    for _ in range(20):
        _request_response(pair)
        pair.advance(1.0)
        if pair.server.closed:
            break
    ends = [e for e in pair.events["server"] if isinstance(e, ConnectionTerminated)]
    assert ends and ends[0].alert == AlertDescription.INSUFFICIENT_SECURITY and not ends[0].by_peer
    assert "did not commit within 5" in ends[0].reason
    assert pair.server.endpoint.unanswered_requests == 1


def test_the_timer_names_the_request_deadline_and_the_policy() -> None:
    pair = _tls_run(None, RekeyPolicy(max_seconds=10, turn_timeout=5), seconds=0, traffic=_request_response)
    assert pair.server.get_timer() == 10.0  # the policy's time trigger
    pair.now = 10.0
    pair.server.poll(pair.now)  # the server's turn is the second: it asks
    assert pair.server.endpoint.commit_requests == 1
    assert pair.server.get_timer() == 15.0  # the request's deadline
    pair.pump()  # the client answers
    assert pair.server.get_timer() == 20.0  # new keys at 10: the next trigger


QUIC_CASES = {
    "server-policy-only": (None, RekeyPolicy(max_seconds=3)),
    "client-policy-only": (RekeyPolicy(max_seconds=3), None),
    "both-same": (RekeyPolicy(max_seconds=3), RekeyPolicy(max_seconds=3)),
    "both-different": (RekeyPolicy(max_seconds=2), RekeyPolicy(max_seconds=3.5)),
}


@pytest.mark.parametrize("case", QUIC_CASES)
def test_mlsquic_committers_alternate(case: str) -> None:
    from mlsquic.epochs import EpochChanged as QuicEpochChanged
    from mlsquic.testing import QuicPair, client_configuration, server_configuration

    client_policy, server_policy = QUIC_CASES[case]
    pair = QuicPair(client_configuration(profile=config(b"client", **({"rekey": client_policy} if client_policy
                                                                       else {}))),
                    server_configuration(profile=config(b"server", **({"rekey": server_policy} if server_policy
                                                                      else {}))))
    pair.run(pair.established)
    for _ in range(12):
        stream = pair.send(b"ping")
        assert pair.echo_of(stream) == b"ping"
        pair.advance(2.0)
    sequence = "".join("c" if e.reason == COMMITTED else "s" for e in pair.client.events
                       if isinstance(e, QuicEpochChanged))
    assert len(sequence) >= 6, sequence
    assert_alternating(sequence)
    assert pair.server is not None and pair.client.connection.mls_epoch == pair.server.connection.mls_epoch
