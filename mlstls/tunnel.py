"""A long-lived secure TCP tunnel over MLS-TLS: ``mls-tunnel client|server``.

    mls-tunnel server --listen 127.0.0.1:8443 --target 127.0.0.1:5432 --state-dir ~/.mls-tunnel/server
    mls-tunnel client --listen 127.0.0.1:15432 --connect 127.0.0.1:8443 --state-dir ~/.mls-tunnel/client

Every local connection accepted by the client is carried as one stream of a
single MLS-TLS link to the server, which opens the matching connection to the
target.  The link rekeys for post-compromise security on a timer and by
volume, survives a cut TCP connection (the client reconnects and resumes the
MLS group; :mod:`mlstls.link` retransmits exactly what was lost), prints a
status line, and shuts down cleanly on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import signal
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path

from mls2p.config import ProfileConfig
from mls2p.policy import RekeyPolicy
from mls2p.store import FileSessionStore, MemorySessionStore, SessionStore
from mlscore.credentials import BasicCredentialPolicy, Credential
from mlscore.crypto import get_suite
from mlscore.errors import MLSError

from .config import MlsTlsConfiguration
from .link import MAX_FRAME_PAYLOAD, Frame, FrameType, ReliableLink
from .streams import MlsTlsWriter, open_connection, start_server

log = logging.getLogger(__name__)

MAX_UNACKED = 32 * 1024 * 1024
"""Pause reading local sockets while this much is unacknowledged on the link."""


@dataclass
class LinkStats:
    bytes_in: int = 0
    bytes_out: int = 0
    reconnects: int = 0
    started: float = field(default_factory=time.monotonic)


class TunnelLink:
    """One side of the link: streams multiplexed over whatever MLS-TLS connection is current."""

    def __init__(self, *, is_client: bool, target: tuple[str, int] | None = None) -> None:
        self.is_client = is_client
        self.target = target
        self.reliable = ReliableLink()
        self.writer: MlsTlsWriter | None = None
        self.streams: dict[int, asyncio.StreamWriter] = {}
        self.next_stream = 1 if is_client else 2
        self.stats = LinkStats()
        self.link_ready = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- the MLS-TLS connection underneath --------------------------------------------

    async def attach(self, reader: asyncio.StreamReader, writer: MlsTlsWriter, *, fresh: bool) -> None:
        """Run the link over one connection until it breaks."""
        self.writer = writer
        self._write(self.reliable.connected(fresh=fresh))
        self.link_ready.set()
        try:
            while data := await reader.read(1 << 18):
                self.stats.bytes_in += len(data)
                frames, reply = self.reliable.feed(data)
                self._write(reply)
                for frame in frames:
                    await self._dispatch(frame)
                self._update_space()
        except (ConnectionError, MLSError) as exc:
            log.info("link connection ended: %s", exc)
        finally:
            self.link_ready.clear()
            self.reliable.disconnected()
            self.writer = None
            with contextlib.suppress(Exception):
                writer.close()

    def _write(self, data: bytes) -> None:
        if data and self.writer is not None and not self.writer.is_closing():
            self.writer.write(data)
            self.stats.bytes_out += len(data)

    def _send(self, frame: Frame) -> None:
        self._write(self.reliable.send(frame))
        self._update_space()

    def _update_space(self) -> None:
        if self.reliable.unacked < MAX_UNACKED:
            self._space.set()
        else:
            self._space.clear()

    # -- streams ------------------------------------------------------------------------

    async def _dispatch(self, frame: Frame) -> None:
        if frame.kind == FrameType.OPEN:
            await self._open_target(frame.stream)
        elif frame.kind == FrameType.DATA:
            local = self.streams.get(frame.stream)
            if local is not None:
                local.write(frame.payload)
                await local.drain()
        elif frame.kind == FrameType.CLOSE:
            local = self.streams.pop(frame.stream, None)
            if local is not None:
                with contextlib.suppress(Exception):
                    local.write_eof() if local.can_write_eof() else local.close()

    async def _open_target(self, stream: int) -> None:
        assert self.target is not None, "only the server side opens target connections"
        try:
            reader, writer = await asyncio.open_connection(*self.target)
        except OSError as exc:
            log.warning("cannot reach target %s:%d: %s", *self.target, exc)
            self._send(Frame(FrameType.CLOSE, stream))
            return
        self.streams[stream] = writer
        self._track(self._pump(stream, reader, writer))

    def open_local(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Client side: a new local connection becomes a stream."""
        stream = self.next_stream
        self.next_stream += 2
        self._send(Frame(FrameType.OPEN, stream))
        self.streams[stream] = writer
        self._track(self._pump(stream, reader, writer))

    async def _pump(self, stream: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(MAX_FRAME_PAYLOAD):
                await self._space.wait()
                self._send(Frame(FrameType.DATA, stream, data))
                if self.writer is not None:
                    with contextlib.suppress(ConnectionError):
                        await self.writer.drain()
        except ConnectionError:
            pass
        self._send(Frame(FrameType.CLOSE, stream))

    def _track(self, coroutine: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for writer in self.streams.values():
            writer.close()
        if self.writer is not None:
            self.writer.close()

    def status(self) -> str:
        epoch = self.writer.epoch if self.writer is not None else None
        session = self.writer.connection.session if self.writer is not None else None
        last = self.writer.connection.last_rekey if self.writer is not None else None
        age = f"{asyncio.get_running_loop().time() - last:.0f}s ago" if last is not None else "-"
        state = "up" if self.link_ready.is_set() else "reconnecting"
        return (f"link {state} epoch {epoch} last rekey {age} | in {self.stats.bytes_in} B out "
                f"{self.stats.bytes_out} B | streams {len(self.streams)} | unacked {self.reliable.unacked} B "
                f"| reconnects {self.stats.reconnects}" + (f" | {session.state.value}" if session else ""))


# -- the two ends --------------------------------------------------------------------------

class TunnelServer:
    """Accept MLS-TLS links and forward their streams to ``target``."""

    def __init__(self, configuration: MlsTlsConfiguration, target: tuple[str, int]) -> None:
        self.configuration = configuration
        self.target = target
        self.links: dict[bytes, TunnelLink] = {}
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        self.server = await start_server(self._accept, host, port, configuration=self.configuration)
        return self.server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: MlsTlsWriter) -> None:
        session = writer.connection.session
        assert session is not None and session.group_id is not None
        link = self.links.get(session.group_id)
        fresh = link is None
        if link is None:
            link = self.links[session.group_id] = TunnelLink(is_client=False, target=self.target)
        else:
            link.stats.reconnects += 1
        await link.attach(reader, writer, fresh=fresh)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for link in self.links.values():
            await link.close()


class TunnelClient:
    """Listen locally; carry every accepted connection over one resumable link."""

    def __init__(self, configuration: MlsTlsConfiguration, remote: tuple[str, int], *,
                 retry_delay: float = 0.5) -> None:
        self.configuration = configuration
        self.remote = remote
        self.retry_delay = retry_delay
        self.link = TunnelLink(is_client=True)
        self.group_id: bytes | None = configuration.resume_group_id
        self.local: asyncio.Server | None = None
        self._runner: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self, host: str, port: int) -> int:
        self._runner = asyncio.get_running_loop().create_task(self._keep_linked())
        await asyncio.wait_for(self.link.link_ready.wait(), 30)
        self.local = await asyncio.start_server(self._local, host, port)
        return self.local.sockets[0].getsockname()[1]

    def _local(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.link.open_local(reader, writer)

    async def _keep_linked(self) -> None:
        first = True
        while not self._stopping:
            config = dataclasses.replace(self.configuration, resume_group_id=self.group_id)
            try:
                reader, writer = await open_connection(*self.remote, configuration=config)
            except (OSError, MLSError, TimeoutError) as exc:
                log.info("cannot reach the tunnel server: %s; retrying", exc)
                await asyncio.sleep(self.retry_delay)
                continue
            session = writer.connection.session
            assert session is not None
            self.group_id = session.group_id
            if not first:
                self.link.stats.reconnects += 1
            await self.link.attach(reader, writer, fresh=first)
            first = False
            if not self._stopping:
                await asyncio.sleep(self.retry_delay)

    def cut(self) -> None:
        """Abort the current TCP connection (tests and operators: force a reconnect)."""
        if self.link.writer is not None and self.link.writer.transport is not None:
            self.link.writer.transport.abort()

    async def close(self) -> None:
        self._stopping = True
        if self.local is not None:
            self.local.close()
        await self.link.close()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner


# -- command line --------------------------------------------------------------------------

def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


def _profile(args: argparse.Namespace) -> tuple[ProfileConfig, SessionStore]:
    suite = get_suite(args.suite)
    if args.state_dir:
        folder = Path(args.state_dir).expanduser()
        store: SessionStore = FileSessionStore(folder / "sessions")
        key_file = folder / "signature.key"
        if key_file.exists():
            signature_priv = key_file.read_bytes()
        else:
            signature_priv, _ = suite.generate_signature_key_pair()
            key_file.touch(mode=0o600)
            key_file.write_bytes(signature_priv)
    else:
        store = MemorySessionStore()
        signature_priv, _ = suite.generate_signature_key_pair()
    allowed = {name.encode() for name in args.allow} if args.allow else None
    profile = ProfileConfig(credential=Credential.basic(args.identity.encode()), signature_priv=signature_priv,
                            cipher_suite=suite.id, authentication_service=BasicCredentialPolicy(allowed),
                            rekey=RekeyPolicy(max_bytes=args.rekey_bytes, max_seconds=args.rekey_seconds))
    return profile, store


async def _run(args: argparse.Namespace) -> int:
    profile, store = _profile(args)
    listen = _address(args.listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if args.mode == "server":
        endpoint: TunnelServer | TunnelClient = TunnelServer(MlsTlsConfiguration(profile, False, store),
                                                             _address(args.target))
        port = await endpoint.start(*listen)
        print(f"mls-tunnel server on {listen[0]}:{port} -> {args.target}", flush=True)
    else:
        group_ids = store.group_ids()
        config = MlsTlsConfiguration(profile, True, store, resume_group_id=group_ids[0] if group_ids else None)
        endpoint = TunnelClient(config, _address(args.connect))
        port = await endpoint.start(*listen)
        print(f"mls-tunnel client on {listen[0]}:{port} -> {args.connect}", flush=True)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.status_interval)
        links = endpoint.links.values() if isinstance(endpoint, TunnelServer) else [endpoint.link]
        for link in links:
            print(time.strftime("%H:%M:%S"), link.status(), flush=True)
    print("shutting down", flush=True)
    await endpoint.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mls-tunnel", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("client", "server"))
    parser.add_argument("--listen", required=True, help="host:port to listen on")
    parser.add_argument("--connect", help="client: the tunnel server's host:port")
    parser.add_argument("--target", help="server: where streams are forwarded to (host:port)")
    parser.add_argument("--identity", default="mls-tunnel", help="basic credential identity")
    parser.add_argument("--allow", action="append", help="accept only these peer identities (repeatable)")
    parser.add_argument("--suite", type=int, default=1, help="MLS cipher suite (default 1)")
    parser.add_argument("--rekey-seconds", type=float, default=30.0, help="PCS rekey interval (default 30)")
    parser.add_argument("--rekey-bytes", type=int, default=1 << 30, help="PCS rekey after this many bytes")
    parser.add_argument("--state-dir", help="persist keys and group state here (enables resumption "
                        "across restarts)")
    parser.add_argument("--status-interval", type=float, default=5.0, help="seconds between status lines")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.mode == "client" and not args.connect:
        parser.error("client mode needs --connect")
    if args.mode == "server" and not args.target:
        parser.error("server mode needs --target")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
