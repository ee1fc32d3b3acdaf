"""The library as its users meet it (issue 21): typed packages that install cleanly, streams and protocols
that answer ``write_eof``/``get_extra_info`` as asyncio code expects, and mistakes refused where they are made.

Everything runs over loopback or in memory; the timeouts are hang guards, nothing asserts on speed.
(The built wheel itself is checked by ``.ci/wheel_check.sh``, in CI.)
"""

from __future__ import annotations

import ast
import asyncio
import enum
import fnmatch
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import mlsquic
from mls2p.identity import fingerprint, load_or_create_key, session_extra_info
from mls2p.session import TwoPartySession
from mls2p.store import MemorySessionStore
from mls2p.testing import config, self_signed_server_certificate
from mlscore.credentials import Credential, key_fingerprint
from mlscore.crypto import get_suite
from mlscore.errors import ConfigurationError
from mlsquic import MlsQuicConfiguration, MlsQuicProtocol, quic_of
from mlsquic.epochs import EpochKeyedConnection
from mlsquic.testing import QuicPair, client_configuration, free_udp_port, server_configuration
from mlstls import MlsTlsConfiguration, MlsTlsWriter, TlsSettings, open_connection, start_server
from mlstls.alongside import AlongsideConnection
from mlstls.errors import StateError

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = ("mlscore", "mls2p", "mlstls", "mlsquic")
CHECKOUT_ONLY = ("examples", "benchmarks", "interop")
GUARD = 60


# -- packaging ------------------------------------------------------------------------------------

def _packaging() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_only_the_public_packages_go_into_the_wheel() -> None:
    include = _packaging()["packages"]["find"]["include"]
    top_level = sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file())
    packaged = {name for name in top_level if any(fnmatch.fnmatchcase(name, pattern) for pattern in include)}
    assert packaged == set(PUBLIC), f"{packaged} from {top_level}"
    for name in CHECKOUT_ONLY:  # nor any of their subpackages
        assert not any(fnmatch.fnmatchcase(f"{name}.sub", pattern) for pattern in include), name


def test_every_public_package_is_typed_and_ships_its_marker() -> None:
    assert "py.typed" in _packaging()["package-data"]["*"]
    for name in PUBLIC:
        assert (ROOT / name / "py.typed").is_file(), name


def test_the_public_packages_import_nothing_that_stays_in_the_checkout() -> None:
    offenders = []
    for package in PUBLIC:
        for file in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(file.read_text(), str(file))):
                names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
                offenders += [f"{file.relative_to(ROOT)}: {name}" for name in names
                              if name.split(".")[0] in (*CHECKOUT_ONLY, "tests")]
    assert not offenders


# -- mlstls streams: half-close and extra info -----------------------------------------------------

@pytest.fixture(params=["in place of TLS", "alongside TLS 1.3"])
def configurations(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[MlsTlsConfiguration, MlsTlsConfiguration]:
    """(client, server) configurations of one mode; suite 3, so no value below is suite 1 by accident."""
    client_tls = server_tls = None
    if request.param == "alongside TLS 1.3":
        cert, key = self_signed_server_certificate(str(tmp_path), "localhost")
        client_tls = TlsSettings(cafile=cert, server_hostname="localhost")
        server_tls = TlsSettings(certfile=cert, keyfile=key)
    return (MlsTlsConfiguration(config(b"client", 3), tls=client_tls),
            MlsTlsConfiguration(config(b"server", 3), is_client=False, tls=server_tls))


def _mls_tls_bytes_received(writer: MlsTlsWriter) -> int:
    connection = writer.connection
    records = connection.inner if isinstance(connection, AlongsideConnection) else connection
    assert records is not None
    return records.bytes_received


Configurations = tuple[MlsTlsConfiguration, MlsTlsConfiguration]


async def test_write_eof_is_a_half_close_the_peer_answers_after(configurations: Configurations) -> None:
    """RFC 8446 section 6.1: close_notify closes one direction; a request, EOF, then the whole answer."""
    client_config, server_config = configurations
    peer: dict[str, Any] = {}

    async def handler(reader: asyncio.StreamReader, writer: MlsTlsWriter) -> None:
        request = await reader.read()  # returns at the client's close_notify
        peer["truncated"] = writer.truncated
        writer.write(b"answer to " + request)  # still allowed: only the client's direction is closed
        await writer.drain()
        writer.close()

    server = await start_server(handler, "127.0.0.1", 0, configuration=server_config)
    async with server:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await open_connection("127.0.0.1", port, configuration=client_config)
        assert writer.can_write_eof()
        writer.write(b"request")
        writer.write_eof()
        writer.write_eof()  # a second call changes nothing, as for asyncio transports
        with pytest.raises(StateError, match="send_eof"):
            writer.write(b"more")
        assert await asyncio.wait_for(reader.read(), GUARD) == b"answer to request"  # then a clean EOF
        assert peer == {"truncated": False} and not writer.truncated
        assert writer.connection.closed  # both directions closed: the connection ended by itself
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), GUARD)


