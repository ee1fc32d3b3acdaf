"""QUIC-MLS demo: an echo and file-download server and client, with PCS rekeys you can watch.

    python -m examples.quic_demo both            # server and client in one process (the README demo)
    python -m examples.quic_demo server --key-file server.key --allow client=sha256:... --serve-dir share
    python -m examples.quic_demo client --key-file client.key --allow server=sha256:... --download big.iso -v
    python -m examples.quic_demo server ... --store redis://127.0.0.1:6379/0 --store-keyring store.keys
    python -m examples.quic_demo client ... --store client-sessions/     # resumes the stored session
    python -m examples.quic_demo server ... --mode alongside --cert cert.pem --key cert.key   # made if missing
    python -m examples.quic_demo client ... --mode alongside --cafile cert.pem

The client sends a line to echo or asks for a file; both sides rekey by policy
and print every epoch change with -v.  QUIC-MLS authenticates peers by their
MLS credentials, pinned by key: each role prints its own key fingerprint at
start (keep the key with --key-file, created on the first run), and the other
pins it with --allow.  A first run without --allow prints the fingerprint and
then says what is missing.  In "both" the two ends pin each other's fresh keys.
In alongside mode the server also needs a TLS certificate: --cert and --key
naming files that do not exist yet make a self-signed one there, which the
client trusts with --cafile.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, cast

from aioquic.asyncio import QuicConnectionProtocol
from aioquic.quic.events import ConnectionTerminated, HandshakeCompleted, QuicEvent, StreamDataReceived
from cryptography.hazmat.primitives import serialization

import mlsquic
from mls2p import ConfigurationError, ProfileConfig, RekeyPolicy
from mls2p.command import run_command
from mls2p.config import suite_preference
from mls2p.identity import fingerprint, load_or_create_key
from mls2p.store import SessionStore, open_store
from mls2p.testing import self_signed_certificate
from mls2p.trust import parse_pin
from mlscore.credentials import Credential, PinnedKeys, key_fingerprint
from mlscore.crypto import SUPPORTED_SUITES, get_suite
from mlscore.errors import MLSError
from mlsquic import EpochChanged, MlsQuicConfiguration, MlsQuicServer, quic_of
from mlsquic.epochs import EpochKeyedConnection

log = logging.getLogger("quic_demo")
DOWNLOAD = b"GET "
MODES = {"mls": "MLS in place of the TLS handshake", "alongside": "TLS 1.3 first, then MLS rekeys"}
CERTIFICATE_DAYS = 365
PEER = {"server": "client", "client": "server"}


def signature_key(args: argparse.Namespace) -> bytes:
    if args.key_file:
        return load_or_create_key(args.key_file, args.suite)
    return get_suite(args.suite).generate_signature_key_pair()[0]


def show_key(name: str, signature_priv: bytes, args: argparse.Namespace) -> None:
    """Print our fingerprint, and for a role of its own what the peer does with it.

    Printed before the trust options are checked: on a first run the peer's --allow needs exactly this line.
    """
    key = fingerprint(signature_priv, args.suite)
    if args.role == "both":
        print(f"{name}: key {key}")
    elif args.key_file:
        print(f"{name}: key {key} (kept in {args.key_file}); the {PEER[name]} trusts it with --allow {name}={key}")
    else:
        print(f"{name}: key {key}, made for this run only: keep one with --key-file FILE, or the "
              f"{PEER[name]} cannot pin it")


def profile(name: str, signature_priv: bytes, pins: dict[bytes, set[str]], args: argparse.Namespace
            ) -> ProfileConfig:
    """Our identity ``name`` with ``signature_priv``, trusting exactly the keys in ``pins``."""
    insecure = args.insecure_accept_any_peer
    apq_label(args)  # the APQ options are checked before anything starts
    return ProfileConfig(credential=Credential.basic(name.encode()), signature_priv=signature_priv,
                         cipher_suite=args.suite, accepted_suites=args.suites,
                         authentication_service=None if insecure else PinnedKeys(pins),
                         insecure_accept_any_peer=insecure, apq=args.apq, apq_suite=args.apq_suite or 0x0051,
                         rekey=RekeyPolicy(max_seconds=args.rekey_seconds,
                                           full_every=10 if args.full_every is None else args.full_every or None))


def apq_label(args: argparse.Namespace) -> str:
    """What the banners say about APQ; its options without --apq are a mistake, not silently ignored."""
    if args.apq == "off":
        if args.apq_suite is not None or args.full_every is not None:
            raise ConfigurationError("--apq-suite and --full-every need --apq prefer or --apq require")
        return ""
    every = 10 if args.full_every is None else args.full_every
    return (f", APQ {args.apq} with PQ suite {args.apq_suite or 0x0051}"
            + (f", FULL every {every} of our rekeys" if every else ", FULL only when resuming"))


def pins_from(args: argparse.Namespace) -> dict[bytes, set[str]]:
    pins: dict[bytes, set[str]] = {}
    for text in args.allow or []:
        name, print_ = parse_pin(text)
        pins.setdefault(name, set()).add(print_)
    if not pins and not args.insecure_accept_any_peer:
        peer = PEER.get(args.role, "peer")
        raise ConfigurationError(f"no peer is trusted: give --allow {peer}=FINGERPRINT, the key the {peer} prints "
                                 f"when it starts (python -m examples.quic_demo {peer} --key-file {peer}.key), "
                                 "or --insecure-accept-any-peer")
    return pins


def make_certificate(cert: Path, key: Path, hostname: str) -> None:
    """A self-signed TLS certificate for ``hostname`` (PEM files; the key 0600): alongside mode's first run.

    Self-signed, so the client trusts exactly this certificate (``--cafile`` the same file): fine for a demo
    between two machines one controls; a real deployment uses a certificate from its own CA.
    """
    certificate, private = self_signed_certificate(hostname, days=CERTIFICATE_DAYS)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    try:
        with os.fdopen(os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
            handle.write(pem)
        cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    except OSError as exc:
        raise ConfigurationError(f"cannot create the certificate {cert} / key {key}: {exc.strerror}") from None


def certificate_files(args: argparse.Namespace) -> tuple[str, str]:
    """An alongside server's --cert and --key: made (self-signed, for --server-name) if neither file exists."""
    if not args.cert or not args.key:
        raise ConfigurationError("an alongside server needs --cert and --key (a PEM certificate and its key): "
                                 "name two new files, e.g. --cert cert.pem --key cert.key, and a self-signed "
                                 "certificate for --server-name is made there (the client: --cafile cert.pem)")
    cert, key = Path(args.cert), Path(args.key)
    if not cert.exists() and not key.exists():
        make_certificate(cert, key, args.server_name)
        print(f"server: made a self-signed certificate for {args.server_name} in {cert} (its key in {key}); "
              f"the client trusts it with --cafile {cert}", flush=True)
    return args.cert, args.key


