"""The Redis session store against a real redis-server: fenced, sealed, restart-proof, Cluster-ready."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from mls2p.errors import AlertDescription, ConfigurationError, StaleStateError, StoredStateError, StoreError
from mls2p.sealing import SealingKey, StateSealer, load_keyring, new_key_line
from mls2p.store import FileSessionStore, MemorySessionStore, open_store
from mls2p.testing import config
from mlstls.config import MlsTlsConfiguration
from mlstls.connection import ConnectionTerminated, MlsTlsConnection
from mlstls.testing import exchange
from tests.redis_server import RedisServer

SEALER = StateSealer([SealingKey("k1", bytes(range(32)))])


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def store(redis_server, request):
    from mls2p.redis_store import RedisSessionStore

    return RedisSessionStore.from_url(redis_server.url, SEALER, prefix=f"t-{request.node.name}")


def node(store, sealer: StateSealer = SEALER):
    """Another server's store: its own Redis client, the same Redis and prefix."""
    from mls2p.redis_store import RedisSessionStore

    port = store.client.connection_pool.connection_kwargs["port"]
    return RedisSessionStore.from_url(f"redis://127.0.0.1:{port}/0", sealer, prefix=store.prefix)


def raw(store, group_id: bytes) -> bytes:
    return store.client.hget(store.key(group_id), "b")


# -- the store contract (the same as the memory and file stores) ------------------------------------

def test_save_load_delete_and_fencing(store) -> None:
    gid = b"\x07"
    assert store.load(gid) is None and store.group_ids() == []
    store.save(gid, b"epoch 5", replaces=None)
    store.save(gid, b"epoch 6", replaces=b"epoch 5")
    with pytest.raises(StaleStateError, match="continued elsewhere"):
        store.save(gid, b"epoch 6 (other)", replaces=b"epoch 5")
    with pytest.raises(StaleStateError):
        store.save(gid, b"fresh", replaces=None)
    with pytest.raises(StaleStateError):
        store.delete(gid, replaces=b"epoch 5")
    assert store.load(gid) == b"epoch 6" and store.group_ids() == [gid]
    store.delete(gid, replaces=b"epoch 6")
    assert store.load(gid) is None and store.group_ids() == []