async def test_after_write_eof_the_peers_rekey_is_left_unanswered_and_data_still_flows(
        configurations: Configurations) -> None:
    """Nothing may follow our close_notify, not even an EpochKeyUpdate: the peer's commit stays pending, its
    records stay in the epoch we hold, and the stream still ends cleanly."""
    client_config, server_config = configurations
    epochs: list[int | None] = []

    async def handler(reader: asyncio.StreamReader, writer: MlsTlsWriter) -> None:
        await reader.read()
        writer.rekey()  # a ConnectionUpdate the half-closed client must not answer
        for _ in range(3):
            writer.write(b"x" * 1000)
            await writer.drain()
        epochs.append(writer.epoch)
        writer.close()

    server = await start_server(handler, "127.0.0.1", 0, configuration=server_config)
    async with server:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await open_connection("127.0.0.1", port, configuration=client_config)
        epoch = writer.epoch
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), GUARD) == b"x" * 3000
        assert not writer.truncated and epochs == [epoch]  # the server never switched: its commit went unanswered
        writer.close()


def _expected_info(session: TwoPartySession, peer_profile_name: bytes, peer_key: bytes) -> dict[str, Any]:
    assert session.group is not None
    return {"mls_session": session, "mls_group_id": session.group_id, "mls_cipher_suite": session.group.suite.id,
            "mls_peer_identity": peer_profile_name, "mls_peer_credential": Credential.basic(peer_profile_name),
            "mls_peer_fingerprint": key_fingerprint(peer_key)}


def _info(source: MlsTlsWriter | MlsQuicProtocol) -> dict[str, Any]:
    names = ("mls_session", "mls_group_id", "mls_cipher_suite", "mls_peer_identity", "mls_peer_credential",
             "mls_peer_fingerprint")
    return {name: source.get_extra_info(name) for name in names}


async def test_stream_extra_info_names_the_peer_its_key_suite_and_epoch(configurations: Configurations) -> None:
    client_config, server_config = configurations
    server_writers: list[MlsTlsWriter] = []
    connected = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: MlsTlsWriter) -> None:
        server_writers.append(writer)
        connected.set()
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await start_server(handler, "127.0.0.1", 0, configuration=server_config)
    async with server:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await open_connection("127.0.0.1", port, configuration=client_config)
        await asyncio.wait_for(connected.wait(), GUARD)
        server_writer = server_writers[0]
        session = writer.session
        assert session is not None and server_writer.session is not None
        assert _info(writer) == _expected_info(session, b"server", server_config.profile.signature_public_key)
        assert _info(server_writer) == _expected_info(server_writer.session, b"client",
                                                      client_config.profile.signature_public_key)
        assert writer.get_extra_info("mls_cipher_suite") == 3
        assert writer.get_extra_info("mls_group_id") == server_writer.get_extra_info("mls_group_id")
        assert writer.get_extra_info("mls_epoch") == session.epoch == writer.epoch == 1
        assert writer.get_extra_info("truncated") is False
        assert writer.get_extra_info("peername") == ("127.0.0.1", port)  # the transport's names still answer
        assert writer.get_extra_info("no such name", "fallback") == "fallback"

        writer.rekey()
        writer.write(b"ping")
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(4), GUARD) == b"ping"
        assert writer.get_extra_info("mls_epoch") == writer.epoch == 2  # follows the keys in use
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), GUARD)


