"""MLS inside the TLS 1.3 handshake (mlstls.housley, docs/housley.md): handshake on every TLS suite, the key
schedule recomputed independently, data, 20 rekeys, resumption after a rekey cut short, and a stock tlslite-ng
connection in the same process unaffected.  Driven in memory (no sockets, no clocks) except the stock one."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import signal
import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mls2p import MemorySessionStore, RekeyPolicy
from mls2p.testing import config
from mlscore.crypto import XWING_SUITE
from mlstls.config import HousleyConfig, MlsTlsConfiguration
from mlstls.connection import ConnectionTerminated, DataReceived, EpochChanged, HandshakeCompleted
from mlstls.housley import HousleyConnection

CLIENT, SERVER = b"client", b"server"


class Pair:
    """A Housley client and server in memory, each with its own store; ``pump`` moves bytes until quiet."""

    def __init__(self, suite: int = 1, housley: HousleyConfig | None = None, **profile: object) -> None:
        self.housley = housley or HousleyConfig()
        self.client_store, self.server_store = MemorySessionStore(), MemorySessionStore()
        self.client_profile = config(CLIENT, suite, **profile)
        self.server_profile = config(SERVER, suite, **profile)
        self.events: dict[str, list[object]] = {"client": [], "server": []}
        self.received = {"client": bytearray(), "server": bytearray()}
        self.connect()

    def connect(self, resume: bytes | None = None) -> None:
        self.client = HousleyConnection(MlsTlsConfiguration(self.client_profile, True, self.client_store,
                                                            resume_group_id=resume, housley=self.housley))
        self.server = HousleyConnection(MlsTlsConfiguration(self.server_profile, False, self.server_store,
                                                            housley=self.housley))
        self.client.connect()
        self.pump()

    def pump(self) -> None:
        for _ in range(100):
            moved = False
            for source, target in ((self.client, self.server), (self.server, self.client)):
                if data := source.data_to_send():
                    target.receive_data(data)
                    moved = True
            for name, connection in (("client", self.client), ("server", self.server)):
                while (event := connection.next_event()) is not None:
                    self.events[name].append(event)
                    if isinstance(event, DataReceived):
                        self.received[name] += event.data
            if not moved:
                return
        raise AssertionError("pump did not settle")

    def resuming(self) -> tuple[HousleyConnection, HousleyConnection]:
        """After :meth:`drop`: a client that will resume the stored group and a new server, not connected yet."""
        group_id = self.client.session.group_id if self.client.session else None
        client = HousleyConnection(MlsTlsConfiguration(self.client_profile, True, self.client_store,
                                                       resume_group_id=group_id, housley=self.housley))
        server = HousleyConnection(MlsTlsConfiguration(self.server_profile, False, self.server_store,
                                                       housley=self.housley))
        return client, server

    def drop(self) -> None:
        self.client.connection_lost()
        self.server.connection_lost()

    def exchange(self, size: int = 4096) -> None:
        to_server, to_client = os.urandom(size), os.urandom(size)
        self.client.send_data(to_server)
        self.server.send_data(to_client)
        self.pump()
        assert self.received["server"].endswith(to_server) and self.received["client"].endswith(to_client)

    def terminated(self, name: str) -> ConnectionTerminated:
        (event,) = [e for e in self.events[name] if isinstance(e, ConnectionTerminated)]
        return event


@pytest.mark.parametrize("mls_suite", [1, XWING_SUITE])
@pytest.mark.parametrize("tls_suite", [0x1301, 0x1302, 0x1303])
def test_handshake_and_data_on_every_tls_suite(mls_suite: int, tls_suite: int) -> None:
    pair = Pair(mls_suite, HousleyConfig(tls_suites=(tls_suite,)))
    assert pair.client.established and pair.server.established
    assert pair.client.tls_suite == pair.server.tls_suite == tls_suite
    assert pair.client.epoch == pair.server.epoch == 1
    assert [type(e) for e in pair.events["client"]] == [HandshakeCompleted]
    assert pair.server_store.group_ids() == [pair.client.session.group_id]  # stored once the client finished
    pair.exchange(64 * 1024)


def test_a_mebibyte_each_way() -> None:
    pair = Pair(1)
    pair.exchange(1 << 20)  # tlslite-ng's record protection is pure Python: the slowest test here


def test_the_record_keys_are_the_rfc_8446_schedule_with_the_mls_exporter() -> None:
    """Recompute c_ap from the MLS exporter and TH_SF with hmac/hashlib (no tlslite-ng), seal a record with it
    (AES-128-GCM, RFC 8446 section 5.2), and the server opens it."""
    pair = Pair(1, HousleyConfig(tls_suites=(0x1301,)))
    session = pair.client.session
    assert session is not None
    shared = session.export_secret("TLS shared secret", b"", 32)

    def extract(salt: bytes, ikm: bytes) -> bytes:
        return hmac.new(salt, ikm, hashlib.sha256).digest()

    def expand_label(secret: bytes, label: bytes, context: bytes, length: int) -> bytes:
        info = struct.pack(">H", length) + bytes([6 + len(label)]) + b"tls13 " + label + bytes([len(context)]) + context
        out, block, counter = b"", b"", 1
        while len(out) < length:
            block = hmac.new(secret, block + info + bytes([counter]), hashlib.sha256).digest()
            out, counter = out + block, counter + 1
        return out[:length]

    empty = hashlib.sha256(b"").digest()
    early = extract(bytes(32), bytes(32))
    handshake = extract(expand_label(early, b"derived", empty, 32), shared)
    master = extract(expand_label(handshake, b"derived", empty, 32), bytes(32))
    client_ap = expand_label(master, b"c ap traffic", pair.client._frozen_transcript, 32)
    key, iv = expand_label(client_ap, b"key", b"", 16), expand_label(client_ap, b"iv", b"", 12)
    inner = b"independently sealed" + bytes([23])  # TLSInnerPlaintext: data, content type application_data
    header = b"\x17\x03\x03" + struct.pack(">H", len(inner) + 16)
    record = header + AESGCM(key).encrypt(iv, inner, header)  # sequence number 0: the nonce is the iv
    pair.server.receive_data(record)
    pair.pump()
    assert pair.received["server"] == b"independently sealed"


def test_twenty_rekeys_taking_turns_with_data_between() -> None:
    pair = Pair(1, rekey=RekeyPolicy(take_turns=True))
    epochs = []
    for number in range(20):
        (pair.client if number % 2 == 0 else pair.server).rekey()
        pair.pump()
        pair.exchange(2000)
        epochs.append(pair.client.epoch)
    assert epochs == list(range(2, 22)) and pair.server.epoch == 21
    switches = [e for e in pair.events["client"] if isinstance(e, EpochChanged)]
    assert [e.epoch for e in switches] == list(range(2, 22))
    assert not [e for name in pair.events for e in pair.events[name] if isinstance(e, ConnectionTerminated)]


def test_resumption_recovers_a_rekey_whose_confirmation_was_lost() -> None:
    pair = Pair(1)
    pair.exchange()
    group_id = pair.client.session.group_id
    pair.client.rekey()
    pair.server.receive_data(pair.client.data_to_send())  # the ConnectionUpdate arrives ...
    pair.server.data_to_send()  # ... its EpochKeyUpdate is lost with the connection
    pair.drop()
    assert pair.client.session.pending is not None
    pair.connect(resume=group_id)
    assert pair.client.established and pair.server.established
    assert pair.client.epoch == pair.server.epoch
    resumed = [e for e in pair.events["client"] if isinstance(e, HandshakeCompleted) and e.resumed]
    assert resumed and resumed[-1].epoch == pair.client.epoch
    pair.exchange()


def test_a_resumed_connection_refuses_data_before_the_new_epoch() -> None:
    pair = Pair(1)
    pair.drop()
    client, server = pair.resuming()
    client._act = lambda actions: None  # type: ignore[method-assign]  # the client skips its EpochKeyUpdate
    client.connect()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    assert not client.established  # handshake done, but data waits for the ResumptionResponse's epoch
    client._records.send(23, b"too early")
    server.receive_data(client.data_to_send())
    ended = [e for e in iter(server.next_event, None) if isinstance(e, ConnectionTerminated)]
    assert ended and ended[-1].alert == 10 and "before the epoch" in ended[-1].reason  # unexpected_message
    assert not [e for e in iter(server.next_event, None) if isinstance(e, DataReceived)]


def test_half_close_and_close_notify() -> None:
    pair = Pair(1)
    pair.client.send_eof()
    pair.pump()
    assert pair.server.read_closed and not pair.server.closed
    pair.server.send_data(b"still answering")
    pair.pump()
    assert pair.received["client"].endswith(b"still answering")
    pair.server.send_eof()
    pair.pump()
    assert pair.client.closed and pair.server.closed


def test_a_stock_tlslite_connection_in_the_same_process_is_unaffected() -> None:
    Pair(1).exchange()  # the Housley mode has run in this process
    from examples.pcs.real_tls import Certificate, TlsliteClient, tlslite_server

    certificate = Certificate()
    server = tlslite_server(certificate)
    try:
        client = TlsliteClient()
        client.connect(server.port)  # a full TLS 1.3 handshake with a certificate; the server's first byte read
        assert client.tls.version == (3, 4) and client.tls.session.serverCertChain is not None
        client.send(b"stock TLS 1.3")
        client.close()
    finally:
        server.close()


async def test_asyncio_streams_echo_rekey_and_resume() -> None:
    from mlstls import open_connection, start_server
    from mlstls.testing import echo

    client_store, server_store = MemorySessionStore(), MemorySessionStore()
    server_configuration = MlsTlsConfiguration(config(SERVER), False, server_store, housley=HousleyConfig())
    client_profile = config(CLIENT)
    server = await start_server(echo, "127.0.0.1", 0, configuration=server_configuration)
    port = server.sockets[0].getsockname()[1]
    async with server:
        reader, writer = await open_connection("127.0.0.1", port, configuration=MlsTlsConfiguration(
            client_profile, True, client_store, housley=HousleyConfig()))
        for _ in range(3):
            writer.write(b"echo me")
            await writer.drain()
            assert await asyncio.wait_for(reader.readexactly(7), 30) == b"echo me"
            writer.rekey()
        group_id = writer.connection.session.group_id
        writer.close()
        reader, writer = await open_connection("127.0.0.1", port, configuration=MlsTlsConfiguration(
            client_profile, True, client_store, resume_group_id=group_id, housley=HousleyConfig()))
        writer.write(b"resumed")
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(7), 30) == b"resumed"
        assert writer.connection.session.group_id == group_id
        writer.close()


async def test_the_tunnel_in_housley_mode_forwards_rekeys_and_reconnects(tmp_path) -> None:
    """``mls-tunnel --mode housley`` as real processes: data through, rekeys, status; a client restart resumes."""
    from mlstls.testing import echo, free_port

    from .test_apq_commands import echo_once, fingerprint, status
    from .test_tunnel_cli import start

    server_dir, client_dir = tmp_path / "server", tmp_path / "client"
    target = await asyncio.start_server(echo, "127.0.0.1", 0)
    server_port, client_port = free_port(), free_port()
    server = await start("server", "--mode", "housley", "--listen", f"127.0.0.1:{server_port}", "--target",
                         f"127.0.0.1:{target.sockets[0].getsockname()[1]}", "--state-dir", str(server_dir),
                         "--identity", "server", f"--allow=client={fingerprint(client_dir)}", "--rekey-seconds", "0.2")
    client_args = ("client", "--mode", "housley", "--listen", f"127.0.0.1:{client_port}", "--connect",
                   f"127.0.0.1:{server_port}", "--state-dir", str(client_dir), "--identity", "client",
                   f"--allow=server={fingerprint(server_dir)}", "--rekey-seconds", "0.2")
    client = await start(*client_args)
    try:
        await echo_once(client_port, 50_000)
        for _ in range(600):
            (link,) = status(client_dir)["links"]
            if link["rekeys"] >= 3:
                break
            await asyncio.sleep(0.05)
        assert link["rekeys"] >= 3 and link["fresh_handshakes"] == 1
        await echo_once(client_port, 50_000)
        client.send_signal(signal.SIGTERM)
        await asyncio.wait_for(client.wait(), 60)
        client = await start(*client_args)  # restarted: it resumes the stored session
        await echo_once(client_port, 50_000)
        (link,) = status(client_dir)["links"]
        assert link["resumptions"] == 1 and link["fresh_handshakes"] == 0
    finally:
        for process in (client, server):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(process.wait(), 60)
        target.close()


def test_a_tls_key_update_from_the_peer_is_followed_and_answered() -> None:
    """RFC 8446 section 4.6.3 (a MUST): the peer's KeyUpdate with update_requested ratchets both directions."""
    from mlstls.housley_schedule import TLS_SUITES, next_traffic_secret

    pair = Pair(1)
    client = pair.client
    suite = TLS_SUITES[client.tls_suite or 0]
    client._send_handshake(bytes([24]) + (1).to_bytes(3, "big") + b"\x01")  # KeyUpdate(update_requested)
    client._install(write=next_traffic_secret(client._write_secret, suite))
    pair.pump()
    pair.exchange()  # both directions on the ratcheted keys
    assert not [e for name in pair.events for e in pair.events[name] if isinstance(e, ConnectionTerminated)]


