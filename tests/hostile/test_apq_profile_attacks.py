"""Hostile review of APQ-MLS carried by the two-party profile (docs/pq.md, "APQ in the profile").

The attacker is either

* the other party of the session (an insider: it holds every secret of its own T and PQ groups, signs with
  its own pinned keys, and crafts any MLS message the mlscore API can build, or more), or
* an on-path attacker who can drop, replay, reorder, strip and splice whole messages (and whole MLSMessages
  inside a profile message) but holds no key of either party.

Every test asserts the secure outcome: the victim refuses with an :class:`~mlscore.errors.MLSError` subclass
(never AssertionError, KeyError, IndexError, TypeError or another non-MLS exception), its session is unchanged
(stored form, state, epoch, PQ epoch, pending commit), nothing is delivered, and the honest exchange still works
afterwards.  Tests that fail expose a finding (see the review report).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from mls2p import State, TwoPartySession
from mls2p import safe_aad as profile_aad
from mls2p.bootstrap import group_id_of
from mls2p.errors import AlertDescription, RevokedPeer, StoredStateError
from mls2p.negotiation import DowngradeError, parse_client_hello
from mls2p.persistence import APQ_FORMAT, FORMAT, decode, encode
from mls2p.policy import RekeyPolicy
from mls2p.session import _own_key_package
from mls2p.testing import Pair, bundle, config, pump, sent
from mls2p.wire import ProfileMessage, ProfileMessageType, TwoPartyMessageType
from mlscore.apq import (
    APQ_COMPONENT,
    APQ_MESSAGE_PAIR,
    APQInfoUpdate,
    APQMessagePair,
    APQPair,
    ApqPsks,
    APQUpdateType,
    derive_apq_psk,
    is_message_pair,
    with_apq_info,
)
from mlscore.codec import Writer
from mlscore.credentials import PinnedKeys, key_fingerprint
from mlscore.crypto import get_suite
from mlscore.errors import MLSError
from mlscore.framing import MLSMessage, WireFormat
from mlscore.group import Group
from mlscore.leaf_node import PROTOCOL_VERSION_MLS10, LeafNode
from mlscore.messages import (
    Add,
    AppDataUpdate,
    AppDataUpdateOperation,
    GroupContextExtensions,
    PreSharedKey,
    Proposal,
    Remove,
)
from mlscore.proposals import CoveredProposal
from mlscore.safe_app import app_data_dictionary_extension
from mlscore.schedule.psk import PreSharedKeyID
from mlstls.connection import ConnectionTerminated
from mlstls.record import HEADER_SIZE, ContentType, plaintext_records
from mlstls.testing import TlsPair

from ..test_apq_profile import rekey

MODE_1_SUITE = 0x0055  # ML-KEM-1024 + ML-DSA-87
CU = TwoPartyMessageType.CONNECTION_UPDATE
RR = TwoPartyMessageType.RESUMPTION_REQUEST
RS = TwoPartyMessageType.RESUMPTION_RESPONSE


# -- helpers ------------------------------------------------------------------------------------------------


def snap(session: TwoPartySession) -> tuple[object, ...]:
    pending = session.pending
    return (session.to_state(), session.state, session.epoch, session.pq_epoch, session.apq,
            None if pending is None else (pending.message, pending.full, pending.group.epoch),
            session._progress.partials, session._progress.last_applied_commit)


def refused(victim: TwoPartySession, data: bytes, match: str | None = None, **kwargs: Any) -> MLSError:
    """``victim.receive(data)`` raises an MLSError (nothing else) and leaves the session as it was."""
    before = snap(victim)
    with pytest.raises(MLSError, match=match) as caught:
        victim.receive(data, **kwargs)
    assert snap(victim) == before
    assert not victim._psks  # no APQ PSK left offered
    return caught.value


def wrap(msg_type: ProfileMessageType, body: bytes) -> bytes:
    return ProfileMessage(msg_type, body).to_bytes()


def body_of(message: bytes) -> bytes:
    return ProfileMessage.from_bytes(message).body


def copy(group: Group, config: Any = None) -> Group:
    """A private copy of a group: crafting from it uses up nothing of the attacker's real state."""
    return Group.from_state(group.to_state(), config=config or group.config)


def _any_update(current: bytes | None, updates: Sequence[bytes]) -> bytes:
    return b"".join(updates)


def attacker_config(attacker: TwoPartySession) -> Any:
    """The attacker's own group configuration with its local checks out of the way: it resolves any PSK it
    names (but the APQ one, through the pair's slot), has logic for any component it updates, validates no
    credential and bounds no tree."""
    base = dataclasses.replace(attacker.config.group_config(None), authentication_service=None, max_leaves=None,
                               application_psks=lambda _psk_id: b"k" * 32,
                               app_data_components={0x1234: _any_update, attacker.config.component_id: _any_update})
    return APQPair.shared_config(base, attacker._psks)


def aad(session: TwoPartySession, msg_type: TwoPartyMessageType) -> bytes:
    return profile_aad.authenticated_data(session.config.component_id, msg_type)


def full_commit_refused(pair: Pair, **kwargs: Any) -> None:
    """Alice crafts a FULL commit with ``kwargs``; Bob refuses it, and the honest exchange goes on."""
    try:
        body = craft_full(pair.alice, **kwargs)
    except MLSError as exc:
        pytest.skip(f"mlscore would not even build it: {exc}")
    refused(pair.bob, wrap(ProfileMessageType.CONNECTION_UPDATE, body))
    honest_still_works(pair)


def honest_still_works(pair: Pair) -> None:
    """Both sides still commit (PARTIAL and FULL) and agree afterwards."""
    rekey(pair, pair.alice)
    rekey(pair, pair.bob, full=True)
    rekey(pair, pair.alice, full=True)
    assert pair.alice.pq_epoch == pair.bob.pq_epoch