def serve_file(files: Path | None, request: bytes) -> bytes:
    """The answer to ``GET name``: ``+`` and the file, or ``-`` and why not (never a file outside ``files``)."""
    if files is None:
        return b"-this server shares no files (start it with --serve-dir)"
    name = request[len(DOWNLOAD):].decode("utf-8", "replace").strip()
    path = (files / name).resolve()
    if files not in path.parents:
        return b"-" + f"{name!r} is outside the shared folder".encode()
    if not path.is_file():
        return b"-" + f"no file {name!r} in the shared folder".encode()
    return b"+" + path.read_bytes()


class DemoServer(QuicConnectionProtocol):
    """Echoes a stream, or answers ``GET name`` (the whole request on one stream) with the file."""

    files: Path | None = None

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, EpochChanged):
            log.info("server: now at MLS epoch %d (%s)", event.epoch, event.reason)
        elif isinstance(event, StreamDataReceived):
            if event.data.startswith(DOWNLOAD) and event.end_stream:
                quic_of(self).send_stream_data(event.stream_id, serve_file(self.files, event.data), True)
            else:
                quic_of(self).send_stream_data(event.stream_id, event.data, event.end_stream)
            self.transmit()


class DemoClient(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.body = bytearray()
        self.done = asyncio.Event()
        self.connected = asyncio.Event()
        self.closed_because: str | None = None

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, HandshakeCompleted):
            self.connected.set()
        elif isinstance(event, ConnectionTerminated):
            # Our own refusal in full; the peer's as it chose to tell us (a stranger hears only the code).
            failure = getattr(quic_of(self), "mls_failure", None)
            self.closed_because = (f"{type(failure).__name__}: {failure}" if failure is not None
                                   else event.reason_phrase or f"error {event.error_code:#x}")
            self.done.set()
            self.connected.set()
        elif isinstance(event, EpochChanged):
            log.info("client: now at MLS epoch %d (%s)", event.epoch, event.reason)
        elif isinstance(event, StreamDataReceived):
            self.body += event.data
            if event.end_stream:
                self.done.set()

    async def request(self, data: bytes) -> bytes:
        self.body.clear()
        self.done.clear()
        stream = quic_of(self).get_next_available_stream_id()
        quic_of(self).send_stream_data(stream, data, True)
        self.transmit()
        await asyncio.wait_for(self.done.wait(), 60)
        if self.closed_because is not None:
            raise DemoError(f"the connection was closed: {self.closed_because}")
        return bytes(self.body)


class DemoError(MLSError):
    """Something the demo's user can fix, said in one line."""


