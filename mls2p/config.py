"""What a two-party session needs that is not protocol state: who we are, whom we trust, which suite."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

from mlscore.apq import APQInfo, APQMode, check_suites
from mlscore.credentials import AuthenticationService, Credential, CredentialType
from mlscore.crypto import SUPPORTED_SUITES, SigningKey, get_suite
from mlscore.errors import ConfigurationError, MLSError
from mlscore.extensions import Extension
from mlscore.framing import WireFormat
from mlscore.group import GroupConfig
from mlscore.key_package import NO_EXPIRY
from mlscore.leaf_node import Lifetime

from .policy import RekeyPolicy
from .trust import AcceptAnyPeer

TWO_PARTY_PROFILE_COMPONENT = 0x8001
"""Private-use component id (0x8000-0xFFFF) standing in for the draft's TBD1; configurable."""


class Role(Enum):
    """Initiator sends the first message of a phase; roles are reassigned at each resumption."""

    INITIATOR = "initiator"
    RESPONDER = "responder"

    @property
    def other(self) -> Role:
        return Role.RESPONDER if self is Role.INITIATOR else Role.INITIATOR


TWO_PARTY_MAX_LEAVES = 2


@dataclass(frozen=True)
class ProfileConfig:
    """Everything a session needs that is not protocol state.  Checked when built.

    ``authentication_service`` decides which peers are accepted, by key:
    :class:`~mlscore.credentials.PinnedKeys` (see :mod:`mls2p.trust`) or
    :class:`~mlscore.credentials.X509AuthenticationService`.  There is no
    default: a configuration without one is refused, unless it says
    ``insecure_accept_any_peer=True``, which accepts everyone and logs a
    warning for every peer.
    """

    credential: Credential
    signature_priv: bytes = field(repr=False)
    cipher_suite: int = 1
    authentication_service: AuthenticationService | None = None
    insecure_accept_any_peer: bool = False
    component_id: int = TWO_PARTY_PROFILE_COMPONENT
    handshake_wire_format: WireFormat = WireFormat.PRIVATE_MESSAGE
    accepted_suites: tuple[int, ...] = ()
    """Suites in our order of preference (empty: just ``cipher_suite``).  A client offers them all in its
    ClientHello; a server picks the first that the client offers (mls2p.negotiation).  They must share
    ``cipher_suite``'s signature scheme: one signature key signs for all of them."""
    lifetime: Lifetime = NO_EXPIRY
    rekey: RekeyPolicy = field(default_factory=RekeyPolicy)
    leaf_extensions: tuple[Extension, ...] = ()
    wall_clock: Callable[[], float] = field(default=time.time, repr=False)
    """Seconds since the Unix epoch, for KeyPackage lifetimes and certificate validity.  The session
    never calls it; the bootstrap does and passes the time in.  Tests inject a fixed clock."""
    apq: Literal["off", "prefer", "require"] = "off"
    """APQ-MLS (docs/pq.md, "APQ in the profile"): a post-quantum group beside the classical one, whose FULL
    commits keep the classical keys PQ-secure.  ``"prefer"``: a client offers it and takes a classical answer;
    a server uses it when offered.  ``"require"``: a client refuses a classical answer and a server refuses a
    client that does not offer it.  The classical suite is ``cipher_suite`` (a DHKEM suite)."""
    apq_suite: int = 0x0051
    """The PQ group's suite: a pure ML-KEM suite.  One that signs with ML-DSA makes the pair PQ-authenticated too
    (the combiner's mode 1) and needs ``apq_signature_priv``; otherwise it must sign like ``cipher_suite``, with
    the same key (mode 0)."""
    group_id_prefix: bytes = b""
    """A group this side creates gets ``group_id = prefix || 16 random bytes`` (with APQ, the T group: the
    session's group), and a Welcome to a group whose id lacks the prefix is refused
    (draft-housley-tls-using-mls-handshake: the group_id "MUST contain 'tls13'"; mlstls.housley sets it).
    Empty: any id."""
    apq_signature_priv: bytes | None = field(default=None, repr=False)
    """The ML-DSA private key (its 32-byte seed) of a mode-1 ``apq_suite``; the peer must trust its public key
    too (one trust decision covers both groups' leaves)."""

    def __post_init__(self) -> None:
        self._check_types()
        for suite_id in (self.cipher_suite, *self.accepted_suites):
            if suite_id not in SUPPORTED_SUITES:
                raise ConfigurationError(f"cipher suite {suite_id} is not supported (choose from "
                                         f"{', '.join(map(str, SUPPORTED_SUITES))})")
        try:
            # parsed once here, for every KeyPackage and group this configuration will sign for
            object.__setattr__(self, "_signer", get_suite(self.cipher_suite).signing_key(self.signature_priv))
        except MLSError:
            raise ConfigurationError(f"signature_priv is not a private key of cipher suite "
                                     f"{self.cipher_suite}") from None
        scheme = get_suite(self.cipher_suite).signature_scheme
        for suite_id in self.accepted_suites:
            if get_suite(suite_id).signature_scheme != scheme:
                raise ConfigurationError(f"cipher suite {suite_id} signs with another scheme than suite "
                                         f"{self.cipher_suite} ({scheme}): suites offered together must share one")
        if len(set(self.accepted_suites)) != len(self.accepted_suites):
            raise ConfigurationError(f"accepted_suites names a suite twice: {self.accepted_suites}")
        if not 0 <= self.component_id <= 0xFFFF:
            raise ConfigurationError(f"component_id {self.component_id} is not a 16-bit value")
        if self.handshake_wire_format not in (WireFormat.PUBLIC_MESSAGE, WireFormat.PRIVATE_MESSAGE):
            raise ConfigurationError("handshake_wire_format must be PUBLIC_MESSAGE or PRIVATE_MESSAGE")
        if not isinstance(self.group_id_prefix, bytes) or len(self.group_id_prefix) > 32:
            raise ConfigurationError("group_id_prefix must be bytes, at most 32 of them")
        if self.authentication_service is None and not self.insecure_accept_any_peer:
            raise ConfigurationError(
                "no authentication_service: say whom to trust, by key (mls2p.trust.load_trust_store, "
                "mlscore.credentials.PinnedKeys or X509AuthenticationService), or set "
                "insecure_accept_any_peer=True to accept anyone (never in production)")
        if self.authentication_service is not None and self.insecure_accept_any_peer:
            raise ConfigurationError("insecure_accept_any_peer=True contradicts the authentication_service given")
        self._check_apq()

    def _check_apq(self) -> None:
        if self.apq not in ("off", "prefer", "require"):
            raise ConfigurationError(f"apq must be 'off', 'prefer' or 'require', not {self.apq!r}")
        if self.apq == "off":
            return
        if self.apq_suite not in SUPPORTED_SUITES or self.apq_suite in self.suite_preference:
            raise ConfigurationError(f"apq_suite {self.apq_suite} must be a supported suite that is not also offered "
                                     "as a classical one")
        try:
            check_suites(APQInfo(b"", b"", self.apq_mode, self.cipher_suite, self.apq_suite, 0, 0))
        except MLSError as exc:
            raise ConfigurationError(f"APQ cannot pair suites {self.cipher_suite} and {self.apq_suite}: "
                                     f"{exc}") from None
        pq_scheme = get_suite(self.apq_suite).signature_scheme
        if self.apq_mode == APQMode.CONFIDENTIALITY:
            if pq_scheme != get_suite(self.cipher_suite).signature_scheme:
                raise ConfigurationError(f"apq_suite {self.apq_suite} signs with {pq_scheme}: it needs "
                                         "apq_signature_priv (mode 1 signs with ML-DSA)")
            return
        if self.credential.credential_type != CredentialType.BASIC:
            raise ConfigurationError("APQ with an ML-DSA suite (mode 1) needs a basic credential: the same "
                                     "credential is in both groups, and no X.509 chain here certifies an ML-DSA key")
        if not isinstance(self.apq_signature_priv, bytes | bytearray):
            raise ConfigurationError(f"apq_suite {self.apq_suite} signs with {pq_scheme} (mode 1): set "
                                     "apq_signature_priv to its private key")
        try:
            object.__setattr__(self, "_apq_signer", get_suite(self.apq_suite).signing_key(self.apq_signature_priv))
        except MLSError:
            raise ConfigurationError(f"apq_signature_priv is not a private key of suite {self.apq_suite}") from None

    @property
    def apq_mode(self) -> APQMode:
        """Mode 1 (PQ/T confidentiality and authenticity) when the PQ suite signs with ML-DSA, else mode 0."""
        scheme = get_suite(self.apq_suite).signature_scheme
        return APQMode.CONFIDENTIALITY_AND_AUTHENTICITY if scheme.startswith("mldsa") else APQMode.CONFIDENTIALITY

    def _check_types(self) -> None:
        """Wrong types fail here, naming the field, not deep inside a handshake as an internal error."""
        if not isinstance(self.credential, Credential):
            raise ConfigurationError(f"credential must be a Credential (Credential.basic(b\"name\") or "
                                     f"Credential.x509(chain)), not {type(self.credential).__name__}")
        if not isinstance(self.signature_priv, bytes | bytearray):
            raise ConfigurationError(f"signature_priv must be bytes (mls2p.identity.load_or_create_key), not "
                                     f"{type(self.signature_priv).__name__}")
        if isinstance(self.accepted_suites, list):
            object.__setattr__(self, "accepted_suites", tuple(self.accepted_suites))
        if not isinstance(self.accepted_suites, tuple):
            raise ConfigurationError(f"accepted_suites must be a tuple of suite numbers, not "
                                     f"{type(self.accepted_suites).__name__}")
        suites = [("cipher_suite", self.cipher_suite)] + [("accepted_suites", v) for v in self.accepted_suites]
        for name, value in suites:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigurationError(f"{name} must be a suite number (an int), not {value!r}")
        if not isinstance(self.insecure_accept_any_peer, bool):
            raise ConfigurationError(f"insecure_accept_any_peer must be True or False, not "
                                     f"{self.insecure_accept_any_peer!r}")
        if not isinstance(self.rekey, RekeyPolicy):
            raise ConfigurationError(f"rekey must be a RekeyPolicy, not {type(self.rekey).__name__}")

    @property
    def suite_preference(self) -> tuple[int, ...]:
        """The suites we offer (client) or accept (server), most preferred first."""
        return self.accepted_suites or (self.cipher_suite,)

    @property
    def signature_public_key(self) -> bytes:
        return self.signing_key(self.cipher_suite).public_bytes()

    def signing_key(self, suite_id: int) -> SigningKey:
        """``signature_priv`` parsed for ``suite_id`` (for the configured suite, parsed once)."""
        if suite_id == self.apq_suite and "_apq_signer" in self.__dict__:
            apq_signer: SigningKey = self.__dict__["_apq_signer"]
            return apq_signer
        signer: SigningKey = self.__dict__["_signer"]
        return signer if suite_id == self.cipher_suite else get_suite(suite_id).signing_key(self.signature_priv)

    @property
    def peer_authentication(self) -> AuthenticationService:
        """The service that decides about the peer (AcceptAnyPeer, loudly, when insecure)."""
        return self.authentication_service if self.authentication_service is not None else AcceptAnyPeer()

    def group_config(self, now: int | None) -> GroupConfig:
        # resumption_psk_history=0: profile commits never carry PSK proposals (the draft's
        # ConnectionUpdate has an empty proposals vector), so a resumption PSK could never be
        # used; keeping none keeps them out of memory and out of every stored session file.
        return GroupConfig(authentication_service=self.peer_authentication,
                           handshake_wire_format=self.handshake_wire_format, now=now,
                           max_leaves=TWO_PARTY_MAX_LEAVES, resumption_psk_history=0)


def suite_preference(value: int | list[int] | tuple[int, ...] | None, default: int = 1) -> tuple[int, ...]:
    """A command line's ``--suite`` (given once, several times, or in a config file) as a preference list."""
    if value is None:
        return (default,)
    return (value,) if isinstance(value, int) else tuple(value)
