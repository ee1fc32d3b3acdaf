"""Replays and stale connections cannot destroy, fork or roll back a session (issue findings 3 and 5).

The attacker captures a client's first flight (a ResumptionRequest is in
plaintext in mlstls and only obfuscated in QUIC Initial packets) or a
ClientHello, and replays it on new connections, before or after the real
exchange completed.  Nothing it does may change what the server stored, and
the real client must still be able to resume.
"""

from __future__ import annotations

import pytest

from mls2p import MemorySessionStore, StaleStateError
from mls2p.errors import AlertDescription
from mlsquic.testing import QuicPair, client_configuration, server_configuration
from mlstls import MlsTlsConfiguration
from mlstls.connection import ConnectionTerminated, HandshakeCompleted, MlsTlsConnection
from mlstls.testing import TlsPair


def established() -> TlsPair:
    pair = TlsPair()
    pair.client.connect()
    pair.pump()
    assert any(isinstance(e, HandshakeCompleted) for e in pair.events["server"])
    return pair


def server_connection(pair: TlsPair) -> MlsTlsConnection:
    return MlsTlsConnection(MlsTlsConfiguration(pair.server_profile, False, pair.server_store))


def stored(pair: TlsPair) -> bytes | None:
    group_id = pair.client.session.group_id if pair.client.session else None
    assert group_id is not None
    return pair.server_store.load(group_id)


def terminated(connection: MlsTlsConnection) -> ConnectionTerminated:
    events = []
    while (event := connection.next_event()) is not None:
        events.append(event)
    closed = [e for e in events if isinstance(e, ConnectionTerminated)]
    assert closed, events
    assert not any(isinstance(e, HandshakeCompleted) for e in events)
    return closed[0]


def test_a_replayed_resumption_request_after_the_exchange_changes_nothing() -> None:
    pair = established()
    pair.reconnect()
    pair.client.connect()
    captured = pair.client.data_to_send()  # the attacker's copy of the ResumptionRequest record
    pair.server.receive_data(captured)
    pair.pump()
    assert pair.client.epoch == pair.server.epoch == 3
    before = stored(pair)
    replay = server_connection(pair)
    replay.receive_data(captured)
    closed = terminated(replay)
    assert closed.alert == AlertDescription.ILLEGAL_PARAMETER and "epoch" in closed.reason
    assert stored(pair) == before  # the session is not deleted, not changed
    pair.reconnect()
    pair.client.connect()
    pair.pump()
    assert pair.client.epoch == pair.server.epoch == 5  # the real client still resumes


def test_a_replay_while_the_response_is_in_flight_lets_at_most_one_connection_continue() -> None:
    """Found by review: a replayed request plus a copy of the client's EpochKeyUpdate let a second server
    connection continue with the first one's keys.  The replay gets the same response (so a client that
    resends after a timeout is never split from the store), and the fenced write at the EpochKeyUpdate
    lets exactly one of the connections continue."""
    pair = established()
    pair.reconnect()
    pair.client.connect()
    captured = pair.client.data_to_send()
    pair.server.receive_data(captured)
    response = pair.server.data_to_send()  # held back for a moment
    before = stored(pair)
    replay = server_connection(pair)
    replay.receive_data(captured)
    assert replay.data_to_send() == response and stored(pair) == before  # the same answer; nothing changes
    pair.client.receive_data(response)
    confirmation = pair.client.data_to_send()
    pair.server.receive_data(confirmation)
    replay.receive_data(confirmation)  # the attacker copies the client's EpochKeyUpdate
    assert pair.server.established and not replay.established and replay.closed
    pair.pump()
    assert pair.client.epoch == pair.server.epoch == 3


def test_a_half_open_old_connection_cannot_roll_back_the_stored_session() -> None:
    pair = established()
    stale = pair.server  # the old server connection never learns that the TCP connection died
    pair.client.connection_lost()
    pair.client = MlsTlsConnection(MlsTlsConfiguration(pair.client_profile, True, pair.client_store,
                                                       resume_group_id=pair.client.session.group_id))
    pair.server = server_connection(pair)
    pair.client.connect()
    pair.pump()
    assert pair.client.epoch == 3
    before = stored(pair)
    stale.rekey()  # its time-based policy fires: a commit on the old epoch, to be stored
    closed = terminated(stale)
    assert "StaleStateError" in closed.reason and "continued elsewhere" in closed.reason
    assert stored(pair) == before
    pair.reconnect()
    pair.client.connect()
    pair.pump()
    assert pair.client.epoch == pair.server.epoch == 5


def test_a_server_stores_phase_1_only_when_the_client_confirms() -> None:
    pair = TlsPair()
    pair.client.connect()
    pair.server.receive_data(pair.client.data_to_send())
    assert pair.server_store.group_ids() == []
    assert not any(isinstance(e, HandshakeCompleted) for e in iter(pair.server.next_event, None))
    pair.client.receive_data(pair.server.data_to_send())
    pair.server.receive_data(pair.client.data_to_send())  # the client's key confirmation
    assert len(pair.server_store.group_ids()) == 1
    assert any(isinstance(e, HandshakeCompleted) for e in iter(pair.server.next_event, None))


def test_quic_replayed_initial_with_a_resumption_request_changes_nothing() -> None:
    server_store, client_store = MemorySessionStore(), MemorySessionStore()
    server = server_configuration(store=server_store)
    profile = client_configuration().profile
    first = QuicPair(client_configuration(profile=profile, store=client_store), server)
    first.run(first.established)
    group_id = first.client.connection.mls_session.group_id
    resumed = QuicPair(client_configuration(profile=profile, store=client_store, resume_group_id=group_id), server)
    resumed.run(resumed.established)
    assert resumed.client.connection.mls_epoch == 3
    before = server_store.load(group_id)
    replayed = resumed.replay(resumed.client_datagrams[:1])  # the Initial that carried the ResumptionRequest
    closed = replayed.terminated
    assert closed is not None and closed.error_code == 0x100 + 47, replayed.events  # EpochError: illegal_parameter
    assert server_store.load(group_id) == before
    again = QuicPair(client_configuration(profile=profile, store=client_store, resume_group_id=group_id), server)
    again.run(again.established)
    assert again.client.connection.mls_epoch == 5  # the real client still resumes


def test_stale_writes_raise_in_the_store_api() -> None:
    store = MemorySessionStore()
    store.save(b"g", b"new", replaces=None)
    with pytest.raises(StaleStateError):
        store.save(b"g", b"old-based", replaces=b"old")
