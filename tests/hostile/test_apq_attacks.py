"""Hostile review of the APQ-MLS combiner core (mlscore/apq.py, draft-ietf-mls-combiner editor's copy).

The attacker is the other member of the pair (it holds every secret of both groups and signs what it likes, so it
can build any commit or Welcome a correct implementation could build, and more), or an on-path attacker who can
drop, reorder, replay and misroute whole messages.  Every test asserts the secure outcome: the victim refuses with
an :class:`MLSError` (never AssertionError, KeyError or another non-MLS exception), its pair is unchanged (epochs,
epoch authenticators and APQInfo of both groups), it holds no APQ PSK afterwards, and the honest exchange still
goes through.  The findings of the first review (docs/pq.md) are fixed; each test now guards its refusal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mls2p.testing import apq_two_party, bundle
from mlscore.apq import (
    APQ_COMPONENT,
    APQInfo,
    APQInfoUpdate,
    APQMode,
    APQPair,
    ApqPsks,
    APQUpdateType,
    apq_info_logic,
    apq_info_of,
    derive_apq_psk,
    with_apq_info,
)
from mlscore.codec import Struct, Writer
from mlscore.errors import DecodeError, MLSError, ValidationError
from mlscore.framing import MLSMessage, PublicMessage, WireFormat
from mlscore.group import CommitResult, Group, GroupConfig
from mlscore.messages import (
    Add,
    AppDataUpdate,
    AppDataUpdateOperation,
    Commit,
    GroupContextExtensions,
    PreSharedKey,
    Proposal,
    Remove,
    encode_proposal,
    proposal_from_bytes,
)
from mlscore.schedule.psk import PreSharedKeyID

T_SUITE, PQ_SUITE, PQ_DSA_SUITE = 1, 0x0051, 0x0055  # X25519 / ML-KEM-1024 + Ed25519 / ML-KEM-1024 + ML-DSA-87
NONCE = bytes(32)  # Nh of the T suite
PRIVATE_HANDSHAKES = GroupConfig(handshake_wire_format=WireFormat.PRIVATE_MESSAGE)


# -- building pairs and forged commits ------------------------------------------------------------------------


def pair_of_two(pq_suite: int = PQ_SUITE, mode: APQMode = APQMode.CONFIDENTIALITY,
                config: GroupConfig | None = None) -> tuple[APQPair, APQPair]:
    """Alice (the attacker in most tests) creates the pair and adds Bob (the victim) by a FULL commit."""
    return apq_two_party(T_SUITE, pq_suite, mode, config)


def snapshot(pair: APQPair) -> tuple[object, ...]:
    return (pair.t.epoch, pair.pq.epoch, pair.t.epoch_authenticator, pair.pq.epoch_authenticator, pair.info,
            apq_info_of(pair.t), apq_info_of(pair.pq), len(pair.t.members()), len(pair.pq.members()))


def refused(victim: APQPair, attempt: Callable[[], object], match: str | None = None) -> MLSError:
    """``attempt`` raises an MLSError and leaves ``victim`` as it was, holding no APQ PSK."""
    before = snapshot(victim)
    with pytest.raises(MLSError, match=match) as caught:
        attempt()
    assert snapshot(victim) == before
    assert not victim._psks
    return caught.value


def in_step(a: APQPair, b: APQPair) -> None:
    assert (a.t.epoch, a.pq.epoch) == (b.t.epoch, b.pq.epoch)
    assert a.t.epoch_authenticator == b.t.epoch_authenticator
    assert a.pq.epoch_authenticator == b.pq.epoch_authenticator
    assert apq_info_of(a.t) == apq_info_of(b.t) == apq_info_of(a.pq) == apq_info_of(b.pq)


def still_works(alice: APQPair, bob: APQPair) -> None:
    """After a refusal the two can still make a FULL and a PARTIAL commit, each way."""
    full = alice.commit_full()
    bob = bob.process_full(full.pq_message.to_bytes(), full.t_message.to_bytes())
    alice = full.pair
    in_step(alice, bob)
    message, bob = bob.commit_partial()
    alice = alice.process_partial(message.to_bytes())
    in_step(alice, bob)
    assert not alice._psks and not bob._psks


def full_update(info: APQInfo) -> AppDataUpdate:
    return AppDataUpdate(APQ_COMPONENT, AppDataUpdateOperation.UPDATE,
                         APQInfoUpdate(APQUpdateType.FULL_UPDATE, info=info).to_bytes())


def epoch_update(update_type: APQUpdateType, epoch: int) -> AppDataUpdate:
    return AppDataUpdate(APQ_COMPONENT, AppDataUpdateOperation.UPDATE,
                         APQInfoUpdate(update_type, epoch=epoch).to_bytes())


def next_info(pair: APQPair) -> APQInfo:
    """The APQInfo an honest FULL commit from ``pair`` writes."""
    return replace(pair.info, t_epoch=pair.t.epoch + 1, pq_epoch=pair.pq.epoch + 1)


def _anything_goes(current: bytes | None, updates: Sequence[bytes]) -> bytes:
    """The real logic where it accepts (so honest halves stay in step), else the last full_update, else as it was."""
    try:
        return apq_info_logic(current, updates)
    except MLSError:
        pass
    for update in reversed(updates):
        try:
            change = APQInfoUpdate.from_bytes(update)
        except MLSError:
            continue
        if change.info is not None:
            return change.info.to_bytes()
    return current if current is not None else b""


def forgiving(group: Group) -> Group:
    """A copy of the attacker's group whose own APQInfo logic accepts any update (the attacker's code is its own):
    so it can send commits an honest committer would refuse to build."""
    components = {**group.config.app_data_components, APQ_COMPONENT: _anything_goes}
    return Group.from_state(group.to_state(), config=replace(group.config, app_data_components=components))


def forged_full(attacker: APQPair, pq_proposals: Sequence[Proposal], t_proposals: Sequence[Proposal], *,
                pq_path: bool = True, t_path: bool = True, carry_psk: bool = True,
                forgive: bool = False) -> tuple[CommitResult, CommitResult]:
    """A FULL commit built by hand: the PQ commit, then the T commit with the real APQ PSK of its new PQ epoch
    (unless ``carry_psk`` is False) appended to ``t_proposals``."""
    pq, t = (forgiving(attacker.pq), forgiving(attacker.t)) if forgive else (attacker.pq, attacker.t)
    pq_result = pq.commit(pq_proposals, force_path=pq_path)
    psk_id, psk = derive_apq_psk(pq_result.group, attacker.info.t_cipher_suite)
    proposals = list(t_proposals)
    if carry_psk:
        proposals.append(PreSharedKey(PreSharedKeyID.application(APQ_COMPONENT, psk_id, NONCE)))
    with attacker._psks.offering(psk_id, psk):  # the attacker's T group resolves the PSK through this
        t_result = t.commit(proposals, force_path=t_path)
    return pq_result, t_result


def has_path(message: MLSMessage) -> bool:
    assert isinstance(message.body, PublicMessage)
    commit = message.body.content.content
    assert isinstance(commit, Commit)
    return commit.path is not None


# -- delivery: halves swapped, mixed, replayed, misrouted ------------------------------------------------------


def test_full_halves_swapped_are_refused() -> None:
    alice, bob = pair_of_two()
    full = alice.commit_full()
    refused(bob, lambda: bob.process_full(full.t_message.to_bytes(), full.pq_message.to_bytes()))
    refused(bob, lambda: bob.process_full(full.pq_message.to_bytes(), full.pq_message.to_bytes()))
    refused(bob, lambda: bob.process_full(full.t_message.to_bytes(), full.t_message.to_bytes()))
    bob = bob.process_full(full.pq_message.to_bytes(), full.t_message.to_bytes())
    in_step(full.pair, bob)


def test_t_half_of_a_full_is_not_a_partial() -> None:
    """The T half alone (its PQ half dropped) needs a PSK the victim cannot have: refused, and the FULL still works."""
    alice, bob = pair_of_two()
    full = alice.commit_full()
    refused(bob, lambda: bob.process_partial(full.t_message.to_bytes()), match="application PSK")
    refused(bob, lambda: bob.process_partial(full.pq_message.to_bytes()))  # another group
    bob = bob.process_full(full.pq_message.to_bytes(), full.t_message.to_bytes())
    in_step(full.pair, bob)
    still_works(full.pair, bob)


def test_partial_is_not_the_t_half_of_a_full() -> None:
    """A PQ commit delivered with a PARTIAL T commit (the real T half dropped): the T commit has no PQ PSK."""
    alice, bob = pair_of_two()
    full = alice.commit_full()
    partial, _ = alice.commit_partial()
    refused(bob, lambda: bob.process_full(full.pq_message.to_bytes(), partial.to_bytes()),
            match="does not carry the PQ group's PSK")
    # the committer went on from its FULL (the PQ half reached the victim alone): the next PARTIAL is refused too
    after_full, _ = full.pair.commit_partial()
    refused(bob, lambda: bob.process_partial(after_full.to_bytes()))
    bob = bob.process_full(full.pq_message.to_bytes(), full.t_message.to_bytes())
    in_step(full.pair, bob)


def test_halves_of_two_full_commits_do_not_combine() -> None:
    """Two FULL commits from the same state (a retry): each T half carries the PSK of its own PQ half only."""
    alice, bob = pair_of_two()
    first, second = alice.commit_full(), alice.commit_full()
    refused(bob, lambda: bob.process_full(first.pq_message.to_bytes(), second.t_message.to_bytes()),
            match="application PSK")
    refused(bob, lambda: bob.process_full(second.pq_message.to_bytes(), first.t_message.to_bytes()),
            match="application PSK")
    bob = bob.process_full(second.pq_message.to_bytes(), second.t_message.to_bytes())
    in_step(second.pair, bob)


def test_halves_from_different_rounds_and_replays_are_refused() -> None:
    alice, bob = pair_of_two()
    first = alice.commit_full()
    bob = bob.process_full(first.pq_message.to_bytes(), first.t_message.to_bytes())
    alice = first.pair
    second = alice.commit_full()
    refused(bob, lambda: bob.process_full(first.pq_message.to_bytes(), first.t_message.to_bytes()))  # replay
    refused(bob, lambda: bob.process_full(second.pq_message.to_bytes(), first.t_message.to_bytes()))
    refused(bob, lambda: bob.process_full(first.pq_message.to_bytes(), second.t_message.to_bytes()))
    refused(bob, lambda: bob.process_partial(first.t_message.to_bytes()))
    bob = bob.process_full(second.pq_message.to_bytes(), second.t_message.to_bytes())
    in_step(second.pair, bob)
    refused(bob, lambda: bob.process_full(second.pq_message.to_bytes(), second.t_message.to_bytes()))


def test_own_full_commit_reflected_back_is_refused() -> None:
    alice, bob = pair_of_two()
    mine = bob.commit_full()
    refused(bob, lambda: bob.process_full(mine.pq_message.to_bytes(), mine.t_message.to_bytes()))
    partial, _ = bob.commit_partial()
    refused(bob, lambda: bob.process_partial(partial.to_bytes()))
    still_works(alice, bob)


def test_garbage_messages_are_refused_with_mls_errors() -> None:
    alice, bob = pair_of_two()
    full = alice.commit_full()
    good_pq, good_t = full.pq_message.to_bytes(), full.t_message.to_bytes()
    for bad in (b"", b"\x00", good_t[:-1], good_t + b"\x00", bytes(len(good_t))):
        refused(bob, lambda bad=bad: bob.process_full(good_pq, bad))  # type: ignore[misc]
        refused(bob, lambda bad=bad: bob.process_full(bad, good_t))  # type: ignore[misc]
        refused(bob, lambda bad=bad: bob.process_partial(bad))  # type: ignore[misc]
    flipped = bytearray(good_t)
    flipped[len(flipped) // 2] ^= 1
    refused(bob, lambda: bob.process_full(good_pq, bytes(flipped)))
    bob = bob.process_full(good_pq, good_t)
    in_step(full.pair, bob)


# -- the APQ PSK and the APQInfo updates of a FULL commit -------------------------------------------------------


@pytest.mark.parametrize("change", [
    {"t_epoch": 5},  # not the T group's new epoch
    {"pq_epoch": 1},  # the PQ epoch of the previous FULL
    {"t_group_id": b"x" * 16},
    {"pq_group_id": b"y" * 16},
    {"mode": APQMode.CONFIDENTIALITY_AND_AUTHENTICITY},
    {"t_cipher_suite": 3},
    {"pq_cipher_suite": 0x0052},
])
def test_full_commit_writing_a_wrong_apq_info_is_refused(change: dict[str, object]) -> None:
    """Both halves carry the APQ PSK path correctly, but the (identical) APQInfo they write is wrong."""
    alice, bob = pair_of_two()
    wrong = replace(next_info(alice), **change)  # type: ignore[arg-type]
    pq, t = forged_full(alice, [full_update(wrong)], [full_update(wrong)], forgive=True)
    refused(bob, lambda: bob.process_full(pq.message.to_bytes(), t.message.to_bytes()))
    still_works(alice, bob)


def test_full_commit_whose_halves_disagree_is_refused() -> None:
    alice, bob = pair_of_two()
    right = next_info(alice)
    pq, t = forged_full(alice, [full_update(right)], [full_update(replace(right, pq_epoch=right.pq_epoch + 1))])
    refused(bob, lambda: bob.process_full(pq.message.to_bytes(), t.message.to_bytes()))
    pq, t = forged_full(alice, [full_update(replace(right, t_epoch=9))], [full_update(right)])
    refused(bob, lambda: bob.process_full(pq.message.to_bytes(), t.message.to_bytes()))
    pq, t = forged_full(alice, [], [full_update(right)])  # the PQ group's APQInfo not updated at all
    refused(bob, lambda: bob.process_full(pq.message.to_bytes(), t.message.to_bytes()))
    pq, t = forged_full(alice, [full_update(right)], [])  # nor the T group's
    refused(bob, lambda: bob.process_full(pq.message.to_bytes(), t.message.to_bytes()))
    still_works(alice, bob)


@pytest.mark.parametrize("updates", [
    "two full_updates", "new_t_epoch alone", "new_pq_epoch alone", "two new_t_epoch and a new_pq_epoch",
    "full_update and new epochs"])
def test_full_commit_with_an_invalid_set_of_apq_info_updates_is_refused(updates: str) -> None:
    alice, bob = pair_of_two()
    info = next_info(alice)
    new_t, new_pq = (epoch_update(APQUpdateType.NEW_T_EPOCH, info.t_epoch),
                     epoch_update(APQUpdateType.NEW_PQ_EPOCH, info.pq_epoch))
    proposals: Sequence[Proposal] = {
        "two full_updates": [full_update(info), full_update(info)],
        "new_t_epoch alone": [new_t],
        "new_pq_epoch alone": [new_pq],
        "two new_t_epoch and a new_pq_epoch": [new_t, new_t, new_pq],
        "full_update and new epochs": [full_update(info), new_t, new_pq],
    }[updates]
    pq, t = forged_full(alice, [full_update(info)], proposals, forgive=True)
    refused(bob, lambda: bob.process_full(pq.message.to_bytes(), t.message.to_bytes()), match="APQInfo")
    still_works(alice, bob)


def test_full_commit_with_new_t_epoch_and_new_pq_epoch_is_accepted() -> None:
    """The draft's other form of the update (two proposals) is accepted, in both groups."""
    alice, bob = pair_of_two()
    info = next_info(alice)
    epochs: list[Proposal] = [epoch_update(APQUpdateType.NEW_PQ_EPOCH, info.pq_epoch),
                              epoch_update(APQUpdateType.NEW_T_EPOCH, info.t_epoch)]
    pq, t = forged_full(alice, epochs, epochs)
    bob = bob.process_full(pq.message.to_bytes(), t.message.to_bytes())
    assert bob.info == info and not bob._psks


