"""mlstls: MLS in place of the TLS handshake (draft-kohbrok-mls-tls-01) over TCP, with asyncio streams.

The TLS 1.3 record layer keyed from the MLS exporter, PCS rekeying with the
two-party profile's ConnectionUpdate/EpochKeyUpdate, and resumption of a
dropped connection.  See docs/tls.md.
"""

from .connection import MlsTlsConfiguration, MlsTlsConnection
from .streams import HandshakeError, MlsTlsWriter, open_connection, start_server

__all__ = [
    "HandshakeError",
    "MlsTlsConfiguration",
    "MlsTlsConnection",
    "MlsTlsWriter",
    "open_connection",
    "start_server",
]
