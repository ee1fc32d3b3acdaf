"""Secret tree: vectors, out-of-order delivery, replay and distance limits, no key burnt by a forgery.

Its stored form is tested in tests/test_stored_state_minimal.py."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interop.vectors import default_dir, run_file
from mlscore.crypto import RFC9420_SUITES, get_suite
from mlscore.errors import CryptoError, ReplayError, StateError, TreeError, ValidationError
from mlscore.schedule.secret_tree import MAX_GENERATION, RatchetType, SecretTree, sender_data_key_nonce
from mlscore.tree import math as tm

SUITE = get_suite(1)
SECRET = bytes(range(32))
APP = RatchetType.APPLICATION
HS = RatchetType.HANDSHAKE


def trees(n_leaves: int = 4, **limits: int) -> tuple[SecretTree, SecretTree]:
    """A sender's and a receiver's copy of the same epoch's tree."""
    return SecretTree(SUITE, SECRET, n_leaves, **limits), SecretTree(SUITE, SECRET, n_leaves, **limits)


def send(tree: SecretTree, count: int, leaf: int = 1, ratchet: RatchetType = APP) -> list[tuple[int, bytes, bytes]]:
    return [tree.next_send_key(leaf, ratchet) for _ in range(count)]


def receive(tree: SecretTree, generation: int, leaf: int = 1, ratchet: RatchetType = APP) -> tuple[bytes, bytes]:
    found = tree.receive_key(leaf, ratchet, generation)
    tree.consume(found)
    return found.key, found.nonce


@pytest.mark.skipif(not default_dir().is_dir(), reason=f"test vectors not found at {default_dir()}")
@pytest.mark.parametrize("name", ["secret-tree", "tree-math"])
def test_vectors(name: str) -> None:
    outcomes = list(run_file(name))
    if name == "secret-tree":
        assert {o.cipher_suite for o in outcomes} == set(RFC9420_SUITES)
    assert outcomes and [o for o in outcomes if o.status != "passed"] == []


def test_in_order_and_out_of_order_delivery() -> None:
    sender, receiver = trees()
    sent = send(sender, 6)
    assert [g for g, _, _ in sent] == list(range(6))
    for generation in (3, 0, 5, 1, 4, 2):
        assert receive(receiver, generation) == sent[generation][1:]
    assert receiver.generation(1, APP) == 6


def test_ratchets_and_leaves_are_independent() -> None:
    sender, receiver = trees()
    _, app_key, _ = sender.next_send_key(2, APP)
    _, hs_key, _ = sender.next_send_key(2, HS)
    _, other_leaf_key, _ = sender.next_send_key(3, APP)
    assert len({app_key, hs_key, other_leaf_key}) == 3
    assert receive(receiver, 0, 3, APP)[0] == other_leaf_key
    assert receive(receiver, 0, 2, HS)[0] == hs_key
    assert receive(receiver, 0, 2, APP)[0] == app_key


def test_replay_is_rejected() -> None:
    sender, receiver = trees()
    send(sender, 3)
    receive(receiver, 2)  # generations 0 and 1 are kept as skipped keys
    receive(receiver, 0)
    for generation in (0, 2):
        with pytest.raises(ReplayError):
            receiver.receive_key(1, APP, generation)
    receive(receiver, 1)
    with pytest.raises(ReplayError):
        receiver.receive_key(1, APP, 1)


def test_too_far_ahead_is_rejected() -> None:
    _, receiver = trees(maximum_forward_distance=50)
    with pytest.raises(ValidationError, match="too far ahead"):
        receiver.receive_key(1, APP, 51)
    receive(receiver, 50)  # the next expected generation is now 51
    with pytest.raises(ValidationError):
        receiver.receive_key(1, APP, 102)
    receive(receiver, 101)


def test_old_skipped_keys_are_deleted() -> None:
    sender, receiver = trees(out_of_order_tolerance=2)
    sent = send(sender, 11)
    receive(receiver, 10)
    with pytest.raises(ReplayError):
        receiver.receive_key(1, APP, 7)
    assert receive(receiver, 8) == sent[8][1:]
    assert receive(receiver, 9) == sent[9][1:]


def test_failed_decryption_consumes_nothing() -> None:
    sender, receiver = trees()
    generation, key, nonce = sender.next_send_key(1, APP)
    genuine = SUITE.aead_encrypt(key, nonce, b"aad", b"hello")
    forged = genuine[:-1] + bytes([genuine[-1] ^ 1])
    found = receiver.receive_key(1, APP, generation)
    with pytest.raises(CryptoError):
        SUITE.aead_decrypt(found.key, found.nonce, b"aad", forged)
    # A forgery claiming a far generation must not move the ratchet or evict anything either.
    receiver.receive_key(1, APP, 500)
    assert receiver.generation(1, APP) == 0
    found = receiver.receive_key(1, APP, generation)
    assert SUITE.aead_decrypt(found.key, found.nonce, b"aad", genuine) == b"hello"
    receiver.consume(found)
    with pytest.raises(ReplayError):
        receiver.consume(found)


