"""TLS presentation language as profiled by RFC 9420 section 2.1.

Vectors carry a QUIC-style variable-length integer prefix (1, 2 or 4 bytes,
RFC 9420 section 2.1.2); the 8-byte form is invalid.  Decoding is strict:
non-minimal varints, truncated data, lengths that overrun the buffer and
trailing bytes all raise :class:`~mlscore.errors.DecodeError`, never an
exception from deep inside the standard library.

Wire structs subclass :class:`Struct` and implement ``encode(writer)`` and
``decode(reader)``; ``to_bytes``/``from_bytes`` are the single entry points.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Self, TypeVar

from .errors import DecodeError, EncodeError

T = TypeVar("T")

MAX_VARINT = (1 << 30) - 1


class Writer:
    """Append-only encoder.  Every method returns ``self`` for chaining."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts = bytearray()

    def u8(self, value: int) -> Writer:
        self._parts += value.to_bytes(1, "big")
        return self

    def u16(self, value: int) -> Writer:
        self._parts += value.to_bytes(2, "big")
        return self

    def u32(self, value: int) -> Writer:
        self._parts += value.to_bytes(4, "big")
        return self

    def u64(self, value: int) -> Writer:
        self._parts += value.to_bytes(8, "big")
        return self

    def varint(self, value: int) -> Writer:
        self._parts += encode_varint(value)
        return self

    def raw(self, data: bytes) -> Writer:
        """Bytes written as they are (a fixed-size array or pre-encoded struct)."""
        self._parts += data
        return self

    def opaque(self, data: bytes) -> Writer:
        """``opaque data<V>``: varint length then the bytes."""
        self._parts += encode_varint(len(data))
        self._parts += data
        return self

    def vector(self, items: Iterable[T], encode_item: Callable[[Writer, T], object]) -> Writer:
        """``T items<V>``: the items encoded back to back behind a varint byte length."""
        inner = Writer()
        for item in items:
            encode_item(inner, item)
        return self.opaque(inner.getvalue())

    def structs(self, items: Iterable[Struct]) -> Writer:
        """A ``<V>`` vector of :class:`Struct` values."""
        return self.opaque(b"".join(item.to_bytes() for item in items))

    def struct(self, item: Struct) -> Writer:
        """A nested struct, from its cached encoding."""
        self._parts += item.to_bytes()
        return self

    def optional(self, value: T | None, encode_item: Callable[[Writer, T], object]) -> Writer:
        """``optional<T>``: a presence byte then the value."""
        if value is None:
            return self.u8(0)
        self.u8(1)
        encode_item(self, value)
        return self

    def getvalue(self) -> bytes:
        return bytes(self._parts)


_SMALL_VARINTS = [bytes([i]) for i in range(0x40)]


def encode_varint(value: int) -> bytes:
    if 0 <= value < 0x40:
        return _SMALL_VARINTS[value]
    if value < 0 or value > MAX_VARINT:
        raise EncodeError(f"varint out of range: {value}")
    if value < 0x40:
        return value.to_bytes(1, "big")
    if value < 0x4000:
        return (value | 0x4000).to_bytes(2, "big")
    return (value | 0x80000000).to_bytes(4, "big")


