"""Live interop with AWS mls-rs in both roles (skipped only where its wheel does not exist)."""

from __future__ import annotations

import pytest

from interop import mlsrs
from mlscore.errors import MLSError

pytestmark = pytest.mark.skipif(not mlsrs.MLSRS_AVAILABLE, reason=mlsrs.MLSRS_REASON)


def test_both_roles_fifty_rounds() -> None:
    results = mlsrs.run(rounds=50)
    failed = [r for r in results if not r.ok]
    assert not failed, failed
    assert len(results) == 2 * (1 + 50 + 2)


def test_mlsrs_rejects_a_tampered_commit_from_us() -> None:
    from mlscore.framing import MLSMessage
    from mlscore.group import Group

    peer = mlsrs.MlsRsPeer.new(b"mls-rs")
    peer.create_group()
    bundle = mlsrs.our_key_package(b"mlscore")
    _, welcome = peer.add(MLSMessage(bundle.key_package).to_bytes())
    peer.merge_pending()
    ours = Group.join(welcome, bundle, config=mlsrs.CONFIG)
    commit = bytearray(ours.commit().message.to_bytes())
    commit[-5] ^= 0xFF  # inside the membership tag
    with pytest.raises(MLSError):
        peer.process(bytes(commit))
