"""Message framing (RFC 9420 section 6): content, authentication, wire formats.

The structs here are pure wire types.  Protection (signatures, membership
tags, PrivateMessage encryption) is implemented by the functions further down.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Self

from .codec import Reader, Struct, Writer, decode_enum
from .crypto import CipherSuite, SignatureKey
from .errors import CryptoError, DecodeError, EncodeError, UnsupportedError, ValidationError
from .leaf_node import PROTOCOL_VERSION_MLS10
from .messages import Commit, GroupInfo, KeyPackage, Proposal, Welcome, decode_proposal, encode_proposal
from .schedule.key_schedule import GroupContext
from .schedule.secret_tree import RatchetType, SecretTree, sender_data_key_nonce


class WireFormat(IntEnum):
    PUBLIC_MESSAGE = 1
    PRIVATE_MESSAGE = 2
    WELCOME = 3
    GROUP_INFO = 4
    KEY_PACKAGE = 5


class ContentType(IntEnum):
    APPLICATION = 1
    PROPOSAL = 2
    COMMIT = 3


class SenderType(IntEnum):
    MEMBER = 1
    EXTERNAL = 2
    NEW_MEMBER_PROPOSAL = 3
    NEW_MEMBER_COMMIT = 4


@dataclass(frozen=True)
class Sender(Struct):
    sender_type: SenderType
    index: int = 0  # leaf_index for members, sender_index for external senders

    @classmethod
    def member(cls, leaf_index: int) -> Sender:
        return cls(SenderType.MEMBER, leaf_index)

    def encode(self, w: Writer) -> None:
        w.u8(self.sender_type)
        if self.sender_type in (SenderType.MEMBER, SenderType.EXTERNAL):
            w.u32(self.index)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        sender_type = decode_enum(SenderType, r.u8(), "sender type")
        index = r.u32() if sender_type in (SenderType.MEMBER, SenderType.EXTERNAL) else 0
        return cls(sender_type, index)


Content = bytes | Proposal | Commit
"""application_data (bytes), a Proposal, or a Commit, matching ``content_type``."""


def encode_content_body(w: Writer, content_type: ContentType, content: Content) -> None:
    if content_type == ContentType.APPLICATION:
        assert isinstance(content, bytes)
        w.opaque(content)
    elif content_type == ContentType.PROPOSAL:
        encode_proposal(w, content)  # type: ignore[arg-type]
    else:
        assert isinstance(content, Commit)
        w.struct(content)


def decode_content_body(r: Reader, content_type: ContentType) -> Content:
    if content_type == ContentType.APPLICATION:
        return r.opaque()
    if content_type == ContentType.PROPOSAL:
        return decode_proposal(r)
    return Commit.decode(r)


@dataclass(frozen=True)
class FramedContent(Struct):
    group_id: bytes
    epoch: int
    sender: Sender
    authenticated_data: bytes
    content_type: ContentType
    content: Content

    def encode(self, w: Writer) -> None:
        w.opaque(self.group_id).u64(self.epoch)
        w.struct(self.sender)
        w.opaque(self.authenticated_data).u8(self.content_type)
        encode_content_body(w, self.content_type, self.content)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        group_id = r.opaque()
        epoch = r.u64()
        sender = Sender.decode(r)
        authenticated_data = r.opaque()
        content_type = decode_enum(ContentType, r.u8(), "content type")
        return cls(group_id, epoch, sender, authenticated_data, content_type,
                   decode_content_body(r, content_type))


@dataclass(frozen=True)
class FramedContentAuthData:
    """Signature, plus the confirmation tag for commits (decoding needs the content type)."""

    signature: bytes
    confirmation_tag: bytes | None = None

    def encode(self, w: Writer) -> None:
        w.opaque(self.signature)
        if self.confirmation_tag is not None:
            w.opaque(self.confirmation_tag)

    @classmethod
    def decode_for(cls, r: Reader, content_type: ContentType) -> FramedContentAuthData:
        signature = r.opaque()
        tag = r.opaque() if content_type == ContentType.COMMIT else None
        return cls(signature, tag)


def framed_content_tbs(wire_format: WireFormat, content: FramedContent,
                       context: GroupContext | None) -> bytes:
    """FramedContentTBS; member senders sign over the GroupContext too (either wire format)."""
    w = Writer().u16(PROTOCOL_VERSION_MLS10).u16(wire_format)
    w.struct(content)
    if content.sender.sender_type == SenderType.MEMBER:
        if context is None:
            raise EncodeError("member content is signed over the GroupContext")
        w.struct(context)
    return w.getvalue()


@dataclass(frozen=True)
class AuthenticatedContent(Struct):
    wire_format: WireFormat
    content: FramedContent
    auth: FramedContentAuthData

    def encode(self, w: Writer) -> None:
        w.u16(self.wire_format)
        w.struct(self.content)
        self.auth.encode(w)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        wire_format = decode_enum(WireFormat, r.u16(), "wire format")
        content = FramedContent.decode(r)
        return cls(wire_format, content, FramedContentAuthData.decode_for(r, content.content_type))

    def confirmed_transcript_hash_input(self) -> bytes:
        """ConfirmedTranscriptHashInput: wire_format, content, signature."""
        w = Writer().u16(self.wire_format)
        w.struct(self.content)
        return w.opaque(self.auth.signature).getvalue()


@dataclass(frozen=True)
class PublicMessage(Struct):
    content: FramedContent
    auth: FramedContentAuthData
    membership_tag: bytes | None = None

    def encode(self, w: Writer) -> None:
        w.struct(self.content)
        self.auth.encode(w)
        if self.content.sender.sender_type == SenderType.MEMBER:
            if self.membership_tag is None:
                raise EncodeError("member PublicMessage needs a membership tag")
            w.opaque(self.membership_tag)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        content = FramedContent.decode(r)
        auth = FramedContentAuthData.decode_for(r, content.content_type)
        tag = r.opaque() if content.sender.sender_type == SenderType.MEMBER else None
        return cls(content, auth, tag)


@dataclass(frozen=True)
class PrivateMessage(Struct):
    group_id: bytes
    epoch: int
    content_type: ContentType
    authenticated_data: bytes
    encrypted_sender_data: bytes
    ciphertext: bytes

    def encode(self, w: Writer) -> None:
        w.opaque(self.group_id).u64(self.epoch).u8(self.content_type).opaque(self.authenticated_data)
        w.opaque(self.encrypted_sender_data).opaque(self.ciphertext)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        group_id = r.opaque()
        epoch = r.u64()
        content_type = decode_enum(ContentType, r.u8(), "content type")
        return cls(group_id, epoch, content_type, r.opaque(), r.opaque(), r.opaque())


@dataclass(frozen=True)
class SenderData(Struct):
    leaf_index: int
    generation: int
    reuse_guard: bytes

    def encode(self, w: Writer) -> None:
        w.u32(self.leaf_index).u32(self.generation).raw(self.reuse_guard)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.u32(), r.u32(), r.fixed(4))


_BODY_CLASSES: dict[WireFormat, type[Struct]] = {
    WireFormat.PUBLIC_MESSAGE: PublicMessage,
    WireFormat.PRIVATE_MESSAGE: PrivateMessage,
    WireFormat.WELCOME: Welcome,
    WireFormat.GROUP_INFO: GroupInfo,
    WireFormat.KEY_PACKAGE: KeyPackage,
}

MLSMessageBody = PublicMessage | PrivateMessage | Welcome | GroupInfo | KeyPackage


@dataclass(frozen=True)
class MLSMessage(Struct):
    """The top-level message: a version, a wire format and the matching body."""

    body: MLSMessageBody
    version: int = PROTOCOL_VERSION_MLS10

    @property
    def wire_format(self) -> WireFormat:
        for wire_format, cls in _BODY_CLASSES.items():
            if isinstance(self.body, cls):
                return wire_format
        raise EncodeError(f"not an MLSMessage body: {type(self.body).__name__}")

    def encode(self, w: Writer) -> None:
        w.u16(self.version).u16(self.wire_format)
        w.struct(self.body)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        version = r.u16()
        if version != PROTOCOL_VERSION_MLS10:
            raise UnsupportedError(f"unsupported protocol version {version}")
        wire_format = r.u16()
        body_cls = _BODY_CLASSES.get(wire_format)  # type: ignore[call-overload]
        if body_cls is None:
            raise DecodeError(f"unknown wire format {wire_format}")
        return cls(body_cls.decode(r), version)


# -- protection (sections 6.1-6.3) ------------------------------------------------

def constant_time_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def sign_content(suite: CipherSuite, signature_priv: SignatureKey, wire_format: WireFormat, content: FramedContent,
                 context: GroupContext | None) -> bytes:
    return suite.sign_with_label(signature_priv, "FramedContentTBS",
                                 framed_content_tbs(wire_format, content, context))


def verify_content(suite: CipherSuite, signature_pub: bytes, wire_format: WireFormat, content: FramedContent,
                   context: GroupContext | None, signature: bytes) -> None:
    suite.verify_with_label(signature_pub, "FramedContentTBS",
                            framed_content_tbs(wire_format, content, context), signature)


def membership_tag(suite: CipherSuite, membership_key: bytes, content: FramedContent,
                   auth: FramedContentAuthData, context: GroupContext) -> bytes:
    """MAC over AuthenticatedContentTBM = FramedContentTBS || FramedContentAuthData."""
    w = Writer().raw(framed_content_tbs(WireFormat.PUBLIC_MESSAGE, content, context))
    auth.encode(w)
    return suite.mac(membership_key, w.getvalue())


def protect_public(suite: CipherSuite, content: FramedContent, auth: FramedContentAuthData,
                   membership_key: bytes, context: GroupContext) -> PublicMessage:
    tag = None
    if content.sender.sender_type == SenderType.MEMBER:
        tag = membership_tag(suite, membership_key, content, auth, context)
    return PublicMessage(content, auth, tag)


def verify_public(suite: CipherSuite, message: PublicMessage, membership_key: bytes, context: GroupContext,
                  signature_pub: bytes) -> AuthenticatedContent:
    """Check the membership tag (member senders) and the signature."""
    content = message.content
    if content.sender.sender_type == SenderType.MEMBER:
        expected = membership_tag(suite, membership_key, content, message.auth, context)
        if message.membership_tag is None or not constant_time_equal(expected, message.membership_tag):
            raise ValidationError("membership tag does not verify")
    if content.content_type == ContentType.APPLICATION:
        raise ValidationError("application data must not be sent as a PublicMessage")
    verify_content(suite, signature_pub, WireFormat.PUBLIC_MESSAGE, content, context, message.auth.signature)
    return AuthenticatedContent(WireFormat.PUBLIC_MESSAGE, content, message.auth)


def _ratchet_for(content_type: ContentType) -> RatchetType:
    return RatchetType.APPLICATION if content_type == ContentType.APPLICATION else RatchetType.HANDSHAKE


def _content_aad(group_id: bytes, epoch: int, content_type: ContentType, authenticated_data: bytes) -> bytes:
    return Writer().opaque(group_id).u64(epoch).u8(content_type).opaque(authenticated_data).getvalue()


def _sender_data_aad(group_id: bytes, epoch: int, content_type: ContentType) -> bytes:
    return Writer().opaque(group_id).u64(epoch).u8(content_type).getvalue()


def _xor_guard(nonce: bytes, reuse_guard: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(reuse_guard, nonce[:4], strict=True)) + nonce[4:]


def protect_private(suite: CipherSuite, secret_tree: SecretTree, sender_data_secret: bytes,
                    content: FramedContent, auth: FramedContentAuthData, padding: int = 0,
                    reuse_guard: bytes | None = None) -> PrivateMessage:
    """Encrypt content and sender data (section 6.3) with the sender's next ratchet key."""
    if content.sender.sender_type != SenderType.MEMBER:
        raise ValidationError("only members send PrivateMessages")
    leaf = content.sender.index
    generation, key, nonce = secret_tree.next_send_key(leaf, _ratchet_for(content.content_type))
    guard = reuse_guard if reuse_guard is not None else os.urandom(4)
    w = Writer()
    encode_content_body(w, content.content_type, content.content)
    auth.encode(w)
    w.raw(bytes(padding))
    aad = _content_aad(content.group_id, content.epoch, content.content_type, content.authenticated_data)
    ciphertext = suite.aead_encrypt(key, _xor_guard(nonce, guard), aad, w.getvalue())
    sd_key, sd_nonce = sender_data_key_nonce(suite, sender_data_secret, ciphertext)
    encrypted_sender_data = suite.aead_encrypt(
        sd_key, sd_nonce, _sender_data_aad(content.group_id, content.epoch, content.content_type),
        SenderData(leaf, generation, guard).to_bytes())
    return PrivateMessage(content.group_id, content.epoch, content.content_type, content.authenticated_data,
                          encrypted_sender_data, ciphertext)