def test_the_apq_psk_under_another_component_id_does_not_count() -> None:
    """The right PSK value named as another component's PSK: the victim resolves 0x0006 PSKs only."""
    alice, bob = pair_of_two()
    info = next_info(alice)
    pq = alice.pq.commit([full_update(info)])
    psk_id, psk = derive_apq_psk(pq.group, T_SUITE)
    lenient = Group.from_state(alice.t.to_state(), config=replace(alice.t.config, application_psks=lambda _: psk))
    t = lenient.commit([full_update(info), PreSharedKey(PreSharedKeyID.application(0x0007, psk_id, NONCE))])
    refused(bob, lambda: bob.process_full(pq.message.to_bytes(), t.message.to_bytes()))
    still_works(alice, bob)


def test_a_partial_commit_that_rewrites_apq_info_through_group_context_extensions_is_refused() -> None:
    alice, bob = pair_of_two()
    for info in (next_info(alice), replace(alice.info, mode=APQMode.CONFIDENTIALITY_AND_AUTHENTICITY)):
        sneaky = alice.t.commit([GroupContextExtensions(with_apq_info(alice.t.context.extensions, info))])
        refused(bob, lambda sneaky=sneaky: bob.process_partial(sneaky.message.to_bytes()),  # type: ignore[misc]
                match="must not change APQInfo")
    gone = alice.t.commit([GroupContextExtensions(())])  # the whole app_data_dictionary dropped
    refused(bob, lambda: bob.process_partial(gone.message.to_bytes()), match="must not change APQInfo")
    removed = alice.t.commit([AppDataUpdate(APQ_COMPONENT, AppDataUpdateOperation.REMOVE)])
    refused(bob, lambda: bob.process_partial(removed.message.to_bytes()), match="must not change APQInfo")
    still_works(alice, bob)


