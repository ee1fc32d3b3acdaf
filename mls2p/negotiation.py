"""Cipher suite negotiation in phase 1, safe against downgrade (docs/profile.md, "Suite negotiation").

The draft's ClientHello carries one KeyPackage, so one suite.  A client that
supports several (say X-Wing 0x004D, then suite 1) sends one KeyPackage per
suite, in its order of preference, concatenated::

    ClientHello body = MLSMessage(KeyPackage) || MLSMessage(KeyPackage) || ...

With one suite this is byte for byte the draft's ClientHello.  Every
KeyPackage's leaf node lists *all* the offered suites in its capabilities,
under the client's signature.  The server picks the first of its own
preferred suites that a KeyPackage offers, and then checks that choice
against the signed list: if the signed list names a suite the server prefers
but no KeyPackage for it arrived, someone removed it on the way, and the
server refuses.  An active attacker can therefore not make two peers that
both support X-Wing settle on a classical suite: removing KeyPackages is
detected, and changing the signed list breaks the KeyPackage's signature,
which the server verifies before it answers.
"""

from __future__ import annotations

from collections.abc import Sequence

from mlscore.codec import Reader
from mlscore.errors import DecodeError, UnsupportedError, ValidationError
from mlscore.framing import MLSMessage
from mlscore.messages import KeyPackage

MAX_OFFERED_SUITES = 8
"""KeyPackages a ClientHello may carry; more is refused before the rest is parsed."""


class DowngradeError(ValidationError):
    """The ClientHello lacks the KeyPackage of a suite the client's signed capabilities offer (and we prefer)."""


def client_hello(key_packages: Sequence[KeyPackage]) -> bytes:
    """The ClientHello body: the KeyPackages, in the client's order of preference."""
    return b"".join(MLSMessage(key_package).to_bytes() for key_package in key_packages)


def offered_key_packages(body: bytes) -> list[KeyPackage]:
    """The KeyPackages of a ClientHello body, at most MAX_OFFERED_SUITES, one per suite."""
    reader = Reader(bytes(body))
    offered: list[KeyPackage] = []
    while reader.remaining:
        if len(offered) == MAX_OFFERED_SUITES:
            raise DecodeError(f"a ClientHello offers at most {MAX_OFFERED_SUITES} KeyPackages")
        try:
            message = MLSMessage.decode(reader)
        except (ValueError, OverflowError) as exc:
            raise DecodeError(f"invalid ClientHello: {exc}") from exc
        if not isinstance(message.body, KeyPackage):
            raise ValidationError(f"a ClientHello carries KeyPackages, not {message.wire_format.name}")
        offered.append(message.body)
    if not offered:
        raise DecodeError("an empty ClientHello")
    suites = [key_package.cipher_suite for key_package in offered]
    if len(set(suites)) != len(suites):
        raise ValidationError(f"the ClientHello offers a suite twice: {suites}")
    return offered


def choose(offered: Sequence[KeyPackage], preference: Sequence[int]) -> KeyPackage:
    """The KeyPackage of our most preferred offered suite, after the downgrade check.

    The check reads the chosen KeyPackage's signed capabilities; its signature
    is verified when the group adds it, before anything is sent back.
    """
    by_suite = {key_package.cipher_suite: key_package for key_package in offered}
    chosen = next((by_suite[suite] for suite in preference if suite in by_suite), None)
    if chosen is None:
        raise UnsupportedError(f"no common cipher suite: the client offers {sorted(by_suite)}, "
                               f"we accept {list(preference)}")
    signed = chosen.leaf_node.capabilities.cipher_suites
    best = next(suite for suite in preference if suite in signed or suite == chosen.cipher_suite)
    if best != chosen.cipher_suite:
        raise DowngradeError(f"the client's signed capabilities offer suite {best}, which we prefer to "
                             f"{chosen.cipher_suite}, but its ClientHello carries no KeyPackage for it: "
                             "a downgrade, refused")
    return chosen
