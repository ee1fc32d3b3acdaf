"""A QUIC-MLS client that tampers with, replays or reorders its handshake messages is refused."""

from __future__ import annotations

import pytest
from aioquic import tls
from aioquic.buffer import Buffer

import mlsquic
from mlsquic.handshake import MlsHandshakeContext
from mlsquic.testing import Collector, client_configuration, echo_server


def rewrite_client_initial(monkeypatch, mutate) -> None:
    """Let the client build its first flight, then hand ``mutate`` the (hello-extras, ClientHello) frames."""
    original = MlsHandshakeContext._start_client

    def start(self: MlsHandshakeContext, out: dict[tls.Epoch, Buffer]) -> None:
        original(self, out)
        data = out[tls.Epoch.INITIAL].data
        frames = self._buffers[tls.Epoch.HANDSHAKE].feed_frames(data)  # a scratch splitter
        out[tls.Epoch.INITIAL].seek(0)
        out[tls.Epoch.INITIAL].push_bytes(b"".join(mutate(frames)))

    monkeypatch.setattr(MlsHandshakeContext, "_start_client", start)


async def refused_with(reason: str) -> None:
    created: list[Collector] = []

    def factory(*args, **kwargs) -> Collector:
        created.append(Collector(*args, **kwargs))
        return created[-1]

    async with echo_server() as port:
        with pytest.raises(ConnectionError):
            async with mlsquic.connect("127.0.0.1", port, configuration=client_configuration(),
                                       create_protocol=factory, wait_connected=True):
                pass
    close = created[0]._quic._close_event
    assert close is not None and reason in close.reason_phrase, close


def flip_last_byte(frame: bytes) -> bytes:
    return frame[:-1] + bytes([frame[-1] ^ 0x01])


async def test_tampered_client_hello(monkeypatch) -> None:
    rewrite_client_initial(monkeypatch, lambda frames: [frames[0], flip_last_byte(frames[1])])
    await refused_with("InvalidSignatureError")


async def test_replayed_client_hello(monkeypatch) -> None:
    rewrite_client_initial(monkeypatch, lambda frames: [frames[0], frames[1], frames[1]])
    await refused_with("ClientHello received is not allowed")


async def test_reordered_handshake_frames(monkeypatch) -> None:
    rewrite_client_initial(monkeypatch, lambda frames: [frames[1], frames[0]])
    await refused_with("must come before")