class Reader:
    """Strict decoder over a bytes buffer."""

    __slots__ = ("_data", "_end", "_pos")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self._data = data
        self._pos = pos
        self._end = len(data) if end is None else end

    @property
    def remaining(self) -> int:
        return self._end - self._pos

    @property
    def position(self) -> int:
        return self._pos

    def _take(self, n: int) -> bytes:
        if n < 0 or self._pos + n > self._end:
            raise DecodeError(f"truncated: need {n} bytes, have {self._end - self._pos}")
        start = self._pos
        self._pos += n
        return self._data[start : self._pos]

    def u8(self) -> int:
        return self._take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self._take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self._take(4), "big")

    def u64(self) -> int:
        return int.from_bytes(self._take(8), "big")

    def boolean(self) -> bool:
        value = self.u8()
        if value > 1:
            raise DecodeError(f"invalid boolean {value}")
        return value == 1

    def varint(self) -> int:
        first = self.u8()
        prefix = first >> 6
        if prefix == 3:
            raise DecodeError("invalid varint prefix 0b11")
        length = 1 << prefix
        value = first & 0x3F
        for byte in self._take(length - 1):
            value = (value << 8) | byte
        if length > 1 and value < (1 << (8 * (length // 2) - 2)):
            raise DecodeError("non-minimal varint encoding")
        return value

    def fixed(self, n: int) -> bytes:
        return bytes(self._take(n))

    def opaque(self) -> bytes:
        return bytes(self._take(self.varint()))

    def sub(self) -> Reader:
        """A reader over the next ``<V>`` vector's contents, consumed from this one."""
        length = self.varint()
        start = self._pos
        self._take(length)
        return Reader(self._data, start, start + length)

    def vector(self, decode_item: Callable[[Reader], T], max_items: int | None = None) -> list[T]:
        """The items of a ``<V>`` vector; more than ``max_items`` is a DecodeError, raised before decoding more."""
        inner = self.sub()
        items: list[T] = []
        while inner.remaining:
            if max_items is not None and len(items) >= max_items:
                raise DecodeError(f"more than {max_items} items in a vector")
            items.append(decode_item(inner))
        return items

    def structs(self, cls: type[S], max_items: int | None = None) -> list[S]:
        return self.vector(cls.decode, max_items)

    def optional(self, decode_item: Callable[[Reader], T]) -> T | None:
        present = self.u8()
        if present == 0:
            return None
        if present != 1:
            raise DecodeError(f"invalid optional presence byte {present}")
        return decode_item(self)

    def finish(self) -> None:
        if self._pos != self._end:
            raise DecodeError(f"{self._end - self._pos} trailing bytes")


class Struct:
    """Base of every wire struct: one encode path and one decode path.

    A decoded struct keeps the bytes it was decoded from as its encoding:
    decoding is strict (minimal varints, no trailing bytes, known values), so
    re-encoding would give the same bytes, and signatures, hashes and
    transcripts over received structs need not encode them again.
    """

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        decode = cls.__dict__.get("decode")
        if isinstance(decode, classmethod):
            cls.decode = classmethod(_keeping_encoding(decode.__func__))  # type: ignore[method-assign,assignment]

    def encode(self, writer: Writer) -> None:
        raise NotImplementedError

    @classmethod
    def decode(cls, reader: Reader) -> Self:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """The encoding, computed once: wire structs are frozen, so it cannot go stale."""
        cached = self.__dict__.get("_encoded")
        if cached is None:
            writer = Writer()
            self.encode(writer)
            cached = writer.getvalue()
            self.__dict__["_encoded"] = cached
        return cached

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode exactly one value; trailing bytes are an error."""
        reader = Reader(bytes(data))
        try:
            value = cls.decode(reader)
        except (ValueError, OverflowError) as exc:  # enum lookups, bad values
            raise DecodeError(f"invalid {cls.__name__}: {exc}") from exc
        reader.finish()
        return value


S = TypeVar("S", bound=Struct)


def _keeping_encoding(decode: Callable[[type[S], Reader], S]) -> Callable[[type[S], Reader], S]:
    @functools.wraps(decode)
    def decode_keeping_encoding(cls: type[S], reader: Reader) -> S:
        start = reader._pos
        value = decode(cls, reader)
        value.__dict__["_encoded"] = reader._data[start:reader._pos]
        return value
    return decode_keeping_encoding


def decode_enum(enum_cls: Callable[[int], T], value: int, what: str) -> T:
    """Map an integer to an enum member, turning an unknown value into DecodeError."""
    try:
        return enum_cls(value)
    except ValueError:
        raise DecodeError(f"unknown {what} {value}") from None