def race(nodes, gid: bytes, before: bytes, states: list[bytes]) -> tuple[list[bytes], int]:
    """Every node writes its state over ``before`` at the same moment: (the states written, refusals)."""
    barrier = threading.Barrier(len(nodes))
    written: list[bytes] = []
    refused: list[StaleStateError] = []

    def write(node_store, state: bytes) -> None:
        barrier.wait()
        try:
            node_store.save(gid, state, replaces=before)
            written.append(state)
        except StaleStateError as exc:
            refused.append(exc)

    threads = [threading.Thread(target=write, args=pair) for pair in zip(nodes, states, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return written, len(refused)


def test_of_nodes_racing_exactly_one_wins_every_time(store) -> None:
    nodes = [node(store) for _ in range(4)]
    gid = b"\x01" * 16
    store.save(gid, b"round 0", replaces=None)
    for round_ in range(1, 31):
        states = [f"round {round_} by node {index}".encode() for index in range(len(nodes))]
        written, refused = race(nodes, gid, f"round {round_ - 1}".encode(), states)
        assert len(written) == 1 and refused == len(nodes) - 1
        assert store.load(gid) == written[0]
        store.save(gid, f"round {round_}".encode(), replaces=written[0])


def test_a_retried_write_whose_reply_was_lost_succeeds_once(store) -> None:
    from mls2p.redis_store import version_of

    gid = b"\x02"
    store.save(gid, b"a", replaces=None)
    sealed = store.sealer.seal(gid, b"b")
    write = (gid, version_of(b"a"), version_of(b"b"), sealed)
    assert store._run(store._save, *write)
    assert store._run(store._save, *write)  # the client library's retry of this very write: already done
    assert store.load(gid) == b"b"
    with pytest.raises(StaleStateError):  # the same state from another connection is not the same write
        store.save(gid, b"b", replaces=b"a")
    store.save(gid, b"c", replaces=b"b")
    assert not store._run(store._save, *write)  # a retry after someone else moved on is stale
    assert store.load(gid) == b"c"


def test_one_round_trip_per_operation(store) -> None:
    gid = b"\x03"
    start = store.round_trips
    store.save(gid, b"x", replaces=None)
    store.load(gid)
    store.delete(gid, replaces=b"x")
    assert store.round_trips - start == 3


# -- sealing ---------------------------------------------------------------------------------------

def test_redis_holds_no_plaintext_and_a_state_does_not_open_in_another_slot(store) -> None:
    secret = os.urandom(64)
    store.save(b"\xaa", secret, replaces=None)
    store.save(b"\xbb", b"other", replaces=None)
    dump = b"".join(store.client.dump(key) or b"" for key in store.client.keys(f"{store.prefix}:*"))
    assert secret not in dump and secret[:16] not in dump
    blob = raw(store, b"\xaa")
    store.client.hset(store.key(b"\xbb"), "b", blob)  # an attacker with write access moves it
    with pytest.raises(StoredStateError, match="another session"):
        store.load(b"\xbb")
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    store.client.hset(store.key(b"\xaa"), "b", bytes(tampered))
    with pytest.raises(StoredStateError, match="altered"):
        store.load(b"\xaa")


def test_rotation_reseals_everything_and_the_old_key_can_then_go(store, tmp_path) -> None:
    old = tmp_path / "old.keys"
    old.write_text(new_key_line("2026-11") + "\n")
    old.chmod(0o600)
    states = {bytes([i]): os.urandom(100) for i in range(5)}
    old_store = node(store, load_keyring(old))
    for gid, state in states.items():
        old_store.save(gid, state, replaces=None)
    both = tmp_path / "both.keys"
    both.write_text(new_key_line("2026-12") + "\n" + old.read_text())
    both.chmod(0o600)
    rotating = node(store, load_keyring(both))
    assert [rotating.load(gid) for gid in states] == list(states.values())  # old states still open
    assert rotating.reseal() == len(states)
    assert rotating.reseal() == 0
    new_only = tmp_path / "new.keys"
    new_only.write_text(both.read_text().splitlines()[0] + "\n")
    new_only.chmod(0o600)
    assert [node(store, load_keyring(new_only)).load(gid) for gid in states] == list(states.values())
    with pytest.raises(StoredStateError, match="'2026-12', which is not in the keyring"):
        old_store.load(b"\x00")


@pytest.mark.parametrize(("text", "mode", "message"), [
    ("", 0o600, "empty"),
    ("k1 abcd\n", 0o600, "line 1: sealing key 'k1' has 2 bytes"),
    ("k1\n", 0o600, "line 1: expected"),
    ("k1 " + "00" * 32 + "\nk1 " + "11" * 32 + "\n", 0o600, "twice"),
    ("k1 " + "00" * 32 + "\n", 0o644, "readable by others"),
])
def test_bad_keyrings_are_refused_with_the_reason(tmp_path, text: str, mode: int, message: str) -> None:
    path = tmp_path / "keys"
    path.write_text(text)
    path.chmod(mode)
    with pytest.raises(ConfigurationError, match=message):
        load_keyring(path)


def test_key_material_is_never_in_a_repr() -> None:
    key = SealingKey("k", b"\x42" * 32)
    assert "42" not in repr(key) and "B" * 4 not in repr(key)
    assert "42" not in repr(StateSealer([key]))


# -- Redis restarts, outages and Cluster -------------------------------------------------------------

def test_confirmed_state_survives_a_redis_kill_and_the_store_reconnects(tmp_path) -> None:
    from mls2p.redis_store import RedisSessionStore

    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        store = RedisSessionStore.from_url(server.url, SEALER)
        store.save(b"\x09", b"confirmed", replaces=None)
        server.kill()  # SIGKILL right after the acknowledged write: appendfsync always kept it
        with pytest.raises(StoreError, match="Redis session store failed"):
            store.load(b"\x09")
        server.start()
        assert store.load(b"\x09") == b"confirmed"  # the same store object, reconnected
        store.save(b"\x09", b"next", replaces=b"confirmed")  # scripts are loaded again transparently
        assert store.load(b"\x09") == b"next"
    finally:
        server.stop()


def test_every_key_of_a_session_is_in_one_cluster_hash_slot(store) -> None:
    from redis.crc import key_slot

    gid = bytes.fromhex("00112233445566778899aabbccddeeff")
    assert store.key(gid) == f"{store.prefix}:{{{gid.hex()}}}"
    assert key_slot(store.key(gid).encode()) == key_slot(gid.hex().encode())


def test_open_store_picks_and_checks_the_store(tmp_path, redis_server) -> None:
    keys = tmp_path / "keys"
    keys.write_text(new_key_line("k") + "\n")
    keys.chmod(0o600)
    assert isinstance(open_store(tmp_path / "folder"), FileSessionStore)
    guarded = open_store(redis_server.url, keyring=keys)
    assert type(guarded).__name__ == "GuardedStore" and type(guarded.store).__name__ == "RedisSessionStore"
    with pytest.raises(ConfigurationError, match="needs a sealing keyring"):
        open_store(redis_server.url)
    with pytest.raises(ConfigurationError, match="a folder store is private"):
        open_store(tmp_path / "folder", keyring=keys)
    with pytest.raises(StoreError, match="Redis session store failed"):
        open_store("redis://:hunter2@127.0.0.1:1/0", keyring=keys)
    with pytest.raises(ConfigurationError, match=r"\*\*\*@"):
        open_store("redis://:hunter2@127.0.0.1:notaport/0", keyring=keys)


# -- the profile across nodes ----------------------------------------------------------------------

class Fleet:
    """One client (its own memory store) and server nodes that share a Redis store, driven in memory."""

    def __init__(self, store) -> None:
        self.client_store = MemorySessionStore()
        self.client_profile, self.server_profile = config(b"client"), config(b"server")
        self.nodes = [store, node(store), node(store)]
        self.group_id: bytes | None = None

    def client(self) -> MlsTlsConnection:
        return MlsTlsConnection(MlsTlsConfiguration(self.client_profile, True, self.client_store,
                                                    resume_group_id=self.group_id))

    def server(self, index: int) -> MlsTlsConnection:
        return MlsTlsConnection(MlsTlsConfiguration(self.server_profile, False, self.nodes[index]))

    pump = staticmethod(exchange)

    def connect(self, index: int) -> tuple[MlsTlsConnection, MlsTlsConnection]:
        client, server = self.client(), self.server(index)
        client.connect()
        self.pump(client, server)
        assert client.established and server.established
        assert client.session is not None
        self.group_id = client.session.group_id
        return client, server


def test_a_client_resumes_on_every_node_and_rekeys_there(store) -> None:
    fleet = Fleet(store)
    client, server = fleet.connect(0)
    for index in (1, 2, 0, 2):
        client.rekey()
        fleet.pump(client, server)
        assert client.epoch == server.epoch
        client, server = fleet.connect(index)  # resumption on another node
        assert client.endpoint.resumed and server.endpoint.resumed
        client.send_data(b"hello")
        fleet.pump(client, server)
        assert server.next_event() is not None


def test_a_node_killed_mid_commit_costs_one_resumption(store) -> None:
    """Node 0 stores its answer to a resumption and dies before sending it; node 1 recovers."""
    fleet = Fleet(store)
    fleet.connect(0)
    client, dying = fleet.client(), fleet.server(0)
    client.connect()
    dying.receive_data(client.data_to_send())  # answered and stored; the answer is never sent
    assert dying.data_to_send()
    epoch_stored = store.load(fleet.group_id)
    client, server = fleet.connect(1)  # the client resends its pending commit to another node
    assert client.endpoint.resumed and client.epoch == server.epoch
    assert store.load(fleet.group_id) != epoch_stored


def test_a_replayed_resumption_on_another_node_never_forks_the_session(store) -> None:
    """Found by review: the replay of a ResumptionRequest to a second node, plus a copy of the client's
    EpochKeyUpdate, made two connections continue one session with the same keys (the Lua script let
    an identical state through).  Now exactly one continues."""
    fleet = Fleet(store)
    fleet.connect(0)
    client = fleet.client()
    client.connect()
    request = client.data_to_send()
    first, second = fleet.server(1), fleet.server(2)
    first.receive_data(request)
    response = first.data_to_send()
    second.receive_data(request)  # replayed to another node while the first answer is in flight
    assert second.data_to_send() == response  # the same answer: any node leads the client to one epoch
    client.receive_data(response)
    confirmation = client.data_to_send()
    for node_connection in (first, second):  # the attacker copies the EpochKeyUpdate to both
        node_connection.receive_data(confirmation)
    assert first.established and not second.established
    Fleet.pump(client, first)
    assert client.established and client.epoch == first.epoch
    assert store.load(fleet.group_id) == first.endpoint.session.to_state()


class LoadTogether:
    """A node's store whose loads wait for each other: two nodes read the same state before either writes."""

    def __init__(self, inner, barrier: threading.Barrier) -> None:
        self.inner, self.barrier = inner, barrier

    def load(self, group_id: bytes) -> bytes | None:
        state = self.inner.load(group_id)
        self.barrier.wait()
        return state

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def test_two_nodes_racing_on_one_resumption_exactly_one_continues(store) -> None:
    fleet = Fleet(store)
    fleet.connect(0)
    client = fleet.client()
    client.connect()
    request = client.data_to_send()
    barrier = threading.Barrier(2)
    servers = [MlsTlsConnection(MlsTlsConfiguration(fleet.server_profile, False, LoadTogether(fleet.nodes[i],
                                                                                             barrier)))
               for i in (1, 2)]
    threads = [threading.Thread(target=server.receive_data, args=(request,)) for server in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(server.closed for server in servers) == [False, True]
    winner, loser = sorted(servers, key=lambda server: server.closed)
    ended = [event for event in iter(loser.next_event, None) if isinstance(event, ConnectionTerminated)]
    assert ended and "StaleStateError" in ended[0].reason and ended[0].alert == AlertDescription.INTERNAL_ERROR
    Fleet.pump(client, winner)
    assert client.established and client.epoch == winner.epoch
    assert store.load(fleet.group_id) == winner.endpoint.session.to_state()


def test_redis_unreachable_fails_the_connection_cleanly_and_keeps_the_client_session(tmp_path) -> None:
    from mls2p.redis_store import RedisSessionStore

    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        fleet = Fleet(RedisSessionStore.from_url(server.url, SEALER))
        fleet.connect(0)
        held = fleet.client_store.load(fleet.group_id)
        server.kill()
        client, node0 = fleet.client(), fleet.server(0)
        client.connect()
        Fleet.pump(client, node0)
        assert node0.closed and client.closed and not client.established
        assert fleet.client_store.load(fleet.group_id) is not None
        server.start()
        client, _ = fleet.connect(1)
        assert client.endpoint.resumed  # the session outlived the outage
        assert held is not None
    finally:
        server.stop()


def test_review_findings_on_urls_key_ids_and_foreign_servers(tmp_path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(new_key_line("k") + "\n")
    keys.chmod(0o600)
    with pytest.raises(ConfigurationError) as refused:  # a password in the query is not echoed
        open_store("redis://127.0.0.1:notaport/0?password=S3cretPW", keyring=keys)
    assert "S3cretPW" not in str(refused.value)
    with pytest.raises(ConfigurationError, match="unknown store URL scheme in 'reddis'"):
        open_store("reddis://127.0.0.1:6379/0", keyring=keys)
    with pytest.raises(ConfigurationError, match="without spaces or '#'"):
        new_key_line("a#b")
    echo = socket.create_server(("127.0.0.1", 0))  # something that is not Redis answers

    def serve() -> None:
        connection, _ = echo.accept()
        with connection:
            while data := connection.recv(4096):
                connection.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    try:
        with pytest.raises(StoreError, match="Redis session store failed"):
            open_store(f"redis://127.0.0.1:{echo.getsockname()[1]}/0", keyring=keys)
    finally:
        echo.close()


def test_reseal_skips_an_entry_it_cannot_open_and_goes_on(store, tmp_path) -> None:
    store.save(b"\x01", b"good", replaces=None)
    store.client.hset(store.key(b"\x02"), mapping={"v": b"x", "b": b"M2PS\x01\x02\xff\xfe" + bytes(40)})
    rotated = node(store, StateSealer([SealingKey("k2", bytes(32)), SealingKey("k1", bytes(range(32)))]))
    assert rotated.reseal() == 1
    assert len(rotated.reseal_skipped) == 1 and rotated.reseal_skipped[0].startswith("02:")
    assert rotated.load(b"\x01") == b"good"


# -- expiry: a TTL on every write, set inside the fenced script -------------------------------------

DAY_MS = 24 * 3600 * 1000


def test_every_save_gives_the_session_the_idle_ttl_in_the_same_round_trip(store) -> None:
    from mls2p.store import DEFAULT_MAX_IDLE_SECONDS

    gid, key = b"\x0a", store.key(b"\x0a")
    limit = int(DEFAULT_MAX_IDLE_SECONDS * 1000)
    start = store.round_trips
    store.save(gid, b"first", replaces=None)
    assert store.round_trips - start == 1
    assert limit // 2 < store.client.pttl(key) <= limit and store.client.ttl(key) > 29 * 24 * 3600
    store.client.pexpire(key, 5000)  # as if the session had been idle for almost the whole limit
    store.save(gid, b"second", replaces=b"first")  # a rekey or resumption: the TTL starts again
    assert limit // 2 < store.client.pttl(key) <= limit
    store.client.pexpire(key, 5000)
    with pytest.raises(StaleStateError):
        store.save(gid, b"other", replaces=b"first")  # a refused write changes no TTL
    assert store.client.pttl(key) <= 5000
    assert store.load(gid) == b"second" and store.client.pttl(key) <= 5000  # reading is not writing


def test_a_configured_idle_limit_and_none(store) -> None:
    from mls2p.redis_store import RedisSessionStore

    short = RedisSessionStore(store.client, SEALER, prefix=store.prefix, max_idle_seconds=2 * 24 * 3600)
    short.save(b"\x0b", b"x", replaces=None)
    assert DAY_MS < store.client.pttl(store.key(b"\x0b")) <= 2 * DAY_MS
    forever = RedisSessionStore(store.client, SEALER, prefix=store.prefix, max_idle_seconds=None)
    forever.save(b"\x0b", b"y", replaces=b"x")
    assert store.client.ttl(store.key(b"\x0b")) == -1  # PERSIST: a limit switched off is off for old keys too
    with pytest.raises(ConfigurationError, match="max_idle_seconds"):
        RedisSessionStore(store.client, SEALER, max_idle_seconds=0)


def test_reseal_keeps_each_sessions_remaining_ttl(store) -> None:
    store.save(b"\x0c", b"abandoned", replaces=None)
    store.client.pexpire(store.key(b"\x0c"), 60_000)
    rotated = node(store, StateSealer([SealingKey("k2", bytes(32)), SealingKey("k1", bytes(range(32)))]))
    assert rotated.reseal() == 1
    assert 0 < store.client.pttl(store.key(b"\x0c")) <= 60_000  # a rotation does not revive it
    assert rotated.sealer.writes("k2") == 1 and rotated.load(b"\x0c") == b"abandoned"


def test_open_store_passes_the_idle_limit_on(tmp_path, redis_server) -> None:
    keys = tmp_path / "keys"
    keys.write_text(new_key_line("k") + "\n")
    keys.chmod(0o600)
    assert open_store(redis_server.url, keyring=keys, max_idle_seconds=60).store.max_idle_seconds == 60
    assert open_store(redis_server.url, keyring=keys, max_idle_seconds=None).store.max_idle_seconds is None


def test_a_write_no_replica_acknowledged_is_on_the_primary_but_not_stored(redis_server, request) -> None:
    """replicas=1 and no replica: the fenced write lands (one round trip with its WAIT), the store says it is not
    durable, and the writer's next write replaces it (mls2p.bootstrap.StoreWriter writes it again)."""
    from mls2p.errors import NOT_DURABLE, StoreUnavailable
    from mls2p.redis_store import RedisSessionStore

    store = RedisSessionStore.from_url(redis_server.url, SEALER, prefix=f"t-{request.node.name}", replicas=1,
                                       replica_timeout=0.01)
    with pytest.raises(StoreUnavailable, match="only 0 of 1 Redis replica") as caught:
        store.save(b"g", b"state", replaces=None)
    assert caught.value.late.result() == NOT_DURABLE and store.round_trips == 1
    assert store.load(b"g") == b"state"
    with pytest.raises(StoreUnavailable):
        store.save(b"g", b"state", replaces=b"state")  # written again (fenced on what is there): still alone
