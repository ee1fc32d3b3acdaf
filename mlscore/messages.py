"""Handshake messages: KeyPackage, proposals, Commit, GroupInfo, Welcome (RFC 9420 10-12)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Self

from .codec import Reader, Struct, Writer, decode_enum
from .crypto import CipherSuite, SignatureKey
from .errors import DecodeError
from .extensions import Extension, decode_extensions
from .leaf_node import PROTOCOL_VERSION_MLS10, LeafNode
from .schedule.key_schedule import GroupContext
from .schedule.psk import PreSharedKeyID
from .tree.ratchet_tree import HPKECiphertext, UpdatePath

MAX_PSKS = 256
"""Most PSK ids a GroupSecrets may name (RFC 9420 sets no bound)."""


@dataclass(frozen=True)
class KeyPackage(Struct):
    version: int
    cipher_suite: int
    init_key: bytes
    leaf_node: LeafNode
    extensions: tuple[Extension, ...] = ()
    signature: bytes = b""

    def _encode_content(self, w: Writer) -> None:
        w.u16(self.version).u16(self.cipher_suite).opaque(self.init_key)
        w.struct(self.leaf_node)
        w.structs(self.extensions)

    def encode(self, w: Writer) -> None:
        self._encode_content(w)
        w.opaque(self.signature)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.u16(), r.u16(), r.opaque(), LeafNode.decode(r), decode_extensions(r), r.opaque())

    def tbs(self) -> bytes:
        w = Writer()
        self._encode_content(w)
        return w.getvalue()

    def signed(self, suite: CipherSuite, signature_priv: SignatureKey) -> KeyPackage:
        return replace(self, signature=suite.sign_with_label(signature_priv, "KeyPackageTBS", self.tbs()))

    def verify(self, suite: CipherSuite) -> None:
        suite.verify_with_label(self.leaf_node.signature_key, "KeyPackageTBS", self.tbs(), self.signature)

    def ref(self, suite: CipherSuite) -> bytes:
        """KeyPackageRef = RefHash("MLS 1.0 KeyPackage Reference", KeyPackage)."""
        return suite.ref_hash("MLS 1.0 KeyPackage Reference", self.to_bytes())


class ProposalType(IntEnum):
    ADD = 1
    UPDATE = 2
    REMOVE = 3
    PSK = 4
    REINIT = 5
    EXTERNAL_INIT = 6
    GROUP_CONTEXT_EXTENSIONS = 7
    APP_DATA_UPDATE = 0x0008  # draft-ietf-mls-extensions section 4.7 (suggested value)


class AppDataUpdateOperation(IntEnum):
    UPDATE = 1
    REMOVE = 2


@dataclass(frozen=True)
class Add(Struct):
    key_package: KeyPackage
    proposal_type = ProposalType.ADD

    def encode(self, w: Writer) -> None:
        w.struct(self.key_package)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(KeyPackage.decode(r))


@dataclass(frozen=True)
class Update(Struct):
    leaf_node: LeafNode
    proposal_type = ProposalType.UPDATE

    def encode(self, w: Writer) -> None:
        w.struct(self.leaf_node)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(LeafNode.decode(r))


@dataclass(frozen=True)
class Remove(Struct):
    removed: int
    proposal_type = ProposalType.REMOVE

    def encode(self, w: Writer) -> None:
        w.u32(self.removed)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.u32())


@dataclass(frozen=True)
class PreSharedKey(Struct):
    psk: PreSharedKeyID
    proposal_type = ProposalType.PSK

    def encode(self, w: Writer) -> None:
        w.struct(self.psk)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(PreSharedKeyID.decode(r))


@dataclass(frozen=True)
class ReInit(Struct):
    group_id: bytes
    version: int
    cipher_suite: int
    extensions: tuple[Extension, ...] = ()
    proposal_type = ProposalType.REINIT

    def encode(self, w: Writer) -> None:
        w.opaque(self.group_id).u16(self.version).u16(self.cipher_suite).structs(self.extensions)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.opaque(), r.u16(), r.u16(), decode_extensions(r))


@dataclass(frozen=True)
class ExternalInit(Struct):
    kem_output: bytes
    proposal_type = ProposalType.EXTERNAL_INIT

    def encode(self, w: Writer) -> None:
        w.opaque(self.kem_output)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.opaque())


@dataclass(frozen=True)
class GroupContextExtensions(Struct):
    extensions: tuple[Extension, ...]
    proposal_type = ProposalType.GROUP_CONTEXT_EXTENSIONS

    def encode(self, w: Writer) -> None:
        w.structs(self.extensions)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(decode_extensions(r))


@dataclass(frozen=True)
class AppDataUpdate(Struct):
    """Change one component's entry of the GroupContext's ``app_data_dictionary`` (draft-ietf-mls-extensions,
    section 4.7): ``update`` hands the component's logic an opaque change, ``remove`` deletes the entry."""

    component_id: int
    op: AppDataUpdateOperation
    update: bytes = b""
    proposal_type = ProposalType.APP_DATA_UPDATE

    def encode(self, w: Writer) -> None:
        w.u16(self.component_id).u8(self.op)
        if self.op == AppDataUpdateOperation.UPDATE:
            w.opaque(self.update)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        component_id = r.u16()
        op = decode_enum(AppDataUpdateOperation, r.u8(), "AppDataUpdate operation")
        return cls(component_id, op, r.opaque() if op == AppDataUpdateOperation.UPDATE else b"")