def test_group_context_extensions_alone_may_only_write_the_right_apq_info() -> None:
    """A FULL commit that writes APQInfo through GroupContextExtensions instead of AppDataUpdate is held to the same
    epoch checks; with both proposals in one commit, our own code will not even build it."""
    alice, bob = pair_of_two()
    info = next_info(alice)
    with pytest.raises(ValidationError, match="both GroupContextExtensions and AppDataUpdate"):
        forgiving(alice.t).commit([full_update(info), GroupContextExtensions(alice.t.context.extensions)])
    stale = replace(info, pq_epoch=info.pq_epoch - 1)
    pq, t = forged_full(alice, [GroupContextExtensions(with_apq_info(alice.pq.context.extensions, stale))],
                        [GroupContextExtensions(with_apq_info(alice.t.context.extensions, stale))])
    refused(bob, lambda: bob.process_full(pq.message.to_bytes(), t.message.to_bytes()), match="names epochs")
    still_works(alice, bob)


def test_full_commit_removing_apq_info_is_refused_with_an_mls_error() -> None:
    """Was a finding against the first version (HEAD): ``assert new_info is not None`` in process_full raised
    AssertionError; fixed in the working tree (process_full now checks through _check_after_full)."""
    alice, bob = pair_of_two()
    remove = AppDataUpdate(APQ_COMPONENT, AppDataUpdateOperation.REMOVE)
    pq, t = forged_full(alice, [full_update(next_info(alice))], [remove])
    refused(bob, lambda: bob.process_full(pq.message.to_bytes(), t.message.to_bytes()))
    pq, t = forged_full(alice, [remove], [remove])  # from both groups
    refused(bob, lambda: bob.process_full(pq.message.to_bytes(), t.message.to_bytes()))
    still_works(alice, bob)


