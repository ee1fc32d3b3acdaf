"""The key schedule (RFC 9420 section 8): epoch secrets, exporter, transcript hashes.

All functions are pure: secrets in, secrets out.  The group keeps one
:class:`EpochSecrets` per epoch and drops it when the epoch is over.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field, fields
from typing import ClassVar, Self

from ..codec import Reader, Struct, Writer
from ..crypto import CipherSuite
from ..errors import ValidationError
from ..extensions import Extension, decode_extensions


@dataclass(frozen=True)
class GroupContext(Struct):
    """The group's state summary (section 8.1): every epoch secret and signature is bound to it."""

    version: int
    cipher_suite: int
    group_id: bytes
    epoch: int
    tree_hash: bytes
    confirmed_transcript_hash: bytes
    extensions: tuple[Extension, ...] = ()

    def encode(self, w: Writer) -> None:
        w.u16(self.version).u16(self.cipher_suite).opaque(self.group_id).u64(self.epoch)
        w.opaque(self.tree_hash).opaque(self.confirmed_transcript_hash).structs(self.extensions)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.u16(), r.u16(), r.opaque(), r.u64(), r.opaque(), r.opaque(), decode_extensions(r))


@dataclass(frozen=True)
class EpochSecrets:
    """The secrets derived from one epoch_secret (section 8, table 4), plus the next init_secret.

    ``welcome_secret`` is what keys a Welcome's GroupInfo (the committer
    builds the Welcome from the joiner_secret at commit time);
    ``application_export_secret`` roots the safe exporter of
    draft-ietf-mls-extensions.  ``encode``/``decode`` (every field) and
    ``encode_stored``/``decode_stored`` (without :attr:`NOT_STORED`) are for
    the group's own persistence, not a wire format.
    """

    NOT_STORED: ClassVar[tuple[str, ...]] = ("encryption_secret", "resumption_psk", "welcome_secret")
    """Left out of a stored group: a restored group holds its secret tree and its resumption PSKs
    separately, and needs no welcome_secret; each of them would give a reader of the file more than
    resuming needs (every key of the epoch, a PSK, the GroupInfo key)."""

    sender_data_secret: bytes = field(repr=False)
    encryption_secret: bytes = field(repr=False)
    exporter_secret: bytes = field(repr=False)
    external_secret: bytes = field(repr=False)
    confirmation_key: bytes = field(repr=False)
    membership_key: bytes = field(repr=False)
    resumption_psk: bytes = field(repr=False)
    epoch_authenticator: bytes = field(repr=False)
    init_secret: bytes = field(repr=False)
    welcome_secret: bytes = field(repr=False, default=b"")
    application_export_secret: bytes = field(repr=False, default=b"")

    def encode(self, w: Writer) -> None:
        for item in fields(self):
            w.opaque(getattr(self, item.name))

    @classmethod
    def decode(cls, r: Reader) -> EpochSecrets:
        return cls(*(r.opaque() for _ in fields(cls)))

    def encode_stored(self, w: Writer) -> None:
        for name in _STORED:
            w.opaque(getattr(self, name))

    @classmethod
    def decode_stored(cls, r: Reader) -> EpochSecrets:
        """:meth:`encode_stored`'s fields; those not stored are empty."""
        stored = {name: r.opaque() for name in _STORED}
        return cls(**stored, **dict.fromkeys(cls.NOT_STORED, b""))


_STORED = tuple(item.name for item in fields(EpochSecrets) if item.name not in EpochSecrets.NOT_STORED)


_LABELS = (
    ("sender_data_secret", "sender data"),
    ("encryption_secret", "encryption"),
    ("exporter_secret", "exporter"),
    ("external_secret", "external"),
    ("confirmation_key", "confirm"),
    ("membership_key", "membership"),
    ("resumption_psk", "resumption"),
    ("epoch_authenticator", "authentication"),
    ("init_secret", "init"),
    ("application_export_secret", "application_export"),  # draft-ietf-mls-extensions safe exporter
)


def joiner_secret(suite: CipherSuite, init_secret: bytes, commit_secret: bytes, group_context: bytes) -> bytes:
    """ExpandWithLabel(Extract(init_secret, commit_secret), "joiner", GroupContext, Nh): what a Welcome carries."""
    return suite.expand_with_label(suite.kdf_extract(init_secret, commit_secret), "joiner", group_context,
                                   suite.hash_len)


def _welcome_from(suite: CipherSuite, member_prk: bytes) -> bytes:
    return suite.derive_secret(member_prk, "welcome")


def _epoch_from(suite: CipherSuite, member_prk: bytes, group_context: bytes) -> bytes:
    return suite.expand_with_label(member_prk, "epoch", group_context, suite.hash_len)


def welcome_secret(suite: CipherSuite, joiner: bytes, psk_secret: bytes) -> bytes:
    """DeriveSecret(Extract(joiner_secret, psk_secret), "welcome"): keys the Welcome's GroupInfo."""
    return _welcome_from(suite, suite.kdf_extract(joiner, psk_secret))