Proposal = Add | Update | Remove | PreSharedKey | ReInit | ExternalInit | GroupContextExtensions | AppDataUpdate

_PROPOSAL_CLASSES: dict[int, type[Struct]] = {
    cls.proposal_type: cls
    for cls in (Add, Update, Remove, PreSharedKey, ReInit, ExternalInit, GroupContextExtensions, AppDataUpdate)
}


def encode_proposal(w: Writer, proposal: Proposal) -> None:
    w.u16(proposal.proposal_type)
    w.struct(proposal)


def decode_proposal(r: Reader) -> Proposal:
    proposal_type = r.u16()
    cls = _PROPOSAL_CLASSES.get(proposal_type)
    if cls is None:
        raise DecodeError(f"unsupported proposal type {proposal_type}")
    return cls.decode(r)  # type: ignore[return-value]


def proposal_bytes(proposal: Proposal) -> bytes:
    w = Writer()
    encode_proposal(w, proposal)
    return w.getvalue()


def proposal_from_bytes(data: bytes) -> Proposal:
    r = Reader(data)
    proposal = decode_proposal(r)
    r.finish()
    return proposal


class ProposalOrRefType(IntEnum):
    PROPOSAL = 1
    REFERENCE = 2


@dataclass(frozen=True)
class ProposalOrRef(Struct):
    """A proposal carried by value, or a ProposalRef (hash of an AuthenticatedContent)."""

    proposal: Proposal | None = None
    reference: bytes | None = None

    def encode(self, w: Writer) -> None:
        if self.proposal is not None:
            w.u8(ProposalOrRefType.PROPOSAL)
            encode_proposal(w, self.proposal)
        else:
            assert self.reference is not None
            w.u8(ProposalOrRefType.REFERENCE).opaque(self.reference)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        kind = decode_enum(ProposalOrRefType, r.u8(), "ProposalOrRefType")
        if kind == ProposalOrRefType.PROPOSAL:
            return cls(proposal=decode_proposal(r))
        return cls(reference=r.opaque())


@dataclass(frozen=True)
class Commit(Struct):
    proposals: tuple[ProposalOrRef, ...] = ()
    path: UpdatePath | None = None

    def encode(self, w: Writer) -> None:
        w.structs(self.proposals).optional(self.path, Writer.struct)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(tuple(r.structs(ProposalOrRef)), r.optional(UpdatePath.decode))


@dataclass(frozen=True)
class GroupInfo(Struct):
    group_context: GroupContext
    extensions: tuple[Extension, ...]
    confirmation_tag: bytes
    signer: int
    signature: bytes = b""

    def _encode_content(self, w: Writer) -> None:
        w.struct(self.group_context)
        w.structs(self.extensions).opaque(self.confirmation_tag).u32(self.signer)

    def encode(self, w: Writer) -> None:
        self._encode_content(w)
        w.opaque(self.signature)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(GroupContext.decode(r), decode_extensions(r), r.opaque(), r.u32(), r.opaque())

    def tbs(self) -> bytes:
        w = Writer()
        self._encode_content(w)
        return w.getvalue()

    def signed(self, suite: CipherSuite, signature_priv: SignatureKey) -> GroupInfo:
        return replace(self, signature=suite.sign_with_label(signature_priv, "GroupInfoTBS", self.tbs()))

    def verify(self, suite: CipherSuite, signer_key: bytes) -> None:
        suite.verify_with_label(signer_key, "GroupInfoTBS", self.tbs(), self.signature)


@dataclass(frozen=True)
class GroupSecrets(Struct):
    joiner_secret: bytes
    path_secret: bytes | None = None
    psks: tuple[PreSharedKeyID, ...] = ()

    def __repr__(self) -> str:
        return f"GroupSecrets(<secret>, path_secret={'<secret>' if self.path_secret else None}, psks={self.psks})"

    def encode(self, w: Writer) -> None:
        w.opaque(self.joiner_secret).optional(self.path_secret, Writer.opaque).structs(self.psks)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.opaque(), r.optional(Reader.opaque), tuple(r.structs(PreSharedKeyID, MAX_PSKS)))


@dataclass(frozen=True)
class EncryptedGroupSecrets(Struct):
    new_member: bytes
    encrypted_group_secrets: HPKECiphertext

    def encode(self, w: Writer) -> None:
        w.opaque(self.new_member)
        w.struct(self.encrypted_group_secrets)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.opaque(), HPKECiphertext.decode(r))


@dataclass(frozen=True)
class Welcome(Struct):
    cipher_suite: int
    secrets: tuple[EncryptedGroupSecrets, ...]
    encrypted_group_info: bytes

    def encode(self, w: Writer) -> None:
        w.u16(self.cipher_suite).structs(self.secrets).opaque(self.encrypted_group_info)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.u16(), tuple(r.structs(EncryptedGroupSecrets)), r.opaque())


__all__ = [
    "PROTOCOL_VERSION_MLS10",
    "Add",
    "Commit",
    "EncryptedGroupSecrets",
    "ExternalInit",
    "GroupContextExtensions",
    "GroupInfo",
    "GroupSecrets",
    "KeyPackage",
    "PreSharedKey",
    "Proposal",
    "ProposalOrRef",
    "ProposalType",
    "ReInit",
    "Remove",
    "Update",
    "Welcome",
]