def apq_info_update(t: Group, pq: Group, pair: APQPair) -> AppDataUpdate:
    info = dataclasses.replace(pair.info, t_epoch=t.epoch + 1, pq_epoch=pq.epoch + 1)
    return AppDataUpdate(APQ_COMPONENT, AppDataUpdateOperation.UPDATE,
                         APQInfoUpdate(APQUpdateType.FULL_UPDATE, info=info).to_bytes())


def craft_full(attacker: TwoPartySession, msg_type: TwoPartyMessageType = CU, *,
               t: Group | None = None, pq: Group | None = None,
               t_extra: Sequence[Proposal] = (), pq_extra: Sequence[Proposal] = (),
               t_aad: bytes | None = None, pq_aad: bytes | None = None,
               pq_leaf_update: Callable[[LeafNode], LeafNode] | None = None,
               t_by_reference: Sequence[Proposal] = (), with_psk: bool = True,
               info_by_gce: bool = False, t_force_path: bool = True, pq_force_path: bool = True) -> bytes:
    """The body of a FULL commit built the way APQPair.commit_full does, with the attacker's changes
    (``info_by_gce``: APQInfo moves on by a GroupContextExtensions proposal instead of AppDataUpdate)."""
    progress = attacker._progress
    permissive = attacker_config(attacker)
    t_group = copy(t or progress.group, permissive)
    pq_group = copy(pq or progress.pq, permissive)
    psks = attacker._psks
    pair = APQPair.of(t_group, pq_group, psks)
    update: Proposal = apq_info_update(t_group, pq_group, pair)
    if info_by_gce:
        info = dataclasses.replace(pair.info, t_epoch=t_group.epoch + 1, pq_epoch=pq_group.epoch + 1)
        update = GroupContextExtensions(with_apq_info(t_group.context.extensions, info))
        pq_update: Proposal = GroupContextExtensions(with_apq_info(pq_group.context.extensions, info))
    else:
        pq_update = update
    default = aad(attacker, msg_type)
    pq_result = pq_group.commit([pq_update, *pq_extra], force_path=pq_force_path,
                                authenticated_data=default if pq_aad is None else pq_aad,
                                leaf_node_update=pq_leaf_update)
    psk_id, psk = derive_apq_psk(pq_result.group, pair.info.t_cipher_suite)
    t_proposals: list[Proposal] = [update, *t_extra]
    if with_psk:
        nonce = os.urandom(get_suite(pair.info.t_cipher_suite).hash_len)
        t_proposals.append(PreSharedKey(PreSharedKeyID.application(APQ_COMPONENT, psk_id, nonce)))
    refs = []
    for i, proposal in enumerate(t_by_reference):
        ref = bytes([i + 1]) * 32
        t_group._proposals[ref] = CoveredProposal(proposal, t_group.own_leaf)
        refs.append(ref)
    with psks.offering(psk_id, psk):
        t_result = t_group.commit(t_proposals, force_path=t_force_path, by_reference=refs,
                                  authenticated_data=default if t_aad is None else t_aad)
    return APQMessagePair(t_result.message.wire_format, t_result.message, pq_result.message).to_message_bytes()


def craft_partial(attacker: TwoPartySession, proposals: Sequence[Proposal] = (),
                  msg_type: TwoPartyMessageType = CU, *, force_path: bool = True,
                  by_reference: Sequence[Proposal] = (), group: Group | None = None) -> bytes:
    t_group = copy(group or attacker._progress.group, attacker_config(attacker))
    refs = []
    for i, proposal in enumerate(by_reference):
        ref = bytes([i + 1]) * 32
        t_group._proposals[ref] = CoveredProposal(proposal, t_group.own_leaf)
        refs.append(ref)
    return t_group.commit(list(proposals), force_path=force_path, by_reference=refs,
                          authenticated_data=aad(attacker, msg_type)).message.to_bytes()


def carol_key_package(suite: int) -> Any:
    """A third party's KeyPackage, pinned and fit for the profile's groups."""
    carol = config(b"carol", apq="prefer")
    return _own_key_package(carol, suite, (suite,), apq=True).key_package


def apq_pair(**overrides: Any) -> Pair:
    """An established APQ pair in which the joiner (alice) already made its first (FULL) commit."""
    pair = Pair(apq="require", **overrides)
    rekey(pair, pair.alice)
    return pair


def hello_offer(hello: list[Any]) -> Any:
    return parse_client_hello(body_of(sent(hello)[0]))


def kp_pair(t_kp: Any, pq_kp: Any) -> bytes:
    return APQMessagePair(WireFormat.KEY_PACKAGE, MLSMessage(t_kp), MLSMessage(pq_kp)).to_message_bytes()


# == (b) on-path: the offer ===================================================================================


def test_pair_with_a_foreign_pq_half_of_another_suite_is_a_refused_downgrade() -> None:
    """The on-path attacker replaces the pair's PQ KeyPackage by any KeyPackage of a suite the server does not
    pair (its own, signed by itself).  The server sees 'a pair, but not with my PQ suite', skips the downgrade
    check, and answers classically; a client under "prefer" accepts: APQ is stripped between two peers that
    both do it."""
    _, hello = TwoPartySession.initiator(config(b"alice", apq="prefer"))
    offer = hello_offer(hello)
    junk = bundle(b"mallory", 0x0052).key_package  # anything whose suite is not the server's PQ suite
    forged = wrap(ProfileMessageType.CLIENT_HELLO, kp_pair(offer.apq[0], junk))
    b = TwoPartySession.responder(config(b"bob", apq="prefer"))
    with pytest.raises(DowngradeError):
        b.receive(forged)
    assert b.group is None and b.state is State.AWAITING_CLIENT_HELLO


