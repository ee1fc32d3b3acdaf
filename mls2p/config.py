"""What a two-party session needs that is not protocol state: who we are, whom we trust, which suite."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from mlscore.credentials import AuthenticationService, BasicCredentialPolicy, Credential
from mlscore.crypto import SUPPORTED_SUITES, get_suite
from mlscore.errors import ConfigurationError, MLSError
from mlscore.extensions import Extension
from mlscore.framing import WireFormat
from mlscore.group import GroupConfig
from mlscore.key_package import NO_EXPIRY
from mlscore.leaf_node import Lifetime

from .policy import RekeyPolicy

TWO_PARTY_PROFILE_COMPONENT = 0x8001
"""Private-use component id (0x8000-0xFFFF) standing in for the draft's TBD1; configurable."""


class Role(Enum):
    """Initiator sends the first message of a phase; roles are reassigned at each resumption."""

    INITIATOR = "initiator"
    RESPONDER = "responder"

    @property
    def other(self) -> Role:
        return Role.RESPONDER if self is Role.INITIATOR else Role.INITIATOR


@dataclass(frozen=True)
class ProfileConfig:
    """Everything a session needs that is not protocol state.  Checked when built."""

    credential: Credential
    signature_priv: bytes = field(repr=False)
    cipher_suite: int = 1
    authentication_service: AuthenticationService = field(default_factory=BasicCredentialPolicy)
    component_id: int = TWO_PARTY_PROFILE_COMPONENT
    handshake_wire_format: WireFormat = WireFormat.PRIVATE_MESSAGE
    accepted_suites: tuple[int, ...] = ()
    lifetime: Lifetime = NO_EXPIRY
    rekey: RekeyPolicy = field(default_factory=RekeyPolicy)
    leaf_extensions: tuple[Extension, ...] = ()

    def __post_init__(self) -> None:
        for suite_id in (self.cipher_suite, *self.accepted_suites):
            if suite_id not in SUPPORTED_SUITES:
                raise ConfigurationError(f"cipher suite {suite_id} is not supported (choose from "
                                         f"{', '.join(map(str, SUPPORTED_SUITES))})")
        try:
            get_suite(self.cipher_suite).signature_public_key(self.signature_priv)
        except MLSError:
            raise ConfigurationError(f"signature_priv is not a private key of cipher suite "
                                     f"{self.cipher_suite}") from None
        if not 0 <= self.component_id <= 0xFFFF:
            raise ConfigurationError(f"component_id {self.component_id} is not a 16-bit value")
        if self.handshake_wire_format not in (WireFormat.PUBLIC_MESSAGE, WireFormat.PRIVATE_MESSAGE):
            raise ConfigurationError("handshake_wire_format must be PUBLIC_MESSAGE or PRIVATE_MESSAGE")

    @property
    def signature_public_key(self) -> bytes:
        return get_suite(self.cipher_suite).signature_public_key(self.signature_priv)

    def group_config(self, now: int | None) -> GroupConfig:
        return GroupConfig(authentication_service=self.authentication_service,
                           handshake_wire_format=self.handshake_wire_format, now=now)