def test_interleaved_lookups_never_bring_a_key_back() -> None:
    sender, receiver = trees()
    send(sender, 8)
    later = receiver.receive_key(1, APP, 5)
    receive(receiver, 3)  # consumed after `later` was computed from the older state
    receiver.consume(later)
    with pytest.raises(ReplayError):
        receiver.receive_key(1, APP, 3)
    skipped_later = receiver.receive_key(1, APP, 7)
    receive(receiver, 1)  # a kept skipped key, consumed in between
    receiver.consume(skipped_later)
    for generation in (1, 3, 5, 7):
        with pytest.raises(ReplayError):
            receiver.receive_key(1, APP, generation)
    assert receive(receiver, 6)  # still kept


def test_a_first_lookup_changes_nothing_until_its_key_is_consumed() -> None:
    sender, receiver = trees()
    sent = send(sender, 3) + send(sender, 1, ratchet=HS)
    before = receiver.to_state()
    later, handshake = receiver.receive_key(1, APP, 2), receiver.receive_key(1, HS, 0)
    receiver.receive_key(1, APP, 500)  # a forgery's lookup, never consumed
    assert receiver.to_state() == before and receiver._ratchets == {}  # not even the leaf's expansion
    assert receive(receiver, 0) == sent[0][1:]  # creates the leaf's ratchets; `later` was planned before
    receiver.consume(later)
    receiver.consume(handshake)  # planned against the handshake ratchet exactly as it was then created
    assert (later.key, handshake.key) == (sent[2][1], sent[3][1])
    for ratchet, generation in ((APP, 2), (HS, 0)):
        with pytest.raises(ReplayError):
            receiver.receive_key(1, ratchet, generation)
    assert receive(receiver, 1) == sent[1][1:]


def test_expand_consumes_the_path_from_the_root_once() -> None:
    tree = SecretTree(SUITE, SECRET, 4)
    tree.expand(1)
    assert tree._nodes.keys() == {0, 5} and {leaf for leaf, _ in tree._ratchets} == {1}
    state = tree.to_state()
    tree.expand(1)
    assert tree.to_state() == state and SECRET not in state


@settings(max_examples=40, deadline=None)
@given(st.permutations(range(12)))
def test_any_delivery_order_within_the_window(order: list[int]) -> None:
    sender, receiver = trees(out_of_order_tolerance=12)
    sent = send(sender, 12)
    for generation in order:
        assert receive(receiver, generation) == sent[generation][1:]
        with pytest.raises(ReplayError):
            receiver.receive_key(1, APP, generation)


def test_leaf_outside_the_tree_and_consumed_tree_secrets() -> None:
    tree = SecretTree(SUITE, SECRET, 4)
    with pytest.raises(ValidationError):
        tree.receive_key(4, APP, 0)
    tree.next_send_key(0, APP)
    # Section 9.2: the root secret is gone once it has been expanded.
    assert SECRET not in tree._nodes.values()


def test_sending_ratchet_exhaustion() -> None:
    tree = SecretTree(SUITE, SECRET, 2)
    tree.skip_to(0, APP, 3)
    assert tree.next_send_key(0, APP)[0] == 3
    tree._ratchet(0, APP).generation = MAX_GENERATION + 1
    with pytest.raises(StateError):
        tree.next_send_key(0, APP)


def test_sender_data_key_uses_the_first_nh_bytes() -> None:
    ciphertext = bytes(range(40))
    key, nonce = sender_data_key_nonce(SUITE, SECRET, ciphertext)
    assert (len(key), len(nonce)) == (SUITE.aead_key_len, SUITE.aead_nonce_len)
    assert sender_data_key_nonce(SUITE, SECRET, ciphertext[:32] + b"other") == (key, nonce)
    assert sender_data_key_nonce(SUITE, SECRET, b"\xff" + ciphertext[1:]) != (key, nonce)
    # A ciphertext shorter than Nh is used whole.
    assert sender_data_key_nonce(SUITE, SECRET, b"ab")[0] == SUITE.expand_with_label(SECRET, "key", b"ab", 16)


@pytest.mark.parametrize("n_leaves", [1, 2, 4, 8, 32])
def test_tree_math_paths(n_leaves: int) -> None:
    r = tm.root(n_leaves)
    for leaf in range(n_leaves):
        x = 2 * leaf
        path, cop = tm.direct_path(x, n_leaves), tm.copath(x, n_leaves)
        assert len(path) == len(cop) == tm.log2(n_leaves)
        assert (path[-1] if path else x) == r
        for node, sibling in zip((x, *path)[:-1], cop, strict=True):
            assert tm.sibling(node, n_leaves) == sibling
        for other in range(n_leaves):
            others = {2 * other, *tm.direct_path(2 * other, n_leaves)}
            lowest = next(node for node in (x, *path) if node in others)
            assert tm.common_ancestor(x, 2 * other) == lowest
    with pytest.raises(TreeError):
        tm.parent(r, n_leaves)
    with pytest.raises(TreeError):
        tm.parent(tm.node_width(n_leaves), n_leaves)
    with pytest.raises(TreeError):
        tm.left(0)
