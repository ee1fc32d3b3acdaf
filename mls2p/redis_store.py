"""Sessions on Redis, so a fleet of servers shares them and a client resumes on any node (docs/fleet.md).

One Redis hash per session, ``<prefix>:{<group id hex>}`` with two fields:

* ``v``: the *version*, SHA-256 of the plaintext state (it covers the epoch,
  the pending commit, everything), and
* ``b``: the state sealed by :class:`~mls2p.sealing.StateSealer` for this group.

Every write is fenced: a Lua script replaces the hash only while ``v`` is the
version of the state the writer read (``replaces``), atomically, in one round
trip.  Of two nodes racing to continue a session exactly one wins; the other
gets :class:`~mls2p.errors.StaleStateError` and its connection ends, so the
client resumes on the winner's state.  The braces are a Redis Cluster hash
tag: every key of a session lies in one hash slot, and the scripts touch only
the key they declare.

A write whose reply was lost (Redis restarted, the network blinked) is
retried by the client library with the same arguments; the script counts "the
hash already holds exactly this write" (the same version *and* the same sealed
bytes, whose random nonce makes every write unique) as success, so the retry
neither fails nor writes twice.  Another connection that computed the same
state is *not* let through: two connections that both accepted one replayed
resumption would otherwise both continue, with the same keys.  The
store's methods are synchronous, as the profile's store interface is: keep
Redis close (same site) and its timeouts short.  Round trips: ``load`` 1,
``save`` 1, ``delete`` 1; :attr:`RedisSessionStore.round_trips` counts them.

Expiry: every write sets the key's TTL to ``max_idle_seconds`` inside the same
script (``PEXPIRE``, still one round trip), so Redis itself drops a session
whose client stopped coming back (:data:`~mls2p.store.DEFAULT_MAX_IDLE_SECONDS`);
None removes the TTL (``PERSIST``).  :meth:`RedisSessionStore.reseal` keeps
each key's remaining TTL: a key rotation must not revive abandoned sessions.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from .errors import NOT_DURABLE, ConfigurationError, StaleStateError, StoredStateError, StoreError, StoreUnavailable
from .sealing import StateSealer
from .store import DEFAULT_MAX_IDLE_SECONDS, REPLICA_TIMEOUT, check_max_idle

if TYPE_CHECKING:
    import redis

VERSION_LABEL = b"mls2p state version\x00"
URL_SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://", "rediss+sentinel://", "redis+cluster://",
               "rediss+cluster://")
SENTINEL_SCHEMES = ("redis+sentinel://", "rediss+sentinel://")
CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")

# KEYS[1] session; ARGV: expected version ("" = none stored), new version, sealed state, TTL in
# milliseconds ("0": none, PERSIST; "" or absent: leave the key's TTL as it is, for reseal).  HSET keeps
# a TTL, so an existing key is always given the one asked for.  A retried write (second branch) changes
# nothing: the first attempt set the TTL.
_SAVE = """
local v = redis.call('HGET', KEYS[1], 'v') or ''
if v == ARGV[1] then
  redis.call('HSET', KEYS[1], 'v', ARGV[2], 'b', ARGV[3])
  local ttl = ARGV[4] or ''
  if ttl == '0' then
    redis.call('PERSIST', KEYS[1])
  elseif ttl ~= '' then
    redis.call('PEXPIRE', KEYS[1], ttl)
  end
  return 1
end
if v == ARGV[2] and redis.call('HGET', KEYS[1], 'b') == ARGV[3] then return 1 end
return 0
"""

KEEP_TTL = b""
"""The TTL argument of a write that must not change the key's TTL (reseal)."""

