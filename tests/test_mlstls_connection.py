"""The sans-I/O MLS-TLS connection: key switches in flight, and every bad record refused with an alert."""

from __future__ import annotations

import pytest

from mlstls.connection import AlertDescription, ConnectionTerminated, EpochChanged, HandshakeCompleted
from mlstls.testing import TlsPair


def established() -> TlsPair:
    pair = TlsPair()
    pair.client.connect()
    pair.pump()
    assert [type(e) for e in pair.events["client"]] == [HandshakeCompleted]
    return pair


def terminated(pair: TlsPair, side: str) -> ConnectionTerminated:
    events = [e for e in pair.events[side] if isinstance(e, ConnectionTerminated)]
    assert events, pair.events[side]
    return events[-1]


def test_data_in_flight_across_a_rekey_is_not_lost() -> None:
    pair = established()
    pair.client.rekey()
    pair.client.send_data(b"old-epoch data sent after the ConnectionUpdate")
    pair.server.send_data(b"server data before it sees the update")
    pair.pump()
    pair.client.send_data(b"|new")
    pair.server.send_data(b"|new")
    pair.pump()
    assert pair.received["server"] == b"old-epoch data sent after the ConnectionUpdate|new"
    assert pair.received["client"] == b"server data before it sees the update|new"
    assert pair.client.epoch == pair.server.epoch == 2
    assert any(isinstance(e, EpochChanged) for e in pair.events["client"])


def test_hundreds_of_rekeys_alternating_sides() -> None:
    pair = established()
    for i in range(200):
        (pair.client if i % 2 == 0 else pair.server).rekey()
        pair.client.send_data(b"c%d," % i)
        pair.server.send_data(b"s%d," % i)
        pair.pump()
        pair.advance(1.0)  # within the peer-commit budget (RekeyPolicy.peer_commit_interval)
    assert pair.client.epoch == pair.server.epoch == 201
    assert pair.received["server"] == b"".join(b"c%d," % i for i in range(200))


@pytest.mark.parametrize(("mangle", "alert"), [
    (lambda r: r[:-1] + bytes([r[-1] ^ 1]), AlertDescription.BAD_RECORD_MAC),        # tampered tag
    (lambda r: r + r, AlertDescription.BAD_RECORD_MAC),                               # replayed record
    (lambda r: b"\x17\x03\x03\xff\xff" + r, AlertDescription.DECODE_ERROR),           # oversize length
    (lambda r: b"\x16\x03\x03\x00\x01\x00", AlertDescription.UNEXPECTED_MESSAGE),     # plaintext after keys
])
def test_bad_records_are_refused_with_an_alert(mangle, alert: AlertDescription) -> None:
    pair = established()
    pair.client.send_data(b"payload")
    record = pair.client.data_to_send()
    pair.server.receive_data(mangle(record))
    pair.pump()
    event = terminated(pair, "server")
    assert event.alert == alert and not event.by_peer
    assert terminated(pair, "client").alert == alert and terminated(pair, "client").by_peer
    assert pair.server.closed and pair.client.closed


def test_reordered_records_are_refused() -> None:
    pair = established()
    pair.client.send_data(b"first")
    first = pair.client.data_to_send()
    pair.client.send_data(b"second")
    second = pair.client.data_to_send()
    pair.server.receive_data(second + first)
    pair.pump()
    assert terminated(pair, "server").alert == AlertDescription.BAD_RECORD_MAC
    assert pair.received["server"] == b""


def test_truncated_record_waits_and_then_completes() -> None:
    pair = established()
    pair.client.send_data(b"split across reads")
    record = pair.client.data_to_send()
    for i in range(len(record)):
        pair.server.receive_data(record[i : i + 1])
    pair.pump()
    assert pair.received["server"] == b"split across reads"


def test_close_notify_keeps_the_group_for_resumption() -> None:
    pair = established()
    pair.client.close()
    pair.pump()
    assert pair.server.read_closed  # the client's direction ended; the server closes its own
    pair.server.close()
    pair.pump()
    assert terminated(pair, "server").alert == AlertDescription.CLOSE_NOTIFY
    assert pair.client_store.group_ids() and pair.server_store.group_ids()
    pair.reconnect()
    pair.client.connect()
    pair.pump()
    assert [e for e in pair.events["server"] if isinstance(e, HandshakeCompleted)][-1].resumed


def test_sending_before_the_handshake_is_an_error() -> None:
    from mlscore.errors import StateError

    pair = TlsPair()
    with pytest.raises(StateError):
        pair.client.send_data(b"too early")


def test_a_record_after_the_peers_close_notify_is_refused() -> None:
    """A half-closed direction stays closed: a record the peer seals after its close_notify ends the connection."""
    from mlstls.record import ContentType

    pair = established()
    pair.client.send_eof()
    pair.pump()
    assert pair.server.read_closed and not pair.server.closed
    sealer = pair.client._send
    assert sealer is not None
    pair.server.receive_data(bytes(sealer.seal(ContentType.APPLICATION_DATA, b"after close_notify")))
    pair.pump()
    assert terminated(pair, "server").alert == AlertDescription.UNEXPECTED_MESSAGE
    assert b"after close_notify" not in pair.received["server"]


def test_after_send_eof_the_peer_still_sends_and_rekeys_stop() -> None:
    pair = established()
    epoch = pair.client.epoch
    pair.client.send_eof()
    pair.server.rekey()  # the server starts none: the client could not answer
    pair.server.send_data(b"still flowing")
    pair.pump()
    assert pair.received["client"].endswith(b"still flowing") and pair.server.epoch == epoch
    pair.server.close()
    pair.pump()
    assert terminated(pair, "client").alert == AlertDescription.CLOSE_NOTIFY and pair.client.closed
