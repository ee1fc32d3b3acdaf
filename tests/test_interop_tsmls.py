"""Live interop with ts-mls (npm ``ts-mls``), an independent TypeScript MLS stack, in both roles.

ts-mls ships post-quantum suites (81/82: ML-KEM-1024, 83/84: X-Wing, with
Ed25519; 85-88: the same KEMs with ML-DSA-87), so besides the classic suite 1
this is the MLS-level check of our PQ suites against a stack that shares no
code with ours: every UpdatePath either side sends is HPKE-encrypted to the
other's PQ node keys, every node key is derived with the suite's
DeriveKeyPair, and on 85-88 every signature is ML-DSA-87.

Per suite, per role, per handshake wire format: join via a Welcome that
carries the ratchet tree, alternate UpdatePath commits (ts-mls commits and we
process; we commit and ts-mls processes), compare epoch and exporter after
every epoch, and send one application message each way.

The Node side is installed by ``npm ci --prefix interop/tsmls``.  Without it
the tests skip, except under CI (``CI=true``), which installs it: there a
missing ts-mls is a failure, not a silent skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from interop.mlsrs import CONFIG as PUBLIC_CONFIG
from interop.mlsrs import our_key_package
from interop.tsmls_peer import SUITES, TSMLS_AVAILABLE, TSMLS_REASON, TsMlsPeer
from mlscore.crypto import get_suite
from mlscore.errors import MLSError
from mlscore.framing import MLSMessage, WireFormat
from mlscore.group import ApplicationMessage, CommitMessage, Group, GroupConfig
from mlscore.messages import Add, KeyPackage

ROUNDS = 6
"""Commits after the join: three each way, alternating."""

LABEL, CONTEXT = b"interop", b"ctx"

PRIVATE_CONFIG = GroupConfig(handshake_wire_format=WireFormat.PRIVATE_MESSAGE)
CONFIGS = {"public": PUBLIC_CONFIG, "private": PRIVATE_CONFIG}
"""Both sides send commits in the same wire format: PublicMessage (as with mls-rs) or PrivateMessage
(ts-mls's own default)."""


@pytest.fixture(autouse=True)
def _require_tsmls() -> None:
    if not TSMLS_AVAILABLE:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI installs ts-mls, yet it is unavailable: {TSMLS_REASON}")
        pytest.skip(TSMLS_REASON)


@pytest.fixture(params=sorted(SUITES), ids=lambda suite: f"suite{suite}")
def suite(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture(params=sorted(CONFIGS))
def wire(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def peer(suite: int, wire: str) -> Iterator[TsMlsPeer]:
    """One Node process per case (a ts-mls peer holds one group), closed whatever the outcome."""
    with TsMlsPeer.new(b"ts-mls", suite, public_handshake=wire == "public") as tsmls:
        yield tsmls


def _assert_in_step(ours: Group, theirs: TsMlsPeer) -> None:
    assert theirs.epoch == ours.epoch
    assert theirs.export(LABEL, CONTEXT, 32) == ours.export_secret(LABEL, CONTEXT, 32), f"epoch {ours.epoch}"


def _alternate(ours: Group, theirs: TsMlsPeer, *, tsmls_first: bool) -> Group:
    """ROUNDS UpdatePath commits alternating direction, then an application message each way."""
    start = ours.epoch
    for round_number in range(ROUNDS):
        if (round_number % 2 == 0) == tsmls_first:
            commit = theirs.commit_update()
            theirs.merge_pending()
            processed = ours.process(commit)
            assert isinstance(processed, CommitMessage)
            assert processed.commit.path is not None, "ts-mls's empty commit must carry an UpdatePath"
            ours = processed.group
        else:
            result = ours.commit()
            assert theirs.process(result.message.to_bytes()) is None
            ours = result.group
        _assert_in_step(ours, theirs)
    assert ours.epoch == start + ROUNDS

    assert theirs.process(ours.protect(b"from mlscore").to_bytes()) == b"from mlscore"
    reply = ours.process(theirs.encrypt(b"from ts-mls"))
    assert isinstance(reply, ApplicationMessage)
    assert reply.data == b"from ts-mls"
    return ours


def test_tsmls_creates_we_join(peer: TsMlsPeer, suite: int, wire: str) -> None:
    peer.create_group()
    bundle = our_key_package(b"mlscore", suite)
    _, welcome = peer.add(MLSMessage(bundle.key_package).to_bytes())
    peer.merge_pending()
    ours = Group.join(welcome, bundle, config=CONFIGS[wire])  # tree from the Welcome's ratchet_tree extension
    assert ours.group_id == peer.group_id
    _assert_in_step(ours, peer)
    _alternate(ours, peer, tsmls_first=True)


def test_we_create_tsmls_joins(peer: TsMlsPeer, suite: int, wire: str) -> None:
    ours = Group.create(our_key_package(b"mlscore", suite), config=CONFIGS[wire])
    their_key_package = MLSMessage.from_bytes(peer.key_package()).body
    assert isinstance(their_key_package, KeyPackage)
    assert their_key_package.cipher_suite == suite
    result = ours.commit([Add(their_key_package)], force_path=False)
    assert result.welcome is not None
    peer.join(result.welcome.to_bytes())  # no tree out of band: ours travels in the Welcome
    ours = result.group
    assert peer.group_id == ours.group_id
    _assert_in_step(ours, peer)
    _alternate(ours, peer, tsmls_first=False)


@pytest.mark.parametrize("suite", sorted(SUITES), ids=lambda suite: f"suite{suite}")
def test_tsmls_key_package_shape(suite: int) -> None:
    """ts-mls's KeyPackage has the suite's key sizes (X-Wing 1,216 bytes, ML-KEM-1024 1,568; ML-DSA-87 signature
    keys 2,592) and verifies on our side."""
    with TsMlsPeer.new(b"ts-mls", suite) as tsmls:
        key_package = MLSMessage.from_bytes(tsmls.key_package()).body
    assert isinstance(key_package, KeyPackage)
    assert key_package.cipher_suite == suite
    cipher_suite = get_suite(suite)
    assert len(key_package.init_key) == len(key_package.leaf_node.encryption_key) == cipher_suite.hpke_pub_len
    signature_key_length = {"ed25519": 32, "mldsa87": 2592}[cipher_suite.signature_scheme]
    assert len(key_package.leaf_node.signature_key) == signature_key_length
    key_package.verify(cipher_suite)


@pytest.mark.parametrize("suite", sorted(SUITES), ids=lambda suite: f"suite{suite}")
def test_ratchet_tree_out_of_band(suite: int) -> None:
    """Welcomes without the ratchet_tree extension (ts-mls's default): the tree goes beside them, both ways."""
    with TsMlsPeer.new(b"ts-mls", suite, ratchet_tree_extension=False) as tsmls:
        tsmls.create_group()
        bundle = our_key_package(b"mlscore", suite)
        _, welcome = tsmls.add(MLSMessage(bundle.key_package).to_bytes())
        tsmls.merge_pending()
        with pytest.raises(MLSError):
            Group.join(welcome, bundle, config=PUBLIC_CONFIG)
        _assert_in_step(Group.join(welcome, bundle, ratchet_tree=tsmls.ratchet_tree(), config=PUBLIC_CONFIG),
                        tsmls)

    with TsMlsPeer.new(b"ts-mls", suite) as tsmls:
        ours = Group.create(our_key_package(b"mlscore", suite), config=PUBLIC_CONFIG)
        their_key_package = MLSMessage.from_bytes(tsmls.key_package()).body
        assert isinstance(their_key_package, KeyPackage)
        result = ours.commit([Add(their_key_package)], force_path=False, include_tree_in_welcome=False)
        assert result.welcome is not None
        with pytest.raises(MLSError):
            tsmls.join(result.welcome.to_bytes())
        assert not tsmls.in_group
        tsmls.join(result.welcome.to_bytes(), ratchet_tree=result.group.ratchet_tree_extension().extension_data)
        _assert_in_step(result.group, tsmls)


def test_tsmls_rejects_a_tampered_commit_from_us() -> None:
    with TsMlsPeer.new(b"ts-mls", 1) as tsmls:
        tsmls.create_group()
        bundle = our_key_package(b"mlscore", 1)
        _, welcome = tsmls.add(MLSMessage(bundle.key_package).to_bytes())
        tsmls.merge_pending()
        ours = Group.join(welcome, bundle, config=PUBLIC_CONFIG)
        commit = bytearray(ours.commit().message.to_bytes())
        commit[-5] ^= 0xFF  # inside the membership tag
        with pytest.raises(MLSError):
            tsmls.process(bytes(commit))
        assert tsmls.epoch == ours.epoch  # rejected without moving on


def test_driver_reports_errors_without_dying() -> None:
    with TsMlsPeer.new(b"ts-mls", 1) as tsmls:
        with pytest.raises(MLSError):
            tsmls.join(b"\x00\x01\x00\x03garbage")
        tsmls.create_group(b"group")
        assert tsmls.epoch == 0
        assert tsmls.group_id == b"group"