def test_full_commit_removing_apq_info_from_the_pq_group_is_refused() -> None:
    alice, bob = pair_of_two()
    remove = AppDataUpdate(APQ_COMPONENT, AppDataUpdateOperation.REMOVE)
    pq, t = forged_full(alice, [remove], [full_update(next_info(alice))])
    refused(bob, lambda: bob.process_full(pq.message.to_bytes(), t.message.to_bytes()), match="APQInfo differ")
    still_works(alice, bob)


@pytest.mark.parametrize(("pq_suite", "mode", "flipped"), [
    (PQ_DSA_SUITE, APQMode.CONFIDENTIALITY_AND_AUTHENTICITY, APQMode.CONFIDENTIALITY),
    (PQ_SUITE, APQMode.CONFIDENTIALITY, APQMode.CONFIDENTIALITY_AND_AUTHENTICITY),
])
def test_full_commit_cannot_change_the_mode_through_group_context_extensions(
        pq_suite: int, mode: APQMode, flipped: APQMode) -> None:
    """Was a finding against the first version (HEAD): GroupContextExtensions bypass the 0x0006 logic and
    process_full compared the new APQInfo with itself, so the mode flipped (1 -> 0, or 0 -> 1 with an Ed25519 PQ
    group); fixed in the working tree (the fixed fields are compared with the pair's own APQInfo)."""
    alice, bob = pair_of_two(pq_suite, mode)
    info = replace(next_info(alice), mode=flipped)
    pq, t = forged_full(alice, [GroupContextExtensions(with_apq_info(alice.pq.context.extensions, info))],
                        [GroupContextExtensions(with_apq_info(alice.t.context.extensions, info))])
    refused(bob, lambda: bob.process_full(pq.message.to_bytes(), t.message.to_bytes()), match="fixed for the pair")
    still_works(alice, bob)


