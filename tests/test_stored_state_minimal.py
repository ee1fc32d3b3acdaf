"""A stored group holds what resuming needs and no more (group state format 2).

A review found that format 1 stored the resumption PSKs of up to eight epochs,
the welcome_secret and the secret tree's root (from which every key already
used in the epoch can be derived again), and that a restored group rebuilt the
peer's ratchets at generation 0, so it accepted a message a second time.  These
tests drive the two-party profile end to end and look for the live groups'
secrets in the stored bytes; nothing here measures time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import cache
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mls2p import TwoPartySession
from mls2p.testing import Pair, config, pump, sent, two_party
from mlscore.codec import MAX_VARINT, Writer, encode_varint
from mlscore.crypto import CipherSuite, get_suite
from mlscore.errors import DecodeError, EpochError, ReplayError, ValidationError
from mlscore.framing import MLSMessage
from mlscore.group import ApplicationMessage, CommitMessage, Group, GroupConfig
from mlscore.schedule.secret_tree import MAX_GENERATION, RatchetType, SecretTree
from mlscore.tree import math as tree_math

APP, HS = RatchetType.APPLICATION, RatchetType.HANDSHAKE
V1 = Path(__file__).parent / "data" / "group-state-v1"
PROFILE = replace(config(b"profile").group_config(None), authentication_service=None)  # groups of two_party()


def open_(group: Group, message: MLSMessage) -> bytes:
    processed = group.process(message)
    assert isinstance(processed, ApplicationMessage)
    return processed.data


def send(sender: Group, receiver: Group, count: int, label: bytes) -> list[MLSMessage]:
    """``count`` application messages from ``sender``, each opened by ``receiver``."""
    messages = [sender.protect(label + b"%d" % i) for i in range(count)]
    assert [open_(receiver, m) for m in messages] == [label + b"%d" % i for i in range(count)]
    return messages


def groups_of(session: TwoPartySession) -> list[Group]:
    return [g for g in (session.group, session.pending.group if session.pending else None) if g is not None]


def commit_step(sender: Group, receiver: Group) -> tuple[Group, Group]:
    result = sender.commit()
    processed = receiver.process(result.message)
    assert isinstance(processed, CommitMessage)
    return result.group, processed.group


def current(session: TwoPartySession) -> Group:
    assert session.group is not None
    return session.group


# -- nothing of another epoch, no PSK, no root, no welcome_secret ----------------------------------

def test_a_stored_session_holds_no_resumption_psk_encryption_or_welcome_secret() -> None:
    pair = Pair()
    forbidden: set[bytes] = set()
    stored: list[bytes] = []

    def record() -> None:
        for session, store in ((pair.alice, pair.alice_store), (pair.bob, pair.bob_store)):
            for group in groups_of(session):
                secrets = group._secrets  # white-box: what the live epoch holds
                forbidden.update((secrets.encryption_secret, secrets.welcome_secret, secrets.resumption_psk))
                stored.append(group.to_state())
            state, saved = session.to_state(), store.load(pair.group_id)
            assert state is not None and saved is not None
            stored.extend((state, saved))

    record()
    for i in range(4):  # epochs 2-5, each side committing in turn, with traffic in every epoch
        side, other = (pair.alice, pair.bob) if i % 2 == 0 else (pair.bob, pair.alice)
        send(current(side), current(other), 2, b"to")
        send(current(other), current(side), 2, b"fro")
        record()
        update = sent(side.update())  # the committer's next epoch is pending: two groups in its file
        record()
        pump(side, other, update)
        record()
    assert pair.in_sync() and pair.alice.epoch == 5
    assert len(forbidden) == 5 * 3 and all(len(secret) == 32 for secret in forbidden)  # epochs 1-5
    assert [secret for secret in forbidden if any(secret in blob for blob in stored)] == []
    assert current(pair.alice)._resumption_psks == current(pair.bob)._resumption_psks == {}


def test_the_profile_keeps_no_resumption_psk_and_core_groups_keep_eight_by_default() -> None:
    assert PROFILE.resumption_psk_history == 0
    assert GroupConfig().resumption_psk_history == 8
    alice, bob = two_party(config=PROFILE)
    assert alice._resumption_psks == bob._resumption_psks == {}
    alice, bob = commit_step(alice, bob)
    assert alice._resumption_psks == bob._resumption_psks == {}


@pytest.mark.parametrize("history", [0, 1, 3, 8])
def test_a_core_group_stores_exactly_its_resumption_psk_history(history: int) -> None:
    cfg = GroupConfig(resumption_psk_history=history)
    alice, bob = two_party(config=cfg)
    psks = {alice.epoch: alice._secrets.resumption_psk}
    for _ in range(8):  # epochs 2-9: epoch 0's PSK (never seen here) has left every history
        alice, bob = commit_step(alice, bob)
        psks[alice.epoch] = alice._secrets.resumption_psk
    kept = sorted(psks)[len(psks) - history:] if history else []
    state = alice.to_state()
    assert sorted(alice._resumption_psks) == kept
    assert {epoch: state.count(psk) for epoch, psk in psks.items()} == {e: int(e in kept) for e in psks}
    assert Group.from_state(state, cfg)._resumption_psks == alice._resumption_psks
    # A file of a longer history loads under a shorter one, keeping the newest.
    assert sorted(Group.from_state(state, GroupConfig(resumption_psk_history=1))._resumption_psks) == kept[-1:]


# -- a stored file opens nothing from before the epoch and generations it holds --------------------

@pytest.mark.parametrize("stored_as", ["session", "group"])
def test_a_stored_file_opens_nothing_from_before_the_epoch_it_holds(stored_as: str) -> None:
    pair = Pair()
    earlier: list[MLSMessage] = []
    for i in range(3):
        side, other = (pair.alice, pair.bob) if i % 2 == 0 else (pair.bob, pair.alice)
        earlier += send(current(pair.alice), current(pair.bob), 2, b"old a")
        earlier += send(current(pair.bob), current(pair.alice), 2, b"old b")
        pump(side, other, sent(side.update()))
    alice, bob = current(pair.alice), current(pair.bob)
    to_bob = send(alice, bob, 3, b"a")
    from_bob = send(bob, alice, 2, b"b")
    root = bob._secrets.encryption_secret
    if stored_as == "session":
        state = pair.bob.to_state()
        assert state is not None
        restored = current(TwoPartySession.from_state(state, pair.bob_config))
    else:
        state = bob.to_state()
        restored = Group.from_state(state, PROFILE)
    assert restored.epoch == 4
    # (a) earlier epochs: their secrets are not in the file at all
    for message in earlier:
        with pytest.raises(EpochError):
            restored.process(message)
    # (b) this epoch, generations consumed before the save: the peer's, and our own, whose
    # keys could only come from the root again, and the root is not stored
    for message in to_bob + from_bob:
        with pytest.raises(ReplayError):
            restored.process(message)
    assert root not in state
    nodes = restored._secret_tree._nodes
    own_path = {2 * restored.own_leaf, *tree_math.direct_path(2 * restored.own_leaf, restored.tree.n_leaves)}
    assert tree_math.root(restored.tree.n_leaves) not in nodes and not own_path & nodes.keys()
    # (c) the next fresh message still works both ways
    assert open_(restored, alice.protect(b"after")) == b"after"
    assert open_(alice, restored.protect(b"reply")) == b"reply"


@pytest.mark.parametrize("kind", ["application", "commit"])
def test_a_restored_group_refuses_a_peer_message_it_accepted_before_the_save(kind: str) -> None:
    pair = Pair()
    alice, bob = current(pair.alice), current(pair.bob)
    # A commit is a PrivateMessage in the profile: it uses the handshake ratchet.
    message = alice.protect(b"once") if kind == "application" else alice.commit().message
    bob.process(message)
    state = pair.bob.to_state()
    assert state is not None
    restored = current(TwoPartySession.from_state(state, pair.bob_config))
    with pytest.raises(ReplayError):
        restored.process(message)
    assert open_(restored, alice.protect(b"fresh")) == b"fresh"


# -- round trip --------------------------------------------------------------------------------------

def test_a_group_saved_mid_epoch_continues_exactly_like_the_live_one() -> None:
    pair = Pair()
    alice, bob = current(pair.alice), current(pair.bob)
    to_bob = [alice.protect(b"a%d" % i) for i in range(6)]
    for i in (0, 1, 4, 3):  # generation 2 skipped and kept; 3 skipped, then used
        open_(bob, to_bob[i])
    send(bob, alice, 2, b"b")
    state = bob.to_state()
    restored = Group.from_state(state, PROFILE)
    assert restored.to_state() == state
    assert restored._secret_tree._ratchets[(alice.own_leaf, APP)].skipped.keys() == {2}
    for group in (bob, restored):
        assert open_(group, to_bob[2]) == b"a2"  # the kept key, once
        with pytest.raises(ReplayError):
            group.process(to_bob[2])
        assert open_(group, to_bob[5]) == b"a5"
    assert restored.to_state() == bob.to_state()
    live, again = bob._secret_tree, restored._secret_tree
    for kind in RatchetType:
        for _ in range(3):
            assert again.next_send_key(bob.own_leaf, kind) == live.next_send_key(bob.own_leaf, kind)
        for generation in (6, 9):
            found = [tree.receive_key(alice.own_leaf, kind, generation) for tree in (live, again)]
            assert (found[0].key, found[0].nonce) == (found[1].key, found[1].nonce)
    message = alice.protect(b"a6")
    assert open_(bob, message) == open_(restored, message) == b"a6"
    assert restored.to_state() == bob.to_state()


def test_a_groups_secret_tree_follows_its_config_fresh_and_restored() -> None:
    cfg = GroupConfig(out_of_order_tolerance=2, maximum_forward_distance=5)
    alice, bob = two_party(config=cfg)
    restored = Group.from_state(bob.to_state(), cfg)
    for group in (bob, restored):
        tree = group._secret_tree
        assert (tree.out_of_order_tolerance, tree.maximum_forward_distance) == (2, 5)
    messages = [alice.protect(b"%d" % i) for i in range(7)]
    for group in (bob, restored):
        with pytest.raises(ValidationError, match="too far ahead"):
            group.process(messages[6])
        assert open_(group, messages[5]) == b"5"  # generations 3 and 4 kept, 0-2 deleted
        with pytest.raises(ReplayError):
            group.process(messages[2])
        assert open_(group, messages[4]) == b"4"
    assert Group.from_state(bob.to_state(), cfg).to_state() == bob.to_state()


# -- format 1 -----------------------------------------------------------------------------------------

def test_a_format_1_group_state_still_loads_and_is_saved_as_format_2() -> None:
    """tests/data/group-state-v1 was written by the format-1 code (see its README)."""
    alice = Group.from_state((V1 / "alice-epoch2.bin").read_bytes())
    bob = Group.from_state((V1 / "bob-epoch2.bin").read_bytes())
    assert alice.epoch == bob.epoch == 2
    assert open_(bob, MLSMessage.from_bytes((V1 / "alice-epoch2-gen2.msg").read_bytes())) == b"a2"
    assert open_(bob, alice.protect(b"a3")) == b"a3"  # alice's sending ratchet continued at generation 3
    assert open_(alice, bob.protect(b"b1")) == b"b1"
    for group in (alice, bob):
        resaved = group.to_state()
        secrets = group._secrets
        assert resaved[:2] == b"\x00\x02" and Group.from_state(resaved).to_state() == resaved
        assert secrets.encryption_secret not in resaved and secrets.welcome_secret not in resaved
    alice, bob = commit_step(alice, bob)
    assert alice.epoch == 3 and alice.export_secret("x", b"", 16) == bob.export_secret("x", b"", 16)


# -- hostile secret-tree sections ------------------------------------------------------------------

SUITE = get_suite(1)
N_LEAVES = 4
TOLERANCE = 4


@cache
def sample_tree() -> SecretTree:
    """A tree with a stored parent node, two leaves' ratchets and kept skipped keys."""
    tree = SecretTree(SUITE, bytes(range(32)), N_LEAVES, out_of_order_tolerance=TOLERANCE)
    for _ in range(3):
        tree.next_send_key(0, APP)
    tree.consume(tree.receive_key(1, APP, 5))  # generations 1-4 kept (0 is beyond the tolerance)
    tree.consume(tree.receive_key(1, HS, 0))
    return tree