def test_session_info_is_the_default_before_a_group_exists() -> None:
    assert session_extra_info(None, "mls_peer_identity", "none yet") == "none yet"
    session, _ = TwoPartySession.initiator(config(b"early"))  # a ClientHello sent, no group yet
    assert session_extra_info(session, "mls_session") is session
    assert session_extra_info(session, "mls_peer_fingerprint", "none yet") == "none yet"


# -- mlsquic protocols: the same names --------------------------------------------------------------

class Recorder(MlsQuicProtocol):
    """The server's protocols, so the test can ask the server side too."""

    made: list[MlsQuicProtocol] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        Recorder.made.append(self)


@pytest.fixture
async def quic_server() -> AsyncIterator[tuple[int, MlsQuicConfiguration]]:
    Recorder.made = []
    port = free_udp_port()
    configuration = server_configuration()
    server = await mlsquic.serve("127.0.0.1", port, configuration=configuration, create_protocol=Recorder)
    try:
        yield port, configuration
    finally:
        server.close()


async def test_quic_protocols_answer_the_same_names(quic_server: tuple[int, MlsQuicConfiguration]) -> None:
    port, server_config = quic_server
    client_config = client_configuration()
    async with mlsquic.connect("127.0.0.1", port, configuration=client_config,
                               create_protocol=MlsQuicProtocol) as client:
        assert isinstance(client, MlsQuicProtocol)
        await asyncio.wait_for(client.ping(), GUARD)  # the server has confirmed the client by now
        server = Recorder.made[0]
        session = client.mls_session
        assert session is not None and server.mls_session is not None
        assert _info(client) == _expected_info(session, b"server", server_config.mls_profile.signature_public_key)
        assert _info(server) == _expected_info(server.mls_session, b"client",
                                               client_config.mls_profile.signature_public_key)
        connection = quic_of(client)
        assert isinstance(connection, EpochKeyedConnection)
        assert client.get_extra_info("mls_epoch") == connection.mls_epoch == session.epoch == 1
        assert client.get_extra_info("no such name", "fallback") == "fallback"


async def test_quic_protocol_info_before_the_handshake_and_after_a_rekey() -> None:
    pair = QuicPair(client_configuration(), server_configuration())
    client = MlsQuicProtocol(pair.client.connection)
    assert client.get_extra_info("mls_peer_identity", "not yet") == "not yet"  # a ClientHello in flight
    pair.run(pair.established)
    assert client.get_extra_info("mls_peer_identity") == b"server"
    assert pair.server is not None
    server = MlsQuicProtocol(pair.server.connection)
    assert server.get_extra_info("mls_peer_identity") == b"client"
    pair.client.connection.rekey()  # type: ignore[attr-defined]
    pair.run(lambda: client.get_extra_info("mls_epoch") == 2)  # the 1-RTT keys flipped to the new epoch
    assert client.mls_session is not None and client.mls_session.epoch == 2
    assert client.get_extra_info("mls_peer_identity") == b"server"  # the same peer, authenticated again


# -- mistakes, refused where they are made ------------------------------------------------------------

def test_a_credential_identity_must_be_bytes() -> None:
    with pytest.raises(ConfigurationError, match=r"identity must be bytes.*'client'\.encode\(\)"):
        Credential.basic("client")  # type: ignore[arg-type]
    assert Credential.basic(bytearray(b"client")) == Credential.basic(b"client")
    with pytest.raises(ConfigurationError, match="certificates"):
        Credential.x509(b"one DER blob")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="certificates"):
        Credential.x509(["not DER bytes"])  # type: ignore[list-item]