# -- UpdatePaths ---------------------------------------------------------------------------------------------------


def test_full_commit_whose_pq_half_has_no_update_path_is_refused() -> None:
    alice, bob = pair_of_two()
    info = next_info(alice)
    pq, t = forged_full(alice, [full_update(info)], [full_update(info)], pq_path=False)
    assert not has_path(pq.message) and has_path(t.message)
    refused(bob, lambda: bob.process_full(pq.message.to_bytes(), t.message.to_bytes()))


def test_full_commit_whose_t_half_has_no_update_path_is_refused() -> None:
    alice, bob = pair_of_two()
    info = next_info(alice)
    pq, t = forged_full(alice, [full_update(info)], [full_update(info)], t_path=False)
    assert has_path(pq.message) and not has_path(t.message)
    refused(bob, lambda: bob.process_full(pq.message.to_bytes(), t.message.to_bytes()))


# -- membership ----------------------------------------------------------------------------------------------------


def test_partial_commit_adding_a_member_is_refused() -> None:
    alice, bob = pair_of_two()
    carol = bundle(b"carol", T_SUITE)
    sneaky = alice.t.commit([Add(carol.key_package)])
    refused(bob, lambda: bob.process_partial(sneaky.message.to_bytes()))


def test_full_commit_adding_a_member_to_the_t_group_only_is_refused() -> None:
    alice, bob = pair_of_two()
    carol = bundle(b"carol", T_SUITE)
    info = next_info(alice)
    pq, t = forged_full(alice, [full_update(info)], [Add(carol.key_package), full_update(info)])
    refused(bob, lambda: bob.process_full(pq.message.to_bytes(), t.message.to_bytes()))


def test_commits_removing_the_victim_are_refused() -> None:
    alice, bob = pair_of_two()
    partial = alice.t.commit([Remove(bob.t.own_leaf)])
    refused(bob, lambda: bob.process_partial(partial.message.to_bytes()))
    info = next_info(alice)
    pq, t = forged_full(alice, [Remove(bob.pq.own_leaf), full_update(info)], [full_update(info)])
    refused(bob, lambda: bob.process_full(pq.message.to_bytes(), t.message.to_bytes()))
    still_works(alice, bob)


# -- joining -------------------------------------------------------------------------------------------------------


def welcomes(attacker: APQPair, pq_proposals: Sequence[Proposal], t_proposals: Sequence[Proposal], *,
             carry_psk: bool = True) -> tuple[MLSMessage, MLSMessage]:
    pq, t = forged_full(attacker, pq_proposals, t_proposals, carry_psk=carry_psk)
    assert pq.welcome is not None and t.welcome is not None
    return pq.welcome, t.welcome


