"""APQ-MLS carried by the two-party profile (docs/pq.md, "APQ in the profile"): the offer and its downgrade
mark, every combination of the two sides' settings, PARTIAL and FULL rekeys with ping-pong and EpochKeyUpdate,
the FULL policy, resumption (FULL, crossed, a commit in flight) and the stored format."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from mls2p import State, TwoPartySession
from mls2p.errors import StoredStateError
from mls2p.negotiation import DowngradeError, client_hello, parse_client_hello
from mls2p.persistence import APQ_FORMAT, decode, encode
from mls2p.policy import RekeyPolicy
from mls2p.testing import Pair, config, pump, sent
from mls2p.wire import ProfileMessage, ProfileMessageType
from mlscore.apq import APQMessagePair, is_message_pair
from mlscore.crypto import get_suite
from mlscore.errors import ConfigurationError, CredentialError, UnsupportedError, ValidationError

MODE_1_SUITE = 0x0055  # ML-KEM-1024 + ML-DSA-87: PQ/T confidentiality and authenticity


def handshake(client: dict[str, Any], server: dict[str, Any]) -> tuple[TwoPartySession, TwoPartySession]:
    alice = config(b"alice", **client)
    bob = config(b"bob", **server)
    a, hello = TwoPartySession.initiator(alice)
    b = TwoPartySession.responder(bob)
    pump(a, b, sent(hello))
    return a, b


def is_full(message: bytes) -> bool:
    return is_message_pair(ProfileMessage.from_bytes(message).body)


# -- the two sides' settings, one outcome per cell -------------------------------------------------------

OFF, PREFER, REQUIRE = ({"apq": "off"}, {"apq": "prefer"}, {"apq": "require"})


@pytest.mark.parametrize(("client", "server", "outcome"), [
    (OFF, OFF, "classical"), (OFF, PREFER, "classical"), (OFF, REQUIRE, "server refuses"),
    (PREFER, OFF, "classical"), (PREFER, PREFER, "apq"), (PREFER, REQUIRE, "apq"),
    (REQUIRE, OFF, "client refuses"), (REQUIRE, PREFER, "apq"), (REQUIRE, REQUIRE, "apq"),
    # another PQ suite on one side: no APQ in common
    (PREFER, {"apq": "prefer", "apq_suite": 0x0052}, "classical"),
    (PREFER, {"apq": "require", "apq_suite": 0x0052}, "server refuses"),
    (REQUIRE, {"apq": "prefer", "apq_suite": 0x0052}, "client refuses"),
    # mode 1 (ML-DSA in the PQ group)
    ({"apq": "require", "apq_suite": MODE_1_SUITE}, {"apq": "prefer", "apq_suite": MODE_1_SUITE}, "apq"),
])
def test_every_combination_of_settings_has_one_outcome(client: dict[str, Any], server: dict[str, Any],
                                                       outcome: str) -> None:
    alice, bob = config(b"alice", **client), config(b"bob", **server)
    a, hello = TwoPartySession.initiator(alice)
    b = TwoPartySession.responder(bob)
    if outcome == "server refuses":
        with pytest.raises(UnsupportedError, match="does not offer APQ"):
            b.receive(sent(hello)[0])
        assert b.state is State.AWAITING_CLIENT_HELLO and b.group is None
        return
    answer = sent(b.receive(sent(hello)[0]))
    if outcome == "client refuses":
        with pytest.raises(DowngradeError, match="without APQ, which we require"):
            a.receive(answer[0])
        assert a.state is State.AWAITING_SERVER_HELLO and a.group is None
        return
    a.receive(answer[0])
    assert a.synced and b.synced and a.apq is b.apq is (outcome == "apq")
    assert a.export_secret("x", b"", 16) == b.export_secret("x", b"", 16)
    if outcome == "apq":
        assert a.pq_epoch == b.pq_epoch == 1 and a.group is not None
        assert a.group.suite.id == 1 and a._progress.pq is not None
        assert a._progress.pq.suite.id == (client.get("apq_suite") or 0x0051)


def test_an_apq_offer_is_one_pair_in_place_of_the_first_key_package() -> None:
    _, hello = TwoPartySession.initiator(config(b"alice", accepted_suites=(1, 3), apq="prefer"))
    offer = parse_client_hello(ProfileMessage.from_bytes(sent(hello)[0]).body)
    assert [kp.cipher_suite for kp in offer.key_packages] == [1, 3]
    assert offer.apq is not None and offer.apq[0] is offer.key_packages[0] and offer.apq[1].cipher_suite == 0x0051
    for key_package in (*offer.key_packages, offer.apq[1]):  # every KeyPackage carries the signed mark
        assert 0x0051 in key_package.leaf_node.capabilities.cipher_suites


def test_a_server_without_apq_takes_the_pairs_t_key_package() -> None:
    a, _ = handshake({"accepted_suites": (1, 3), "apq": "prefer"}, {"accepted_suites": (3, 1)})
    assert not a.apq and a.group is not None and a.group.suite.id == 3


# -- downgrade ------------------------------------------------------------------------------------------------

def stripped_hello(hello: bytes) -> bytes:
    """The ClientHello with its APQ pair replaced by the pair's T KeyPackage (validly signed)."""
    offer = parse_client_hello(ProfileMessage.from_bytes(hello).body)
    return ProfileMessage(ProfileMessageType.CLIENT_HELLO, client_hello(offer.key_packages)).to_bytes()


