"""Pre-shared keys (RFC 9420 section 8.4): identifiers and the psk_secret chain.

Besides RFC 9420's external and resumption PSKs, the ``application`` type of
draft-ietf-mls-extensions (section 4.5): a PSK that a component of the
application derives and names by (component id, psk_id); APQ-MLS injects the PQ
group's secret into the traditional group this way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Self

from ..codec import Reader, Struct, Writer, decode_enum
from ..crypto import CipherSuite
from ..errors import ValidationError


class PSKType(IntEnum):
    EXTERNAL = 1
    RESUMPTION = 2
    APPLICATION = 3  # draft-ietf-mls-extensions section 4.5


class ResumptionPSKUsage(IntEnum):
    APPLICATION = 1
    REINIT = 2
    BRANCH = 3


@dataclass(frozen=True)
class PreSharedKeyID(Struct):
    """Names a PSK (section 8.4).  Only the fields of ``psktype`` are encoded; build with the classmethods."""

    psktype: PSKType
    psk_id: bytes = b""  # external and application
    component_id: int = 0  # application
    usage: ResumptionPSKUsage = ResumptionPSKUsage.APPLICATION  # resumption
    psk_group_id: bytes = b""
    psk_epoch: int = 0
    psk_nonce: bytes = b""

    @classmethod
    def external(cls, psk_id: bytes, psk_nonce: bytes) -> PreSharedKeyID:
        return cls(PSKType.EXTERNAL, psk_id=psk_id, psk_nonce=psk_nonce)

    @classmethod
    def application(cls, component_id: int, psk_id: bytes, psk_nonce: bytes) -> PreSharedKeyID:
        """A PSK of the application's component ``component_id`` (draft-ietf-mls-extensions, section 4.5)."""
        return cls(PSKType.APPLICATION, psk_id=psk_id, component_id=component_id, psk_nonce=psk_nonce)

    @classmethod
    def resumption(cls, group_id: bytes, epoch: int, psk_nonce: bytes,
                   usage: ResumptionPSKUsage = ResumptionPSKUsage.APPLICATION) -> PreSharedKeyID:
        return cls(PSKType.RESUMPTION, usage=usage, psk_group_id=group_id, psk_epoch=epoch, psk_nonce=psk_nonce)

    def encode(self, w: Writer) -> None:
        w.u8(self.psktype)
        if self.psktype == PSKType.EXTERNAL:
            w.opaque(self.psk_id)
        elif self.psktype == PSKType.APPLICATION:
            w.u16(self.component_id).opaque(self.psk_id)
        else:
            w.u8(self.usage).opaque(self.psk_group_id).u64(self.psk_epoch)
        w.opaque(self.psk_nonce)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        psktype = decode_enum(PSKType, r.u8(), "PSK type")
        if psktype == PSKType.EXTERNAL:
            return cls(psktype, psk_id=r.opaque(), psk_nonce=r.opaque())
        if psktype == PSKType.APPLICATION:
            component_id = r.u16()
            return cls(psktype, component_id=component_id, psk_id=r.opaque(), psk_nonce=r.opaque())
        usage = decode_enum(ResumptionPSKUsage, r.u8(), "resumption PSK usage")
        return cls(psktype, usage=usage, psk_group_id=r.opaque(), psk_epoch=r.u64(), psk_nonce=r.opaque())


@dataclass(frozen=True)
class PSKLabel(Struct):
    """The context of one PSK's "derived psk" expansion: binds it to its place in the list."""

    id: PreSharedKeyID
    index: int
    count: int

    def encode(self, w: Writer) -> None:
        w.struct(self.id).u16(self.index).u16(self.count)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(PreSharedKeyID.decode(r), r.u16(), r.u16())


def compute_psk_secret(suite: CipherSuite, psks: Sequence[tuple[PreSharedKeyID, bytes]]) -> bytes:
    """The psk_secret that feeds the key schedule (section 8.4); all zeros with no PSKs.

    psk_extracted_[i] = Extract(0, psk_[i]);
    psk_input_[i] = ExpandWithLabel(psk_extracted_[i], "derived psk", PSKLabel, Nh);
    psk_secret_[i] = Extract(psk_input_[i], psk_secret_[i-1]), starting from zeros.
    Each psk_nonce must be Nh bytes long (section 8.4), checked here because
    both commit processing and joining go through this function.
    """
    zero = bytes(suite.hash_len)
    secret = zero
    count = len(psks)
    for index, (psk_id, psk) in enumerate(psks):
        if len(psk_id.psk_nonce) != suite.hash_len:
            raise ValidationError(f"psk_nonce of PSK {index} is {len(psk_id.psk_nonce)} bytes, "
                                  f"not {suite.hash_len}")
        label = PSKLabel(psk_id, index, count).to_bytes()
        input_secret = suite.expand_with_label(suite.kdf_extract(zero, psk), "derived psk", label, suite.hash_len)
        secret = suite.kdf_extract(input_secret, secret)
    return secret