def session_store(args: argparse.Namespace) -> SessionStore | None:
    """``--store``: a folder or (servers) a Redis URL; None keeps sessions only for this process."""
    if args.store is None:
        if args.store_keyring:
            raise ConfigurationError("--store-keyring seals a Redis --store: give --store redis://... too")
        return None
    if args.mode == "alongside":
        raise ConfigurationError("--store is for resumption, a QUIC-MLS (--mode mls) feature")
    if args.role == "client" and "://" in args.store:
        raise ConfigurationError("a client keeps its sessions in a folder (--store DIR); Redis is for servers")
    return open_store(args.store, keyring=args.store_keyring, replicas=args.store_replicas)


async def run_server(args: argparse.Namespace, profile_: ProfileConfig) -> MlsQuicServer:
    DemoServer.files = Path(args.serve_dir).resolve() if args.serve_dir else None
    if DemoServer.files is not None and not DemoServer.files.is_dir():
        raise ConfigurationError(f"--serve-dir {args.serve_dir} is not a folder")
    configuration = MlsQuicConfiguration(profile=profile_, mode=args.mode, is_client=False,
                                         alpn_protocols=["demo"], store=session_store(args))
    if args.mode == "alongside":
        cert, key = certificate_files(args)
        try:
            configuration.load_cert_chain(cert, key)
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"cannot load --cert {args.cert} / --key {args.key}: {exc}") from None
    server = await mlsquic.serve(args.host, args.port, configuration=configuration, create_protocol=DemoServer)
    print(f"QUIC-MLS server on {args.host}:{args.port}, mode {args.mode} ({MODES[args.mode]}), suite {args.suite}"
          f"{apq_label(args)}", flush=True)
    return server