async def test_asyncio_tls_arguments_are_refused_before_connecting() -> None:
    client = MlsTlsConfiguration(config(b"client"))
    server = MlsTlsConfiguration(config(b"server"), is_client=False)
    # port 9 (discard) on loopback: nothing is contacted, the arguments are refused first
    wrong: tuple[tuple[str, Any], ...] = (("ssl", True), ("server_hostname", "example.org"))
    for argument, value in wrong:
        with pytest.raises(ConfigurationError, match=rf"open_connection: {argument} is not supported.*TlsSettings"):
            await open_connection("127.0.0.1", 9, configuration=client, **{argument: value})
    with pytest.raises(ConfigurationError, match="start_server: ssl is not supported"):
        await start_server(lambda r, w: None, "127.0.0.1", 0, configuration=server, ssl=True)
    with pytest.raises(ConfigurationError, match="configuration must have is_client=True"):
        await open_connection("127.0.0.1", 9, configuration=server)
    with pytest.raises(ConfigurationError, match=r"configuration must be a mlstls\.MlsTlsConfiguration"):
        await open_connection("127.0.0.1", 9, configuration=config(b"client"))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="handshake_timeout"):
        await open_connection("127.0.0.1", 9, configuration=client, handshake_timeout=0)
    with pytest.raises(ConfigurationError, match="max_handshakes"):
        await start_server(lambda r, w: None, "127.0.0.1", 0, configuration=server, max_handshakes=0)


class Suite(enum.IntEnum):
    ED25519_CHACHA = 3


def test_a_suite_is_a_number_or_a_cipher_suite(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path / "keys" / "signature.key", get_suite(3))
    assert load_or_create_key(tmp_path / "keys" / "signature.key", 3) == key
    assert fingerprint(key, Suite.ED25519_CHACHA) == fingerprint(key, get_suite(3)) == fingerprint(key, 3)
    for wrong in ("1", True, 1.0, None):
        with pytest.raises(ConfigurationError, match="suite_id must be a cipher suite number"):
            load_or_create_key(tmp_path / "keys" / "other.key", wrong)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="suite_id must be a cipher suite number"):
            fingerprint(key, wrong)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"suite_id: cipher suite 99 is not supported \(choose from 1, "):
        load_or_create_key(tmp_path / "keys" / "other.key", 99)
    assert not (tmp_path / "keys" / "other.key").exists()  # refused before anything was created
    with pytest.raises(ConfigurationError, match="private must be the key's bytes"):
        fingerprint(str(key), 3)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"path must be a str or os\.PathLike"):
        load_or_create_key(b"/tmp/key", 1)  # type: ignore[arg-type]


@pytest.mark.parametrize(("field", "value"), [
    ("is_client", "server"), ("padding", True), ("padding", 1.5), ("store", {}), ("resume_group_id", "abc"),
    ("tls", {"cafile": "ca.pem"})])
def test_mlstls_configuration_fields_are_checked_by_name(field: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=rf"MlsTlsConfiguration\.{field} must be"):
        MlsTlsConfiguration(config(b"client"), **{field: value})  # type: ignore[arg-type]
    assert MlsTlsConfiguration(config(b"client"), store=MemorySessionStore(), padding=0).is_client


@pytest.mark.parametrize(("field", "value"), [
    ("cafile", 1), ("certfile", b"cert.pem"), ("server_hostname", b"localhost"), ("verify", "no"), ("keylog", "file")])
def test_tls_settings_fields_are_checked_by_name(field: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=rf"TlsSettings\.{field} must be"):
        TlsSettings(**{field: value})  # type: ignore[arg-type]
    assert TlsSettings(cafile=Path("ca.pem")).cafile == Path("ca.pem")  # os.PathLike, as for ssl


@pytest.mark.parametrize(("field", "value", "fragment"), [
    ("credential", "client", "credential must be a Credential"),
    ("signature_priv", "key", "signature_priv must be bytes"),
    ("cipher_suite", True, "cipher_suite must be a suite number"),
    ("accepted_suites", (1, "3"), "accepted_suites must be a suite number"),
    ("insecure_accept_any_peer", "yes", "insecure_accept_any_peer must be True or False"),
    ("rekey", 30, "rekey must be a RekeyPolicy"),
])
def test_profile_config_refuses_wrong_types_naming_the_field(field: str, value: Any, fragment: str) -> None:
    import dataclasses

    from mls2p.errors import ConfigurationError as ProfileConfigurationError

    good = config(b"client")
    with pytest.raises(ProfileConfigurationError, match=fragment):
        dataclasses.replace(good, **{field: value})


async def test_mlsquic_serve_and_connect_give_mls_quic_protocols_by_default() -> None:
    import inspect

    from mlsquic import MlsQuicProtocol, connect, serve

    for function in (connect, serve):
        assert inspect.signature(function).parameters["create_protocol"].default is MlsQuicProtocol