# KEYS[1] session; ARGV[1]: expected version.  Gone already counts as done (a retried delete).
_DELETE = """
local v = redis.call('HGET', KEYS[1], 'v')
if not v or v == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


def version_of(state: bytes | None) -> bytes:
    """The fence value of ``state`` (empty for "nothing stored")."""
    return b"" if state is None else hashlib.sha256(VERSION_LABEL + state).digest()


class RedisSessionStore:
    """A :class:`~mls2p.store.SessionStore` on Redis: sealed, fenced, Cluster-ready.

    ``client`` is a ``redis.Redis`` (or ``redis.RedisCluster``) with
    ``decode_responses`` off; :meth:`from_url` builds one with short timeouts
    and retries on connection errors.  Every save gives the session's key a
    TTL of ``max_idle_seconds`` (None: no TTL).
    """

    def __init__(self, client: redis.Redis, sealer: StateSealer, *, prefix: str = "mls2p",
                 max_idle_seconds: float | None = DEFAULT_MAX_IDLE_SECONDS, replicas: int = 0,
                 replica_timeout: float = REPLICA_TIMEOUT) -> None:
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise ConfigurationError(f"replicas must be a count (0 or more), not {replicas!r}")
        self.client = client
        self.replicas = replicas
        """Replicas that must acknowledge each write (Redis WAIT) before it counts as stored."""
        self.replica_timeout = replica_timeout
        self.sealer = sealer
        self.prefix = prefix
        self.max_idle_seconds = check_max_idle(max_idle_seconds)
        # Whole milliseconds, at least 1 (PEXPIRE 0 would delete the key at once).
        self._ttl = b"0" if max_idle_seconds is None else str(max(1, round(max_idle_seconds * 1000))).encode()
        self.round_trips = 0
        self.reseal_skipped: list[str] = []
        """Entries the last :meth:`reseal` could not open (id and reason), left as they were."""
        from redis import RedisError

        self._failure = RedisError
        self._save = client.register_script(_SAVE)
        self._delete = client.register_script(_DELETE)

    @classmethod
    def from_url(cls, url: str, sealer: StateSealer, *, timeout: float = 0.5, prefix: str = "mls2p",
                 max_idle_seconds: float | None = DEFAULT_MAX_IDLE_SECONDS, replicas: int = 0,
                 replica_timeout: float = REPLICA_TIMEOUT) -> RedisSessionStore:
        """``redis://[user:password@]host:port/db``, ``rediss://`` (TLS), ``unix:///path.sock``, or through
        Sentinel: ``redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]`` (``rediss+sentinel``:
        TLS to the primary); the user and password are the primary's (an ACL user), the Sentinels are asked
        without.  Redis Cluster: ``redis+cluster://[user:password@]host:port[,host:port...]`` (any nodes; the
        client learns the rest), ``rediss+cluster://`` for TLS.  ``replicas``: see :attr:`replicas` (not with
        Cluster yet: WAIT must run on the connection of the write's node)."""
        try:
            import redis
            from redis.backoff import ExponentialBackoff
            from redis.retry import Retry
        except ImportError:
            raise ConfigurationError("a Redis store needs the redis package: pip install 'mls-transport[redis]'"
                                     ) from None
        if not url.startswith(URL_SCHEMES):
            raise ConfigurationError(f"{_safe(url)!r} is not a Redis URL ({', '.join(URL_SCHEMES)})")
        # A call blocks its node's event loop: at most about 3 x timeout plus 0.1 s of backoff in all.
        retry = Retry(ExponentialBackoff(cap=0.05, base=0.02), retries=2)
        options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout, "retry": retry,
                                   "retry_on_error": [redis.ConnectionError, redis.TimeoutError]}
        try:
            if url.startswith(SENTINEL_SCHEMES):
                client = _through_sentinel(url, options)
            elif url.startswith(CLUSTER_SCHEMES):
                if replicas:
                    raise ConfigurationError("replica acknowledgement (replicas) is not supported with Redis Cluster "
                                             "yet: use Sentinel, or replicas=0")
                client = _cluster(url, options)
            else:
                client = redis.Redis.from_url(url, health_check_interval=30, **options)
        except ValueError as exc:
            raise ConfigurationError(f"bad Redis URL {_safe(url)!r}: {exc}") from None
        return cls(client, sealer, prefix=prefix, max_idle_seconds=max_idle_seconds, replicas=replicas,
                   replica_timeout=replica_timeout)

    def __repr__(self) -> str:
        return f"RedisSessionStore(prefix={self.prefix!r}, {self.sealer!r})"

    def key(self, group_id: bytes) -> str:
        return f"{self.prefix}:{{{bytes(group_id).hex()}}}"

    def save(self, group_id: bytes, state: bytes, *, replaces: bytes | None) -> None:
        sealed = self.sealer.seal(group_id, state)
        args = [version_of(replaces), version_of(state), sealed, self._ttl]
        if self.replicas:
            written, acked = self._command(lambda: self._save_and_wait(group_id, args))
        else:
            written, acked = self._run(self._save, group_id, *args), 0
        if not written:
            raise StaleStateError(f"the stored state of group {group_id.hex()} changed since this connection "
                                  "read it: the session continued elsewhere")
        if acked < self.replicas:
            self._not_durable(acked)

    def _save_and_wait(self, group_id: bytes, args: list[bytes]) -> tuple[bool, int]:
        """The fenced write and WAIT on one connection, in one round trip: WAIT counts the replicas that have
        every write *of the connection it runs on*, so on another pooled connection it would prove nothing
        (found by the failover test: a session three epochs ahead of the promoted replica)."""
        pipe = self.client.pipeline(transaction=False)
        self._save(keys=[self.key(group_id)], args=args, client=pipe)
        pipe.wait(self.replicas, max(1, round(self.replica_timeout * 1000)))
        written, acked = pipe.execute()
        return bool(written), int(acked)

    def _not_durable(self, acked: int) -> None:
        """StoreUnavailable for a write fewer than :attr:`replicas` acknowledged in time.  It is on the primary
        (``late`` says so), so the writer's next fenced write replaces it; what the replicas do not have may be
        lost in a failover, so the caller does not count it as stored."""
        error = StoreUnavailable(f"only {acked} of {self.replicas} Redis replica(s) acknowledged the write within "
                                 f"{self.replica_timeout * 1000:.0f} ms")
        landed: Future[str] = Future()
        landed.set_result(NOT_DURABLE)
        error.late = landed
        raise error

    def load(self, group_id: bytes) -> bytes | None:
        sealed = self._command(lambda: self.client.hget(self.key(group_id), "b"))
        return None if sealed is None else self.sealer.open(group_id, bytes(sealed))

    def delete(self, group_id: bytes, *, replaces: bytes | None) -> None:
        if not self._run(self._delete, group_id, version_of(replaces)):
            raise StaleStateError(f"the stored state of group {group_id.hex()} changed since this connection "
                                  "read it: not deleting it")

    def group_ids(self) -> list[bytes]:
        start = len(self.prefix) + 2
        keys = self._command(lambda: list(self.client.scan_iter(match=f"{self.prefix}:{{*}}", count=1000)))
        found = []
        for key in keys:
            text = key.decode() if isinstance(key, bytes) else str(key)
            try:
                found.append(bytes.fromhex(text[start:-1]))
            except ValueError:
                continue  # not one of ours
        return sorted(found)

    def reseal(self) -> int:
        """Seal every state not sealed with the keyring's first key again with it; returns how many.

        Run after putting a new key first in the keyring (docs/fleet.md,
        "Rotating the sealing key").  Concurrent writes are safe: a state that
        changed meanwhile was sealed with the new key by its writer.  Each key
        keeps its TTL: resealing is not use, and must not keep abandoned
        sessions alive.
        """
        count = 0
        self.reseal_skipped = []
        for group_id in self.group_ids():
            sealed = self._command(lambda gid=group_id: self.client.hget(self.key(gid), "b"))
            try:
                if sealed is None or self.sealer.key_id_of(bytes(sealed)) == self.sealer.sealing_key_id:
                    continue
                state = self.sealer.open(group_id, bytes(sealed))
            except StoredStateError as exc:  # one bad entry must not stop a rotation
                self.reseal_skipped.append(f"{group_id.hex()}: {exc}")
                continue
            version = version_of(state)
            if self._run(self._save, group_id, version, version, self.sealer.seal(group_id, state), KEEP_TTL):
                count += 1
        return count

    def _run(self, script: Any, group_id: bytes, *args: bytes) -> bool:
        return bool(self._command(lambda: script(keys=[self.key(group_id)], args=list(args))))

    def ping(self) -> None:
        """Check that Redis answers (StoreError if not): servers call it at start."""
        self._command(self.client.ping)

    def check_writable(self) -> None:
        """Check that a write would count as stored now: Redis answers and, with :attr:`replicas`, that many
        replicas acknowledge a write (a probe key beside the sessions, expiring in a minute, and WAIT on its
        connection).  StoreError if Redis does not answer, StoreUnavailable if too few replicas do.  The session
        store guard (mls2p.store_guard) calls it from its own thread while it holds the circuit open."""
        if not self.replicas:
            self.ping()
            return

        def probe() -> int:
            pipe = self.client.pipeline(transaction=False)
            pipe.set(f"{self.prefix}:probe", os.urandom(8).hex(), px=60_000)
            pipe.wait(self.replicas, max(1, round(self.replica_timeout * 1000)))
            return int(pipe.execute()[1])
        acked = self._command(probe)
        if acked < self.replicas:
            raise StoreUnavailable(f"only {acked} of {self.replicas} Redis replica(s) acknowledge writes")

    def _command(self, call: Any) -> Any:
        self.round_trips += 1
        try:
            return call()
        except self._failure as exc:
            raise StoreError(f"the Redis session store failed: {type(exc).__name__}: {exc}") from None
        except Exception as exc:  # redis-py's own surprise at a peer that is not Redis (seen: AttributeError)
            raise StoreError(f"the Redis session store failed: {type(exc).__name__}: {exc} "
                             "(is that address a Redis server?)") from None