def test_pair_rebuilt_from_the_clients_own_key_packages_is_a_refused_downgrade() -> None:
    """The same downgrade with nothing but the client's own signed KeyPackages: the pair becomes (suite 1's
    KeyPackage, suite 3's KeyPackage); every suite is offered once, every signature verifies."""
    _, hello = TwoPartySession.initiator(config(b"alice", accepted_suites=(1, 3), apq="prefer"))
    offer = hello_offer(hello)
    kp1, kp3 = offer.key_packages
    forged = wrap(ProfileMessageType.CLIENT_HELLO, kp_pair(kp1, kp3))
    b = TwoPartySession.responder(config(b"bob", accepted_suites=(1, 3), apq="prefer"))
    with pytest.raises(DowngradeError):
        b.receive(forged)
    assert b.group is None and b.state is State.AWAITING_CLIENT_HELLO


def test_mlstls_pair_with_a_foreign_pq_half_is_refused_in_flight() -> None:
    """The downgrade above on a real mlstls connection (both sides prefer APQ): the server must end the
    handshake (illegal_parameter) and neither side may end up with a classical session."""
    pair = TlsPair(apq="prefer")
    pair.client.connect()
    flight, payload, offset = pair.client.data_to_send(), b"", 0
    while offset < len(flight):
        length = int.from_bytes(flight[offset + 3: offset + 5], "big")
        payload += flight[offset + HEADER_SIZE: offset + HEADER_SIZE + length]
        offset += HEADER_SIZE + length
    offer = parse_client_hello(ProfileMessage.from_bytes(payload).body)
    junk = bundle(b"mallory", 0x0052).key_package
    forged = wrap(ProfileMessageType.CLIENT_HELLO, kp_pair(offer.apq[0], junk))
    pair.server.receive_data(plaintext_records(ContentType.HANDSHAKE, forged))
    pair.pump()
    client = pair.client.session
    assert client is None or not client.established or client.apq, "the client settled for a classical session"
    ended = [e for e in pair.events["server"] if isinstance(e, ConnectionTerminated)]
    assert ended and ended[0].alert == AlertDescription.ILLEGAL_PARAMETER
    assert pair.server_store.group_ids() == []


@pytest.mark.parametrize("server_apq", ["prefer", "require"])
def test_pair_with_another_identitys_pq_half_is_refused(server_apq: str) -> None:
    """Splice: alice's T KeyPackage with carol's (pinned, honest) PQ KeyPackage."""
    _, hello = TwoPartySession.initiator(config(b"alice", apq="prefer"))
    _, carol_hello = TwoPartySession.initiator(config(b"carol", apq="prefer"))
    forged = wrap(ProfileMessageType.CLIENT_HELLO, kp_pair(hello_offer(hello).apq[0], hello_offer(carol_hello).apq[1]))
    b = TwoPartySession.responder(config(b"bob", apq=server_apq))
    refused(b, forged)
    assert b.group is None


def test_pair_whose_halves_are_signed_by_two_different_keys_is_refused() -> None:
    """Mode 0: the PQ KeyPackage must be signed with the T KeyPackage's key.  Splice alice's T KeyPackage with a
    PQ KeyPackage of another (also pinned) alice key, e.g. a stale offer of a rotated-out device."""
    _, hello = TwoPartySession.initiator(config(b"alice", apq="prefer"))
    _, other = TwoPartySession.initiator(config(b"alice", apq="prefer"))  # a second pinned alice key
    t_kp, pq_kp = hello_offer(hello).apq[0], hello_offer(other).apq[1]
    assert t_kp.leaf_node.signature_key != pq_kp.leaf_node.signature_key
    b = TwoPartySession.responder(config(b"bob", apq="require"))
    refused(b, wrap(ProfileMessageType.CLIENT_HELLO, kp_pair(t_kp, pq_kp)))


def test_two_pairs_in_one_client_hello_are_refused() -> None:
    _, hello = TwoPartySession.initiator(config(b"alice", accepted_suites=(1, 3), apq="prefer"))
    offer = hello_offer(hello)
    body = kp_pair(offer.apq[0], offer.apq[1]) + kp_pair(offer.key_packages[1], offer.apq[1])
    b = TwoPartySession.responder(config(b"bob", apq="prefer"))
    refused(b, wrap(ProfileMessageType.CLIENT_HELLO, body), match="at most one APQ pair")


def test_pair_and_its_t_half_again_are_refused() -> None:
    _, hello = TwoPartySession.initiator(config(b"alice", apq="prefer"))
    offer = hello_offer(hello)
    body = body_of(sent(hello)[0]) + MLSMessage(offer.apq[0]).to_bytes()
    b = TwoPartySession.responder(config(b"bob", apq="prefer"))
    refused(b, wrap(ProfileMessageType.CLIENT_HELLO, body), match="twice")


def test_a_pair_of_welcomes_as_a_client_hello_is_refused() -> None:
    _, hello = TwoPartySession.initiator(config(b"alice", apq="prefer"))
    welcome = sent(TwoPartySession.responder(config(b"bob", apq="prefer")).receive(sent(hello)[0]))[0]
    assert is_message_pair(body_of(welcome))
    b = TwoPartySession.responder(config(b"bob", apq="prefer"))
    refused(b, wrap(ProfileMessageType.CLIENT_HELLO, body_of(welcome)))