@pytest.mark.parametrize("server", [PREFER, REQUIRE])
def test_stripping_the_pair_is_a_refused_downgrade(server: dict[str, Any]) -> None:
    _, hello = TwoPartySession.initiator(config(b"alice", apq="prefer"))
    b = TwoPartySession.responder(config(b"bob", **server))
    with pytest.raises(DowngradeError, match="no usable APQ pair"):
        b.receive(stripped_hello(sent(hello)[0]))
    assert b.group is None and b.state is State.AWAITING_CLIENT_HELLO


def test_a_classical_client_is_not_a_downgrade() -> None:
    a, b = handshake(OFF, PREFER)
    assert a.synced and not b.apq


def test_a_forged_welcome_pair_to_a_client_that_did_not_offer_apq_is_refused() -> None:
    # the server's honest APQ answer handed to a client that offered no APQ (another connection's, say)
    _, hello = TwoPartySession.initiator(config(b"alice", apq="prefer"))
    welcome = sent(TwoPartySession.responder(config(b"bob", apq="prefer")).receive(sent(hello)[0]))[0]
    classical, _ = TwoPartySession.initiator(config(b"alice"))
    with pytest.raises(ValidationError, match="did not offer"):
        classical.receive(welcome)
    assert classical.group is None


# -- rekeys -----------------------------------------------------------------------------------------------

def rekey(pair: Pair, committer: TwoPartySession, **kwargs: Any) -> bytes:
    other = pair.bob if committer is pair.alice else pair.alice
    out = sent(committer.update(**kwargs))
    pump(committer, other, out)
    assert pair.in_sync()
    return out[0]


def test_ping_pong_with_full_every_three() -> None:
    pair = Pair(apq="require", rekey=RekeyPolicy(full_every=3))
    fulls: dict[str, list[bool]] = {"alice": [], "bob": []}
    for i in range(12):
        committer = pair.alice if i % 2 == 0 else pair.bob
        fulls["alice" if committer is pair.alice else "bob"].append(is_full(rekey(pair, committer)))
    # the joiner's first commit is FULL, then one of every three of each side's own commits
    assert fulls["alice"] == [True, False, False, True, False, False]
    assert fulls["bob"] == [False, False, True, False, False, True]
    assert pair.alice.pq_epoch == 1 + 4 and pair.alice.epoch == 13


def test_a_full_commit_on_demand_and_none_when_full_every_is_none() -> None:
    pair = Pair(apq="require", rekey=RekeyPolicy(full_every=None))
    assert is_full(rekey(pair, pair.alice))  # the joiner's first
    assert [is_full(rekey(pair, side)) for side in (pair.bob, pair.alice, pair.bob)] == [False] * 3
    assert is_full(rekey(pair, pair.bob, full=True))
    assert not is_full(rekey(pair, pair.alice))


def test_full_every_one_makes_every_commit_full_and_classical_sessions_ignore_full() -> None:
    pair = Pair(apq="require", rekey=RekeyPolicy(full_every=1))
    assert all(is_full(rekey(pair, side)) for side in (pair.alice, pair.bob, pair.alice))
    classical = Pair()
    assert not is_full(rekey(classical, classical.alice, full=True))


def test_a_rejected_full_commit_changes_nothing_and_the_real_one_still_applies() -> None:
    pair = Pair(apq="require")
    out = sent(pair.alice.update())[0]
    body = ProfileMessage.from_bytes(out).body
    halves = APQMessagePair.from_message_bytes(body)
    swapped = APQMessagePair(halves.wire_format, halves.pq_message, halves.t_message)
    before = pair.bob.to_state()
    for forged in (swapped.to_message_bytes(), halves.t_message.to_bytes()):
        with pytest.raises(Exception):  # noqa: B017 - any refusal; what matters is that nothing changed
            pair.bob.receive(ProfileMessage(ProfileMessageType.CONNECTION_UPDATE, forged))
        assert pair.bob.to_state() == before
    pump(pair.alice, pair.bob, [out])
    assert pair.in_sync()


# -- resumption ------------------------------------------------------------------------------------------

