"""TLS 1.3 baselines on real stacks: KeyUpdate and PSK resumption (tlslite-ng), full re-handshakes (OpenSSL).

Each mechanism is a blocking client and server (run in threads) talking
through a :class:`~examples.pcs.relay.TcpRelay`.  The client sends
``records`` application records, rekeys every ``rekey_every`` of them the way
the mechanism does, and at record ``theft_at`` hands the thief what a key log
(or a memory dump of the client) holds at that moment.  Afterwards the thief
(:mod:`examples.pcs.tls_thief`) goes through every client-to-server record
captured after the theft.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mls2p.testing import self_signed_server_certificate
from mlstls.record import AeadSpec

from .mechanisms import Outcome
from .relay import SETTLE, TO_SERVER, Capture, TcpRelay
from .tls_thief import APPLICATION_DATA, SEQUENCE_SEARCH, KeyFollower, psk_ke_connection, suite_spec, ticket_psk

READY = b"k"  # the server's first byte: the client reads it, and with it the session ticket


@dataclass
class Loot:
    """What the thief holds from the moment of compromise on."""

    spec: AeadSpec
    client_secret: bytes
    psk: bytes | None = None  # the PSK of the ticket the client will resume with (PSK mechanisms)


@dataclass
class Run:
    """A client's run: the loot, when it was taken, and when each rekey happened."""

    loot: Loot | None = None
    theft_time: float = 0.0
    rekey_times: list[float] = field(default_factory=list)


class Certificate:
    """A server certificate in a temporary folder (and, once asked for, its tlslite-ng form)."""

    def __init__(self) -> None:
        folder = tempfile.mkdtemp(prefix="pcs-tls-")
        self.cert, self.key = self_signed_server_certificate(folder, "localhost")
        self.folder = Path(folder)
        self.tlslite: tuple[Any, Any, Any] | None = None


def tlslite_credentials(certificate: Certificate) -> tuple[Any, Any, Any]:
    """(certificate chain, private key, server settings) for tlslite-ng; one ticket key for every connection."""
    if certificate.tlslite is None:
        from tlslite import HandshakeSettings, X509CertChain, parsePEMKey

        chain = X509CertChain()
        chain.parsePemList(Path(certificate.cert).read_text())
        key = parsePEMKey(Path(certificate.key).read_text(), private=True)
        settings = HandshakeSettings()
        settings.ticketKeys = [os.urandom(32)]  # tickets stay valid across connections
        settings.ticket_count = 1
        certificate.tlslite = (chain, key, settings)
    return certificate.tlslite


def tcp_connect(port: int) -> socket.socket:
    """A loopback connection without Nagle's algorithm: each record leaves (and is timed) when it is sent."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


# -- servers (threads) ---------------------------------------------------------------------------

class BlockingServer:
    """Accepts connections on a thread; ``handle(socket)`` serves one until the client closes."""

    def __init__(self, handle: Callable[[socket.socket], None]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._handle = handle
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        try:
            self._handle(connection)
        except Exception:  # a server thread of an experiment: the client side reports failures
            pass
        finally:
            connection.close()

    def close(self) -> None:
        self.listener.close()


def tlslite_server(certificate: Certificate) -> BlockingServer:
    from tlslite import TLSConnection

    chain, key, settings = tlslite_credentials(certificate)

    def handle(sock: socket.socket) -> None:
        tls = TLSConnection(sock)
        tls.handshakeServer(certChain=chain, privateKey=key, settings=settings)
        tls.write(READY)
        while tls.read(max=1 << 16):
            pass

    return BlockingServer(handle)


def openssl_server(certificate: Certificate) -> BlockingServer:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(certificate.cert, certificate.key)
    context.num_tickets = 0

    def handle(sock: socket.socket) -> None:
        with context.wrap_socket(sock, server_side=True) as tls:
            tls.sendall(READY)
            while tls.recv(1 << 16):
                pass

    return BlockingServer(handle)


# -- clients -------------------------------------------------------------------------------------

class Client:
    """One mechanism's client: connect, send, rekey its way, and say what a thief would hold."""

    name = ""
    new_connection = False

    def connect(self, port: int) -> None:
        raise NotImplementedError

    def send(self, data: bytes) -> None:
        raise NotImplementedError

    def rekey(self) -> None:
        raise NotImplementedError

    def steal(self) -> Loot:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class TlsliteClient(Client):
    """tlslite-ng: KeyUpdate on one connection, or (``resume``) a new connection per rekey from the last ticket."""

    def __init__(self, resume: str | None = None) -> None:
        from tlslite import HandshakeSettings

        self.resume = resume  # None: KeyUpdate; "psk_ke" or "psk_dhe_ke": resumption mode
        self.name = f"tls13-resumption-{resume.replace('_', '-')}" if resume else "tls13-keyupdate"
        self.new_connection = resume is not None
        self.settings = HandshakeSettings()
        self.settings.cipherNames = ["aes128gcm"]
        if resume:
            self.settings.psk_modes = [resume]
        self.session = None
        self.port = 0

    def connect(self, port: int) -> None:
        from tlslite import TLSConnection

        self.port = port
        self.tls = TLSConnection(tcp_connect(port))
        self.tls.handshakeClientCert(settings=self.settings, session=self.session)
        if self.tls.read(max=1) != READY:  # also takes the NewSessionTicket sent before it
            raise ConnectionError("the server did not say it was ready")
        self.session = self.tls.session

    def send(self, data: bytes) -> None:
        self.tls.write(data)

    def rekey(self) -> None:
        if self.resume is None:
            from tlslite.constants import KeyUpdateMessageType

            for _ in self.tls.send_keyupdate_request(KeyUpdateMessageType.update_not_requested):
                pass
            return
        self.tls.close()
        self.connect(self.port)

    def steal(self) -> Loot:
        session = self.tls.session
        spec = suite_spec(session.cipherSuite)
        psk = None
        if self.resume and session.tickets:
            psk = ticket_psk(spec, bytes(session.resumptionMasterSecret), bytes(session.tickets[-1].ticket_nonce))
        return Loot(spec, bytes(session.cl_app_secret), psk)

    def close(self) -> None:
        self.tls.close()


