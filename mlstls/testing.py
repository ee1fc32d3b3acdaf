"""Two in-memory MLS-TLS connections wired back to back, for tests and benchmarks (no sockets, no clock)."""

from __future__ import annotations

from typing import Any

from mls2p.config import ProfileConfig
from mls2p.store import MemorySessionStore
from mls2p.testing import config

from .alongside import AlongsideConnection
from .config import MlsTlsConfiguration, TlsSettings
from .connection import Event, MlsTlsConnection

Connection = MlsTlsConnection | AlongsideConnection


def _connection(configuration: MlsTlsConfiguration) -> Connection:
    return AlongsideConnection(configuration) if configuration.tls is not None else MlsTlsConnection(configuration)


class TlsPair:
    """A client and a server connection; ``pump`` moves bytes both ways until both are quiet.

    The profiles default to :func:`mls2p.testing.config` (the two pin each
    other's keys); pass ``client_profile``/``server_profile`` to play someone
    else, and ``client_tls``/``server_tls`` for MLS alongside TLS 1.3.
    """

    def __init__(self, *, client_profile: ProfileConfig | None = None, server_profile: ProfileConfig | None = None,
                 client_tls: TlsSettings | None = None, server_tls: TlsSettings | None = None,
                 **profile_overrides: Any) -> None:
        self.client_store = MemorySessionStore()
        self.server_store = MemorySessionStore()
        self.client_profile = client_profile or config(b"client", **profile_overrides)
        self.server_profile = server_profile or config(b"server", **profile_overrides)
        self.client_tls, self.server_tls = client_tls, server_tls
        self.client = _connection(MlsTlsConfiguration(self.client_profile, True, self.client_store, tls=client_tls))
        self.server = _connection(MlsTlsConfiguration(self.server_profile, False, self.server_store, tls=server_tls))
        self.received = {"client": bytearray(), "server": bytearray()}
        self.events: dict[str, list[Event]] = {"client": [], "server": []}

    def reconnect(self, *, client_resumes: bool = True) -> None:
        group_id = self.client.session.group_id if self.client.session else None
        self.client.connection_lost()
        self.server.connection_lost()
        self.client = _connection(MlsTlsConfiguration(self.client_profile, True, self.client_store,
                                                      resume_group_id=group_id if client_resumes else None,
                                                      tls=self.client_tls))
        self.server = _connection(MlsTlsConfiguration(self.server_profile, False, self.server_store,
                                                      tls=self.server_tls))

    def pump(self, limit: int = 100) -> None:
        for _ in range(limit):
            moved = False
            for src, dst in ((self.client, self.server), (self.server, self.client)):
                data = src.data_to_send()
                if data:
                    dst.receive_data(data)
                    moved = True
            for name, conn in (("client", self.client), ("server", self.server)):
                while (event := conn.next_event()) is not None:
                    self.events[name].append(event)
                    if hasattr(event, "data"):
                        self.received[name] += event.data
            if not moved:
                return
        raise AssertionError("pump did not settle")
