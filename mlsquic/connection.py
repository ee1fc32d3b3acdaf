"""QUIC-MLS mode: a QuicConnection whose handshake and key updates are the two-party profile."""

from __future__ import annotations

from typing import cast

from aioquic import tls

from mls2p.session import SessionAction

from .epochs import EpochKeyedConnection
from .handshake import MlsHandshakeContext


class MlsQuicConnection(EpochKeyedConnection):
    """MLS in place of the QUIC TLS handshake; pass it to aioquic as the connection class."""

    handshake_class: type[MlsHandshakeContext] = MlsHandshakeContext

    def after_initialize(self) -> None:
        super().after_initialize()
        self.tls = self.handshake_class(self, self.tls)  # type: ignore[assignment]  # duck-typed, touch point 4

    @property
    def handshake(self) -> MlsHandshakeContext:
        return cast(MlsHandshakeContext, self.tls)

    def before_crypto_frame(self, epoch: tls.Epoch) -> None:
        self.handshake.current_epoch = epoch

    def next_epoch_secrets(self, epoch: int) -> tuple[bytes, bytes] | None:
        return self.handshake.next_epoch_secrets(epoch)

    def act(self, actions: list[SessionAction]) -> None:
        self.handshake.act(actions)
