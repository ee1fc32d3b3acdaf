"""Pre-shared keys (RFC 9420 section 8.4): identifiers and the psk_secret chain."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Self

from .codec import Reader, Struct, Writer, decode_enum
from .crypto import CipherSuite


class PSKType(IntEnum):
    EXTERNAL = 1
    RESUMPTION = 2


class ResumptionPSKUsage(IntEnum):
    APPLICATION = 1
    REINIT = 2
    BRANCH = 3


@dataclass(frozen=True)
class PreSharedKeyID(Struct):
    psktype: PSKType
    psk_id: bytes = b""  # external
    usage: ResumptionPSKUsage = ResumptionPSKUsage.APPLICATION  # resumption
    psk_group_id: bytes = b""
    psk_epoch: int = 0
    psk_nonce: bytes = b""

    @classmethod
    def external(cls, psk_id: bytes, psk_nonce: bytes) -> PreSharedKeyID:
        return cls(PSKType.EXTERNAL, psk_id=psk_id, psk_nonce=psk_nonce)

    @classmethod
    def resumption(cls, group_id: bytes, epoch: int, psk_nonce: bytes,
                   usage: ResumptionPSKUsage = ResumptionPSKUsage.APPLICATION) -> PreSharedKeyID:
        return cls(PSKType.RESUMPTION, usage=usage, psk_group_id=group_id, psk_epoch=epoch, psk_nonce=psk_nonce)

    def encode(self, w: Writer) -> None:
        w.u8(self.psktype)
        if self.psktype == PSKType.EXTERNAL:
            w.opaque(self.psk_id)
        else:
            w.u8(self.usage).opaque(self.psk_group_id).u64(self.psk_epoch)
        w.opaque(self.psk_nonce)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        psktype = decode_enum(PSKType, r.u8(), "PSK type")
        if psktype == PSKType.EXTERNAL:
            return cls(psktype, psk_id=r.opaque(), psk_nonce=r.opaque())
        usage = decode_enum(ResumptionPSKUsage, r.u8(), "resumption PSK usage")
        return cls(psktype, usage=usage, psk_group_id=r.opaque(), psk_epoch=r.u64(), psk_nonce=r.opaque())


def compute_psk_secret(suite: CipherSuite, psks: Sequence[tuple[PreSharedKeyID, bytes]]) -> bytes:
    """The psk_secret that feeds the key schedule; all zeros with no PSKs."""
    zero = bytes(suite.hash_len)
    secret = zero
    count = len(psks)
    for index, (psk_id, psk) in enumerate(psks):
        label = Writer()
        psk_id.encode(label)
        label.u16(index).u16(count)
        extracted = suite.kdf_extract(zero, psk)
        input_secret = suite.expand_with_label(extracted, "derived psk", label.getvalue(), suite.hash_len)
        secret = suite.kdf_extract(input_secret, secret)
    return secret