def test_welcomes_from_two_different_pairs_are_refused() -> None:
    bob_t, bob_pq = bundle(b"bob", T_SUITE), bundle(b"bob", PQ_SUITE)
    added = [APQPair.create(bundle(b"alice", T_SUITE), bundle(b"alice", PQ_SUITE)).commit_full(
        add=(bob_t.key_package, bob_pq.key_package)) for _ in range(2)]
    first, second = added
    for pq_welcome, t_welcome in ((first.pq_welcome, second.t_welcome), (second.pq_welcome, first.t_welcome),
                                  (first.t_welcome, first.pq_welcome)):
        assert pq_welcome is not None and t_welcome is not None
        with pytest.raises(MLSError):
            APQPair.join(pq_welcome.to_bytes(), t_welcome.to_bytes(), bob_t, bob_pq)
    assert first.pq_welcome is not None and first.t_welcome is not None
    bob = APQPair.join(first.pq_welcome, first.t_welcome, bob_t, bob_pq)
    in_step(first.pair, bob)


def test_a_t_group_whose_apq_info_names_another_pq_group_is_refused() -> None:
    alice_t = bundle(b"alice", T_SUITE)
    honest = APQPair.create(alice_t, bundle(b"alice", PQ_SUITE))
    fake = replace(honest.info, pq_group_id=b"z" * 16)
    fake_t = Group.create(alice_t, group_id=honest.info.t_group_id, extensions=with_apq_info((), fake),
                          config=honest.t.config)
    attacker = APQPair(fake_t, honest.pq, honest.info, honest._psks)
    bob_t, bob_pq = bundle(b"bob", T_SUITE), bundle(b"bob", PQ_SUITE)
    pq_welcome, t_welcome = welcomes(
        attacker, [Add(bob_pq.key_package), full_update(replace(honest.info, t_epoch=1, pq_epoch=1))],
        [Add(bob_t.key_package), full_update(replace(fake, t_epoch=1, pq_epoch=1))])
    with pytest.raises(ValidationError, match="APQInfo differ"):
        APQPair.join(pq_welcome, t_welcome, bob_t, bob_pq)


def test_a_t_group_with_a_third_member_is_refused() -> None:
    attacker = APQPair.create(bundle(b"alice", T_SUITE), bundle(b"alice", PQ_SUITE))
    bob_t, bob_pq, carol_t = bundle(b"bob", T_SUITE), bundle(b"bob", PQ_SUITE), bundle(b"carol", T_SUITE)
    info = replace(attacker.info, t_epoch=1, pq_epoch=1)
    pq_welcome, t_welcome = welcomes(attacker, [Add(bob_pq.key_package), full_update(info)],
                                     [Add(bob_t.key_package), Add(carol_t.key_package), full_update(info)])
    with pytest.raises(ValidationError, match="same members"):
        APQPair.join(pq_welcome, t_welcome, bob_t, bob_pq)


@pytest.mark.parametrize("info_bytes", [
    b"",  # not an APQInfo
    APQInfo(b"t" * 16, b"q" * 16, APQMode.CONFIDENTIALITY, 0xFFFF, PQ_SUITE, 1, 1).to_bytes(),  # unknown T suite
    APQInfo(b"t" * 16, b"q" * 16, APQMode.CONFIDENTIALITY, T_SUITE, 0x004D, 1, 1).to_bytes(),  # X-Wing PQ group
    APQInfo(b"t" * 16, b"q" * 16, APQMode.CONFIDENTIALITY_AND_AUTHENTICITY, T_SUITE, PQ_SUITE, 1, 1).to_bytes(),
    None,  # no APQInfo at all
])
def test_a_pq_welcome_with_a_bad_apq_info_is_refused(info_bytes: bytes | None) -> None:
    """The PQ group is the attacker's own: whatever its dictionary says, joining fails with an MLSError."""
    from mlscore.extensions import Extension, ExtensionType
    from mlscore.safe_app import AppDataDictionary, ComponentData

    extensions = () if info_bytes is None else (Extension(ExtensionType.APP_DATA_DICTIONARY, AppDataDictionary(
        (ComponentData(APQ_COMPONENT, info_bytes),)).to_bytes()),)
    pq_group = Group.create(bundle(b"alice", PQ_SUITE), group_id=b"q" * 16, extensions=extensions)
    bob_t, bob_pq = bundle(b"bob", T_SUITE), bundle(b"bob", PQ_SUITE)
    pq_welcome = pq_group.commit([Add(bob_pq.key_package)]).welcome
    t_welcome = Group.create(bundle(b"alice", T_SUITE), group_id=b"t" * 16).commit(
        [Add(bob_t.key_package)]).welcome
    assert pq_welcome is not None and t_welcome is not None
    with pytest.raises(MLSError):
        APQPair.join(pq_welcome, t_welcome, bob_t, bob_pq)


