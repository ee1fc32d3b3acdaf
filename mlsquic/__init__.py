"""mlsquic: MLS in place of the QUIC TLS handshake (QUIC-MLS) on aioquic, with in-band PCS rekeying.

    configuration = MlsQuicConfiguration(profile=ProfileConfig(...), alpn_protocols=["echo"], is_client=True)
    async with mlsquic.connect("127.0.0.1", 4433, configuration=configuration) as protocol:
        ...

The design is our own (the QUIC-MLS draft's body could not be obtained); it is
described in docs/quic.md.  Supported aioquic: 1.x (tested with 1.7).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aioquic.asyncio import connect as _connect
from aioquic.asyncio import serve as _serve
from aioquic.quic.configuration import QuicConfiguration

from mlscore.profile import ProfileConfig
from mlscore.store import SessionStore

from . import _aioquic_glue
from ._aioquic_glue import EpochChanged, MlsQuicConnection

_NO_CERTIFICATE = "QUIC-MLS: peers are authenticated by MLS credentials"


@dataclass
class MlsQuicConfiguration(QuicConfiguration):
    """aioquic's QuicConfiguration plus the MLS side.

    ``mode`` is "mls" (MLS in place of TLS). ``profile`` holds the credential,
    signature key, suite, authentication service and rekey policy; ``store``
    keeps the group for resumption; a client with ``resume_group_id`` resumes.
    """

    profile: ProfileConfig | None = None
    mode: str = "mls"
    store: SessionStore | None = None
    resume_group_id: bytes | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in ("mls",):
            raise ValueError(f"unknown mlsquic mode {self.mode!r}")
        if self.profile is None:
            raise ValueError("MlsQuicConfiguration needs a profile (credential and signature key)")
        if not self.is_client and self.certificate is None:
            # aioquic insists that servers have a certificate; in QUIC-MLS mode the peer is
            # authenticated by its MLS credential and no TLS certificate is ever used.
            self.certificate = self.private_key = _NO_CERTIFICATE


_aioquic_glue.install()

serve = _serve
connect = _connect

__all__ = ["EpochChanged", "MlsQuicConfiguration", "MlsQuicConnection", "connect", "serve"]
