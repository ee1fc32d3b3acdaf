"""State exhaustion: what an unauthenticated peer can make a server keep is bounded, on disk and in memory.

Counted in files and bytes (tracemalloc), never in time.
"""

from __future__ import annotations

import gc
import tracemalloc

from mls2p import FileSessionStore
from mls2p.wire import MAX_MESSAGE_SIZE, ProfileMessageType
from mlscore.codec import Writer
from mlstls import MlsTlsConfiguration
from mlstls.connection import MlsTlsConnection
from mlstls.record import ContentType, plaintext_records
from mlstls.testing import TlsPair


def test_replayed_client_hellos_leave_no_state_files(tmp_path) -> None:
    pair = TlsPair()
    pair.client.connect()
    hello = pair.client.data_to_send()
    store = FileSessionStore(tmp_path / "sessions")
    configuration = MlsTlsConfiguration(pair.server_profile, False, store)
    for _ in range(300):
        victim = MlsTlsConnection(configuration)
        victim.receive_data(hello)
        assert victim.data_to_send()  # it answers (that costs one commit) ...
        victim.connection_lost()
    assert store.group_ids() == [] and sorted(p.name for p in (tmp_path / "sessions").iterdir()) == []


def test_an_unauthenticated_connection_holds_at_most_one_message() -> None:
    header = bytes([ProfileMessageType.CLIENT_HELLO]) + Writer().varint(MAX_MESSAGE_SIZE - 8).getvalue()
    partial = plaintext_records(ContentType.HANDSHAKE, header + bytes(MAX_MESSAGE_SIZE - 1024))
    configuration = MlsTlsConfiguration(TlsPair().server_profile, is_client=False)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        held = []
        for _ in range(20):
            server = MlsTlsConnection(configuration)
            server.receive_data(partial)  # almost a whole largest message, never finished
            held.append(server)
        per_connection = (tracemalloc.get_traced_memory()[0] - before) / len(held)
    finally:
        tracemalloc.stop()
    assert not any(server.closed for server in held)
    assert per_connection < MAX_MESSAGE_SIZE + 32 * 1024, per_connection  # one message and bookkeeping
    too_much = plaintext_records(ContentType.HANDSHAKE, bytes([1]) + Writer().varint(MAX_MESSAGE_SIZE + 1).getvalue())
    server = MlsTlsConnection(configuration)
    server.receive_data(too_much)
    assert server.closed  # a declared length over the limit is refused on the prefix