def test_x509_credentials_are_the_one_trust_decision_as_in_the_other_modes() -> None:
    """The MLS credentials decide, whatever they are: certificates here (no TLS Certificate message is sent)."""
    import datetime

    from mls2p import ProfileConfig
    from mls2p.testing import ThrowawayCA
    from mlscore.credentials import X509AuthenticationService
    from mlscore.crypto import get_suite

    now = datetime.datetime.now(datetime.UTC)
    root, evil = ThrowawayCA.root("root", now), ThrowawayCA.root("evil", now)

    def profile(name: str, ca: ThrowawayCA) -> ProfileConfig:
        private, public = get_suite(1).generate_signature_key_pair()
        return ProfileConfig(credential=ca.issue(name, 1, public, now), signature_priv=private,
                             authentication_service=X509AuthenticationService([root.der]))

    stores = MemorySessionStore(), MemorySessionStore()

    def connect(client: ProfileConfig) -> tuple[HousleyConnection, HousleyConnection]:
        pair = (HousleyConnection(MlsTlsConfiguration(client, True, stores[0], housley=HousleyConfig())),
                HousleyConnection(MlsTlsConfiguration(profile("server", root), False, stores[1],
                                                      housley=HousleyConfig())))
        pair[0].connect()
        for _ in range(10):
            for source, target in (pair, pair[::-1]):
                if data := source.data_to_send():
                    target.receive_data(data)
        return pair

    client, server = connect(profile("client", root))
    assert client.established and server.established
    stranger, server = connect(profile("mallory", evil))
    ended = [e for e in iter(server.next_event, None) if isinstance(e, ConnectionTerminated)]
    assert not stranger.established and ended and ended[0].alert == 42  # bad_certificate
    assert len(stores[1].group_ids()) == 1  # only the first, trusted client's session


