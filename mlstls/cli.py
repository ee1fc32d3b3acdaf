"""``mls-tunnel``: a long-lived TCP tunnel whose link heals after a key compromise.

    mls-tunnel fingerprint --state-dir ~/.mls-tunnel/server          # prints this end's key fingerprint
    mls-tunnel server --listen 127.0.0.1:8443 --target 127.0.0.1:5432 \\
        --state-dir ~/.mls-tunnel/server --identity server --allow client=sha256:...
    mls-tunnel client --listen 127.0.0.1:15432 --connect 127.0.0.1:8443 \\
        --state-dir ~/.mls-tunnel/client --identity client --allow server=sha256:...

Both ends authenticate each other by key: each pins the peer's identity to the
fingerprint the peer's ``fingerprint`` command printed (``--allow``, or a
``--trust-file`` of ``<identity> <fingerprint>`` lines).  ``--trust-on-first-use``
pins whatever key a peer first presents (kept in the state folder) and refuses
a changed one; ``--insecure-accept-any-peer`` authenticates nobody.  One of the
four is required.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from pathlib import Path

from mls2p.config import ProfileConfig
from mls2p.errors import ConfigurationError
from mls2p.identity import fingerprint, load_or_create_key
from mls2p.policy import RekeyPolicy
from mls2p.store import FileSessionStore, MemorySessionStore, SessionStore
from mls2p.trust import TrustOnFirstUse, load_trust_store, parse_pin
from mlscore.credentials import AnyOf, AuthenticationService, Credential, PinnedKeys
from mlscore.crypto import SUPPORTED_SUITES, get_suite
from mlscore.errors import MLSError

from .config import MlsTlsConfiguration
from .tunnel import TunnelClient, TunnelServer

log = logging.getLogger(__name__)

KEY_FILE = "signature.key"
TOFU_FILE = "trusted-peers"


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(f"{text!r} is not host:port")
    return host or "127.0.0.1", int(port)


def _signature_key(args: argparse.Namespace) -> bytes:
    if args.state_dir:
        return load_or_create_key(Path(args.state_dir).expanduser() / KEY_FILE, args.suite)
    private, _ = get_suite(args.suite).generate_signature_key_pair()
    return private


def _trust(args: argparse.Namespace) -> tuple[AuthenticationService | None, bool]:
    """The peer authentication the options ask for, and whether it is the insecure no-authentication."""
    services: list[AuthenticationService] = []
    if args.allow:
        pins: dict[bytes, set[str]] = {}
        for text in args.allow:
            name, print_ = parse_pin(text)
            pins.setdefault(name, set()).add(print_)
        services.append(PinnedKeys(pins))
    if args.trust_file:
        services.append(load_trust_store(args.trust_file))
    if args.trust_on_first_use:
        if not args.state_dir:
            raise ConfigurationError("--trust-on-first-use keeps its pins in --state-dir: give one")
        services.append(TrustOnFirstUse(Path(args.state_dir).expanduser() / TOFU_FILE))
    if args.insecure_accept_any_peer:
        if services:
            raise ConfigurationError("--insecure-accept-any-peer cannot be combined with pins")
        return None, True
    if not services:
        raise ConfigurationError("no peer is trusted: give --allow NAME=FINGERPRINT (the peer prints its "
                                 "fingerprint with 'mls-tunnel fingerprint --state-dir DIR'), --trust-file "
                                 "FILE or --trust-on-first-use")
    return (services[0] if len(services) == 1 else AnyOf(*services)), False


def _profile(args: argparse.Namespace) -> tuple[ProfileConfig, SessionStore]:
    store: SessionStore = (FileSessionStore(Path(args.state_dir).expanduser() / "sessions") if args.state_dir
                           else MemorySessionStore())
    service, insecure = _trust(args)
    profile = ProfileConfig(credential=Credential.basic(args.identity.encode()), signature_priv=_signature_key(args),
                            cipher_suite=args.suite, authentication_service=service,
                            insecure_accept_any_peer=insecure,
                            rekey=RekeyPolicy(max_bytes=args.rekey_bytes, max_seconds=args.rekey_seconds))
    return profile, store


async def _run(args: argparse.Namespace) -> int:
    profile, store = _profile(args)
    listen = _address(args.listen)
    print(f"mls-tunnel {args.mode}: identity {args.identity}, key {fingerprint(profile.signature_priv, args.suite)}",
          flush=True)
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mls-tunnel", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="mode", required=True)
    show = commands.add_parser("fingerprint", help="print this end's key fingerprint (creating the key)")
    show.add_argument("--state-dir", required=True, help="where this end keeps its key and state")
    show.add_argument("--suite", type=int, default=1, choices=SUPPORTED_SUITES, help="MLS cipher suite")
    for mode in ("server", "client"):
        sub = commands.add_parser(mode, help=f"run the tunnel's {mode} end")
        sub.add_argument("--listen", required=True, help="host:port to listen on")
        if mode == "client":
            sub.add_argument("--connect", required=True, help="the tunnel server's host:port")
        else:
            sub.add_argument("--target", required=True, help="where streams are forwarded to (host:port)")
        sub.add_argument("--identity", default="mls-tunnel", help="this end's name (basic credential)")
        sub.add_argument("--allow", action="append", metavar="NAME=FINGERPRINT",
                         help="trust peer NAME with exactly this key (repeatable)")
        sub.add_argument("--trust-file", help="trust the '<identity> <fingerprint>' lines of this file")
        sub.add_argument("--trust-on-first-use", action="store_true",
                         help="pin the first key each peer presents; refuse a changed one")
        sub.add_argument("--insecure-accept-any-peer", action="store_true",
                         help="authenticate nobody (a warning is logged for every peer)")
        sub.add_argument("--suite", type=int, default=1, choices=SUPPORTED_SUITES, help="MLS cipher suite")
        sub.add_argument("--rekey-seconds", type=float, default=30.0, help="PCS rekey interval (default 30)")
        sub.add_argument("--rekey-bytes", type=int, default=1 << 30, help="PCS rekey after this many bytes")
        sub.add_argument("--state-dir", help="persist the key and group state here (resumption across restarts)")
        sub.add_argument("--status-interval", type=float, default=5.0, help="seconds between status lines")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    try:
        if args.mode == "fingerprint":
            private = load_or_create_key(Path(args.state_dir).expanduser() / KEY_FILE, args.suite)
            print(fingerprint(private, args.suite))
            return 0
        return asyncio.run(_run(args))
    except (MLSError, OSError) as exc:
        if args.verbose:
            log.exception("mls-tunnel failed")
        print(f"mls-tunnel: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
