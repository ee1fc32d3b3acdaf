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

**APQ-MLS** (docs/pq.md, "APQ in the profile") rides on the same list: a client
that offers it puts, in place of the KeyPackage of its first suite, one
APQMessagePair of KeyPackages (that suite's, and one of its PQ suite)::

    ClientHello body = MLSMessage(APQMessagePair(T KeyPackage, PQ KeyPackage)) || MLSMessage(KeyPackage) || ...

and every KeyPackage it sends lists, signed, the PQ suite in its capabilities
and the APQ component (0x0006) in its leaf's app_data_dictionary.  A server
that does APQ with that PQ suite and finds that mark on the KeyPackage it would
choose, but no pair, refuses: someone removed the pair (or replaced it with its
T half).  A server that does not do APQ answers the T KeyPackage alone, which
a client that requires APQ refuses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mlscore import safe_app
from mlscore.apq import APQ_COMPONENT, APQMessagePair, is_message_pair
from mlscore.codec import Reader
from mlscore.crypto import get_suite
from mlscore.errors import DecodeError, UnsupportedError, ValidationError
from mlscore.framing import MLSMessage, WireFormat
from mlscore.messages import KeyPackage

MAX_OFFERED_SUITES = 8
"""KeyPackages a ClientHello may carry; more is refused before the rest is parsed."""


class DowngradeError(ValidationError):
    """The ClientHello lacks the KeyPackage of a suite the client's signed capabilities offer (and we prefer)."""


@dataclass(frozen=True)
class ClientOffer:
    """What a ClientHello offers: one KeyPackage per suite (most preferred first; an APQ pair's T half among
    them, in the pair's place), and the APQ pair as (T KeyPackage, PQ KeyPackage) if there is one."""

    key_packages: list[KeyPackage]
    apq: tuple[KeyPackage, KeyPackage] | None = None


def client_hello(key_packages: Sequence[KeyPackage], apq_pq: KeyPackage | None = None) -> bytes:
    """The ClientHello body: the KeyPackages, in the client's order of preference; with ``apq_pq`` the first
    one goes as an APQ pair with it."""
    messages = [MLSMessage(key_package).to_bytes() for key_package in key_packages]
    if apq_pq is not None:
        messages[0] = APQMessagePair(WireFormat.KEY_PACKAGE, MLSMessage(key_packages[0]),
                                     MLSMessage(apq_pq)).to_message_bytes()
    return b"".join(messages)


def parse_client_hello(body: bytes) -> ClientOffer:
    """The offer of a ClientHello body: at most MAX_OFFERED_SUITES KeyPackages, one per suite, at most one pair."""
    data = bytes(body)
    reader = Reader(data)
    offered: list[KeyPackage] = []
    apq: tuple[KeyPackage, KeyPackage] | None = None
    while reader.remaining:
        if len(offered) == MAX_OFFERED_SUITES:
            raise DecodeError(f"a ClientHello offers at most {MAX_OFFERED_SUITES} KeyPackages")
        try:
            if is_message_pair(data, reader.position):
                if apq is not None:
                    raise ValidationError("a ClientHello offers at most one APQ pair")
                pair = APQMessagePair.read_message(reader)
                if pair.wire_format != WireFormat.KEY_PACKAGE:
                    raise ValidationError(f"a ClientHello's APQ pair carries KeyPackages, not {pair.wire_format.name}")
                assert isinstance(pair.t_message.body, KeyPackage) and isinstance(pair.pq_message.body, KeyPackage)
                apq = (pair.t_message.body, pair.pq_message.body)
                offered.append(apq[0])
                continue
            message = MLSMessage.decode(reader)
        except (ValueError, OverflowError) as exc:
            raise DecodeError(f"invalid ClientHello: {exc}") from exc
        if not isinstance(message.body, KeyPackage):
            raise ValidationError(f"a ClientHello carries KeyPackages, not {message.wire_format.name}")
        offered.append(message.body)
    if not offered:
        raise DecodeError("an empty ClientHello")
    suites = [key_package.cipher_suite for key_package in offered]
    if apq is not None:
        suites.append(apq[1].cipher_suite)
    if len(set(suites)) != len(suites):
        raise ValidationError(f"the ClientHello offers a suite twice: {suites}")
    return ClientOffer(offered, apq)


def offered_key_packages(body: bytes) -> list[KeyPackage]:
    """The KeyPackages of a ClientHello body, one per suite (an APQ pair's T half among them)."""
    return parse_client_hello(body).key_packages


def offers_apq(key_package: KeyPackage, pq_suite: int, preference: Sequence[int] = ()) -> bool:
    """The signed mark of a client that offered APQ with ``pq_suite``: its capabilities list that suite and
    its leaf's app_data_dictionary the APQ component.  With ``preference``, only if the pair's classical suite
    (the first the capabilities list: the client's first) is one of those, so that the pair could be used."""
    leaf = key_package.leaf_node
    suites = leaf.capabilities.cipher_suites
    return (pq_suite in suites and APQ_COMPONENT in safe_app.listed_components(leaf.extensions)
            and (not preference or (bool(suites) and suites[0] in preference)))


def choose_apq(offer: ClientOffer, preference: Sequence[int], pq_suite: int,
               required: bool) -> tuple[KeyPackage, KeyPackage | None]:
    """A server that does APQ with ``pq_suite``: (T KeyPackage, PQ KeyPackage) of the client's pair when its
    suites are ours (APQ comes before the order of the classical suites: either way the keys are PQ-secure),
    else :func:`choose`'s KeyPackage and None, after the APQ downgrade check; ``required`` refuses that.

    The downgrade check reads the chosen KeyPackage's signed mark whatever else arrived: a pair whose PQ half
    was replaced (by one of another suite, say) is no pair, and the mark still names our PQ suite."""
    if offer.apq is not None and offer.apq[1].cipher_suite == pq_suite and offer.apq[0].cipher_suite in preference:
        check_pair(*offer.apq)
        return offer.apq
    chosen = choose(offer.key_packages, preference)
    if offers_apq(chosen, pq_suite, preference):
        raise DowngradeError(f"the client's signed leaf offers APQ with suite {pq_suite}, which we do too, but its "
                             "ClientHello carries no usable APQ pair: a downgrade, refused")
    if required:
        raise UnsupportedError(f"the client does not offer APQ with PQ suite {pq_suite}, which we require")
    return chosen, None


def check_pair(t: KeyPackage, pq: KeyPackage) -> None:
    """The two halves of an APQ offer belong together: both carry the signed mark naming the PQ half's suite,
    the same credential, and (the PQ suite signing like the T suite: mode 0) the same signature key.  Each
    half's signature is verified when the group adds it."""
    for half, key_package in (("T", t), ("PQ", pq)):
        if not offers_apq(key_package, pq.cipher_suite):
            raise DowngradeError(f"the {half} half of the APQ pair does not carry the signed APQ mark for suite "
                                 f"{pq.cipher_suite}")
    if t.leaf_node.credential != pq.leaf_node.credential:
        raise ValidationError("the two halves of the APQ pair name different credentials")
    if (get_suite(t.cipher_suite).signature_scheme == get_suite(pq.cipher_suite).signature_scheme
            and t.leaf_node.signature_key != pq.leaf_node.signature_key):
        raise ValidationError("the two halves of the APQ pair are signed by different keys")


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
