"""Settings of one mlstls endpoint, in the style of aioquic's QuicConfiguration."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from mls2p.config import ProfileConfig
from mls2p.store import SessionStore

from .errors import ConfigurationError


@dataclass(frozen=True)
class TlsSettings:
    """The outer TLS 1.3 layer of alongside mode: files as for ``ssl.SSLContext``.

    Clients verify the server against ``cafile`` and ``server_hostname``;
    servers present ``certfile``/``keyfile``.
    """

    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    server_hostname: str | None = None
    verify: bool = True
    keylog: Callable[[bytes], None] | None = field(default=None, repr=False)
    """Receives NSS key log lines (like SSLKEYLOGFILE) for debugging and the PCS experiments."""


@dataclass(frozen=True)
class MlsTlsConfiguration:
    """One endpoint's settings.

    ``store`` keeps the group between connections; a client with
    ``resume_group_id`` set resumes that group instead of running phase 1.
    ``tls`` set means MLS *alongside* TLS 1.3 (:mod:`mlstls.alongside`);
    None means MLS in place of TLS.
    """

    profile: ProfileConfig
    is_client: bool = True
    store: SessionStore | None = None
    resume_group_id: bytes | None = None
    padding: int = 0
    tls: TlsSettings | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.profile, ProfileConfig):
            raise ConfigurationError("MlsTlsConfiguration.profile must be a mls2p.ProfileConfig")
        if not 0 <= self.padding <= 1 << 14:
            raise ConfigurationError(f"padding must be between 0 and 16384 bytes, not {self.padding}")
        if self.tls is not None and self.tls.verify and self.is_client and not self.tls.cafile:
            raise ConfigurationError("a verifying alongside client needs tls.cafile (the CA that signed the "
                                     "server's certificate)")
        if self.tls is not None and not self.is_client and not self.tls.certfile:
            raise ConfigurationError("an alongside server needs tls.certfile and tls.keyfile")
