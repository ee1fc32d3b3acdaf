"""LeafNode, Capabilities and Lifetime (RFC 9420 section 7.2)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Self

from .codec import Reader, Struct, Writer, decode_enum
from .credentials import AuthenticationService, Credential
from .crypto import CipherSuite, SignatureKey
from .errors import EncodeError, ValidationError
from .extensions import DEFAULT_EXTENSION_TYPES, MAX_CAPABILITY_ENTRIES, Extension, check_unique, decode_extensions

PROTOCOL_VERSION_MLS10 = 1


class LeafNodeSource(IntEnum):
    KEY_PACKAGE = 1
    UPDATE = 2
    COMMIT = 3


@dataclass(frozen=True)
class Capabilities(Struct):
    versions: tuple[int, ...] = (PROTOCOL_VERSION_MLS10,)
    cipher_suites: tuple[int, ...] = ()
    extensions: tuple[int, ...] = ()
    proposals: tuple[int, ...] = ()
    credentials: tuple[int, ...] = ()

    def encode(self, w: Writer) -> None:
        for values in (self.versions, self.cipher_suites, self.extensions, self.proposals, self.credentials):
            w.vector(values, Writer.u16)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(*(tuple(r.vector(Reader.u16, MAX_CAPABILITY_ENTRIES)) for _ in range(5)))


@dataclass(frozen=True)
class Lifetime(Struct):
    not_before: int
    not_after: int

    def encode(self, w: Writer) -> None:
        w.u64(self.not_before).u64(self.not_after)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.u64(), r.u64())


@dataclass(frozen=True)
class LeafNode(Struct):
    encryption_key: bytes
    signature_key: bytes
    credential: Credential
    capabilities: Capabilities
    leaf_node_source: LeafNodeSource
    lifetime: Lifetime | None = None
    parent_hash: bytes = b""
    extensions: tuple[Extension, ...] = ()
    signature: bytes = b""

    def _encode_content(self, w: Writer) -> None:
        w.opaque(self.encryption_key).opaque(self.signature_key)
        w.struct(self.credential)
        w.struct(self.capabilities)
        w.u8(self.leaf_node_source)
        if self.leaf_node_source == LeafNodeSource.KEY_PACKAGE:
            if self.lifetime is None:
                raise EncodeError("a key_package leaf node needs a lifetime")
            w.struct(self.lifetime)
        elif self.leaf_node_source == LeafNodeSource.COMMIT:
            w.opaque(self.parent_hash)
        w.structs(self.extensions)

    def encode(self, w: Writer) -> None:
        self._encode_content(w)
        w.opaque(self.signature)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        encryption_key = r.opaque()
        signature_key = r.opaque()
        credential = Credential.decode(r)
        capabilities = Capabilities.decode(r)
        source = decode_enum(LeafNodeSource, r.u8(), "leaf node source")
        lifetime = Lifetime.decode(r) if source == LeafNodeSource.KEY_PACKAGE else None
        parent_hash = r.opaque() if source == LeafNodeSource.COMMIT else b""
        extensions = decode_extensions(r)
        signature = r.opaque()
        return cls(encryption_key, signature_key, credential, capabilities, source, lifetime,
                   parent_hash, extensions, signature)

    def tbs(self, group_id: bytes | None = None, leaf_index: int | None = None) -> bytes:
        """LeafNodeTBS: the content plus, for update/commit leaves, the group and position."""
        w = Writer()
        self._encode_content(w)
        if self.leaf_node_source != LeafNodeSource.KEY_PACKAGE:
            if group_id is None or leaf_index is None:
                raise EncodeError("update/commit leaf nodes are signed with group_id and leaf_index")
            w.opaque(group_id).u32(leaf_index)
        return w.getvalue()

    def signed(self, suite: CipherSuite, signature_priv: SignatureKey, group_id: bytes | None = None,
               leaf_index: int | None = None) -> LeafNode:
        unsigned = replace(self, signature=b"")
        signature = suite.sign_with_label(signature_priv, "LeafNodeTBS", unsigned.tbs(group_id, leaf_index))
        return replace(self, signature=signature)

    def verify(self, suite: CipherSuite, group_id: bytes | None = None, leaf_index: int | None = None) -> None:
        """Raise InvalidSignatureError unless the leaf's own signature key signed it."""
        suite.verify_with_label(self.signature_key, "LeafNodeTBS", self.tbs(group_id, leaf_index),
                                self.signature)


def validate_leaf_node(leaf: LeafNode, suite: CipherSuite, *, expected_source: LeafNodeSource,
                       authentication_service: AuthenticationService | None,
                       group_id: bytes | None = None, leaf_index: int | None = None,
                       now: int | None = None) -> None:
    """The checks of RFC 9420 section 7.3 that need only the leaf itself.

    Uniqueness of keys and compatibility with the other members need the tree;
    the group does those.  ``now`` (seconds since the epoch) enables the
    lifetime check; the core never reads a clock.
    """
    if leaf.leaf_node_source != expected_source:
        raise ValidationError(f"leaf node source is {leaf.leaf_node_source.name}, "
                              f"expected {expected_source.name}")
    # The signature first: a forged leaf costs one verification and never reaches the
    # authentication service (X.509 parsing and path building are the expensive part).
    leaf.verify(suite, group_id, leaf_index)
    if authentication_service is not None:
        authentication_service.validate(leaf.credential, leaf.signature_key, suite.id, now)
    if suite.id not in leaf.capabilities.cipher_suites:
        raise ValidationError(f"leaf does not list the group's cipher suite {suite.id}")
    if PROTOCOL_VERSION_MLS10 not in leaf.capabilities.versions:
        raise ValidationError("leaf does not support MLS 1.0")
    if leaf.credential.credential_type not in leaf.capabilities.credentials:
        raise ValidationError("leaf does not list its own credential type in its capabilities")
    listed = frozenset(leaf.capabilities.extensions) | DEFAULT_EXTENSION_TYPES  # linear, whatever the sizes
    for extension in leaf.extensions:
        if extension.extension_type not in listed:
            raise ValidationError(f"leaf carries extension {extension.extension_type:#06x} "
                                  "that its capabilities do not list")
    check_unique(leaf.extensions, "LeafNode")
    if leaf.lifetime is not None and now is not None and not (
            leaf.lifetime.not_before <= now <= leaf.lifetime.not_after):
        raise ValidationError(f"leaf lifetime [{leaf.lifetime.not_before}, {leaf.lifetime.not_after}] "
                              f"does not cover now ({now})")
