"""mls-tunnel: a long-lived TCP tunnel whose link heals after a key compromise (docs/tunnel.md).

  mls-tunnel fingerprint --state-dir ~/.mls-tunnel/server     # creates this end's key, prints its fingerprint
  mls-tunnel server --listen 0.0.0.0:8443 --target 127.0.0.1:5432 --state-dir ~/.mls-tunnel/server
                    --identity server --allow client=sha256:...
  mls-tunnel client --listen 127.0.0.1:15432 --connect server.example:8443 --state-dir ~/.mls-tunnel/client
                    --identity client --allow server=sha256:...
  mls-tunnel client --config /etc/mls-tunnel/client.toml     # any option, as a TOML key

Without --state-dir each end keeps its key and sessions in a per-user folder,
$XDG_STATE_HOME/mls-tunnel/<server|client> (~/.local/state/mls-tunnel/... when
XDG_STATE_HOME is unset), created 0700; the first lines say which folder and
which --identity are used.  -v goes before or after the command.

A fleet of servers behind a load balancer shares its sessions in Redis (docs/fleet.md):
  (umask 077; mls-tunnel store-key --id 2026-12 > /etc/mls-tunnel/store.keys)  # a new keyring
  mls-tunnel server ... --store redis://redis.internal:6379/0 --store-keyring /etc/mls-tunnel/store.keys
  mls-tunnel store-reseal --store redis://... --store-keyring ...     # after putting a new key first

Both ends authenticate each other by key: each pins the peer's identity to the
fingerprint the peer's "fingerprint" command printed (--allow, or a --trust-file
of "<identity> <fingerprint>" lines).  --trust-on-first-use pins whatever key a
peer first confirms with (kept in the state folder) and refuses a changed one,
for names no pin names; --insecure-accept-any-peer authenticates nobody.  One of
them is required.  SIGHUP re-reads the trust options (and --config): a peer no
longer trusted is disconnected at once.

One process serves many ports: [services.NAME] tables in --config (docs/tunnel.md,
"Several services"); SIGHUP (systemctl reload) applies added, removed or changed
services and trust without touching the links of other peers.  "mls-tunnel status"
asks a running tunnel (--json for scripts); --metrics HOST:PORT exports the same to
Prometheus.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import functools
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mls2p.command import run_command
from mls2p.config import ProfileConfig, suite_preference
from mls2p.errors import ConfigurationError
from mls2p.identity import fingerprint, load_or_create_key
from mls2p.policy import RekeyPolicy
from mls2p.redis_store import URL_SCHEMES, RedisSessionStore
from mls2p.sealing import load_keyring, new_key_line
from mls2p.session import TwoPartySession
from mls2p.store import FileSessionStore, SessionStore, open_store
from mls2p.store_guard import GuardedStore
from mls2p.trust import TrustOnFirstUse, TrustPolicy, merge_pins, parse_pin, read_pins
from mlscore.apq import pq_group_suites
from mlscore.credentials import Credential
from mlscore.crypto import SUPPORTED_SUITES, get_suite
from mlscore.errors import MLSError

from .config import HousleyConfig, MlsTlsConfiguration
from .control import CONTROL_SOCKET, ControlServer, query, render
from .errors import TunnelError
from .metrics import check_available, serve_metrics
from .services import DEFAULT_SERVICE, Service, parse_address, service_table, services_from_config
from .tunnel import ListenError, TunnelClient, TunnelServer, printable, settings_of, status_line

log = logging.getLogger(__name__)

KEY_FILE = "signature.key"
TOFU_FILE = "trusted-peers"
STATE_FOLDER = "mls-tunnel"
"""The tunnel's folder under the user's XDG state folder (the default state folder's parent)."""
DEFAULT_IDENTITY = "mls-tunnel"
VERBOSE_FLAGS = ("-v", "--verbose")
PURGE_INTERVAL = 3600.0
"""Seconds between sweeps of expired sessions from a folder store."""


def _address(text: str, option: str, *, listening: bool = False) -> tuple[str, int]:
    """``host:port`` of an option; a mistake names the option (``--listen: 'x' is not host:port ...``)."""
    try:
        return parse_address(text, listening=listening)
    except ConfigurationError as exc:
        raise ConfigurationError(f"--{option}: {exc}") from None


_LISTEN_HINTS = {
    errno.EADDRINUSE: "another program (another mls-tunnel, say) uses that address: choose another port, or stop it",
    errno.EADDRNOTAVAIL: "this machine has no such address",
    errno.EACCES: "a port below 1024 needs privilege (CAP_NET_BIND_SERVICE)",
}


def _cannot_listen(where: str, address: tuple[str, int], error: OSError) -> ConfigurationError:
    """A listen address that cannot be bound at start is a configuration mistake (exit status 2: a restart
    cannot fix it): one line naming the option and the reason."""
    if isinstance(error, ListenError):
        error = error.error
    if error.errno and not isinstance(error, socket.gaierror):  # getaddrinfo's codes are not errno values
        reason = os.strerror(error.errno).lower()
    else:
        reason = (error.strerror or str(error) or type(error).__name__).lower()
    hint = _LISTEN_HINTS.get(error.errno or 0)
    return ConfigurationError(f"{where} {address[0]}:{address[1]}: cannot listen there: {reason}"
                              + (f"; {hint}" if hint else ""))


def _service_option(args: argparse.Namespace, service: Service) -> str:
    """The option that defines a client's service: --listen, or its table in the configuration file."""
    if service.name == DEFAULT_SERVICE and DEFAULT_SERVICE not in (args.services_config or {}):
        return "--listen"
    return f"{args.config}: [services.{service.name}] listen"


def _services_from_config(tables: object, *, mode: str, source: str) -> dict[str, Service]:
    """services_from_config, with an address mistake naming its service and key (``server.toml: [services.web]
    target: 'localhost' is not host:port ...``)."""
    try:
        return services_from_config(tables, mode=mode, source=source)
    except ConfigurationError as exc:
        if "is not host:port" not in str(exc) or not isinstance(tables, Mapping):
            raise
        key = "target" if mode == "server" else "listen"
        for name, table in tables.items():  # the same order: the first address that does not parse
            if isinstance(table, Mapping) and key in table:
                try:
                    parse_address(table[key], listening=mode == "client")
                except ConfigurationError as bad:
                    raise ConfigurationError(f"{source}: [services.{name}] {key}: {bad}") from None
        raise
status_log = logging.getLogger("mlstls.status")
"""The periodic status lines (--status-interval): INFO, shown whatever the log level once asked for."""
RESTART_ONLY = ("connect", "state_dir", "identity", "suites", "store", "store_keyring", "store_replicas",
                "rekey_seconds", "rekey_bytes", "apq", "apq_suite", "full_every", "full_seconds", "tls_mode",
                "metrics", "control_socket")
"""Options a reload cannot change (it says so and keeps the running value); a server's --listen too."""


def default_state_dir(mode: str, environ: Mapping[str, str] = os.environ) -> Path:
    """The state folder of one end when no --state-dir is given: ``<XDG state folder>/mls-tunnel/<mode>``.

    A key made for one run only could never be pinned by the peer, so the tunnel keeps one per user, where the
    XDG Base Directory specification puts state (``$XDG_STATE_HOME``, which must be absolute, else
    ``~/.local/state``).  Each end has its own sub-folder: a client and a server run by one user must not share
    a session folder (both would store the same group under the same name).
    """
    base = environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(base):
        try:
            base = str(Path.home() / ".local" / "state")
        except RuntimeError:  # no HOME and no password-database entry (a bare service account)
            raise ConfigurationError("no --state-dir was given and this user has no home folder for the default "
                                     "state folder: give --state-dir DIR") from None
    return Path(base) / STATE_FOLDER / mode


def _writable(folder: Path, what: str) -> None:
    """Create ``folder`` (0700, and any missing folder above it) and prove this user can write in it.

    A folder the tunnel cannot write is a configuration mistake (exit status 2, so a service manager does not
    restart it for ever).  Checked at start, it is reported as what it is; found later, it would surface as a
    failed connection ("cannot reach the tunnel server") far from its cause.
    """
    try:
        for missing in [*reversed(folder.parents), folder]:
            if not missing.is_dir():
                with contextlib.suppress(FileExistsError):  # made meanwhile by the other end, say
                    missing.mkdir(mode=0o700)  # 0700 for the parents too: Path.mkdir(parents=True) uses 0777
        handle, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise ConfigurationError(f"cannot write the {what} {folder}: {reason}") from None


def _key_file(suite: int) -> str:
    """The file of this end's key for ``suite``: one per ML-DSA scheme (APQ's mode 1 signs the PQ group with
    it, beside the classical key), else KEY_FILE."""
    scheme = get_suite(suite).signature_scheme
    return f"signature-{scheme}.key" if scheme.startswith("mldsa") else KEY_FILE


def _own_key(folder: Path, suite: int) -> bytes:
    """This end's signature key from ``folder``, created there (and the folder checked) on first use."""
    if not (folder / _key_file(suite)).exists():
        _writable(folder, "state folder")
    return load_or_create_key(folder / _key_file(suite), suite)


def _apq_suite(args: argparse.Namespace) -> int:
    """--apq-suite (81 if not given); the APQ options without --apq are a mistake, not silently ignored."""
    given = [f"--{name}" for name in ("apq_suite", "full_every", "full_seconds") if getattr(args, name) is not None]
    if args.apq == "off" and given:
        raise ConfigurationError(f"{', '.join(o.replace('_', '-') for o in given)} need --apq prefer or --apq require")
    return int(args.apq_suite) if args.apq_suite is not None else 0x0051


def _full_every(args: argparse.Namespace) -> int | None:
    """--full-every: 10 if not given, 0 for none but the first and the resumptions."""
    return 10 if args.full_every is None else (args.full_every or None)


def _apq_key(args: argparse.Namespace, folder: Path) -> bytes | None:
    """The ML-DSA key of APQ's mode 1 (an --apq-suite that signs with ML-DSA), else None."""
    suite = _apq_suite(args)
    if args.apq == "off" or not get_suite(suite).signature_scheme.startswith("mldsa"):
        return None
    return _own_key(folder, suite)


def _state_folder(args: argparse.Namespace) -> Path:
    """The state folder of a server or client, checked writable where anything will be written in it."""
    folder = Path(args.state_dir).expanduser()
    if not getattr(args, "store", None) or args.trust_on_first_use:  # sessions or first-use pins are kept here
        _writable(folder, "state folder")
    return folder


def _trust(args: argparse.Namespace, *, reloading: bool = False) -> tuple[TrustPolicy | None, bool]:
    """The one trust decision the options ask for (None: the insecure no-authentication), and whether insecure.

    --allow and --trust-file pins are one union; --trust-on-first-use decides only names no pin names
    (mls2p.trust, docs/security.md "How trust options combine").  A reload may leave nobody trusted (every
    peer revoked); a start may not.
    """
    pins: dict[bytes, set[str]] = {}
    for text in args.allow or ():
        name, print_ = parse_pin(text)
        pins.setdefault(name, set()).add(print_)
    if args.trust_file:
        pins = merge_pins(pins, read_pins(args.trust_file))
    first_use = None
    if args.trust_on_first_use:  # a server or client always has a state folder (given, or the default one)
        first_use = TrustOnFirstUse(Path(args.state_dir).expanduser() / TOFU_FILE)
    if args.insecure_accept_any_peer:
        if pins or first_use is not None:
            raise ConfigurationError("--insecure-accept-any-peer cannot be combined with pins")
        return None, True
    if not pins and first_use is None and not (reloading and args.trust_file):
        raise ConfigurationError("no peer is trusted: give --allow NAME=FINGERPRINT (the peer prints its "
                                 "fingerprint with 'mls-tunnel fingerprint --state-dir DIR'), --trust-file "
                                 "FILE or --trust-on-first-use")
    return TrustPolicy(pins=pins, first_use=first_use), False


def _store(args: argparse.Namespace) -> SessionStore:
    if getattr(args, "store", None):
        if args.trust_on_first_use and args.store.startswith(URL_SCHEMES):
            raise ConfigurationError("--trust-on-first-use keeps its pins on each node, so a fleet would pin "
                                     "differently per node: with a Redis --store give --allow or --trust-file")
        if not args.store.startswith(URL_SCHEMES):
            _writable(Path(args.store), "session folder")  # the folder open_store uses
        return open_store(args.store, keyring=args.store_keyring, replicas=args.store_replicas)
    if getattr(args, "store_replicas", 0):
        raise ConfigurationError("--store-replicas is for a Redis --store (its replicas acknowledge each write)")
    if getattr(args, "store_keyring", None):
        raise ConfigurationError("--store-keyring seals a Redis --store: give --store redis://... too")
    sessions = Path(args.state_dir).expanduser() / "sessions"
    _writable(sessions, "session folder")
    return FileSessionStore(sessions)


def _profile(args: argparse.Namespace, private: bytes,
             trust: tuple[TrustPolicy | None, bool] | None = None,
             apq_key: bytes | None = None) -> tuple[ProfileConfig, SessionStore]:
    service, insecure = trust if trust is not None else _trust(args)
    store = _store(args)
    profile = ProfileConfig(credential=Credential.basic(args.identity.encode()), signature_priv=private,
                            cipher_suite=args.suites[0], accepted_suites=args.suites, authentication_service=service,
                            insecure_accept_any_peer=insecure,
                            rekey=RekeyPolicy(max_bytes=args.rekey_bytes, max_seconds=args.rekey_seconds,
                                              full_every=_full_every(args), full_seconds=args.full_seconds),
                            apq=args.apq, apq_suite=_apq_suite(args), apq_signature_priv=apq_key)
    return profile, store


def _housley(args: argparse.Namespace) -> HousleyConfig | None:
    """``--mode housley``: MLS inside the TLS 1.3 handshake (needs tlslite-ng, checked here, at start)."""
    if args.tls_mode != "housley":
        return None
    import mlstls.housley  # noqa: F401  # MissingExtra (a ConfigurationError: one line, exit 2) without tlslite-ng

    return HousleyConfig()


def _services(args: argparse.Namespace) -> dict[str, Service]:
    shorthand = args.target if args.mode == "server" else args.listen
    if shorthand:
        _address(shorthand, "target" if args.mode == "server" else "listen", listening=args.mode == "client")
    return service_table(mode=args.mode, shorthand=shorthand, configured=args.services_config)


def _check_service_peers(args: argparse.Namespace, services: Mapping[str, Service],
                         trust: TrustPolicy | None) -> None:
    """A service's ``peers`` names identities: refused where nobody is authenticated, and a warning where a
    name is only as good as its first use."""
    named = {name: service.peers for name, service in services.items() if service.peers is not None}
    if not named:
        return
    first = sorted(named)[0]
    if args.insecure_accept_any_peer:
        raise ConfigurationError(f"[services.{first}] peers cannot be used with --insecure-accept-any-peer: "
                                 "nobody is authenticated, so any peer may call itself by a name listed there "
                                 "(trust peers by key with --allow or --trust-file)")
    pinned = trust.pins if trust is not None else {}
    unpinned = sorted({peer for peers in named.values() for peer in peers if peer not in pinned})
    if not args.trust_on_first_use:  # under pins only: a name no pin names can never be authenticated
        for name in sorted(named):
            unknown = sorted(peer for peer in named[name] if peer not in pinned)
            if unknown:
                log.warning("[services.%s] peers: %s %s named by no trust option (--allow, --trust-file): no "
                            "peer can use the service under %s name (a typo?)", name,
                            ", ".join(printable(p) for p in unknown), "are" if len(unknown) > 1 else "is",
                            "those names" if len(unknown) > 1 else "that")
    if args.trust_on_first_use and unpinned:
        log.warning("services' peers under --trust-on-first-use: the name%s %s %s only as good as %s first use "
                    "(whoever first connects with a name owns it); pin %s with --allow or --trust-file",
                    "s" if len(unpinned) > 1 else "", ", ".join(printable(p) for p in unpinned),
                    "are" if len(unpinned) > 1 else "is", "their" if len(unpinned) > 1 else "its",
                    "them" if len(unpinned) > 1 else "it")


class Running:
    """A running tunnel end: what ``status`` reports, and the reload (SIGHUP) that changes it in place.

    It exists from before the endpoint starts (the control socket answers from the first moment); a SIGHUP
    that arrives before the endpoint is up is remembered and applied once it is (:meth:`hangup`).
    """

    def __init__(self, args: argparse.Namespace, key: str,
                 read_args: Callable[[], argparse.Namespace] | None = None) -> None:
        self.args = args
        self.endpoint: TunnelServer | TunnelClient | None = None
        self.trust: TrustPolicy | None = None
        self.key = key
        self.read_args = read_args
        self.started = time.monotonic()
        self.reloads: dict[str, Any] = {"applied": 0, "refused": 0, "last_error": None, "last_seconds": None}
        self.said = args
        """The options of the last reload (the start's at first): a restart-only change is said once."""
        self._lock = asyncio.Lock()
        self._hangup_pending = False
        self._tasks: set[asyncio.Task[bool]] = set()

    def report(self) -> dict[str, Any]:
        if self.endpoint is None:
            services: Mapping[str, Service] = {}
        elif isinstance(self.endpoint, TunnelServer):
            services = self.endpoint.services
        else:
            services = {name: service for name, (service, _) in self.endpoint.listeners.items()}
        return {"version": 1, "mode": self.args.mode, "pid": os.getpid(), "identity": self.args.identity,
                "key": self.key, "uptime_seconds": round(time.monotonic() - self.started, 1),
                "services": [service.describe() for service in services.values()],
                "links": self.endpoint.snapshot() if self.endpoint is not None else [],
                "handshake_failures": dict(self.endpoint.handshake_failures) if self.endpoint is not None else {},
                "reloads": dict(self.reloads), "store": self._store_report(),
                "handshake": settings_of(self.endpoint.configuration) if self.endpoint is not None else None}

    def _store_report(self) -> dict[str, Any] | None:
        """The shared session store's health (a Redis store is guarded: mls2p.store_guard); None for others."""
        store = self.endpoint.configuration.store if self.endpoint is not None else None
        return store.report() if isinstance(store, GuardedStore) else None

    def hangup(self) -> None:
        """SIGHUP: reload now, or once the endpoint is up (never the signal's default action: the end)."""
        if self.read_args is None:
            return
        if self.endpoint is None:
            if not self._hangup_pending:
                log.warning("SIGHUP while starting: the configuration is reloaded once the tunnel is up")
            self._hangup_pending = True
            return
        task = asyncio.get_running_loop().create_task(self.reload(self.read_args))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def up(self, endpoint: TunnelServer | TunnelClient, trust: TrustPolicy | None) -> None:
        """The endpoint is up: from now on a SIGHUP reloads; one that came while starting reloads now."""
        self.endpoint, self.trust = endpoint, trust
        if self._hangup_pending:
            self._hangup_pending = False
            self.hangup()

    async def reload(self, read_args: Callable[[], argparse.Namespace]) -> bool:
        """Read the configuration again, from scratch, and apply it; a mistake keeps the configuration in force
        (logged "reload refused" and counted), whatever the mistake: never an exit."""
        async with self._lock:
            began = time.perf_counter()
            try:
                applied = await self._apply(read_args())
            except (Exception, SystemExit) as exc:  # a mistake, or argparse's exit on a bad value
                if isinstance(exc, ConfigurationError | MLSError):
                    text = str(exc)
                elif isinstance(exc, ListenError):
                    text = str(_cannot_listen(_service_option(self.said, exc.service), exc.service.address, exc))
                elif isinstance(exc, OSError):
                    text = f"cannot listen: {exc}"
                elif isinstance(exc, SystemExit):  # argparse: it printed why on stderr
                    text = "the command line and configuration file do not parse (see the message above)"
                else:  # a bug must not end the tunnel either
                    log.debug("reload failed", exc_info=True)
                    text = f"{type(exc).__name__}: {exc}"
                self.reloads["refused"] += 1
                self.reloads["last_error"] = text
                log.error("reload refused, the configuration in force is unchanged: %s", text)
                return False
            self.reloads["applied"] += 1
            self.reloads["last_error"] = None
            self.reloads["last_seconds"] = round(time.perf_counter() - began, 4)
            log.warning("configuration reloaded in %.1f ms: %s", 1000 * self.reloads["last_seconds"], applied)
            return True

    async def _apply(self, args: argparse.Namespace) -> str:
        assert self.endpoint is not None
        services = _services(args)  # everything is checked before anything is applied
        fresh: TrustPolicy | None = None
        if self.trust is not None:
            fresh, insecure = _trust(args, reloading=True)
            if fresh is None or insecure:
                raise ConfigurationError("--insecure-accept-any-peer cannot be switched on by a reload")
        elif not args.insecure_accept_any_peer:
            raise ConfigurationError("switching from --insecure-accept-any-peer to pins takes a restart")
        if args.mode == "server":
            _check_service_peers(args, services, fresh)
        for option in RESTART_ONLY + (("listen",) if args.mode == "server" else ()):
            value = getattr(args, option, None)
            # Once per changed value: not again at every later reload that leaves it so.
            if value != getattr(self.args, option, None) and value != getattr(self.said, option, None):
                log.warning("--%s changed: it takes effect at the next start (the running value stays)",
                            option.replace("_", "-"))
        self.said = args
        if isinstance(self.endpoint, TunnelClient):
            closed = await self.endpoint.set_services(services)  # may fail to bind: nothing else changed yet
        else:
            closed = self.endpoint.set_services(services)
        if self.trust is not None and fresh is not None:
            self.trust.replace(fresh)  # tells every connection it knows, live or not yet collected
            checked = self.endpoint.live_connections()
        else:
            checked = 0
        return (f"{len(services)} service(s), {closed} stream(s) of removed or changed services closed, "
                f"{checked} live connection(s) re-checked against the trust configuration")


def _stored_identity(store: SessionStore, group_id: bytes, profile: ProfileConfig) -> bytes | None:
    """The identity this end has in a stored session (its own leaf's credential); None if unknown."""
    try:
        data = store.load(group_id)
        if data is None:
            return None
        group = TwoPartySession.from_state(data, profile).group
    except MLSError:  # unreadable: the resumption attempt reports it, as for any stored state
        return None
    if group is None:
        return None
    return group.own_leaf_node.credential.identity or None


def _resumable(store: SessionStore, profile: ProfileConfig) -> bytes | None:
    """The stored session a client resumes: none made under another --identity.

    Resuming it would present a credential the server does not expect for this key (it refuses twice before
    the client gives up on it); instead a fresh handshake runs at once, and the stored session is forgotten
    once the new one is confirmed (TunnelClient forgets every other session then).
    """
    group_ids = store.group_ids()
    if not group_ids:
        return None
    own = _stored_identity(store, group_ids[0], profile)
    configured = profile.credential.identity
    if own is not None and own != configured:
        log.warning("the stored session belongs to identity %s, not %s: running a fresh authenticated handshake",
                    printable(own), printable(configured))
        return None
    return group_ids[0]


def _announce(args: argparse.Namespace, folder: Path, key: str, apq_key: str | None = None) -> None:
    """Say what was chosen for the user: the default state folder, the default name, this end's key.

    Printed before the trust options are checked, so that a first start without them still shows what the
    peer needs to pin (the refusal that follows names the fix).
    """
    prefix = f"mls-tunnel {args.mode}:"
    if args.state_dir_defaulted:
        print(f"{prefix} no --state-dir given: this end's key and sessions are kept in {folder}", flush=True)
    if args.identity == DEFAULT_IDENTITY:
        print(f"{prefix} no --identity given: this end is named {DEFAULT_IDENTITY!r}; the peer pins it with "
              f"--allow {DEFAULT_IDENTITY}={key}", flush=True)
    print(f"{prefix} identity {args.identity}, key {key}", flush=True)
    if apq_key is not None:
        print(f"{prefix} APQ (suite {_apq_suite(args)}) signs with a second key, which the peer pins too: "
              f"--allow {args.identity}={apq_key}", flush=True)


async def _run(args: argparse.Namespace, read_args: Callable[[], argparse.Namespace] | None = None) -> int:
    loop = asyncio.get_running_loop()
    running = Running(args, "", read_args)
    if read_args is not None:
        # From the first moment, before anything connects: a SIGHUP while starting (systemctl reload while
        # the server is down, say) must not end the tunnel (the default action); it reloads once up.
        loop.add_signal_handler(signal.SIGHUP, running.hangup)
    listen = _address(args.listen, "listen", listening=True) if args.mode == "server" else None
    remote = _address(args.connect, "connect") if args.mode == "client" else None
    services = _services(args)  # every address first: a typo is reported before any write
    metrics_address = _address(args.metrics, "metrics", listening=True) if args.metrics else None
    if args.metrics:
        check_available()
    folder = _state_folder(args)
    # The single-instance check (the control socket) comes before anything is printed, and before the store
    # and the network: a second tunnel on this folder says only that (not the first one's port in use), and
    # must not resume the first one's session (resetting its link) before it stops.
    control = ControlServer(Path(args.control_socket) if args.control_socket else folder / CONTROL_SOCKET,
                            running.report)
    await control.check()
    private = _own_key(folder, args.suite)
    key = running.key = fingerprint(private, args.suite)
    apq_key = _apq_key(args, folder)
    _announce(args, folder, key, fingerprint(apq_key, _apq_suite(args)) if apq_key is not None else None)
    trust, insecure = _trust(args)  # checked (nothing written yet) before the control socket is made
    if args.mode == "server":
        _check_service_peers(args, services, trust)
    await control.start()  # checks again (another tunnel may have started meanwhile), then serves
    metrics: asyncio.Server | None = None
    endpoint: TunnelServer | TunnelClient | None = None
    stopping = False
    try:
        profile, store = _profile(args, private, (trust, insecure), apq_key)
        if metrics_address is not None:
            metrics = await serve_metrics(*metrics_address, running.report)  # a busy address: exit status 2
        if args.mode == "server":
            assert listen is not None
            server_config = MlsTlsConfiguration(profile, False, store, housley=_housley(args))
            endpoint = TunnelServer(server_config, services)
            try:
                port = await endpoint.start(*listen)
            except OSError as exc:
                raise _cannot_listen("--listen", listen, exc) from None
            print(f"mls-tunnel server on {listen[0]}:{port} -> " + ", ".join(
                f"{s.name} {s.address[0]}:{s.address[1]}" for s in services.values())
                + f" ({settings_of(server_config)})", flush=True)
        else:
            assert remote is not None
            config = MlsTlsConfiguration(profile, True, store, resume_group_id=_resumable(store, profile),
                                         housley=_housley(args))
            endpoint = TunnelClient(config, remote, retry_refused=args.retry_refused,
                                    max_retry_delay=args.max_retry_delay)
            timeout = None if args.retry_forever else args.connect_timeout
            try:
                ports = await endpoint.start_services(services, connect_timeout=timeout)
            except ListenError as exc:
                raise _cannot_listen(_service_option(args, exc.service), exc.service.address, exc) from None
            print("mls-tunnel client on " + ", ".join(
                f"{services[n].address[0]}:{p} ({n})" for n, p in ports.items()) + f" -> {args.connect}"
                + f" ({settings_of(config)})", flush=True)
        running.up(endpoint, trust)
        purged_at = -PURGE_INTERVAL
        if args.status_interval > 0:
            status_log.setLevel(logging.INFO)
        while True:
            if isinstance(store, FileSessionStore) and time.monotonic() - purged_at >= PURGE_INTERVAL:
                purged_at = time.monotonic()  # abandoned sessions (a client that never came back) expire
                with contextlib.suppress(MLSError):
                    if removed := store.purge_expired(time.time()):
                        log.info("removed %d session(s) idle for longer than the store's limit", removed)
            stopped = endpoint.stopped if isinstance(endpoint, TunnelClient) else asyncio.Event()
            interval = args.status_interval if args.status_interval > 0 else PURGE_INTERVAL
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopped.wait(), interval)
            if isinstance(endpoint, TunnelClient) and endpoint.refused is not None:
                raise TunnelError(endpoint.refused)
            if args.status_interval > 0:
                for link in endpoint.snapshot():
                    status_log.info("status: %s", status_line(link))
    except asyncio.CancelledError:  # SIGINT or SIGTERM: a clean stop, said as such
        stopping = True
        raise
    finally:
        # Only for a stop asked for: an ending for a reason (refused, say) is the one line that gives it, on
        # stderr, never after "shutting down".
        if running.endpoint is not None and stopping:
            print("mls-tunnel: shutting down", flush=True)
        if metrics is not None:
            metrics.close()
        await control.close()
        if endpoint is not None:
            await endpoint.close()