class OpenSslRehandshakeClient(Client):
    """stdlib ssl (OpenSSL): every rekey is a new connection with a full TLS 1.3 handshake (no tickets)."""

    name = "tls13-rehandshake"
    new_connection = True

    def __init__(self, certificate: Certificate) -> None:
        self.keylog = certificate.folder / "client-keylog.txt"
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_3
        self.context.load_verify_locations(certificate.cert)
        self.context.keylog_filename = str(self.keylog)
        self.port = 0

    def connect(self, port: int) -> None:
        self.port = port
        self.tls = self.context.wrap_socket(tcp_connect(port),
                                            server_hostname="localhost")
        if self.tls.recv(1) != READY:
            raise ConnectionError("the server did not say it was ready")

    def send(self, data: bytes) -> None:
        self.tls.sendall(data)

    def rekey(self) -> None:
        self.tls.close()
        self.connect(self.port)

    def steal(self) -> Loot:
        # The key log's last CLIENT_TRAFFIC_SECRET_0: this connection's (it is the latest handshake).
        lines = [line.split() for line in self.keylog.read_text().splitlines()]
        secret = bytes.fromhex(next(p[2] for p in reversed(lines) if p and p[0] == "CLIENT_TRAFFIC_SECRET_0"))
        cipher = self.tls.cipher()
        assert cipher is not None
        return Loot(suite_spec(cipher[0]), secret)

    def close(self) -> None:
        self.tls.close()


# -- the experiment ------------------------------------------------------------------------------

def drive(client: Client, port: int, records: int, size: int, rekey_every: int, theft_at: int,
          interval: float) -> Run:
    """The client's side of a run (blocking: call it in a thread)."""
    run = Run()
    client.connect(port)
    for i in range(records):
        if i == theft_at:
            time.sleep(SETTLE)
            run.loot, run.theft_time = client.steal(), time.perf_counter()
        if i and i % rekey_every == 0:
            time.sleep(SETTLE)
            run.rekey_times.append(time.perf_counter())
            client.rekey()
        client.send(bytes(size))
        time.sleep(interval)
    time.sleep(0.05)
    client.close()
    return run


def attack(outcome: Outcome, captures: list[Capture], run: Run) -> None:
    """The thief reads every client record captured after the theft, connection by connection."""
    if run.loot is None:
        raise RuntimeError("the run ended before the theft")
    loot = run.loot
    psk = loot.psk
    follower: KeyFollower | ResumedConnection | None = None
    records: list[tuple[float, bytes, bytes]] = []
    for capture in captures:
        mine = [r for r in capture.records(TO_SERVER) if r[1][0] == APPLICATION_DATA]
        after = [r for r in mine if r[0] > run.theft_time]
        if not after:
            continue
        if len(after) == len(mine):  # a connection opened after the theft: derive what can be derived
            resumed = psk_ke_connection(psk, capture) if psk is not None else None
            psk = resumed.next_psk if resumed is not None else None
            follower = None
            if resumed is not None:
                follower = ResumedConnection(KeyFollower(loot.spec, resumed.client_handshake),
                                             KeyFollower(loot.spec, resumed.client_application))
        else:
            follower = KeyFollower(loot.spec, loot.client_secret, search=SEQUENCE_SEARCH)
        for when, header, body in after:
            outcome.record(when, follower is not None and follower.open(header, body) is not None,
                           len(header) + len(body))
        records += after
    outcome.mark_rekeys([when for when, _, _ in records], [t for t in run.rekey_times if t > run.theft_time])


class ResumedConnection:
    """The client Finished under handshake keys, then application records (a resumed connection)."""

    def __init__(self, handshake: KeyFollower, application: KeyFollower) -> None:
        self.handshake, self.application, self.finished = handshake, application, False

    def open(self, header: bytes, body: bytes) -> bytes | None:
        if not self.finished:
            opened = self.handshake.open(header, body)
            if opened is not None:
                self.finished = True
                return opened
        return self.application.open(header, body)


async def run_real_tls(kind: str, records: int, size: int, rekey_every: int, theft_at: int,
                       interval: float = 0.001) -> Outcome:
    """One baseline on a real stack: ``keyupdate``, ``rehandshake``, ``psk_ke`` or ``psk_dhe_ke``."""
    certificate = Certificate()
    client: Client
    if kind == "rehandshake":
        server, client = openssl_server(certificate), OpenSslRehandshakeClient(certificate)
    else:
        server = tlslite_server(certificate)
        client = TlsliteClient(None if kind == "keyupdate" else kind)
    relay = TcpRelay(("127.0.0.1", server.port))
    port = await relay.start()
    try:
        run = await asyncio.to_thread(drive, client, port, records, size, rekey_every, theft_at, interval)
        await asyncio.sleep(0.1)
    finally:
        relay.close()
        server.close()
    stack = "OpenSSL (stdlib ssl)" if kind == "rehandshake" else "tlslite-ng"
    outcome = Outcome(client.name, theft_at, records, rekeys=len(run.rekey_times), stack=stack)
    attack(outcome, relay.captures, run)
    return outcome