def test_resumption_is_full_both_ways_and_survives_a_restart() -> None:
    pair = Pair(apq="require")
    rekey(pair, pair.alice)
    rekey(pair, pair.bob)
    pair.restart()
    state = pair.alice.to_state()
    assert state is not None and state[:2] == APQ_FORMAT.to_bytes(2, "big")
    request = sent(pair.alice.resume())
    assert is_full(request[0])
    response = sent(pair.bob.receive(request[0]))
    assert is_full(response[0])
    pump(pair.alice, pair.bob, sent(pair.alice.receive(response[0])))
    assert pair.in_sync() and pair.alice.pq_epoch == pair.bob.pq_epoch == 1 + 1 + 2


@pytest.mark.parametrize("lost", ["full", "partial"])
def test_a_commit_in_flight_is_recovered_from_the_stores(lost: str) -> None:
    pair = Pair(apq="require", rekey=RekeyPolicy(full_every=None))
    rekey(pair, pair.alice)  # the joiner's FULL: what follows is PARTIAL unless asked
    commit = sent(pair.bob.update(full=lost == "full"))
    assert is_full(commit[0]) is (lost == "full")
    pair.alice.receive(commit[0])  # applied, confirmation lost with the connection
    pair.restart()
    assert pair.bob.state is State.AWAITING_EPOCH_KEY_UPDATE and pair.bob.pending is not None
    assert pair.bob.pending.full is (lost == "full")
    pump(pair.bob, pair.alice, sent(pair.bob.resume()))
    assert pair.in_sync()


def test_crossed_resumption_requests_are_settled_by_the_tie_break() -> None:
    pair = Pair(apq="require")
    rekey(pair, pair.alice)
    a_request, b_request = sent(pair.alice.resume()), sent(pair.bob.resume())
    ignored = pair.alice.receive(b_request[0])  # alice, the initial initiator, ignores bob's
    assert not sent(ignored)
    pump(pair.alice, pair.bob, a_request)
    assert pair.in_sync()


# -- the stored form -----------------------------------------------------------------------------------------

def test_a_pq_group_of_another_pair_is_refused_when_loaded() -> None:
    one, other = Pair(apq="require"), Pair(apq="require")
    state, foreign = one.alice.to_state(), other.alice.to_state()
    assert state is not None and foreign is not None
    # replace the PQ group with the other pair's: a well-formed state of two groups that are no pair
    mine = decode(state, one.alice._group_config(None))
    theirs = decode(foreign, other.alice._group_config(None))
    mixed = encode(dataclasses.replace(mine, pq=theirs.pq))
    with pytest.raises(StoredStateError, match="one pair"):
        TwoPartySession.from_state(mixed, one.alice_config)


# -- configuration and trust ------------------------------------------------------------------------------

def test_configuration_errors_name_the_problem() -> None:
    with pytest.raises(ConfigurationError, match="'off', 'prefer' or 'require'"):
        config(b"alice", apq="yes")
    with pytest.raises(ConfigurationError, match="hybrid KEMs are refused"):
        config(b"alice", apq="prefer", apq_suite=0x0053)  # X-Wing is refused in the PQ group
    with pytest.raises(ConfigurationError, match="not a classical"):
        config(b"alice", 0x0051, apq="prefer", apq_suite=0x0052)
    with pytest.raises(ConfigurationError, match="apq_signature_priv"):
        config(b"alice", apq="prefer", apq_suite=MODE_1_SUITE, apq_signature_priv=None)
    with pytest.raises(ConfigurationError, match="full_every"):
        RekeyPolicy(full_every=0)


def test_mode_1_trusts_the_pq_key_only_when_pinned() -> None:
    """One trust decision covers both groups: an ML-DSA key nobody pinned is refused, on either side."""
    unpinned, _ = get_suite(MODE_1_SUITE).generate_signature_key_pair()
    mode_1 = {"apq": "require", "apq_suite": MODE_1_SUITE}
    sneaky_client = dataclasses.replace(config(b"alice", **mode_1), apq_signature_priv=unpinned)
    _, hello = TwoPartySession.initiator(sneaky_client)
    b = TwoPartySession.responder(config(b"bob", **mode_1))
    with pytest.raises(CredentialError, match=r"pinned.*second, mldsa87 key, which the other pins too"):
        b.receive(sent(hello)[0])
    assert b.group is None

    a, hello = TwoPartySession.initiator(config(b"alice", **mode_1))
    sneaky_server = TwoPartySession.responder(dataclasses.replace(config(b"bob", **mode_1),
                                                                  apq_signature_priv=unpinned))
    welcome = sent(sneaky_server.receive(sent(hello)[0]))
    with pytest.raises(CredentialError, match=r"pinned.*fingerprint --suite 85"):
        a.receive(welcome[0])
    assert a.group is None and a.state is State.AWAITING_SERVER_HELLO


def test_a_classical_stored_session_is_not_resumed_where_apq_is_required() -> None:
    classical = Pair()
    state = classical.alice.to_state()
    assert state is not None
    TwoPartySession.from_state(state, config(b"alice", apq="prefer"))  # prefer: it resumes classically
    with pytest.raises(StoredStateError, match="requires APQ"):
        TwoPartySession.from_state(state, config(b"alice", apq="require"))
