"""QUIC-MLS mode: a QuicConnection whose handshake and key updates are the two-party profile."""

from __future__ import annotations

from collections import deque
from typing import cast

from aioquic import tls
from aioquic.quic.events import QuicEvent, StreamDataReceived, StreamReset

from mls2p.session import SessionAction

from .epochs import EpochKeyedConnection
from .handshake import MlsHandshakeContext


class MlsQuicConnection(EpochKeyedConnection):
    """MLS in place of the QUIC TLS handshake; pass it to aioquic as the connection class."""

    handshake_class: type[MlsHandshakeContext] = MlsHandshakeContext

    def after_initialize(self) -> None:
        super().after_initialize()
        self.tls = self.handshake_class(self, self.tls)  # type: ignore[assignment]  # duck-typed, touch point 4
        self._held: deque[QuicEvent] = deque()

    def next_event(self) -> QuicEvent | None:
        """aioquic's events; a server holds the client's stream data until the client confirmed the keys.

        The confirmation travels in the Handshake space and the client's first data in 1-RTT, so the
        data can arrive first (the confirmation lost or late).  Handing it over then would tell the
        application something before the session is confirmed and stored, and a client whose
        confirmation never arrived would hold a session the server never stored (found by the fleet
        test).  Held data is bounded by QUIC flow control and dropped if the connection fails.
        """
        confirmed = self.is_client or self.endpoint.confirmed
        if confirmed and self._held:
            return self._held.popleft()
        while (event := super().next_event()) is not None:
            if not confirmed and isinstance(event, (StreamDataReceived, StreamReset)):
                self._held.append(event)
                continue
            return event
        return None

    @property
    def handshake(self) -> MlsHandshakeContext:
        return cast(MlsHandshakeContext, self.tls)

    def before_crypto_frame(self, epoch: tls.Epoch) -> None:
        self.handshake.current_epoch = epoch

    def next_epoch_secrets(self, epoch: int) -> tuple[bytes, bytes] | None:
        return self.handshake.next_epoch_secrets(epoch)

    def act(self, actions: list[SessionAction]) -> None:
        self.handshake.act(actions)
