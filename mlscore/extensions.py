"""Extensions (RFC 9420 section 13.4) and the extension types this core knows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Self, cast

from .codec import Reader, S, Struct, Writer
from .errors import ValidationError


class ExtensionType(IntEnum):
    APPLICATION_ID = 0x0001
    RATCHET_TREE = 0x0002
    REQUIRED_CAPABILITIES = 0x0003
    EXTERNAL_PUB = 0x0004
    EXTERNAL_SENDERS = 0x0005
    # draft-ietf-mls-extensions (suggested value; configurable where used).
    APP_DATA_DICTIONARY = 0x0006


DEFAULT_EXTENSION_TYPES = frozenset(
    {
        ExtensionType.APPLICATION_ID,
        ExtensionType.RATCHET_TREE,
        ExtensionType.REQUIRED_CAPABILITIES,
        ExtensionType.EXTERNAL_PUB,
        ExtensionType.EXTERNAL_SENDERS,
    }
)
"""RFC 9420 section 7.2: default extensions need not be listed in Capabilities."""

MAX_EXTENSIONS = 256
"""Most extensions a list may hold (RFC 9420 sets none; real lists have a handful).  Checked while
decoding, so a hostile list costs at most this much work."""
MAX_CAPABILITY_ENTRIES = 512
"""Most entries in one capabilities or required-capabilities list."""


@dataclass(frozen=True)
class Extension(Struct):
    extension_type: int
    extension_data: bytes

    def encode(self, w: Writer) -> None:
        w.u16(self.extension_type).opaque(self.extension_data)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.u16(), r.opaque())

    def decoded(self, cls: type[S]) -> S:
        """The data decoded as ``cls``, decoded once: a group checks its context's extensions every epoch."""
        cache: dict[type, Struct] = self.__dict__.setdefault("_decoded", {})
        value = cache.get(cls)
        if value is None:
            value = cache[cls] = cls.from_bytes(self.extension_data)
        return cast(S, value)


def get_extension(extensions: Sequence[Extension], extension_type: int) -> Extension | None:
    """The extension of that type, or None."""
    for extension in extensions:
        if extension.extension_type == extension_type:
            return extension
    return None


def find_extension(extensions: Sequence[Extension], extension_type: int) -> bytes | None:
    """The data of the extension of that type, or None."""
    extension = get_extension(extensions, extension_type)
    return extension.extension_data if extension is not None else None


def check_unique(extensions: Sequence[Extension], where: str) -> None:
    """RFC 9420 section 13.4: an extension type appears at most once in a list."""
    seen: set[int] = set()
    for extension in extensions:
        if extension.extension_type in seen:
            raise ValidationError(f"duplicate extension {extension.extension_type:#06x} in {where}")
        seen.add(extension.extension_type)


@dataclass(frozen=True)
class RequiredCapabilities(Struct):
    extension_types: tuple[int, ...] = ()
    proposal_types: tuple[int, ...] = ()
    credential_types: tuple[int, ...] = ()

    def encode(self, w: Writer) -> None:
        w.vector(self.extension_types, Writer.u16)
        w.vector(self.proposal_types, Writer.u16)
        w.vector(self.credential_types, Writer.u16)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(*(tuple(r.vector(Reader.u16, MAX_CAPABILITY_ENTRIES)) for _ in range(3)))


@dataclass(frozen=True)
class ExternalPub(Struct):
    external_pub: bytes

    def encode(self, w: Writer) -> None:
        w.opaque(self.external_pub)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.opaque())


def decode_extensions(r: Reader) -> tuple[Extension, ...]:
    """An ``Extension extensions<V>`` list, at most :data:`MAX_EXTENSIONS` long."""
    return tuple(r.structs(Extension, MAX_EXTENSIONS))
