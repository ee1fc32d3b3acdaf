"""aioquic's QuicConfiguration plus the MLS side."""

from __future__ import annotations

from dataclasses import dataclass

from aioquic.quic.configuration import QuicConfiguration

from mls2p.config import ProfileConfig
from mls2p.store import SessionStore

from .errors import ConfigurationError

MLS_ALPN_SUFFIX = "+mls2p"
"""Alongside mode: "<alpn>+mls2p" tells the peer we run MLS on top of TLS."""
MODES = ("mls", "alongside")
_NO_CERTIFICATE = "QUIC-MLS: peers are authenticated by MLS credentials"


@dataclass
class MlsQuicConfiguration(QuicConfiguration):
    """aioquic's QuicConfiguration plus the MLS side.

    ``mode`` is "mls" (MLS in place of TLS) or "alongside" (aioquic's TLS 1.3
    handshake first, certificates as usual, then MLS rekeys).  ``profile`` holds
    the credential, signature key, suite, authentication service and rekey
    policy; ``store`` keeps the group for resumption; a client with
    ``resume_group_id`` resumes.
    """

    profile: ProfileConfig | None = None
    mode: str = "mls"
    store: SessionStore | None = None
    resume_group_id: bytes | None = None
    allow_plain_peers: bool = False
    """Alongside mode: accept a peer that does not speak MLS (plain TLS QUIC, no PCS rekeys)."""
    mls_handshake_timeout: float = 10.0
    """Close a connection whose peer has not completed the MLS handshake (authenticated, keys confirmed)
    this many seconds after it started; in alongside mode the TLS handshake counts in."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigurationError(f"unknown mlsquic mode {self.mode!r} (choose from {', '.join(MODES)})")
        if not isinstance(self.profile, ProfileConfig):
            raise ConfigurationError("MlsQuicConfiguration needs profile=mls2p.ProfileConfig(...) "
                                     "(credential and signature key)")
        if self.mode == "alongside" and self.resume_group_id is not None:
            raise ConfigurationError("resumption is a QUIC-MLS mode feature; an alongside connection runs phase 1")
        if self.mode == "alongside" and self.alpn_protocols and not any(
                a.endswith(MLS_ALPN_SUFFIX) for a in self.alpn_protocols):
            # Offer/accept "<alpn>+mls2p" first: that is how two alongside peers agree to run MLS,
            # while a plain aioquic peer simply negotiates "<alpn>".
            self.alpn_protocols = [a + MLS_ALPN_SUFFIX for a in self.alpn_protocols] + list(self.alpn_protocols)
        if self.mode == "mls" and not self.is_client and self.certificate is None:
            # aioquic insists that servers have a certificate; in QUIC-MLS mode the peer is
            # authenticated by its MLS credential and no TLS certificate is ever used.
            self.certificate = self.private_key = _NO_CERTIFICATE

    @property
    def mls_profile(self) -> ProfileConfig:
        assert self.profile is not None  # checked in __post_init__
        return self.profile