async def run_client(args: argparse.Namespace, profile_: ProfileConfig) -> None:
    if args.mode == "alongside" and not args.cafile:
        raise ConfigurationError("an alongside client needs --cafile: the CA that signed the server's certificate "
                                 "(the demo server's self-signed one: the file its --cert names)")
    store = session_store(args)
    stored = store.group_ids() if store is not None else []
    configuration = MlsQuicConfiguration(profile=profile_, mode=args.mode, is_client=True,
                                         alpn_protocols=["demo"], cafile=args.cafile, server_name=args.server_name,
                                         # longer than the connect timeout, so that a server that never answers
                                         # is reported as such, not as a connection "refused" by the idle timer
                                         idle_timeout=args.connect_timeout + 5.0, store=store,
                                         resume_group_id=stored[-1] if stored else None)
    protocol_factory = DemoClient
    started = time.perf_counter()
    async with mlsquic.connect(args.host, args.port, configuration=configuration, create_protocol=protocol_factory,
                               wait_connected=False) as protocol:
        client = cast(DemoClient, protocol)  # built by create_protocol
        client.transmit()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(client.connected.wait(), args.connect_timeout)
        if client.closed_because is not None:
            raise DemoError(f"the connection was refused: {client.closed_because}")
        if not client.connected.is_set():
            raise DemoError(f"no QUIC-MLS server answered at {args.host}:{args.port} within "
                            f"{args.connect_timeout:g} s (is it running, in the same --mode?)")
        quic = cast(EpochKeyedConnection, quic_of(client))  # mlsquic.connect() builds an epoch-keyed connection
        how = "resumed the stored session" if configuration.resume_group_id else "connected"
        print(f"{how} in {1000 * (time.perf_counter() - started):.1f} ms at MLS epoch {quic.mls_epoch} "
              f"(mode {args.mode})")
        if args.download:
            started = time.perf_counter()
            answer = await client.request(DOWNLOAD + args.download.encode())
            if not answer.startswith(b"+"):
                raise DemoError(f"the server refused the download: {answer[1:].decode('utf-8', 'replace')}")
            body = answer[1:]
            seconds = time.perf_counter() - started
            print(f"downloaded {len(body)} bytes in {seconds:.2f} s, sha256 {hashlib.sha256(body).hexdigest()[:16]}")
        for i in range(args.rounds):
            payload = os.urandom(args.size)
            echoed = await client.request(payload)
            if i % max(1, args.rounds // 5) == 0:
                quic.rekey()  # an on-demand PCS rekey too
            pq_epoch = quic.mls_session.pq_epoch if quic.mls_session is not None else None
            print(f"echo {i + 1}/{args.rounds}: {len(echoed)} bytes, intact={echoed == payload}, "
                  f"epoch {quic.mls_epoch}" + (f", PQ epoch {pq_epoch}" if pq_epoch is not None else ""))
            await asyncio.sleep(args.interval)


def role_profile(args: argparse.Namespace) -> ProfileConfig:
    """A server's or client's profile: its key made or read and its fingerprint printed, then its trust checked."""
    private = signature_key(args)
    show_key(args.role, private, args)
    return profile(args.role, private, pins_from(args), args)


async def main_async(args: argparse.Namespace) -> None:
    if args.role == "server":
        server = await run_server(args, role_profile(args))
        try:
            await asyncio.Event().wait()
        finally:
            server.close()
    elif args.role == "client":
        await run_client(args, role_profile(args))
    else:
        if args.store:
            raise ConfigurationError("--store is for a separate server or client (in 'both' they would share it)")
        suite = get_suite(args.suite)
        (server_priv, server_pub), (client_priv, client_pub) = (suite.generate_signature_key_pair() for _ in "sc")
        show_key("server", server_priv, args)
        show_key("client", client_priv, args)
        server = await run_server(args, profile("server", server_priv, {b"client": {key_fingerprint(client_pub)}},
                                                args))
        try:
            await run_client(args, profile("client", client_priv, {b"server": {key_fingerprint(server_pub)}}, args))
        finally:
            server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", nargs="?", default="both", choices=("server", "client", "both"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4433)
    parser.add_argument("--mode", default="mls", choices=tuple(MODES),
                        help="; ".join(f"{mode}: {meaning}" for mode, meaning in MODES.items()))
    parser.add_argument("--cert", help="alongside server: TLS certificate (PEM; a self-signed one is made if neither "
                                       "it nor --key exists)")
    parser.add_argument("--key", help="alongside server: TLS private key (PEM)")
    parser.add_argument("--cafile", help="alongside client: trusted CA for the server certificate (for the demo "
                                         "server's self-signed certificate: that certificate)")
    parser.add_argument("--server-name", default="localhost",
                        help="alongside: the server's name (the client expects it; a made certificate names it)")
    parser.add_argument("--suite", type=int, action="append", choices=SUPPORTED_SUITES,
                        help="MLS cipher suite (default 1; 77 is X-Wing, post-quantum); repeat to offer (client) "
                             "or accept (server) several, most preferred first")
    parser.add_argument("--rekey-seconds", type=float, default=0.5, help="PCS rekey interval (default 0.5 s)")
    parser.add_argument("--apq", choices=("off", "prefer", "require"), default="off",
                        help="APQ-MLS (docs/pq.md): a post-quantum group beside the classical one (default off)")
    parser.add_argument("--apq-suite", type=int, choices=(0x0051, 0x0052),
                        help="APQ: the PQ group's ML-KEM-1024 suite (default 81; the ML-DSA ones need a second "
                             "key: mls-tunnel has them)")
    parser.add_argument("--full-every", type=int, metavar="N",
                        help="APQ: one of every N of this end's rekeys is FULL (default 10; 0: only the first "
                             "and resumptions)")
    parser.add_argument("--rounds", type=int, default=10, help="echo round trips (default 10)")
    parser.add_argument("--size", type=int, default=64 * 1024, help="bytes per echo")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between echoes")
    parser.add_argument("--serve-dir", help="server: directory that GET requests may read from")
    parser.add_argument("--download", help="client: a file name to download from the server's --serve-dir")
    parser.add_argument("--key-file", help="server/client: this end's signature key (created if missing)")
    parser.add_argument("--allow", action="append", metavar="NAME=FINGERPRINT",
                        help="server/client: trust peer NAME with exactly this key (repeatable)")
    parser.add_argument("--insecure-accept-any-peer", action="store_true",
                        help="authenticate nobody (a warning is logged for every peer)")
    parser.add_argument("--connect-timeout", type=float, default=5.0,
                        help="client: give up if no server answers within this many seconds (default 5)")
    parser.add_argument("--store", help="keep sessions for resumption: a folder, or (server) redis://host:port/db "
                                        "shared by a fleet of servers")
    parser.add_argument("--store-keyring", help="server: a Redis store's sealing keyring ('<id> <hex key>' lines)")
    parser.add_argument("--store-replicas", type=int, default=0, metavar="N",
                        help="server: Redis replicas that must acknowledge each write (WAIT) before it counts as "
                             "stored (docs/fleet.md, failover)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every epoch change, show tracebacks")
    args = parser.parse_args(argv)
    args.suites = suite_preference(args.suite)
    args.suite = args.suites[0]
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not args.verbose:
        logging.getLogger("quic").setLevel(logging.ERROR)  # aioquic's own close reports: we print one line instead
    with tempfile.TemporaryDirectory(prefix="quic-demo-") as folder:
        if args.mode == "alongside" and args.role == "both" and not args.cert:
            args.cert, args.key = str(Path(folder) / "cert.pem"), str(Path(folder) / "cert.key")
            make_certificate(Path(args.cert), Path(args.key), args.server_name)
            args.cafile = args.cert
        return run_command(functools.partial(main_async, args), prog="quic_demo", verbose=args.verbose)


if __name__ == "__main__":
    raise SystemExit(main())
