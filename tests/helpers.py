"""Small factories shared by the tests."""

from __future__ import annotations

from mlscore.credentials import Credential
from mlscore.crypto import get_suite
from mlscore.group import Group, GroupConfig
from mlscore.key_package import KeyPackageBundle, create_key_package
from mlscore.messages import Add


def bundle(name: bytes, suite_id: int = 1) -> KeyPackageBundle:
    signature_priv, _ = get_suite(suite_id).generate_signature_key_pair()
    return create_key_package(suite_id, Credential.basic(name), signature_priv)


def two_party(suite_id: int = 1, config: GroupConfig | None = None) -> tuple[Group, Group]:
    """Alice creates the group and adds Bob; both at epoch 1."""
    alice = Group.create(bundle(b"alice", suite_id), config=config)
    bob_bundle = bundle(b"bob", suite_id)
    result = alice.commit([Add(bob_bundle.key_package)], force_path=False)
    assert result.welcome is not None
    bob = Group.join(result.welcome.to_bytes(), bob_bundle, config=config)
    return result.group, bob
