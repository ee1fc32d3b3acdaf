"""The tunnel's control socket: ``mls-tunnel status`` asks a running tunnel how its links are.

A Unix socket in the state folder (``control.sock``), created 0600 in a 0700
folder, and a peer whose uid is neither ours nor root's is refused (SO_PEERCRED),
so only the tunnel's owner can ask.  One request per connection, a line (``status``),
answered with one JSON document: the report (:func:`render` prints it for people).
The report holds names, fingerprints and counters, never key material.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import ConfigurationError, TunnelError
from .tunnel import printable

log = logging.getLogger(__name__)

CONTROL_SOCKET = "control.sock"
REPORT_VERSION = 1
MAX_REQUEST = 1024
REQUEST_TIMEOUT = 5.0
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes on Linux, with the terminating NUL


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return None
    _, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return int(uid)


class ControlServer:
    """Serve :func:`query` requests on ``path`` with ``report()``."""

    def __init__(self, path: Path, report: Callable[[], dict[str, Any]]) -> None:
        self.path = path
        self.report = report
        self.server: asyncio.AbstractServer | None = None

    def _mode(self) -> int | None:
        try:
            return os.lstat(self.path).st_mode
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigurationError(f"cannot use the control socket path {self.path}: "
                                     f"{(exc.strerror or str(exc)).lower()}") from None

    async def _answered(self) -> bool:
        """Does a tunnel answer at the path (a socket is there and accepts)?"""
        try:
            _, writer = await asyncio.open_unix_connection(str(self.path))
        except OSError:
            return False
        writer.close()
        return True

    def _another(self) -> ConfigurationError:
        return ConfigurationError(f"another mls-tunnel is running with the control socket {self.path} "
                                  "(each tunnel needs its own --state-dir)")

    async def check(self) -> None:
        """The single-instance check alone, before anything is printed or opened: ConfigurationError if another
        tunnel answers at the path.  Creates and removes nothing (:meth:`start` does, and checks again)."""
        if self._too_long():
            return  # no tunnel can listen there: start() says why
        mode = self._mode()
        if mode is not None and stat.S_ISSOCK(mode) and await self._answered():
            raise self._another()

    def _too_long(self) -> bool:
        return len(os.fsencode(self.path)) > MAX_SOCKET_PATH

    async def start(self) -> None:
        if self._too_long():
            raise ConfigurationError(f"the control socket path {self.path} is longer than {MAX_SOCKET_PATH} bytes "
                                     "(a Unix socket's limit): give --control-socket with a shorter path")
        mode = self._mode()
        if mode is not None:
            if not stat.S_ISSOCK(mode):  # never delete what is not a socket: an operator's file, a link
                raise ConfigurationError(f"the control socket path {self.path} exists and is not a socket: "
                                         "give --control-socket a path that is free (it is never replaced)")
            if await self._answered():
                raise self._another()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()  # a socket left by a tunnel that was killed
        previous = os.umask(0o177)  # the socket is born 0600: nobody else may connect, not even for a moment
        try:
            self.server = await asyncio.start_unix_server(self._serve, str(self.path), limit=MAX_REQUEST)
        except OSError as exc:
            raise ConfigurationError(f"cannot create the control socket {self.path}: "
                                     f"{(exc.strerror or str(exc)).lower()}") from None
        finally:
            os.umask(previous)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            uid = _peer_uid(writer)
            if uid is not None and uid not in (os.getuid(), 0):
                log.warning("control socket: refused a request from uid %d", uid)
                return
            with contextlib.suppress(TimeoutError, ValueError, asyncio.IncompleteReadError, ConnectionError):
                line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
                command = line.strip().decode("ascii", "replace")
                answer = self.report() if command == "status" else {"error": f"unknown command {command!r}"}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
            with contextlib.suppress(OSError):
                self.path.unlink()


async def query(path: Path, command: str = "status", *, timeout: float = REQUEST_TIMEOUT) -> dict[str, Any]:
    """Ask the tunnel whose control socket is ``path``; TunnelError if none answers."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path), limit=1 << 24), timeout)
    except FileNotFoundError:
        raise TunnelError(f"no tunnel is running with the control socket {path}") from None
    except (OSError, TimeoutError) as exc:
        raise TunnelError(f"cannot ask the tunnel at {path}: {exc.strerror or exc or 'timed out'}") from None
    try:
        writer.write(command.encode() + b"\n")
        answer = await asyncio.wait_for(reader.readline(), timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        raise TunnelError(f"the tunnel at {path} did not answer: {exc or 'timed out'}") from None
    finally:
        writer.close()
    if not answer:
        raise TunnelError(f"the tunnel at {path} closed without answering (is it ours?)")
    report: dict[str, Any] = json.loads(answer)
    if "error" in report:
        raise TunnelError(f"the tunnel at {path} says: {report['error']}")
    return report


def render(report: dict[str, Any]) -> str:
    """The report for people: the tunnel, its services, then one block per link."""
    lines = [f"mls-tunnel {report['mode']} (pid {report['pid']}): identity {report['identity']}, "
             f"key {report['key']}, up {report['uptime_seconds']:.0f} s"
             + (f"; {report['handshake']}" if report.get("handshake") else "")]
    for service in report["services"]:
        if report["mode"] == "server":  # who may use it: a server's decision (a client's services have no peers)
            peers = "any trusted peer" if service["peers"] is None else ", ".join(service["peers"]) or "nobody"
            lines.append(f"  service {service['name']} -> {service['address']} ({peers})")
        else:
            lines.append(f"  service {service['name']} listening on {service['address']}")
    failures = report.get("handshake_failures") or {}
    if failures:
        lines.append("  handshake failures: " + ", ".join(f"{k} {v}" for k, v in sorted(failures.items())))
    reloads = report.get("reloads", {})
    if reloads.get("applied") or reloads.get("refused"):
        lines.append(f"  reloads: {reloads['applied']} applied, {reloads['refused']} refused"
                     + (f" (last refused: {reloads['last_error']})" if reloads.get("last_error") else ""))
    store = report.get("store")
    if store:
        lines.append(f"  session store: {'available' if store['available'] else 'UNAVAILABLE'}; calls "
                     f"{store['calls']}, timeouts {store['timeouts']}, failures {store['failures']}, refused at once "
                     f"{store['fast_failures']}")
    if not report["links"]:
        lines.append("  no links")
    for link in report["links"]:
        epoch = "-" if link["epoch"] is None else link["epoch"]
        ago = "-" if link["last_rekey_seconds_ago"] is None else f"{link['last_rekey_seconds_ago']:.0f} s ago"
        lines += [f"  peer {printable(link['peer'] or '?', limit=None)} ({link['fingerprint'] or 'no key yet'}): "
                  f"{link['state']}",
                  f"    epoch {epoch}, rekeys {link['rekeys']}, last rekey {ago}"
                  + (f" (put off for the store: {link['rekeys_abandoned']} ours, {link['commits_deferred']} the "
                     f"peer's; stored late {link['epochs_stored_late']})"
                     if link.get("rekeys_abandoned") or link.get("commits_deferred") or link.get("epochs_stored_late")
                     else ""),
                  *([f"    APQ: PQ epoch {link['pq_epoch']}, our FULL commits {link.get('full_commits', 0)}"]
                    if link.get("pq_epoch") is not None else []),
                  f"    bytes in {link['bytes_in']}, out {link['bytes_out']}; streams {link['streams']} "
                  f"(refused {link['streams_refused']}); reconnects {link['reconnects']}",
                  f"    last error: {printable(link['last_error'] or '-', limit=None)}"]
    return "\n".join(lines)