async def _status(args: argparse.Namespace) -> int:
    """``mls-tunnel status``: ask the running tunnel of a state folder (or of either default one)."""
    if args.control_socket or args.state_dir:
        given = Path(args.control_socket) if args.control_socket else None
        paths = [given or Path(args.state_dir).expanduser() / CONTROL_SOCKET]
    else:
        paths = [default_state_dir(mode) / CONTROL_SOCKET for mode in ("server", "client")]
        paths = [path for path in paths if path.exists()] or paths[:1]
    reports = [await query(path) for path in paths]
    text = json.dumps(reports[0] if len(reports) == 1 else reports, indent=2) if args.json else "\n\n".join(
        render(report) for report in reports)
    try:
        print(text, flush=True)
    except BrokenPipeError:  # the reader went (| head): end quietly, as other Unix tools do
        _stdout_gone()
    return 0


def _stdout_gone() -> None:
    """stdout's reader closed it: point stdout at /dev/null, so that nothing fails again when it is flushed at
    the exit (Python would print "Exception ignored ... BrokenPipeError")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mls-tunnel", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(*VERBOSE_FLAGS, action="store_true", help="log more, and show tracebacks")
    # The same flag after the command too; SUPPRESS keeps a command's parser from resetting one given before it.
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument(*VERBOSE_FLAGS, action="store_true", default=argparse.SUPPRESS,
                         help="log more, and show tracebacks")
    commands = parser.add_subparsers(dest="mode", required=True)
    show = commands.add_parser("fingerprint", parents=[verbose],
                               help="create this end's key if needed and print its fingerprint")
    show.add_argument("--state-dir", required=True, help="where this end keeps its key and state")
    show.add_argument("--suite", type=int, default=1, choices=SUPPORTED_SUITES,
                      help="MLS cipher suite (an ML-DSA suite such as 85: the second key of APQ's mode 1)")
    key = commands.add_parser("store-key", parents=[verbose],
                              help="print a new sealing key line for a Redis store's keyring")
    key.add_argument("--id", default=time.strftime("%Y-%m-%d"), help="the key's name (default: today's date)")
    reseal = commands.add_parser("store-reseal", parents=[verbose],
                                 help="seal every stored session with the keyring's first key")
    reseal.add_argument("--store", required=True, help="the Redis URL the servers use")
    reseal.add_argument("--store-keyring", required=True, help="the keyring file, new key first")
    status = commands.add_parser("status", parents=[verbose], help="ask a running tunnel how its links are")
    status.add_argument("--state-dir", help="the running tunnel's state folder (default: the default folder of "
                                            "a server, else of a client)")
    status.add_argument("--control-socket", help="its control socket, if it was given one")
    status.add_argument("--json", action="store_true", help="print the report as JSON, for scripts")
    for mode in ("server", "client"):
        sub = commands.add_parser(mode, parents=[verbose], help=f"run the tunnel's {mode} end")
        sub.add_argument("--config", help="a TOML file of options (keys as the long options, e.g. state-dir)")
        sub.add_argument("--listen", help="host:port to listen on")
        if mode == "client":
            sub.add_argument("--connect", help="the tunnel server's host:port")
            sub.add_argument("--connect-timeout", type=float, default=5.0,
                             help="give up if the server cannot be reached at start for this long (default 5 s)")
            sub.add_argument("--retry-forever", action="store_true",
                             help="keep trying to reach the server at start instead of giving up")
            sub.add_argument("--retry-refused", action="store_true",
                             help="keep retrying (with backoff) when the server refuses our identity")
            sub.add_argument("--max-retry-delay", type=float, default=2.0,
                             help="cap of the reconnect backoff, before jitter (default 2 s)")
        else:
            sub.add_argument("--target", help="where streams are forwarded to (host:port)")
            sub.add_argument("--store", help="where sessions are kept: a folder, or redis://host:port/db shared by "
                                             "a fleet of servers (default: the state folder)")
            sub.add_argument("--store-keyring", help="a Redis store's sealing keyring ('<id> <hex key>' lines)")
            sub.add_argument("--store-replicas", type=int, default=0, metavar="N",
                             help="Redis replicas that must acknowledge each write (WAIT) before it counts as stored "
                                  "(docs/fleet.md, failover; default 0)")
        sub.add_argument("--identity", default=DEFAULT_IDENTITY,
                         help=f"this end's name, which the peer pins (basic credential; default {DEFAULT_IDENTITY})")
        sub.add_argument("--allow", action="append", metavar="NAME=FINGERPRINT",
                         help="trust peer NAME with exactly this key (repeatable)")
        sub.add_argument("--trust-file", help="trust the '<identity> <fingerprint>' lines of this file")
        sub.add_argument("--trust-on-first-use", action="store_true",
                         help="pin the first key each peer presents; refuse a changed one")
        sub.add_argument("--insecure-accept-any-peer", action="store_true",
                         help="authenticate nobody (a warning is logged for every peer)")
        sub.add_argument("--suite", type=int, action="append", choices=SUPPORTED_SUITES,
                         help="MLS cipher suite (default 1; 77 is X-Wing, post-quantum); repeat to offer "
                              "(client) or accept (server) several, most preferred first")
        sub.add_argument("--rekey-seconds", type=float, default=30.0, help="PCS rekey interval (default 30)")
        sub.add_argument("--rekey-bytes", type=int, default=1 << 30, help="PCS rekey after this many bytes")
        sub.add_argument("--mode", "--tls-mode", dest="tls_mode", choices=("mls", "housley"), default="mls",
                         help="mls: MLS in place of the TLS handshake (default); housley: MLS inside a TLS 1.3 "
                              "handshake (draft-housley-tls-using-mls-handshake, docs/housley.md; both ends "
                              "alike). In a --config file: tls-mode")
        sub.add_argument("--apq", choices=("off", "prefer", "require"), default="off",
                         help="APQ-MLS (docs/pq.md): a post-quantum group beside the classical one, whose FULL "
                              "commits keep the keys PQ-secure at close to classical cost (default off)")
        sub.add_argument("--apq-suite", type=int, choices=pq_group_suites(),
                         help="the PQ group's suite (default 81, ML-KEM-1024; 85 and 86 sign with ML-DSA-87 too, "
                              "with a second key the peer pins: 'mls-tunnel fingerprint --suite 85')")
        sub.add_argument("--full-every", type=int, metavar="N",
                         help="APQ: one of every N of this end's rekeys is FULL (default 10; 0: only the first, "
                              "resumptions and those --full-seconds asks for)")
        sub.add_argument("--full-seconds", type=float, metavar="S",
                         help="APQ: this end's next rekey is FULL once its last FULL one is S seconds old")
        sub.add_argument("--state-dir", help="keep the key and group state here (resumption across restarts; "
                                             f"default $XDG_STATE_HOME/{STATE_FOLDER}/{mode}, that is "
                                             f"~/.local/state/{STATE_FOLDER}/{mode})")
        sub.add_argument("--status-interval", type=float, default=0.0,
                         help="log a status line per link every this many seconds (default 0: off; "
                              "'mls-tunnel status' asks at any time)")
        sub.add_argument("--control-socket",
                         help=f"where 'mls-tunnel status' asks (default <state-dir>/{CONTROL_SOCKET})")
        sub.add_argument("--metrics", metavar="HOST:PORT",
                         help="serve Prometheus metrics at http://HOST:PORT/metrics (needs prometheus-client)")
    return parser


def _config_value(parser: argparse.ArgumentParser, name: str, key: str, value: Any, source: str) -> Any:
    """A ``--config`` value checked (and converted) as its option's command-line value would be: a wrong type
    is a ConfigurationError naming the key, never an argparse exit or a TypeError later."""
    action = next((a for a in parser._actions if a.dest == name), None)
    if action is None:
        return value

    def wrong(expected: str) -> ConfigurationError:
        return ConfigurationError(f"{source}: {key} must be {expected}, not {value!r}")

    def one(item: Any) -> Any:
        item = converted(item)
        if action.choices is not None and item not in action.choices:
            raise ConfigurationError(f"{source}: {key} must be one of {', '.join(map(str, action.choices))}, "
                                     f"not {value!r}")
        return item

    def converted(item: Any) -> Any:
        kind = action.type
        if kind is None:
            if not isinstance(item, str):
                raise wrong("a string")
            return item
        number = "a whole number" if kind is int else "a number"
        if isinstance(item, bool):
            raise wrong(number)
        if isinstance(item, str):
            try:
                item = kind(item)  # type: ignore[operator]
            except (TypeError, ValueError):
                raise wrong(number) from None
        elif kind is float and isinstance(item, int | float):
            item = float(item)
        elif not (kind is int and isinstance(item, int)):
            raise wrong(number)
        return item

    if action.nargs == 0:  # a flag: --retry-forever, --insecure-accept-any-peer ...
        if not isinstance(value, bool):
            raise wrong("true or false")
        return value
    if isinstance(action, argparse._AppendAction):
        return [one(item) for item in (value if isinstance(value, list) else [value])]
    return one(value)


def _with_config_file(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse; options from ``--config`` (TOML) stand in for those not given on the command line.

    The parser is left as it was: every call (a reload's too) reads the file from scratch, so an option
    deleted from the file is back to its default (a deleted ``allow`` line revokes).
    """
    args = parser.parse_args(argv)
    if getattr(args, "config", None):
        try:
            with open(args.config, "rb") as handle:
                options = tomllib.load(handle)
        except OSError as exc:
            raise ConfigurationError(f"cannot read the configuration file {args.config}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{args.config} is not valid TOML: {exc}") from None
        known = vars(args)
        subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        command = subparsers.choices[args.mode]
        defaults: dict[str, Any] = {}
        if args.mode in ("server", "client"):
            defaults["services_config"] = _services_from_config(options.pop("services", {}), mode=args.mode,
                                                                source=args.config)
        for key, value in options.items():
            name = "tls_mode" if key == "mode" else key.replace("-", "_")  # --mode's dest (the command is args.mode)
            if name not in known or name == "config":
                raise ConfigurationError(f"{args.config}: unknown option {key!r}")
            defaults[name] = _config_value(command, name, key, value, args.config)
        saved = dict(command._defaults), [(action, action.default) for action in command._actions]
        command.set_defaults(**defaults)
        try:
            args = parser.parse_args(argv)
        finally:  # set_defaults changes the parser: put it back, for the next read
            command._defaults.clear()
            command._defaults.update(saved[0])
            for action, default in saved[1]:
                action.default = default
    if args.mode in ("server", "client"):
        args.services_config = getattr(args, "services_config", None)
        args.suites = suite_preference(args.suite)
        args.suite = args.suites[0]
        args.state_dir_defaulted = not args.state_dir
        if args.state_dir_defaulted:
            args.state_dir = str(default_state_dir(args.mode))
    required = {"server": ("listen",), "client": ("connect",)}.get(args.mode, ())
    missing = [name for name in required if not getattr(args, name)]
    if missing:
        raise ConfigurationError(f"{args.mode} needs --{missing[0]} (on the command line or in --config)")
    return args


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    # Known before parsing: how a mistake in the arguments themselves is reported depends on it.
    verbose = any(token in VERBOSE_FLAGS for token in (sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s")

    def command() -> int:
        args = _with_config_file(parser, argv)
        if args.mode == "fingerprint":
            print(fingerprint(_own_key(Path(args.state_dir).expanduser(), args.suite), args.suite))
            return 0
        if args.mode == "store-key":
            print(new_key_line(args.id))
            return 0
        if args.mode == "store-reseal":
            if not args.store.startswith(URL_SCHEMES):
                raise ConfigurationError("store-reseal works on a Redis --store (a folder store is not sealed)")
            store = RedisSessionStore.from_url(args.store, load_keyring(args.store_keyring))
            print(f"resealed {store.reseal()} session(s) with key {store.sealer.sealing_key_id!r}")
            for problem in store.reseal_skipped:
                print(f"mls-tunnel: skipped {problem}", file=sys.stderr)
            return 1 if store.reseal_skipped else 0
        if args.mode == "status":
            return run_command(functools.partial(_status, args), prog="mls-tunnel", verbose=verbose)
        read_args = functools.partial(_with_config_file, _parser(), argv)  # a reload reads from scratch
        return run_command(functools.partial(_run, args, read_args), prog="mls-tunnel", verbose=verbose)

    return run_command(command, prog="mls-tunnel", verbose=verbose)


if __name__ == "__main__":
    sys.exit(main())
