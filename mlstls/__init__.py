"""mlstls: MLS in place of the TLS handshake (draft-kohbrok-mls-tls-01) over TCP, with asyncio streams; also
alongside a TLS 1.3 handshake (``TlsSettings``) and inside one (``HousleyConfig``, draft-housley).

The TLS 1.3 record layer keyed from the MLS exporter, PCS rekeying with the
two-party profile's ConnectionUpdate/EpochKeyUpdate, and resumption of a
dropped connection.  A stream cut without close_notify raises
:class:`TruncatedStream` instead of ending cleanly.  See docs/tls.md.
"""

from .config import HousleyConfig, MlsTlsConfiguration, TlsSettings
from .connection import MlsTlsConnection
from .errors import HandshakeError, TruncatedStream
from .streams import MlsTlsWriter, open_connection, start_server

__all__ = [
    "HandshakeError",
    "HousleyConfig",
    "MlsTlsConfiguration",
    "MlsTlsConnection",
    "MlsTlsWriter",
    "TlsSettings",
    "TruncatedStream",
    "open_connection",
    "start_server",
]
