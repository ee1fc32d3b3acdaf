"""Named services of one tunnel: many forwarded ports over one authenticated MLS link per peer.

A server forwards each service to its own target and may open a service to some
peers only; a client listens on one local address per service.  A stream names
its service in its OPEN frame (UTF-8, at most :data:`MAX_SERVICE_NAME` bytes; an
empty name is :data:`DEFAULT_SERVICE`, which is what ``--target``/``--listen`` on
the command line define, and what clients of earlier releases ask for).

In a ``--config`` file::

    [services.db]                 # server
    target = "127.0.0.1:5432"
    peers = ["app-1", "app-2"]    # identities that may use it (default: every trusted peer)

    [services.db]                 # client
    listen = "127.0.0.1:15432"

The table is immutable: a reload builds a new one and the tunnel swaps it in
(:mod:`mlstls.tunnel`), so a mistake in the file leaves the one in force untouched.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import ConfigurationError

DEFAULT_SERVICE = "default"
MAX_SERVICE_NAME = 64
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")

Address = tuple[str, int]


def parse_address(text: str, *, listening: bool = False) -> Address:
    """``host:port`` (``[v6]:port`` too); port 0 only where we listen (the system picks one)."""
    if not isinstance(text, str):
        raise ConfigurationError(f"{text!r} is not host:port (for example 127.0.0.1:8443)")
    host, _, port = text.rpartition(":")
    lowest = 0 if listening else 1
    if not host or not port.isdigit() or not lowest <= int(port) < 65536:
        raise ConfigurationError(f"{text!r} is not host:port (for example 127.0.0.1:8443)")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class Service:
    """One forwarded service: where a server sends its streams (``address`` is the target) or where a client
    listens (``address`` is the local one); ``peers`` (server side) names who may use it, None for anyone
    trusted."""

    name: str
    address: Address
    peers: frozenset[bytes] | None = None

    def open_to(self, identity: bytes | None) -> bool:
        return self.peers is None or (identity is not None and identity in self.peers)

    def describe(self) -> dict[str, object]:
        """For status output: name, address, who may use it."""
        peers = None if self.peers is None else sorted(p.decode("utf-8", "replace") for p in self.peers)
        return {"name": self.name, "address": f"{self.address[0]}:{self.address[1]}", "peers": peers}


def check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or len(name.encode()) > MAX_SERVICE_NAME:
        raise ConfigurationError(f"service name {name!r}: letters, digits, '.', '_' and '-', at most "
                                 f"{MAX_SERVICE_NAME} bytes, starting with a letter or digit")
    return name


def services_from_config(tables: object, *, mode: str, source: str) -> dict[str, Service]:
    """The ``[services.NAME]`` tables of a ``--config`` file, checked; ``mode`` is "server" or "client"."""
    if not isinstance(tables, Mapping):
        raise ConfigurationError(f"{source}: 'services' must be tables ([services.NAME])")
    key = "target" if mode == "server" else "listen"
    allowed = {key, "peers"} if mode == "server" else {key}
    services = {}
    for name, table in tables.items():
        check_name(name)
        if not isinstance(table, Mapping):
            raise ConfigurationError(f"{source}: [services.{name}] must be a table")
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise ConfigurationError(f"{source}: [services.{name}] has unknown option {unknown[0]!r} "
                                     f"(a {mode} service has {' and '.join(sorted(allowed))})")
        if key not in table:
            raise ConfigurationError(f"{source}: [services.{name}] needs {key} = \"host:port\"")
        peers = table.get("peers")
        if peers is not None and (not isinstance(peers, list) or not all(isinstance(p, str) for p in peers)):
            raise ConfigurationError(f"{source}: [services.{name}] peers must be a list of identities")
        services[name] = Service(name, parse_address(table[key], listening=mode == "client"),
                                 None if peers is None else frozenset(p.encode() for p in peers))
    return services


def service_table(*, mode: str, shorthand: str | None, configured: Mapping[str, Service] | None) -> dict[str, Service]:
    """Every service of one end: the command line's ``--target``/``--listen`` (the default service) plus the
    configuration file's; at least one."""
    services = dict(configured or {})
    if shorthand:
        if DEFAULT_SERVICE in services:
            raise ConfigurationError(f"--{'target' if mode == 'server' else 'listen'} defines the service "
                                     f"{DEFAULT_SERVICE!r}, which the configuration file defines too")
        services[DEFAULT_SERVICE] = Service(DEFAULT_SERVICE, parse_address(shorthand, listening=mode == "client"))
    if not services:
        option = "--target" if mode == "server" else "--listen"
        raise ConfigurationError(f"{mode} needs {option} or [services.NAME] tables in --config")
    return services


def encode_open(name: str) -> bytes:
    """An OPEN frame's payload: empty for the default service (as earlier releases send)."""
    return b"" if name == DEFAULT_SERVICE else name.encode()


def decode_open(payload: bytes) -> str | None:
    """The service an OPEN frame names, or None if the payload cannot be a service name."""
    if not payload:
        return DEFAULT_SERVICE
    try:
        return check_name(payload.decode())
    except (UnicodeDecodeError, ConfigurationError):
        return None
