"""Two in-memory MLS-TLS connections wired back to back, for tests and benchmarks (no sockets, no clock)."""

from __future__ import annotations

from typing import Any

from mls2p.store import MemorySessionStore
from mls2p.testing import config

from .config import MlsTlsConfiguration
from .connection import MlsTlsConnection


class TlsPair:
    def __init__(self, **profile_overrides: Any) -> None:
        self.client_store = MemorySessionStore()
        self.server_store = MemorySessionStore()
        self.client_profile = config(b"client", **profile_overrides)
        self.server_profile = config(b"server", **profile_overrides)
        self.client = MlsTlsConnection(MlsTlsConfiguration(self.client_profile, True, self.client_store))
        self.server = MlsTlsConnection(MlsTlsConfiguration(self.server_profile, False, self.server_store))
        self.received = {"client": bytearray(), "server": bytearray()}
        self.events: dict[str, list] = {"client": [], "server": []}

    def reconnect(self, *, client_resumes: bool = True) -> None:
        group_id = self.client.session.group_id if self.client.session else None
        self.client.connection_lost()
        self.server.connection_lost()
        self.client = MlsTlsConnection(MlsTlsConfiguration(self.client_profile, True, self.client_store,
                                                           resume_group_id=group_id if client_resumes else None))
        self.server = MlsTlsConnection(MlsTlsConfiguration(self.server_profile, False, self.server_store))

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
