"""mlsquic: MLS in place of the QUIC TLS handshake (QUIC-MLS) on aioquic, with in-band PCS rekeying.

    configuration = MlsQuicConfiguration(profile=ProfileConfig(...), alpn_protocols=["echo"], is_client=True)
    async with mlsquic.connect("127.0.0.1", 4433, configuration=configuration) as protocol:
        ...

The design is our own (the QUIC-MLS draft's body could not be obtained); it is
described in docs/quic.md.  Supported aioquic: 1.x (tested with 1.7).
"""

from __future__ import annotations

from dataclasses import dataclass

from aioquic.asyncio import connect as _connect
from aioquic.asyncio import serve as _serve
from aioquic.quic.configuration import QuicConfiguration

from mlscore.profile import ProfileConfig
from mlscore.store import SessionStore

from . import _aioquic_glue
from ._aioquic_glue import AlongsideQuicConnection, EpochChanged, MlsQuicConnection

MLS_ALPN_SUFFIX = "+mls2p"
_NO_CERTIFICATE = "QUIC-MLS: peers are authenticated by MLS credentials"


@dataclass
class MlsQuicConfiguration(QuicConfiguration):
    """aioquic's QuicConfiguration plus the MLS side.

    ``mode`` is "mls" (MLS in place of TLS) or "alongside" (aioquic's TLS 1.3
    handshake first, certificates as usual, then MLS rekeys). ``profile`` holds the credential,
    signature key, suite, authentication service and rekey policy; ``store``
    keeps the group for resumption; a client with ``resume_group_id`` resumes.
    """

    profile: ProfileConfig | None = None
    mode: str = "mls"
    store: SessionStore | None = None
    resume_group_id: bytes | None = None
    allow_plain_peers: bool = False
    """Alongside mode: accept a peer that does not speak MLS (plain TLS QUIC, no PCS rekeys)."""

    def __post_init__(self) -> None:
        if self.mode not in ("mls", "alongside"):
            raise ValueError(f"unknown mlsquic mode {self.mode!r}")
        if self.profile is None:
            raise ValueError("MlsQuicConfiguration needs a profile (credential and signature key)")
        if self.mode == "alongside" and self.alpn_protocols and not any(
                a.endswith(MLS_ALPN_SUFFIX) for a in self.alpn_protocols):
            # Offer/accept "<alpn>+mls2p" first: that is how two alongside peers agree to run MLS,
            # while a plain aioquic peer simply negotiates "<alpn>".
            self.alpn_protocols = [a + MLS_ALPN_SUFFIX for a in self.alpn_protocols] + list(self.alpn_protocols)
        if self.mode == "mls" and not self.is_client and self.certificate is None:
            # aioquic insists that servers have a certificate; in QUIC-MLS mode the peer is
            # authenticated by its MLS credential and no TLS certificate is ever used.
            self.certificate = self.private_key = _NO_CERTIFICATE


_aioquic_glue.install()

serve = _serve
connect = _connect

__all__ = ["AlongsideQuicConnection", "EpochChanged", "MlsQuicConfiguration", "MlsQuicConnection", "connect",
           "serve"]
