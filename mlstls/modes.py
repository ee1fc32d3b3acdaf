"""The three ways mlstls runs the two-party profile over TLS, and the one place that picks the connection class.

* MLS in place of the TLS 1.3 handshake (:class:`~mlstls.connection.MlsTlsConnection`, draft-kohbrok-mls-tls);
* MLS alongside a full TLS 1.3 handshake (:class:`~mlstls.alongside.AlongsideConnection`, ``tls`` set);
* MLS inside the TLS 1.3 handshake (:class:`~mlstls.housley.HousleyConnection`, ``housley`` set;
  draft-housley-tls-using-mls-handshake, needs tlslite-ng: ``mls-transport[housley]``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

from .alongside import AlongsideConnection
from .config import MlsTlsConfiguration
from .connection import MlsTlsConnection

if TYPE_CHECKING:  # imported only when asked for: tlslite-ng is an optional dependency
    from .housley import HousleyConnection

    Connection: TypeAlias = MlsTlsConnection | AlongsideConnection | HousleyConnection

def new_connection(configuration: MlsTlsConfiguration) -> Connection:
    """A connection of the mode ``configuration`` names."""
    if configuration.tls is not None:
        return AlongsideConnection(configuration)
    if configuration.housley is not None:
        from .housley import HousleyConnection  # MissingExtra (a ConfigurationError) without tlslite-ng

        return HousleyConnection(configuration)
    return MlsTlsConnection(configuration)