def load(data: bytes) -> SecretTree:
    return SecretTree.from_state(data, SUITE, N_LEAVES, out_of_order_tolerance=TOLERANCE)


@contextmanager
def no_derivation() -> Iterator[None]:
    """Fails the test if anything derives a secret: loading must cost the same whatever is stored."""
    def refuse(*_: object) -> bytes:
        raise AssertionError("a secret was derived while loading")

    with mock.patch.object(CipherSuite, "expand_with_label", refuse), \
            mock.patch.object(CipherSuite, "derive_tree_secret", refuse):
        yield


def test_the_sample_section_round_trips_and_holds_what_the_tree_holds() -> None:
    tree = sample_tree()
    assert tree._nodes.keys() == {5} and len(tree._ratchets) == 4
    assert tree._ratchets[(1, APP)].skipped.keys() == {1, 2, 3, 4}
    with no_derivation():
        again = load(tree.to_state())
    assert again.to_state() == tree.to_state() and again._nodes == tree._nodes
    assert [(r.secret, r.generation, r.skipped) for r in again._ratchets.values()] == \
        [(r.secret, r.generation, r.skipped) for r in tree._ratchets.values()]


def section(nodes: list[tuple[int, bytes]], ratchets: list[tuple[int, int, bytes, int, list[tuple[int, bytes, bytes]]]]
            ) -> bytes:
    """A secret-tree section written field by field, as a hostile file could hold it."""
    w = Writer().vector(nodes, lambda w2, n: w2.u32(n[0]).opaque(n[1]))
    w.vector(ratchets, lambda w2, r: w2.u32(r[0]).u8(r[1]).opaque(r[2]).u64(r[3]).vector(
        r[4], lambda w3, k: w3.u32(k[0]).opaque(k[1]).opaque(k[2])))
    return w.getvalue()