def unprotect_private(suite: CipherSuite, secret_tree: SecretTree, sender_data_secret: bytes,
                      message: PrivateMessage, signature_key_of: Callable[[int], bytes],
                      context: GroupContext) -> AuthenticatedContent:
    """Decrypt and authenticate a PrivateMessage; its ratchet key is consumed only on success.

    ``signature_key_of(leaf)`` returns the sender's signature key or raises if
    the leaf is not an acceptable sender.
    """
    sd_key, sd_nonce = sender_data_key_nonce(suite, sender_data_secret, message.ciphertext)
    try:
        sender_data = SenderData.from_bytes(suite.aead_decrypt(
            sd_key, sd_nonce, _sender_data_aad(message.group_id, message.epoch, message.content_type),
            message.encrypted_sender_data))
    except CryptoError:
        raise CryptoError("cannot decrypt the sender data") from None
    signature_pub = signature_key_of(sender_data.leaf_index)
    found = secret_tree.receive_key(sender_data.leaf_index, _ratchet_for(message.content_type),
                                    sender_data.generation)
    aad = _content_aad(message.group_id, message.epoch, message.content_type, message.authenticated_data)
    plaintext = suite.aead_decrypt(found.key, _xor_guard(found.nonce, sender_data.reuse_guard), aad,
                                   message.ciphertext)
    reader = Reader(plaintext)
    body = decode_content_body(reader, message.content_type)
    auth = FramedContentAuthData.decode_for(reader, message.content_type)
    if any(reader.fixed(reader.remaining)):
        raise DecodeError("PrivateMessage padding is not all zero")
    content = FramedContent(message.group_id, message.epoch, Sender.member(sender_data.leaf_index),
                            message.authenticated_data, message.content_type, body)
    verify_content(suite, signature_pub, WireFormat.PRIVATE_MESSAGE, content, context, auth.signature)
    secret_tree.consume(found)
    return AuthenticatedContent(WireFormat.PRIVATE_MESSAGE, content, auth)