def test_a_t_welcome_without_the_apq_psk_is_refused() -> None:
    attacker = APQPair.create(bundle(b"alice", T_SUITE), bundle(b"alice", PQ_SUITE))
    bob_t, bob_pq = bundle(b"bob", T_SUITE), bundle(b"bob", PQ_SUITE)
    info = replace(attacker.info, t_epoch=1, pq_epoch=1)
    pq_welcome, t_welcome = welcomes(attacker, [Add(bob_pq.key_package), full_update(info)],
                                     [Add(bob_t.key_package), full_update(info)], carry_psk=False)
    with pytest.raises(MLSError):
        APQPair.join(pq_welcome, t_welcome, bob_t, bob_pq)


def test_a_peer_with_different_identities_in_the_two_groups_is_refused() -> None:
    attacker = APQPair.create(bundle(b"alice", T_SUITE), bundle(b"mallory", PQ_DSA_SUITE),
                              mode=APQMode.CONFIDENTIALITY_AND_AUTHENTICITY)
    bob_t, bob_pq = bundle(b"bob", T_SUITE), bundle(b"bob", PQ_DSA_SUITE)
    with pytest.raises(MLSError, match="same members"):  # our own committer refuses to build it...
        attacker.commit_full(add=(bob_t.key_package, bob_pq.key_package))
    new = replace(attacker.info, t_epoch=1, pq_epoch=1)
    pq_welcome, t_welcome = welcomes(attacker, [Add(bob_pq.key_package), full_update(new)],
                                     [Add(bob_t.key_package), full_update(new)])
    with pytest.raises(MLSError, match="same members"):  # ...and a hand-built one is refused by the joiner
        APQPair.join(pq_welcome, t_welcome, bob_t, bob_pq)


def test_a_pair_whose_two_groups_share_a_group_id_is_refused() -> None:
    psks = ApqPsks()
    shared = APQPair.shared_config(None, psks)
    info = APQInfo(b"s" * 16, b"s" * 16, APQMode.CONFIDENTIALITY, T_SUITE, PQ_SUITE, 0, 0)
    attacker = APQPair(Group.create(bundle(b"alice", T_SUITE), group_id=info.t_group_id,
                                    extensions=with_apq_info((), info), config=shared),
                       Group.create(bundle(b"alice", PQ_SUITE), group_id=info.pq_group_id,
                                    extensions=with_apq_info((), info), config=shared), info, psks)
    bob_t, bob_pq = bundle(b"bob", T_SUITE), bundle(b"bob", PQ_SUITE)
    new = replace(info, t_epoch=1, pq_epoch=1)
    pq_welcome, t_welcome = welcomes(attacker, [Add(bob_pq.key_package), full_update(new)],
                                     [Add(bob_t.key_package), full_update(new)])
    with pytest.raises(MLSError, match="share a group id"):
        APQPair.join(pq_welcome, t_welcome, bob_t, bob_pq)


# -- refusals must not change the victim's state -------------------------------------------------------------------


def test_an_application_message_given_to_process_partial_is_not_consumed() -> None:
    alice, bob = pair_of_two()
    message = alice.t.protect(b"hello")
    refused(bob, lambda: bob.process_partial(message.to_bytes()), match="expected the T group's commit")
    assert bob.t.process(message.to_bytes()).data == b"hello"  # type: ignore[union-attr]


@pytest.mark.parametrize("misdelivery", ["T half as a PARTIAL", "PQ half with a wrong T half"])
def test_a_misdelivered_private_full_commit_still_goes_through_afterwards(misdelivery: str) -> None:
    alice, bob = pair_of_two(config=PRIVATE_HANDSHAKES)
    full = alice.commit_full()
    if misdelivery == "T half as a PARTIAL":
        refused(bob, lambda: bob.process_partial(full.t_message.to_bytes()))
    else:
        other, _ = alice.commit_partial()
        refused(bob, lambda: bob.process_full(full.pq_message.to_bytes(), other.to_bytes()))
    bob = bob.process_full(full.pq_message.to_bytes(), full.t_message.to_bytes())
    in_step(full.pair, bob)


def test_private_handshakes_work_between_honest_members() -> None:
    alice, bob = pair_of_two(config=PRIVATE_HANDSHAKES)
    still_works(alice, bob)


def test_a_failed_commit_full_keeps_no_psk_and_changes_nothing() -> None:
    alice, bob = pair_of_two()
    pq_kp = bundle(b"dave", PQ_SUITE).key_package
    refused(alice, lambda: alice.commit_full(add=(pq_kp, pq_kp)))  # the T Add fails after the PSK was derived
    refused(alice, lambda: alice.commit_full(add=(bundle(b"dave", T_SUITE).key_package,) * 2))  # the PQ Add fails
    still_works(alice, bob)


# -- decoders and the component logic under fuzz -------------------------------------------------------------------