H, K, N = bytes(32), bytes(16), bytes(12)
PAIRS = [(leaf, kind, H, 0, []) for leaf in range(N_LEAVES) for kind in (0, 1)]


@pytest.mark.parametrize(("data", "message"), [
    (section([(7, H)], []), "node 7 is outside a tree of 4 leaves"),
    (section([(0xFFFFFFFF, H)], []), "outside"),
    (section([], [(4, 0, H, 0, [])]), "leaf 4 is outside"),
    (section([], [(0, 2, H, 0, [])]), "unknown stored ratchet type 2"),
    (section([(3, H[:31])], []), "tree secret has 31 bytes"),
    (section([], [(0, 0, H + b"x", 0, [])]), "ratchet secret has 33 bytes"),
    (section([], [(0, 1, H, 5, [(1, K[:8], N)])]), "key has 8 bytes"),
    (section([], [(0, 1, H, 5, [(1, K, N + N)])]), "nonce has 24 bytes"),
    (section([], [(0, 1, H, MAX_GENERATION + 2, [])]), "beyond 2\\^32"),
    (section([], [(0, 1, H, 5, [(5, K, N)])]), "skipped generation 5 is not below the next one, 5"),
    (section([], [(0, 1, H, 9, [(g, K, N) for g in range(TOLERANCE + 1)])]), "more than 4 items"),
    (section([], [(0, 1, H, 9, [(3, K, N), (2, K, N)])]), "skipped generations are not in strictly ascending"),
    (section([(0, H), (2, H), (4, H), (6, H), (6, H)], []), "more than 4 items"),
    (section([(2, H), (0, H), (5, H)], []), "nodes are not in strictly ascending"),
    (section([], [*PAIRS, PAIRS[0]]), "more than 8 items"),
    (section([(5, H)], [PAIRS[1], PAIRS[0], *PAIRS[2:4]]), "ratchets are not in strictly ascending"),
    (section([(3, H)], PAIRS[:2]), "leaf 0's secret twice"),
    (section([(1, H), (3, H)], []), "leaf 0's secret twice"),
    (section([(1, H), (5, H)], PAIRS[:2]), "leaf 0's secret twice"),
    (section([(1, H)], []), "leaf 2's secret nowhere"),
    (section([(1, H)], PAIRS[6:]), "leaf 2's secret nowhere"),
    (section([(5, H)], PAIRS[:3]), "one ratchet without the other"),
    (section([], []), "leaf 0's secret nowhere"),
    (encode_varint(MAX_VARINT), "truncated"),
    (section([(3, H)], []) + b"\x00", "trailing"),
    (sample_tree().to_state() + b"\x00", "trailing"),
    (sample_tree().to_state()[:-1], "truncated"),
])
def test_an_inconsistent_section_is_a_decode_error_naming_the_problem(data: bytes, message: str) -> None:
    with no_derivation(), pytest.raises(DecodeError, match=message):
        load(data)