def test_without_tlslite_the_mode_says_which_extra_to_install(tmp_path) -> None:
    """Run as if tlslite-ng were not installed: one line, exit status 2, naming mls-transport[housley]."""
    import subprocess
    import sys

    script = ("import sys; sys.modules['tlslite'] = None\n"  # every 'import tlslite...' now fails
              "from mlstls.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    done = subprocess.run([sys.executable, "-c", script, "client", "--mode", "housley", "--listen", "127.0.0.1:0",
                           "--connect", "127.0.0.1:9", "--allow", "server=sha256:" + "a" * 64, "--state-dir",
                           str(tmp_path)], capture_output=True, text=True, timeout=60)
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "pip install mls-transport[housley]" in errors[0]


@pytest.mark.parametrize("apq_suite", [0x0051, 0x0055])  # mode 0 and mode 1 (ML-DSA)
def test_apq_inside_the_tls_handshake_offer_rekeys_and_resumption(apq_suite: int) -> None:
    """The two mechanisms together: the APQ pair rides in the extension (ClientHello, ServerHello, resumption)."""
    pair = Pair(1, apq="require", apq_suite=apq_suite, rekey=RekeyPolicy(full_every=2))
    client = pair.client.session
    assert client is not None and client.apq and client.pq_epoch == 1
    for number in range(4):
        (pair.client if number % 2 == 0 else pair.server).rekey()
        pair.pump()
        pair.exchange(1000)
    assert client.epoch == pair.server.session.epoch == 5 and client.pq_epoch == 1 + 2
    pair.drop()
    pair.connect(resume=client.group_id)
    resumed = pair.client.session
    assert pair.client.established and resumed is not None and resumed.pq_epoch == 3 + 2  # both resumption commits FULL
    pair.exchange()
