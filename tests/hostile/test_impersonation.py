"""A pinned name with a fresh key is refused in every mode, in both directions (issue: a name is not an identity).

The attacker knows the victim's peer's name ("client" or "server") and makes
its own key; it never has the pinned one.  Every mode must refuse it during
the handshake, deliver nothing, and store nothing.
"""

from __future__ import annotations

import pytest

from mls2p import State, TwoPartySession
from mls2p.errors import AlertDescription
from mls2p.testing import config, impersonator, self_signed_server_certificate, sent
from mlscore.errors import CredentialError
from mlsquic import MlsQuicConfiguration
from mlsquic.testing import QuicPair, client_configuration, server_configuration
from mlstls import HandshakeError, MlsTlsConfiguration, TlsSettings, open_connection, start_server
from mlstls.connection import ConnectionTerminated, DataReceived, HandshakeCompleted
from mlstls.testing import TlsPair

BAD_CERTIFICATE = 0x100 + AlertDescription.BAD_CERTIFICATE


def test_profile_refuses_an_impersonating_initiator_and_responder() -> None:
    _, hello = TwoPartySession.initiator(impersonator(b"client"))
    server = TwoPartySession.responder(config(b"server"))
    with pytest.raises(CredentialError, match="presented key"):
        server.receive(hello[0].data)  # type: ignore[union-attr]
    assert server.state is State.AWAITING_CLIENT_HELLO and server.group is None

    client, hello = TwoPartySession.initiator(config(b"client"))
    mitm = TwoPartySession.responder(impersonator(b"server"))
    welcome = sent(mitm.receive(hello[0].data))  # type: ignore[union-attr]
    with pytest.raises(CredentialError, match="presented key"):
        client.receive(welcome[0])
    assert client.state is State.AWAITING_SERVER_HELLO and client.group is None


def _refused(pair: TlsPair, refusing: str) -> None:
    pair.client.connect()
    pair.pump()
    other = "server" if refusing == "client" else "client"
    closed = [e for e in pair.events[refusing] if isinstance(e, ConnectionTerminated)]
    assert closed and closed[0].alert == AlertDescription.BAD_CERTIFICATE and not closed[0].by_peer, pair.events
    for side in (refusing, other):
        assert not any(isinstance(e, DataReceived) for e in pair.events[side])
    assert not any(isinstance(e, HandshakeCompleted) for e in pair.events[refusing])
    assert pair.server_store.group_ids() == [] or refusing == "client"


@pytest.fixture
def certificate(tmp_path) -> tuple[str, str]:
    return self_signed_server_certificate(str(tmp_path), "localhost")


@pytest.mark.parametrize("alongside", [False, True], ids=["in-place", "alongside-tls"])
def test_mlstls_refuses_an_impersonating_client(alongside: bool, certificate) -> None:
    tls = dict(client_tls=TlsSettings(cafile=certificate[0], server_hostname="localhost"),
               server_tls=TlsSettings(certfile=certificate[0], keyfile=certificate[1])) if alongside else {}
    pair = TlsPair(client_profile=impersonator(b"client"), **tls)  # type: ignore[arg-type]
    _refused(pair, "server")


@pytest.mark.parametrize("alongside", [False, True], ids=["in-place", "alongside-tls"])
def test_mlstls_refuses_an_impersonating_server(alongside: bool, certificate) -> None:
    tls = dict(client_tls=TlsSettings(cafile=certificate[0], server_hostname="localhost"),
               server_tls=TlsSettings(certfile=certificate[0], keyfile=certificate[1])) if alongside else {}
    pair = TlsPair(server_profile=impersonator(b"server"), **tls)  # type: ignore[arg-type]
    _refused(pair, "client")
    assert pair.client_store.group_ids() == []
    told = [e for e in pair.events["server"] if isinstance(e, ConnectionTerminated)]
    assert told and told[0].by_peer and told[0].alert == AlertDescription.BAD_CERTIFICATE  # the server learns why


def _alongside(certificate: tuple[str, str], *, is_client: bool, profile: object) -> MlsQuicConfiguration:
    if is_client:
        return MlsQuicConfiguration(profile=profile, mode="alongside", is_client=True,  # type: ignore[arg-type]
                                    alpn_protocols=["echo"], cafile=certificate[0], server_name="localhost")
    server = MlsQuicConfiguration(profile=profile, mode="alongside", is_client=False,  # type: ignore[arg-type]
                                  alpn_protocols=["echo"])
    server.load_cert_chain(*certificate)
    return server


@pytest.mark.parametrize("mode", ["mls", "alongside"])
@pytest.mark.parametrize("attacker", ["client", "server"])
def test_mlsquic_refuses_an_impersonator(mode: str, attacker: str, certificate) -> None:
    client_profile = impersonator(b"client") if attacker == "client" else config(b"client")
    server_profile = impersonator(b"server") if attacker == "server" else config(b"server")
    if mode == "mls":
        client, server = client_configuration(profile=client_profile), server_configuration(profile=server_profile)
    else:
        client = _alongside(certificate, is_client=True, profile=client_profile)
        server = _alongside(certificate, is_client=False, profile=server_profile)
    pair = QuicPair(client, server)
    stream = pair.send(b"early secret from the client", end_stream=False)
    pair.run(lambda: pair.client.terminated is not None or (pair.server is not None
                                                              and pair.server.terminated is not None))
    pair.advance(1.0)
    closed = pair.client.terminated or pair.server.terminated  # type: ignore[union-attr]
    assert closed is not None and closed.error_code == BAD_CERTIFICATE, closed
    assert closed.reason_phrase.endswith("bad_certificate")  # a stranger learns the code and nothing more
    assert pair.server is None or stream not in pair.server.streams  # nothing reached the server application
    assert pair.client.connection.mls_epoch in (None, 0)


async def test_mlstls_streams_client_refuses_a_man_in_the_middle() -> None:
    async def never(reader, writer) -> None:  # the MITM would forward; it never gets a byte
        raise AssertionError("the MITM's application ran")

    server = await start_server(never, "127.0.0.1", 0,
                                configuration=MlsTlsConfiguration(impersonator(b"server"), is_client=False))
    port = server.sockets[0].getsockname()[1]
    async with server:
        with pytest.raises(HandshakeError, match="CredentialError") as refused:
            await open_connection("127.0.0.1", port, configuration=MlsTlsConfiguration(config(b"client")))
        assert refused.value.alert == AlertDescription.BAD_CERTIFICATE and not refused.value.by_peer