@pytest.mark.parametrize("data", [
    section([(3, H)], []),  # a fresh tree: the root only
    section([(1, H), (5, H)], []),
    section([(1, H)], PAIRS[4:]),
    section([], [(0, 0, H, MAX_GENERATION + 1, []), *PAIRS[1:]]),  # an exhausted ratchet
    section([], PAIRS),
])
def test_every_shape_lazy_derivation_leaves_loads(data: bytes) -> None:
    with no_derivation():
        assert load(data).to_state() == data


def test_the_shape_check_costs_what_is_stored_not_the_trees_size() -> None:
    n_leaves = 1 << 31  # a loop over the leaves would never finish
    root = tree_math.root(n_leaves)
    data = section([(root, H)], [])
    with no_derivation():
        assert SecretTree.from_state(data, SUITE, n_leaves).to_state() == data
        with pytest.raises(DecodeError, match=f"leaf {n_leaves // 2}'s secret nowhere"):
            SecretTree.from_state(section([(tree_math.left(root), H)], []), SUITE, n_leaves)


def check_hostile(data: bytes) -> None:
    """Either a DecodeError, or a tree whose encoding is exactly the input (one encoding per tree)."""
    with no_derivation():
        try:
            tree = load(data)
        except DecodeError:
            return
    assert tree.to_state() == data


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2), st.integers(0, 1 << 12), st.binary(min_size=0, max_size=8))
def test_mutated_sections_raise_decode_errors_only(op: int, position: int, chunk: bytes) -> None:
    data = sample_tree().to_state()
    position %= len(data) + 1
    mutated = [data[:position],  # truncated
               data[:position] + chunk + data[position:],  # inserted, e.g. a huge count
               data[:position] + chunk + data[position + len(chunk):]][op]  # overwritten
    check_hostile(mutated)


