"""Settings of one mlstls endpoint, in the style of aioquic's QuicConfiguration."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mls2p.config import ProfileConfig
from mls2p.store import SessionStore

from .errors import ConfigurationError


@dataclass(frozen=True)
class TlsSettings:
    """The outer TLS 1.3 layer of alongside mode: files as for ``ssl.SSLContext``.

    Clients verify the server against ``cafile`` and ``server_hostname``;
    servers present ``certfile``/``keyfile``.
    """

    cafile: str | os.PathLike[str] | None = None
    certfile: str | os.PathLike[str] | None = None
    keyfile: str | os.PathLike[str] | None = None
    server_hostname: str | None = None
    verify: bool = True
    keylog: Callable[[bytes], None] | None = field(default=None, repr=False)
    """Receives NSS key log lines (like SSLKEYLOGFILE) for debugging and the PCS experiments."""

    def __post_init__(self) -> None:
        for name in ("cafile", "certfile", "keyfile"):
            _check_type(self, name, str | os.PathLike, "a file name (str or os.PathLike)", optional=True)
        _check_type(self, "server_hostname", str, "a str", optional=True)
        _check_type(self, "verify", bool, "a bool")
        if self.keylog is not None and not callable(self.keylog):
            raise ConfigurationError("TlsSettings.keylog must be a callable taking each key log line (bytes)")


@dataclass(frozen=True)
class HousleyConfig:
    """MLS inside the TLS 1.3 handshake (mlstls.housley, docs/housley.md): the draft's open code points, with
    private-use defaults, all configurable, and the TLS 1.3 suites offered or accepted, in our order."""

    extension_type: int = 0xFF4D
    """``tls_using_mls_handshake`` (TBD0): 0xFF00-0xFFFF is the ExtensionType registry's Private Use range."""
    handshake_type: int = 0xE3
    """``mls_handshake`` (TBD1): unassigned, far from TLS 1.3's 0-26 and 254."""
    tpmlsmt_base: int = 0xF000
    """``tpmlsmt`` = this + the profile's message type (mls2p.wire): RFC 9420's Private Use range."""
    key_switch: int = 0xF018
    """Our ``tpmlsmt`` for 'my records use the new epoch from here' (the mlstls key switch frame's 24)."""
    tls_suites: tuple[int, ...] = (0x1301, 0x1302, 0x1303)
    """TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256."""

    def __post_init__(self) -> None:
        for name, bits in (("extension_type", 16), ("handshake_type", 8), ("tpmlsmt_base", 16), ("key_switch", 16)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
                raise ConfigurationError(f"HousleyConfig.{name} must be a {bits}-bit number, not {value!r}")
        if self.handshake_type <= 26 or self.handshake_type == 254:
            raise ConfigurationError(f"HousleyConfig.handshake_type {self.handshake_type} is a TLS 1.3 message type")
        if not self.tls_suites or any(suite not in (0x1301, 0x1302, 0x1303) for suite in self.tls_suites):
            raise ConfigurationError(f"HousleyConfig.tls_suites must name TLS 1.3 suites among 0x1301-0x1303, "
                                     f"not {self.tls_suites}")
        if self.tpmlsmt_base <= self.key_switch < self.tpmlsmt_base + 0x100 and self.key_switch - self.tpmlsmt_base in (
                1, 2, 3, 4, 5, 6, 32):
            raise ConfigurationError("HousleyConfig.key_switch collides with a profile message's tpmlsmt")


@dataclass(frozen=True)
class MlsTlsConfiguration:
    """One endpoint's settings.

    ``store`` keeps the group between connections; a client with
    ``resume_group_id`` set resumes that group instead of running phase 1.
    ``tls`` set means MLS *alongside* TLS 1.3 (:mod:`mlstls.alongside`);
    ``housley`` set means MLS *inside* the TLS 1.3 handshake (:mod:`mlstls.housley`);
    neither means MLS in place of TLS.
    """

    profile: ProfileConfig
    is_client: bool = True
    store: SessionStore | None = None
    resume_group_id: bytes | None = None
    padding: int = 0
    tls: TlsSettings | None = None
    housley: HousleyConfig | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.profile, ProfileConfig):
            raise ConfigurationError("MlsTlsConfiguration.profile must be a mls2p.ProfileConfig")
        _check_type(self, "is_client", bool, "a bool")
        if self.store is not None and not all(callable(getattr(self.store, name, None)) for name in _STORE_METHODS):
            raise ConfigurationError(f"MlsTlsConfiguration.store must be a mls2p.SessionStore "
                                     f"({', '.join(_STORE_METHODS)}), not {type(self.store).__name__}")
        _check_type(self, "resume_group_id", bytes, "bytes (a group id the store holds)", optional=True)
        _check_type(self, "padding", int, "an int (bytes of padding per record)")
        _check_type(self, "tls", TlsSettings, "a mlstls.TlsSettings (alongside mode)", optional=True)
        _check_type(self, "housley", HousleyConfig, "a mlstls.HousleyConfig (MLS inside the TLS handshake)",
                    optional=True)
        if self.tls is not None and self.housley is not None:
            raise ConfigurationError("tls (MLS alongside TLS) and housley (MLS inside the TLS handshake) are two "
                                     "modes: choose one")
        if not 0 <= self.padding <= 1 << 14:
            raise ConfigurationError(f"padding must be between 0 and 16384 bytes, not {self.padding}")
        if self.tls is not None and self.tls.verify and self.is_client and not self.tls.cafile:
            raise ConfigurationError("a verifying alongside client needs tls.cafile (the CA that signed the "
                                     "server's certificate)")
        if self.tls is not None and not self.is_client and not self.tls.certfile:
            raise ConfigurationError("an alongside server needs tls.certfile and tls.keyfile")


_STORE_METHODS = ("load", "save", "delete")
"""What a connection calls on its store (SessionStore also has group_ids, for tools that list sessions)."""


def _check_type(settings: object, name: str, kind: Any, what: str, *, optional: bool = False) -> None:
    """Refuse a field of the wrong type when the settings are built, naming it (``kind``: a type or union).

    A bool is an int to Python but never a number here, and a str for ``is_client`` would be truthy:
    both would otherwise be accepted and misbehave far from the mistake.
    """
    value = getattr(settings, name)
    if value is None and optional:
        return
    if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return
    raise ConfigurationError(f"{type(settings).__name__}.{name} must be {what}{' or None' if optional else ''}, "
                             f"not {type(value).__name__} {value!r}")
