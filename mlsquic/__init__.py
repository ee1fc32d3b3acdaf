"""mlsquic: the MLS two-party profile on aioquic, with in-band PCS rekeying.

Two modes (docs/quic.md): QUIC-MLS, MLS in place of the TLS handshake, and
alongside, aioquic's TLS 1.3 first and MLS rekeys after.  Either way every
confirmed MLS epoch becomes a 1-RTT Key Phase flip::

    configuration = MlsQuicConfiguration(profile=ProfileConfig(...), alpn_protocols=["echo"], is_client=True)
    async with mlsquic.connect("127.0.0.1", 4433, configuration=configuration) as protocol:
        ...

``serve``/``connect`` take the same arguments as aioquic's and build our
connection classes explicitly: importing mlsquic changes nothing for other
aioquic users.  Every use of an aioquic private name is in
:mod:`mlsquic._aioquic_compat`, which names the aioquic versions it was tested with.
"""

from __future__ import annotations

from ._aioquic_compat import quic_of
from .alongside import AlongsideQuicConnection
from .config import MLS_ALPN_SUFFIX, MlsQuicConfiguration
from .connection import MlsQuicConnection
from .epochs import EpochChanged
from .protocol import MlsQuicProtocol
from .serving import MlsQuicServer, connect, serve

__all__ = [
    "MLS_ALPN_SUFFIX",
    "AlongsideQuicConnection",
    "EpochChanged",
    "MlsQuicConfiguration",
    "MlsQuicConnection",
    "MlsQuicProtocol",
    "MlsQuicServer",
    "connect",
    "quic_of",
    "serve",
]