indices = st.one_of(st.integers(0, 8), st.integers(0, 0xFFFFFFFF))
byte_strings = st.sampled_from([H, K, N, b"", H + b"\x01"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(indices, byte_strings), max_size=6),
       st.lists(st.tuples(indices, st.integers(0, 255), byte_strings, st.one_of(st.integers(0, 12), st.just(1 << 40)),
                          st.lists(st.tuples(indices, st.sampled_from([K, N]), st.sampled_from([K, N])), max_size=6)),
                max_size=10))
def test_hostile_sections_built_field_by_field_raise_decode_errors_only(nodes, ratchets) -> None:
    check_hostile(section(nodes, ratchets))


@cache
def profile_group_state() -> tuple[bytes, bytes]:
    """A profile group's format-2 state, as (everything before the secret tree, the secret tree)."""
    alice, bob = two_party(config=PROFILE)
    to_bob = [alice.protect(b"%d" % i) for i in range(4)]
    open_(bob, to_bob[3])
    state, tree = bob.to_state(), bob._secret_tree.to_state()
    assert state.endswith(tree)
    return state[:-len(tree)], tree


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2), st.integers(0, 1 << 12), st.binary(min_size=0, max_size=8))
def test_a_group_state_with_a_mutated_secret_tree_raises_decode_errors_only(op: int, position: int,
                                                                            chunk: bytes) -> None:
    head, tree = profile_group_state()
    position %= len(tree) + 1
    mutated = [tree[:position], tree[:position] + chunk + tree[position:],
               tree[:position] + chunk + tree[position + len(chunk):]][op]
    try:
        group = Group.from_state(head + mutated, PROFILE)
    except DecodeError:
        return
    assert group.to_state() == head + mutated