VALID_INFO = APQInfo(b"t" * 16, b"q" * 16, APQMode.CONFIDENTIALITY, T_SUITE, PQ_SUITE, 3, 2)
VALID_UPDATES = [APQInfoUpdate(APQUpdateType.FULL_UPDATE, info=VALID_INFO).to_bytes(),
                 APQInfoUpdate(APQUpdateType.NEW_T_EPOCH, epoch=4).to_bytes(),
                 APQInfoUpdate(APQUpdateType.NEW_PQ_EPOCH, epoch=5).to_bytes()]
DECODERS: dict[str, Callable[[bytes], object]] = {
    "APQInfo": APQInfo.from_bytes,
    "APQInfoUpdate": APQInfoUpdate.from_bytes,
    "AppDataUpdate": AppDataUpdate.from_bytes,
    "PreSharedKeyID": PreSharedKeyID.from_bytes,
    "Proposal": proposal_from_bytes,
}
SEEDS = [VALID_INFO.to_bytes(), *VALID_UPDATES, full_update(VALID_INFO).to_bytes(),
         AppDataUpdate(APQ_COMPONENT, AppDataUpdateOperation.REMOVE).to_bytes(),
         PreSharedKeyID.application(APQ_COMPONENT, b"i" * 32, NONCE).to_bytes(),
         b"\x00\x08" + full_update(VALID_INFO).to_bytes()]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid encoding with a few bytes overwritten, cut or appended, or plain random bytes."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=200))
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut]) + draw(st.binary(max_size=8)) if draw(st.booleans()) else bytes(data)


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", sorted(DECODERS))
@FUZZ
@given(data=mutated())
def test_decoders_raise_only_decode_errors(name: str, data: bytes) -> None:
    try:
        value = DECODERS[name](data)
    except DecodeError:
        return
    writer = Writer()  # what decodes is canonical: encoding it again (not from a cache) gives the same bytes
    if name == "Proposal":
        encode_proposal(writer, value)  # type: ignore[arg-type]
    else:
        assert isinstance(value, Struct)
        value.encode(writer)
    assert writer.getvalue() == data


@FUZZ
@given(current=st.one_of(st.none(), st.just(VALID_INFO.to_bytes()), mutated()),
       updates=st.lists(st.one_of(st.sampled_from(VALID_UPDATES), mutated()), max_size=4))
def test_the_component_logic_raises_only_validation_or_decode_errors(current: bytes | None,
                                                                      updates: list[bytes]) -> None:
    try:
        new = apq_info_logic(current, updates)
    except (ValidationError, DecodeError):
        return
    info = APQInfo.from_bytes(new)  # what it accepts is an APQInfo that keeps the fixed fields
    if current is not None:
        assert info.same_pair(APQInfo.from_bytes(current))


# -- resource use --------------------------------------------------------------------------------------------------


def test_the_component_logic_refuses_thousands_of_updates() -> None:
    full = APQInfoUpdate(APQUpdateType.FULL_UPDATE, info=VALID_INFO).to_bytes()
    with pytest.raises(ValidationError):
        apq_info_logic(VALID_INFO.to_bytes(), [full] * 10_000)
    with pytest.raises(ValidationError):
        apq_info_logic(VALID_INFO.to_bytes(), VALID_UPDATES[1:] * 5_000)
    with pytest.raises(DecodeError):
        apq_info_logic(VALID_INFO.to_bytes(), [full + bytes(1 << 20)])  # one valid update and 1 MiB after it
    huge = APQInfoUpdate(APQUpdateType.FULL_UPDATE, info=replace(VALID_INFO, t_group_id=bytes(1 << 20))).to_bytes()
    with pytest.raises(ValidationError):
        apq_info_logic(VALID_INFO.to_bytes(), [huge])


def test_a_commit_with_thousands_of_app_data_updates_or_a_huge_one_is_refused() -> None:
    alice, bob = pair_of_two()
    many: list[Proposal] = [full_update(alice.info)] * 2_000
    flood = forgiving(alice.t).commit(many)
    refused(bob, lambda: bob.process_partial(flood.message.to_bytes()), match="APQInfo")
    blob = AppDataUpdate(APQ_COMPONENT, AppDataUpdateOperation.UPDATE, bytes(1 << 20))
    big = forgiving(alice.t).commit([blob])
    refused(bob, lambda: bob.process_partial(big.message.to_bytes()))
    others = [AppDataUpdate(0x9000 + i, AppDataUpdateOperation.UPDATE, b"x") for i in range(2_000)]
    lenient = Group.from_state(alice.t.to_state(), config=replace(alice.t.config, app_data_components={
        **{p.component_id: _anything_goes for p in others}}))
    scattered = lenient.commit(others)  # 2,000 components nobody registered logic for
    refused(bob, lambda: bob.process_partial(scattered.message.to_bytes()), match="no logic")
    still_works(alice, bob)