def epoch_secret(suite: CipherSuite, joiner: bytes, psk_secret: bytes, group_context: bytes) -> bytes:
    """The epoch_secret every other secret of the epoch is derived from."""
    return _epoch_from(suite, suite.kdf_extract(joiner, psk_secret), group_context)


def welcome_key_nonce(suite: CipherSuite, welcome: bytes) -> tuple[bytes, bytes]:
    """The AEAD key and nonce that encrypt a Welcome's GroupInfo (section 12.4.3.1)."""
    return (suite.expand_with_label(welcome, "key", b"", suite.aead_key_len),
            suite.expand_with_label(welcome, "nonce", b"", suite.aead_nonce_len))


def secrets_from_epoch_secret(suite: CipherSuite, epoch: bytes, welcome: bytes = b"") -> EpochSecrets:
    """Table 4 of section 8 applied to one epoch_secret; the epoch_secret itself is not kept."""
    derived = {name: suite.derive_secret(epoch, label) for name, label in _LABELS}
    return EpochSecrets(**derived, welcome_secret=welcome)


def epoch_secrets_from_joiner(suite: CipherSuite, joiner: bytes, psk_secret: bytes,
                              group_context: bytes) -> EpochSecrets:
    """Everything a new or existing member derives once it knows the joiner_secret."""
    member_prk = suite.kdf_extract(joiner, psk_secret)
    return secrets_from_epoch_secret(suite, _epoch_from(suite, member_prk, group_context),
                                     _welcome_from(suite, member_prk))


def derive_epoch_secrets(suite: CipherSuite, init_secret: bytes, commit_secret: bytes, psk_secret: bytes,
                         group_context: bytes) -> tuple[bytes, EpochSecrets]:
    """(joiner_secret, secrets) for the epoch whose GroupContext is ``group_context``.

    ``init_secret`` is the previous epoch's (or a fresh random one for a new
    group, or the ExternalInit secret); ``commit_secret`` and ``psk_secret``
    are all zeros of length Nh when the commit has no path or no PSKs.
    """
    joiner = joiner_secret(suite, init_secret, commit_secret, group_context)
    return joiner, epoch_secrets_from_joiner(suite, joiner, psk_secret, group_context)


def mls_exporter(suite: CipherSuite, exporter_secret: bytes, label: bytes | str, context: bytes,
                 length: int) -> bytes:
    """MLS-Exporter (section 8.5); note the Hash(context), which one PyPI library skips."""
    return suite.expand_with_label(suite.derive_secret(exporter_secret, label), "exported",
                                   suite.hash(context), length)


def external_key_pair(suite: CipherSuite, external_secret: bytes) -> tuple[bytes, bytes]:
    """(external_priv, external_pub) of section 8.3."""
    return suite.derive_key_pair(external_secret)


def external_init_secret(suite: CipherSuite, external_secret: bytes, kem_output: bytes) -> bytes:
    """The init_secret an external commit's ExternalInit carries (section 8.3)."""
    external_priv, _ = external_key_pair(suite, external_secret)
    return suite.hpke_export_receiver(external_priv, kem_output, b"", b"MLS 1.0 external init secret",
                                      suite.hash_len)


def confirmed_transcript_hash(suite: CipherSuite, interim_before: bytes, confirmed_input: bytes) -> bytes:
    """Hash(interim_transcript_hash_before || ConfirmedTranscriptHashInput) (section 8.2)."""
    return suite.hash(interim_before + confirmed_input)


def interim_transcript_hash(suite: CipherSuite, confirmed: bytes, confirmation_tag: bytes) -> bytes:
    """Hash(confirmed_transcript_hash || InterimTranscriptHashInput), the tag as ``opaque<V>``."""
    return suite.hash(confirmed + Writer().opaque(confirmation_tag).getvalue())


def confirmation_tag(suite: CipherSuite, confirmation_key: bytes, confirmed: bytes) -> bytes:
    """MAC(confirmation_key, confirmed_transcript_hash) (section 6.1): proves both sides share the epoch."""
    return suite.mac(confirmation_key, confirmed)


def verify_confirmation_tag(suite: CipherSuite, confirmation_key: bytes, confirmed: bytes, tag: bytes) -> None:
    """Raise ValidationError unless ``tag`` is the confirmation tag (compared in constant time)."""
    if not hmac.compare_digest(confirmation_tag(suite, confirmation_key, confirmed), tag):
        raise ValidationError("confirmation tag does not match the derived epoch")


def external_sender_key(external_senders: bytes, index: int) -> bytes:
    """The signature key of external sender ``index`` in an ``external_senders`` extension."""
    from ..credentials import Credential

    reader = Reader(external_senders)
    senders = reader.vector(lambda r: (r.opaque(), Credential.decode(r)))
    reader.finish()
    if index >= len(senders):
        raise ValidationError(f"no external sender {index}")
    return senders[index][0]
