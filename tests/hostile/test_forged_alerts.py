"""Nothing unauthenticated ends or erases a session (security round 3, findings 3 and 6).

A plaintext alert, a reset or a cut at any step of a resumption may end that
connection attempt and nothing more: stored state on both sides stays
byte-identical and the next attempt resumes the same session.  A tunnel client
that meets a forged alert keeps running and keeps its session.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from mls2p import MemorySessionStore, TwoPartySession
from mls2p.errors import AlertDescription, ReplayedMessage
from mls2p.testing import config, sent
from mlstls import MlsTlsConfiguration
from mlstls.connection import ConnectionTerminated, DataReceived, HandshakeCompleted
from mlstls.testing import TlsPair, echo
from mlstls.tunnel import TunnelClient, TunnelServer

ALERTS = [AlertDescription.BAD_CERTIFICATE, AlertDescription.DECODE_ERROR, AlertDescription.HANDSHAKE_FAILURE,
          AlertDescription.CERTIFICATE_REVOKED, AlertDescription.CLOSE_NOTIFY]


def forged_alert(description: AlertDescription) -> bytes:
    """A 7-byte TLSPlaintext alert record: what anyone on the path can inject."""
    return bytes([21, 3, 3, 0, 2, 2, description])


def _resumed_pair() -> tuple[TlsPair, bytes]:
    pair = TlsPair()
    pair.client.connect()
    pair.pump()
    group_id = pair.client.session.group_id if pair.client.session else None
    assert group_id is not None
    return pair, group_id


@pytest.mark.parametrize("alert", ALERTS, ids=lambda a: a.name)
@pytest.mark.parametrize("step", ["before-request", "after-request", "after-response"])
def test_a_forged_alert_at_any_step_of_a_resumption_changes_nothing_stored(step: str, alert: AlertDescription
                                                                           ) -> None:
    pair, group_id = _resumed_pair()
    pair.reconnect()
    pair.client.connect()
    if step != "before-request":
        pair.server.receive_data(pair.client.data_to_send())
    response = pair.server.data_to_send()
    if step == "after-response":
        pair.client.receive_data(response)  # the client is at the new epoch now: plaintext is refused
    client_before, server_before = pair.client_store.load(group_id), pair.server_store.load(group_id)
    pair.client.receive_data(forged_alert(alert))
    terminated = [e for e in iter(pair.client.next_event, None) if isinstance(e, ConnectionTerminated)]
    assert (terminated and not terminated[0].authenticated) or step == "after-response"
    assert pair.client_store.load(group_id) == client_before
    assert pair.server_store.load(group_id) == server_before
    # the next connection resumes the same session
    pair.reconnect()
    pair.client.connect()
    pair.pump()
    assert any(isinstance(e, HandshakeCompleted) and e.resumed for e in pair.events["server"])
    pair.client.send_data(b"still here")
    pair.pump()
    assert any(isinstance(e, DataReceived) and e.data == b"still here" for e in pair.events["server"])
    assert pair.client.session is not None and pair.client.session.group_id == group_id


def test_a_resumption_request_in_the_middle_of_a_connection_is_refused() -> None:
    pair, group_id = _resumed_pair()
    pair.client.rekey()  # a mid-connection ResumptionRequest needs a stored session: make one with a commit
    pair.pump()
    stored = pair.server_store.load(group_id)
    replica = TwoPartySession.from_state(pair.client_store.load(group_id) or b"", pair.client_profile)
    replica.connection_lost()
    request = sent(replica.resume())[0]
    assert pair.server.session is not None
    with pytest.raises(ReplayedMessage, match="only as the first message of a connection"):
        pair.server.endpoint.receive(request, 0.0)
    assert pair.server_store.load(group_id) == stored
    assert pair.server.session.synced


async def _forging_proxy(upstream_port: int, forge: list[bytes]) -> tuple[asyncio.Server, int]:
    """A TCP relay that, for each queued forgery, writes it to the next client before relaying anything."""

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if forge:
            writer.write(forge.pop(0))
            await writer.drain()
            writer.close()  # the forged alert, then FIN: the attempt ends there
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(1 << 16):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("alert", [AlertDescription.BAD_CERTIFICATE, AlertDescription.DECODE_ERROR],
                         ids=lambda a: a.name)
async def test_a_tunnel_client_keeps_running_and_keeps_its_session_after_forged_alerts(
        alert: AlertDescription) -> None:
    target = await asyncio.start_server(echo, "127.0.0.1", 0)
    server_store, client_store = MemorySessionStore(), MemorySessionStore()
    server = TunnelServer(MlsTlsConfiguration(config(b"server"), False, server_store),
                          ("127.0.0.1", target.sockets[0].getsockname()[1]))
    server_port = await server.start("127.0.0.1", 0)
    forge: list[bytes] = []
    proxy, proxy_port = await _forging_proxy(server_port, forge)
    client = TunnelClient(MlsTlsConfiguration(config(b"client"), True, client_store), ("127.0.0.1", proxy_port),
                          retry_delay=0.01, max_retry_delay=0.05)
    try:
        local = await client.start("127.0.0.1", 0, connect_timeout=30)
        group_id = client.group_id
        assert group_id is not None and server_store.group_ids() == [group_id]
        forge.append(forged_alert(alert))  # one forged alert on the next attempt (the review's attack)
        resumptions = client.link.stats.resumptions
        client.cut()
        async with asyncio.timeout(30):
            while client.link.stats.resumptions == resumptions:
                await asyncio.sleep(0.01)
        assert client.refused is None and not client.stopped.is_set()
        assert client.group_id == group_id and client_store.group_ids() == [group_id]  # kept, then resumed
        assert server_store.group_ids() == [group_id]  # no orphaned sessions on the server
        reader, writer = await asyncio.open_connection("127.0.0.1", local)
        writer.write(b"after the forgery")
        assert await asyncio.wait_for(reader.readexactly(17), 30) == b"after the forgery"
        writer.close()
    finally:
        await client.close()
        await server.close()
        proxy.close()
        target.close()
