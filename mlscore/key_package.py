"""KeyPackage creation and validation (RFC 9420 section 10)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .credentials import AuthenticationService, Credential, CredentialType
from .crypto import CipherSuite, SignatureKey, get_suite
from .errors import UnsupportedError, ValidationError
from .extensions import Extension, ExtensionType, check_unique
from .leaf_node import (
    PROTOCOL_VERSION_MLS10,
    Capabilities,
    LeafNode,
    LeafNodeSource,
    Lifetime,
    validate_leaf_node,
)
from .messages import KeyPackage

NO_EXPIRY = Lifetime(0, (1 << 64) - 1)
"""A lifetime that never expires: for peers authenticated by other means (tests, demos)."""


@dataclass(frozen=True)
class KeyPackageBundle:
    """A KeyPackage and the private keys that belong to it."""

    key_package: KeyPackage
    init_priv: bytes = field(repr=False)
    encryption_priv: bytes = field(repr=False)
    signature_priv: SignatureKey = field(repr=False)


def default_capabilities(suite_id: int, extensions: Sequence[int] = (),
                         credentials: Sequence[int] = (CredentialType.BASIC, CredentialType.X509)) -> Capabilities:
    return Capabilities(
        versions=(PROTOCOL_VERSION_MLS10,),
        cipher_suites=(suite_id,),
        extensions=tuple(extensions),
        proposals=(),
        credentials=tuple(credentials),
    )


def create_key_package(suite_id: int, credential: Credential, signature_priv: SignatureKey, *,
                       lifetime: Lifetime = NO_EXPIRY, capabilities: Capabilities | None = None,
                       leaf_extensions: Sequence[Extension] = (),
                       extensions: Sequence[Extension] = ()) -> KeyPackageBundle:
    """A fresh KeyPackage with new init and encryption keys, signed with ``signature_priv``."""
    suite = get_suite(suite_id)
    signer = suite.signing_key(signature_priv)
    init_priv, init_pub = suite.generate_hpke_key_pair()
    encryption_priv, encryption_pub = suite.generate_hpke_key_pair()
    if capabilities is None:
        capabilities = default_capabilities(
            suite_id, [e.extension_type for e in leaf_extensions if e.extension_type > 5])
    leaf = LeafNode(
        encryption_key=encryption_pub,
        signature_key=signer.public_bytes(),
        credential=credential,
        capabilities=capabilities,
        leaf_node_source=LeafNodeSource.KEY_PACKAGE,
        lifetime=lifetime,
        extensions=tuple(leaf_extensions),
    ).signed(suite, signer)
    key_package = KeyPackage(PROTOCOL_VERSION_MLS10, suite_id, init_pub, leaf, tuple(extensions))
    return KeyPackageBundle(key_package.signed(suite, signer), init_priv, encryption_priv, signer)


def validate_key_package(key_package: KeyPackage, *, expected_suite: int | None = None,
                         authentication_service: AuthenticationService | None = None,
                         now: int | None = None) -> CipherSuite:
    """Section 10.1 checks; returns the KeyPackage's cipher suite."""
    if key_package.version != PROTOCOL_VERSION_MLS10:
        raise UnsupportedError(f"KeyPackage version {key_package.version} is not MLS 1.0")
    if expected_suite is not None and key_package.cipher_suite != expected_suite:
        raise ValidationError(f"KeyPackage cipher suite {key_package.cipher_suite} is not the group's "
                              f"{expected_suite}")
    suite = get_suite(key_package.cipher_suite)
    key_package.verify(suite)
    validate_leaf_node(key_package.leaf_node, suite, expected_source=LeafNodeSource.KEY_PACKAGE,
                       authentication_service=authentication_service, now=now)
    if key_package.init_key == key_package.leaf_node.encryption_key:
        raise ValidationError("KeyPackage init_key equals its leaf encryption_key")
    check_unique(key_package.extensions, "KeyPackage")
    if any(e.extension_type == ExtensionType.RATCHET_TREE for e in key_package.extensions):
        raise ValidationError("ratchet_tree is not a KeyPackage extension")
    return suite