def _hosts(netloc: str) -> list[tuple[str, int]]:
    """``h:p[,h:p...]`` (after any ``user:password@``) as (host, port) pairs."""
    hosts = netloc.rpartition("@")[2]
    found = []
    for item in hosts.split(",") if hosts else []:
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{item!r} is not host:port")
        found.append((host.strip("[]"), int(port)))
    if not found:
        raise ValueError("no host:port")
    return found


def _credentials(netloc: str) -> dict[str, Any]:
    from urllib.parse import unquote

    user, _, password = netloc.rpartition("@")[0].partition(":")
    return {"username": unquote(user) or None, "password": unquote(password) or None}


def _cluster(url: str, options: dict[str, Any]) -> redis.Redis:
    """A Redis Cluster client from ``redis+cluster://[user:password@]h:p[,h:p...]``: every session is one key, in
    one hash slot (the braces of :meth:`RedisSessionStore.key`), so the fenced scripts run on its node."""
    from urllib.parse import urlsplit

    from redis.cluster import ClusterNode, RedisCluster

    parts = urlsplit(url)
    if parts.path not in ("", "/"):
        raise ValueError("a Redis Cluster URL has no database: redis+cluster://host:port[,host:port...]")
    nodes = [ClusterNode(host, port) for host, port in _hosts(parts.netloc)]
    cluster_options: dict[str, Any] = {key: value for key, value in options.items() if key != "retry_on_error"}
    cluster_options.update(_credentials(parts.netloc), ssl=url.startswith("rediss+"))
    client: Any = RedisCluster(startup_nodes=nodes, **cluster_options)
    return client  # typed as redis.Redis where the store uses it: the commands it sends are the same


def _through_sentinel(url: str, options: dict[str, Any]) -> redis.Redis:
    """The primary a Sentinel URL names: ``redis+sentinel://[user:password@]h:p[,h:p...]/service[/db]``."""
    from urllib.parse import urlsplit

    from redis.sentinel import Sentinel

    parts = urlsplit(url)
    path = [piece for piece in parts.path.split("/") if piece]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError("expected redis+sentinel://host:port[,host:port...]/service[/db]")
    sentinels = _hosts(parts.netloc)
    primary = {**options, "db": int(path[1]) if len(path) == 2 else 0, **_credentials(parts.netloc),
               "ssl": url.startswith("rediss+")}
    sentinel = Sentinel(sentinels, socket_timeout=options["socket_timeout"],
                        socket_connect_timeout=options["socket_connect_timeout"])
    return sentinel.master_for(path[0], **primary)


def _safe(url: str) -> str:
    """``url`` without anything that may hold a password (user information, query), for messages."""
    scheme, sep, rest = url.partition("://")
    rest = rest.split("?", 1)[0].split("#", 1)[0]
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    return scheme + sep + rest