@pytest.mark.parametrize("shape", ["nested", "truncated", "empty-halves", "trailing", "version"])
def test_malformed_pairs_in_a_client_hello_are_refused(shape: str) -> None:
    _, hello = TwoPartySession.initiator(config(b"alice", apq="prefer"))
    body = body_of(sent(hello)[0])
    header = Writer().u16(PROTOCOL_VERSION_MLS10).u16(APQ_MESSAGE_PAIR).getvalue()
    forged = {
        "nested": header + Writer().u16(APQ_MESSAGE_PAIR).getvalue() + body,
        "truncated": body[: len(body) // 2],
        "empty-halves": header + Writer().u16(WireFormat.KEY_PACKAGE).getvalue(),
        "trailing": body + b"\x00",
        "version": Writer().u16(2).u16(APQ_MESSAGE_PAIR).getvalue() + body[4:],
    }[shape]
    b = TwoPartySession.responder(config(b"bob", apq="prefer"))
    refused(b, wrap(ProfileMessageType.CLIENT_HELLO, forged))


def test_a_large_pair_near_the_message_limit_is_refused_cheaply() -> None:
    """A pair whose PQ half is ~60 KiB of garbage after a valid header."""
    _, hello = TwoPartySession.initiator(config(b"alice", apq="prefer"))
    offer = hello_offer(hello)
    t_half = MLSMessage(offer.apq[0]).to_bytes()
    header = Writer().u16(PROTOCOL_VERSION_MLS10).u16(APQ_MESSAGE_PAIR).u16(WireFormat.KEY_PACKAGE).getvalue()
    junk = Writer().u16(PROTOCOL_VERSION_MLS10).u16(WireFormat.KEY_PACKAGE).getvalue() + b"\xff" * 60_000
    b = TwoPartySession.responder(config(b"bob", apq="prefer"))
    refused(b, wrap(ProfileMessageType.CLIENT_HELLO, header + t_half + junk))


# == ServerHello (client victim) ================================================================================


def test_a_classical_welcome_to_a_client_that_requires_apq_is_refused_and_the_real_one_still_joins() -> None:
    a, hello = TwoPartySession.initiator(config(b"alice", apq="require"))
    classical_server = TwoPartySession.responder(config(b"bob"))
    # a server without APQ answers the pair's T KeyPackage
    classical = sent(classical_server.receive(sent(hello)[0]))[0]
    refused(a, classical, match="require")
    real = sent(TwoPartySession.responder(config(b"bob", apq="require")).receive(sent(hello)[0]))[0]
    a.receive(real)
    assert a.synced and a.apq


def test_a_classical_welcome_on_the_pq_suite_to_a_prefer_client_is_refused() -> None:
    """An insider server answers a "prefer" client with a *classical* Welcome of suite 0x0051, built on the
    client's PQ KeyPackage.  The client offered 0x0051 only as the PQ half of its pair, never as a classical
    suite: it must refuse (its T group would not be the classical suite it configured, and the session would run
    "without APQ" on a KeyPackage that was only ever meant for a PQ group)."""
    bob_cfg = config(b"bob", apq="prefer")
    a, hello = TwoPartySession.initiator(config(b"alice", apq="prefer"))
    pq_kp = hello_offer(hello).apq[1]
    own = _own_key_package(bob_cfg, 0x0051, (0x0051,), apq=False)
    founding = Group.create(own, extensions=profile_aad.group_extensions(bob_cfg),
                            config=bob_cfg.group_config(None))
    result = founding.commit([Add(pq_kp)], force_path=False, include_tree_in_welcome=True)
    assert result.welcome is not None
    refused(a, wrap(ProfileMessageType.SERVER_HELLO, result.welcome.to_bytes()))
    assert a.group is None


def test_a_server_hello_spliced_from_two_server_answers_is_refused() -> None:
    a, hello = TwoPartySession.initiator(config(b"alice", apq="require"))
    bob_cfg = config(b"bob", apq="require")
    one, two = (APQMessagePair.from_message_bytes(body_of(sent(TwoPartySession.responder(bob_cfg).receive(
        sent(hello)[0]))[0])) for _ in range(2))
    for t_half, pq_half in ((one.t_message, two.pq_message), (two.t_message, one.pq_message)):
        spliced = APQMessagePair(WireFormat.WELCOME, t_half, pq_half).to_message_bytes()
        refused(a, wrap(ProfileMessageType.SERVER_HELLO, spliced))
    swapped = APQMessagePair(WireFormat.WELCOME, one.pq_message, one.t_message).to_message_bytes()
    refused(a, wrap(ProfileMessageType.SERVER_HELLO, swapped))
    a.receive(wrap(ProfileMessageType.SERVER_HELLO, one.to_message_bytes()))
    assert a.synced and a.apq


def test_a_welcome_pair_whose_groups_lack_the_profile_component_is_refused() -> None:
    """An insider server creates the pair without the profile's component in the GroupContexts."""
    bob_cfg = config(b"bob", apq="require")
    a, hello = TwoPartySession.initiator(config(b"alice", apq="require"))
    offer = hello_offer(hello)
    own_t = _own_key_package(bob_cfg, 1, (1,), apq=True)
    own_pq = _own_key_package(bob_cfg, 0x0051, (0x0051,), apq=True)
    founding = APQPair.create(own_t, own_pq, extensions=(app_data_dictionary_extension([0x1234]),),
                              config=APQPair.shared_config(bob_cfg.group_config(None), ApqPsks()))
    added = founding.commit_full(add=offer.apq)
    welcomes = added.welcomes()
    assert welcomes is not None
    refused(a, wrap(ProfileMessageType.SERVER_HELLO, welcomes.to_message_bytes()))


def test_a_welcome_pair_to_a_client_that_offered_another_pq_suite_is_refused() -> None:
    """A Welcome pair on PQ suite 0x0052 (another connection's answer) reaches a client that offered 0x0051: it
    joins only a pair on the PQ suite it offered."""
    _, hello = TwoPartySession.initiator(config(b"alice", apq="prefer", apq_suite=0x0052))
    welcome = sent(TwoPartySession.responder(config(b"bob", apq="prefer", apq_suite=0x0052)).receive(sent(hello)[0]))
    pair = APQMessagePair.from_message_bytes(body_of(welcome[0]))
    other, _ = TwoPartySession.initiator(config(b"alice", apq="prefer"))  # offers 0x0051: cannot read it
    refused(other, wrap(ProfileMessageType.SERVER_HELLO, pair.to_message_bytes()))


# == (a) insider: PARTIAL commits smuggling proposals into an APQ session =========================================


def _proposals_for(victim: TwoPartySession, attacker: TwoPartySession) -> dict[str, list[Proposal]]:
    t, pq = attacker._progress.group, attacker._progress.pq
    assert t is not None and pq is not None and victim.group is not None
    return {
        "group-context-extensions": [GroupContextExtensions(t.context.extensions)],
        "apq-info-update": [apq_info_update(t, pq, APQPair.of(t, pq, attacker._psks))],
        "app-data-other-component": [AppDataUpdate(victim.config.component_id, AppDataUpdateOperation.UPDATE,
                                                   b"x")],
        "apq-info-remove": [AppDataUpdate(APQ_COMPONENT, AppDataUpdateOperation.REMOVE)],
        "psk": [PreSharedKey(PreSharedKeyID.application(0x4242, b"x" * 32, bytes(32)))],
        "add": [Add(carol_key_package(1))],
        "remove-victim": [Remove(victim.group.own_leaf)],
    }


PARTIAL_SMUGGLED = ["group-context-extensions", "apq-info-update", "app-data-other-component", "apq-info-remove",
                    "psk", "add", "remove-victim"]


@pytest.mark.parametrize("what", PARTIAL_SMUGGLED)
def test_a_partial_commit_smuggling_proposals_is_refused(what: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pair = apq_pair()
    attacker, victim = pair.alice, pair.bob
    proposals = _proposals_for(victim, attacker)[what]
    # the attacker's own group must be willing to build whatever it wants: skip its own local validations
    # where they would stop it (a real attacker patches its own code)
    try:
        body = craft_partial(attacker, proposals)
    except MLSError as exc:
        pytest.skip(f"mlscore would not even build it: {exc}")
    refused(victim, wrap(ProfileMessageType.CONNECTION_UPDATE, body))
    honest_still_works(pair)


def test_a_partial_commit_with_by_reference_proposals_is_refused() -> None:
    pair = apq_pair()
    update = AppDataUpdate(0x1234, AppDataUpdateOperation.UPDATE, b"x")
    body = craft_partial(pair.alice, by_reference=[update])
    refused(pair.bob, wrap(ProfileMessageType.CONNECTION_UPDATE, body))
    honest_still_works(pair)


@pytest.mark.parametrize("which", ["t", "pq", "both"])
def test_a_full_commit_without_an_update_path_is_refused(which: str) -> None:
    pair = apq_pair()
    kwargs = {"t_force_path": which == "pq", "pq_force_path": which == "t"}
    full_commit_refused(pair, **kwargs)


def test_a_pq_group_commit_sent_alone_as_partial_is_refused() -> None:
    """A commit of the PQ group on its own (a 'PARTIAL' of the wrong group): the victim's T group refuses it, and
    its PQ group does not move."""
    pair = apq_pair()
    body = craft_partial(pair.alice, group=pair.alice._progress.pq)
    refused(pair.bob, wrap(ProfileMessageType.CONNECTION_UPDATE, body))
    honest_still_works(pair)


def test_a_full_commit_pair_into_a_classical_session_is_refused() -> None:
    classical = Pair()
    t = classical.alice._progress.group
    assert t is not None
    one = copy(t).commit(force_path=True, authenticated_data=aad(classical.alice, CU)).message
    two = copy(t).commit(force_path=True, authenticated_data=aad(classical.alice, CU)).message
    body = APQMessagePair(one.wire_format, one, two).to_message_bytes()
    refused(classical.bob, wrap(ProfileMessageType.CONNECTION_UPDATE, body))
    # and a real FULL commit of another (APQ) session
    foreign = apq_pair()
    full = body_of(sent(foreign.alice.update(full=True))[0])
    refused(classical.bob, wrap(ProfileMessageType.CONNECTION_UPDATE, full))
    rekey(classical, classical.alice)
    rekey(classical, classical.bob)


# == (a) insider: FULL commits ==================================================================================


def test_an_honest_crafted_full_commit_is_accepted() -> None:
    """The crafting helper itself builds an acceptable FULL commit (so the refusals below are due to the change)."""
    pair = apq_pair()
    body = craft_full(pair.alice)
    out = sent(pair.bob.receive(wrap(ProfileMessageType.CONNECTION_UPDATE, body)))
    assert pair.bob.pq_epoch == pair.alice.pq_epoch + 1 and out


FULL_SMUGGLED: dict[str, dict[str, Any]] = {
    "apq-info-by-group-context-extensions": {"info_by_gce": True},
    "t-app-data-other-component": {"t_extra": "appdata"},
    "pq-app-data-other-component": {"pq_extra": "appdata"},
    "pq-psk": {"pq_extra": "psk"},
    "t-second-psk": {"t_extra": "psk"},
    "t-by-reference": {"t_by_reference": "appdata"},
    "no-psk": {"with_psk": False},
    "t-add": {"t_extra": "add"},
    "pq-add": {"pq_extra": "add"},
}


def _resolve(kind: str, session: TwoPartySession, suite: int) -> list[Proposal]:
    group = session._progress.group
    assert group is not None
    return {
        "gce": [GroupContextExtensions((*group.context.extensions,))],
        "appdata": [AppDataUpdate(0x1234, AppDataUpdateOperation.UPDATE, b"x")],
        "psk": [PreSharedKey(PreSharedKeyID.application(0x4242, b"other", bytes(get_suite(suite).hash_len)))],
        "add": [Add(carol_key_package(suite))],
    }[kind]


@pytest.mark.parametrize("what", sorted(FULL_SMUGGLED))
def test_a_full_commit_smuggling_proposals_is_refused(what: str) -> None:
    pair = apq_pair()
    spec = dict(FULL_SMUGGLED[what])
    kwargs: dict[str, Any] = {}
    for key, value in spec.items():
        if key in ("with_psk", "info_by_gce"):
            kwargs[key] = value
        else:
            kwargs[key] = _resolve(value, pair.alice, 0x0051 if key.startswith("pq") else 1)
    full_commit_refused(pair, **kwargs)


@pytest.mark.parametrize("which", ["t", "pq"])
def test_a_full_commit_with_a_half_lacking_the_safe_aad_is_refused(which: str) -> None:
    pair = apq_pair()
    body = craft_full(pair.alice, **{f"{which}_aad": b""})
    refused(pair.bob, wrap(ProfileMessageType.CONNECTION_UPDATE, body))
    honest_still_works(pair)


@pytest.mark.parametrize("which", ["t", "pq"])
def test_a_full_connection_update_with_a_half_of_another_type_is_refused(which: str) -> None:
    pair = apq_pair()
    body = craft_full(pair.alice, **{f"{which}_aad": aad(pair.alice, RR)})
    refused(pair.bob, wrap(ProfileMessageType.CONNECTION_UPDATE, body))
    honest_still_works(pair)


def test_a_full_resumption_request_whose_halves_carry_different_types_is_refused() -> None:
    """Both types are allowed in a ResumptionRequest (rule 1 resends a ConnectionUpdate), but one FULL commit is
    one message: its halves must name one type."""
    pair = apq_pair()
    pair.restart()
    body = craft_full(pair.alice, RR, pq_aad=aad(pair.alice, CU))
    refused(pair.bob, wrap(ProfileMessageType.RESUMPTION_REQUEST, body))
    pump(pair.alice, pair.bob, sent(pair.alice.resume()))
    assert pair.in_sync()


def test_full_halves_spliced_from_two_full_commits_are_refused() -> None:
    pair = apq_pair()
    one = APQMessagePair.from_message_bytes(craft_full(pair.alice))
    two = APQMessagePair.from_message_bytes(craft_full(pair.alice))
    for t_half, pq_half in ((one.t_message, two.pq_message), (two.t_message, one.pq_message)):
        spliced = APQMessagePair(t_half.wire_format, t_half, pq_half).to_message_bytes()
        refused(pair.bob, wrap(ProfileMessageType.CONNECTION_UPDATE, spliced))
    # the T half alone (as a PARTIAL commit), the PQ half alone, and the halves swapped
    for forged in (one.t_message.to_bytes(), one.pq_message.to_bytes(),
                   APQMessagePair(one.wire_format, one.pq_message, one.t_message).to_message_bytes()):
        refused(pair.bob, wrap(ProfileMessageType.CONNECTION_UPDATE, forged))
    # the genuine one still applies
    pair.bob.receive(wrap(ProfileMessageType.CONNECTION_UPDATE, one.to_message_bytes()))
    assert pair.bob.pq_epoch == pair.alice.pq_epoch + 1


def test_a_full_commit_as_an_epoch_key_update_or_commit_request_is_refused() -> None:
    pair = apq_pair()
    out = sent(pair.alice.update(full=True))[0]
    for msg_type in (ProfileMessageType.EPOCH_KEY_UPDATE, ProfileMessageType.COMMIT_REQUEST,
                     ProfileMessageType.RESUMPTION_RESPONSE, ProfileMessageType.SERVER_HELLO):
        refused(pair.bob, wrap(msg_type, body_of(out)))
    pump(pair.alice, pair.bob, [out])
    assert pair.in_sync()


def test_a_nested_or_huge_commit_pair_is_refused() -> None:
    pair = apq_pair()
    full = craft_full(pair.alice)
    nested = Writer().u16(PROTOCOL_VERSION_MLS10).u16(APQ_MESSAGE_PAIR).u16(APQ_MESSAGE_PAIR).getvalue() + full
    huge = full[:6] + b"\x00" * 60_000
    for body in (nested, huge, full + b"\x00", full[:-1]):
        refused(pair.bob, wrap(ProfileMessageType.CONNECTION_UPDATE, body))
    honest_still_works(pair)


# == (b) on-path: replay and reorder of FULL commits ===========================================================


def test_a_replayed_full_commit_is_refused() -> None:
    pair = apq_pair()
    full = rekey(pair, pair.alice, full=True)
    refused(pair.bob, full)
    rekey(pair, pair.bob)
    refused(pair.bob, full)
    refused(pair.alice, full)  # reflected to its own sender
    honest_still_works(pair)


def test_a_reordered_full_commit_is_refused_and_the_right_one_applies() -> None:
    pair = apq_pair()
    old = sent(pair.alice.update(full=True))  # dropped on the way
    pair.alice.connection_lost()
    pair.bob.connection_lost()
    # alice resumes: the same commit goes again as her ResumptionRequest
    request = sent(pair.alice.resume())
    assert body_of(request[0]) == body_of(old[0])
    pump(pair.alice, pair.bob, request)
    assert pair.in_sync()
    refused(pair.bob, old[0])  # the first copy, arriving late
    honest_still_works(pair)


# == resumption with APQ =======================================================================================


def test_a_full_resumption_request_whose_halves_come_from_different_epochs_is_refused() -> None:
    pair = apq_pair()
    stale_pq = copy(pair.alice._progress.pq)
    rekey(pair, pair.alice, full=True)
    rekey(pair, pair.bob)
    pair.restart()
    # the T half at the current epoch, the PQ half from the PQ epoch before alice's last FULL commit
    body = craft_full(pair.alice, RR, pq=stale_pq)
    refused(pair.bob, wrap(ProfileMessageType.RESUMPTION_REQUEST, body))
    pump(pair.alice, pair.bob, sent(pair.alice.resume()))
    assert pair.in_sync() and pair.alice.pq_epoch == pair.bob.pq_epoch


def test_rule_2_request_on_the_pre_pending_pq_group_is_refused() -> None:
    """Bob's FULL commit is pending (alice applied it, the confirmation was lost).  Alice's ResumptionRequest is
    built at bob's pending T epoch but on the PQ group *before* bob's FULL commit: refused, and the honest rule-2
    request still recovers."""
    pair = apq_pair()
    old_pq = copy(pair.alice._progress.pq)
    commit = sent(pair.bob.update(full=True))
    pair.alice.receive(commit[0])
    pair.restart()
    assert pair.bob.pending is not None and pair.bob.pending.full
    body = craft_full(pair.alice, RR, pq=old_pq)
    refused(pair.bob, wrap(ProfileMessageType.RESUMPTION_REQUEST, body))
    pump(pair.alice, pair.bob, sent(pair.alice.resume()))
    assert pair.in_sync() and pair.alice.pq_epoch == pair.bob.pq_epoch


def test_a_forged_full_resumption_response_is_refused_and_the_real_one_completes() -> None:
    pair = apq_pair()
    pair.restart()
    before_t, before_pq = copy(pair.bob._progress.group), copy(pair.bob._progress.pq)
    request = sent(pair.alice.resume())
    real = sent(pair.bob.receive(request[0]))
    # the insider bob's alternative answer: a FULL commit from the wrong (pre-request) epoch
    forged = craft_full(pair.bob, RS, t=before_t, pq=before_pq)
    refused(pair.alice, wrap(ProfileMessageType.RESUMPTION_RESPONSE, forged))
    # and the real response with its halves swapped
    halves = APQMessagePair.from_message_bytes(body_of(real[0]))
    swapped = APQMessagePair(halves.wire_format, halves.pq_message, halves.t_message).to_message_bytes()
    refused(pair.alice, wrap(ProfileMessageType.RESUMPTION_RESPONSE, swapped))
    pump(pair.alice, pair.bob, sent(pair.alice.receive(real[0])))
    assert pair.in_sync()


def test_a_forged_full_commit_crossing_our_pending_full_commit_changes_nothing() -> None:
    """Bob's FULL commit is in flight; alice (the current initiator, whose commit wins the tie-break) sends a
    forged FULL commit: bob refuses it and keeps his pending commit; the real crossing still settles."""
    pair = apq_pair()
    bob_commit = sent(pair.bob.update(full=True))
    forged = craft_full(pair.alice, pq_extra=[AppDataUpdate(0x1234, AppDataUpdateOperation.UPDATE, b"x")])
    refused(pair.bob, wrap(ProfileMessageType.CONNECTION_UPDATE, forged))
    assert pair.bob.pending is not None and pair.bob.pending.full
    alice_commit = sent(pair.alice.update(full=True))
    pump(pair.alice, pair.bob, alice_commit, bob_commit)
    assert pair.in_sync() and pair.alice.pq_epoch == pair.bob.pq_epoch
    honest_still_works(pair)


def test_a_full_commit_dropped_by_the_tie_break_does_not_count() -> None:
    pair = Pair(apq="require", rekey=RekeyPolicy(full_every=2))
    rekey(pair, pair.alice)  # the joiner's FULL
    rekey(pair, pair.bob)  # bob: PARTIAL (1 of 2)
    bob_commit = sent(pair.bob.update())  # due FULL, but it crosses alice's and loses
    assert pair.bob.pending is not None and pair.bob.pending.full
    pump(pair.alice, pair.bob, sent(pair.alice.update()), bob_commit)
    assert pair.in_sync()
    out = sent(pair.bob.update())
    assert is_message_pair(body_of(out[0])), "bob's next commit must still be FULL"
    pump(pair.bob, pair.alice, out)
    assert pair.in_sync()


# == trust over both groups ======================================================================================


def _leaf_key_swap(monkeypatch: pytest.MonkeyPatch, new_pub: bytes, new_priv: bytes) -> Callable[[LeafNode], LeafNode]:
    """The attacker's UpdatePath leaf carries ``new_pub`` and is signed by it (the commit itself still by the
    old key, as RFC 9420 requires)."""
    original = LeafNode.signed

    def signed(self: LeafNode, suite: Any, signature_priv: Any, *args: Any, **kwargs: Any) -> LeafNode:
        if self.signature_key == new_pub:
            signature_priv = suite.signing_key(new_priv)
        return original(self, suite, signature_priv, *args, **kwargs)

    monkeypatch.setattr(LeafNode, "signed", signed)
    return lambda leaf: dataclasses.replace(leaf, signature_key=new_pub)


@pytest.mark.parametrize("pq_suite", [0x0051, MODE_1_SUITE])
def test_an_unpinned_key_in_a_later_pq_update_path_leaf_is_refused(pq_suite: int,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The trust decision covers the PQ group's leaves at every commit, not only the handshake (mode 1: an
    unpinned ML-DSA key; mode 0: an unpinned Ed25519 key in the PQ group)."""
    pair = apq_pair(apq_suite=pq_suite)
    new_priv, new_pub = get_suite(pq_suite).generate_signature_key_pair()
    update = _leaf_key_swap(monkeypatch, new_pub, new_priv)
    body = craft_full(pair.alice, pq_leaf_update=update)
    refused(pair.bob, wrap(ProfileMessageType.CONNECTION_UPDATE, body))
    monkeypatch.undo()
    honest_still_works(pair)


def test_a_pq_leaf_key_pinned_for_another_identity_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mode 1: alice moves her PQ leaf to an ML-DSA key pinned, but for carol."""
    pair = apq_pair(apq_suite=MODE_1_SUITE)
    carol = config(b"carol", apq="require", apq_suite=MODE_1_SUITE)
    assert carol.apq_signature_priv is not None
    carol_pub = carol.signing_key(MODE_1_SUITE).public_bytes()
    update = _leaf_key_swap(monkeypatch, carol_pub, carol.apq_signature_priv)
    body = craft_full(pair.alice, pq_leaf_update=update)
    refused(pair.bob, wrap(ProfileMessageType.CONNECTION_UPDATE, body))
    monkeypatch.undo()
    honest_still_works(pair)


# == tampered stored state (format 2) ============================================================================


def _stored(session: TwoPartySession) -> Any:
    state = session.to_state()
    assert state is not None
    return decode(state, session._group_config(None))


def test_a_stored_apq_session_stripped_to_format_1_is_refused() -> None:
    """Whoever can write the store removes the PQ group (format 2 rewritten as format 1): the session would go
    on as a classical one, never make a FULL commit again, and refuse the peer's; its T group still names
    its PQ pair in APQInfo.  Loading must refuse it."""
    pair = apq_pair()
    stripped = encode(dataclasses.replace(_stored(pair.alice), pq=None))
    assert stripped[:2] == FORMAT.to_bytes(2, "big")
    with pytest.raises(StoredStateError):
        TwoPartySession.from_state(stripped, pair.alice_config)


def test_a_stored_pending_full_commit_of_another_pair_is_refused() -> None:
    pair, other = apq_pair(), apq_pair()
    sent(pair.alice.update(full=True))
    sent(other.alice.update(full=True))
    mine, theirs = _stored(pair.alice), _stored(other.alice)
    assert mine.pending is not None and theirs.pending is not None
    mixed = encode(dataclasses.replace(mine, pending=dataclasses.replace(mine.pending, pq=theirs.pending.pq)))
    with pytest.raises(StoredStateError):
        TwoPartySession.from_state(mixed, pair.alice_config)


def test_a_stored_pending_pq_group_without_a_pending_commit_is_refused() -> None:
    pair = apq_pair()
    state = pair.alice.to_state()
    assert state is not None
    # append a pending PQ group to a synced state: rewrite the apq block by hand
    stored = _stored(pair.alice)
    w = Writer().u16(APQ_FORMAT).u8(3).u8(1).u8(1)
    w.opaque(stored.group.to_state()).optional(stored.last_applied_commit, Writer.opaque).optional(None, Writer.opaque)
    w.optional(stored.pq, lambda w2, pq: (w2.opaque(pq.to_state()), w2.optional(pq, lambda w3, g: w3.opaque(
        g.to_state())), w2.optional(None, Writer.u32)))
    with pytest.raises(StoredStateError):
        TwoPartySession.from_state(w.getvalue(), pair.alice_config)


def test_a_stored_partials_count_at_its_limit_neither_crashes_nor_stops_commits() -> None:
    """With ``full_every=None`` the PARTIAL count only grows: at the top of its uint32 the next confirmation must
    not fail to be stored (a non-MLS error, and a session that can never again confirm a commit)."""
    pair = Pair(apq="require", rekey=RekeyPolicy(full_every=None))
    rekey(pair, pair.alice)
    tampered = encode(dataclasses.replace(_stored(pair.bob), partials=0xFFFFFFFF))
    pair.bob = TwoPartySession.from_state(tampered, pair.bob_config, on_state_change=lambda s: s.to_state())
    out = sent(pair.bob.update())
    with contextlib.suppress(MLSError):
        pump(pair.bob, pair.alice, out)
    assert pair.in_sync() and pair.bob.to_state() is not None


@pytest.mark.parametrize("partials", [None, 0, 9, 10, 1000])
def test_any_stored_partials_count_still_leads_to_a_full_commit(partials: int | None) -> None:
    pair = Pair(apq="require", rekey=RekeyPolicy(full_every=10))
    rekey(pair, pair.alice)
    pair.bob = TwoPartySession.from_state(encode(dataclasses.replace(_stored(pair.bob), partials=partials)),
                                          pair.bob_config)
    fulls = [is_message_pair(body_of(rekey(pair, pair.bob))) for _ in range(10)]
    assert any(fulls)


# == the bootstrap's group lookup ================================================================================


@pytest.mark.parametrize("body", [
    Writer().u16(PROTOCOL_VERSION_MLS10).u16(APQ_MESSAGE_PAIR).getvalue(),
    Writer().u16(PROTOCOL_VERSION_MLS10).u16(APQ_MESSAGE_PAIR).u16(APQ_MESSAGE_PAIR).getvalue() + b"\x00" * 8,
    b"\x00\x00\x00\x07",
    b"\x00\x01\x00\x07" + b"\xff" * 100,
])
def test_group_id_of_a_malformed_pair_raises_an_mls_error(body: bytes) -> None:
    with pytest.raises(MLSError):
        group_id_of(body)


def test_group_id_of_a_pair_is_the_t_groups() -> None:
    pair = apq_pair()
    pair.restart()
    request = sent(pair.alice.resume())
    assert group_id_of(body_of(request[0])) == pair.group_id


def test_a_reflected_client_hello_pair_as_server_hello_is_refused() -> None:
    a, hello = TwoPartySession.initiator(config(b"alice", apq="require"))
    refused(a, wrap(ProfileMessageType.SERVER_HELLO, body_of(sent(hello)[0])))
    assert a.group is None and a.state is State.AWAITING_SERVER_HELLO


def test_mode_1_trust_withdrawn_from_the_ml_dsa_key_alone_stops_the_session() -> None:
    """Mode 1: bob's trust store keeps alice's Ed25519 key but no longer her ML-DSA key.  The trust decision
    covers both groups: the peer is no longer accepted, and her next commit (FULL or PARTIAL) is refused."""
    pair = apq_pair(apq_suite=MODE_1_SUITE)
    t_leaf = next(leaf for index, leaf in pair.bob.group.members() if index != pair.bob.group.own_leaf)
    pins = PinnedKeys({b"alice": {key_fingerprint(t_leaf.signature_key)}})
    pair.bob.config = dataclasses.replace(pair.bob.config, authentication_service=pins)
    with pytest.raises(RevokedPeer):
        pair.bob.authorize_peer(None)
    for body in (craft_full(pair.alice), craft_partial(pair.alice)):
        refused(pair.bob, wrap(ProfileMessageType.CONNECTION_UPDATE, body))
