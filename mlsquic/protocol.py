"""``MlsQuicProtocol``: aioquic's protocol with the MLS session's details in ``get_extra_info``.

An asyncio transport answers ``get_extra_info("peername")``; an mlsquic
application also wants to know *who* the peer is and under which keys it
talks, without reaching into the connection::

    async with mlsquic.connect(host, port, configuration=configuration,
                               create_protocol=MlsQuicProtocol) as protocol:
        print(protocol.get_extra_info("mls_peer_identity"), protocol.get_extra_info("mls_epoch"))

The names are those of an mlstls stream (docs/quic.md): ``mls_epoch`` (the
MLS epoch of the 1-RTT keys in use), and the session's ``mls_session``,
``mls_group_id``, ``mls_cipher_suite``, ``mls_peer_identity``,
``mls_peer_credential`` and ``mls_peer_fingerprint``
(:func:`mls2p.identity.session_extra_info`).  Application protocols subclass
this class as they would subclass ``QuicConnectionProtocol``.
"""

from __future__ import annotations

from typing import Any

from aioquic.asyncio import QuicConnectionProtocol

from mls2p.identity import SESSION_INFO, session_extra_info
from mls2p.session import TwoPartySession

from ._aioquic_compat import quic_of
from .epochs import EpochKeyedConnection


class MlsQuicProtocol(QuicConnectionProtocol):
    """A ``QuicConnectionProtocol`` whose ``get_extra_info`` reports the connection's MLS session."""

    def _mls_connection(self) -> EpochKeyedConnection | None:
        """The mlsquic connection, once it has set up its MLS endpoint (None before, or for plain aioquic).

        A client's endpoint exists from ``connect()``, a server's from the client's first Initial;
        until then there is nothing to report.
        """
        connection = quic_of(self)
        if isinstance(connection, EpochKeyedConnection) and hasattr(connection, "endpoint"):
            return connection
        return None

    @property
    def mls_session(self) -> TwoPartySession | None:
        """The connection's two-party session (None before the MLS handshake has one)."""
        connection = self._mls_connection()
        return connection.mls_session if connection is not None else None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``mls_epoch`` and the session's names (see the module's docstring); ``default`` for anything else,
        and while the connection has no session yet."""
        connection = self._mls_connection()
        if connection is None:
            return default
        if name == "mls_epoch":
            epoch = connection.mls_epoch
            return default if epoch is None else epoch
        if name in SESSION_INFO:
            return session_extra_info(connection.mls_session, name, default)
        return default
