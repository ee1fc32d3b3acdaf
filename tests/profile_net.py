"""A tiny in-memory network for driving two profile sessions in tests."""

from __future__ import annotations

from mlscore.credentials import Credential
from mlscore.crypto import get_suite
from mlscore.profile import (
    Action,
    KeysChanged,
    ProfileConfig,
    SendMessage,
    TwoPartySession,
    persist_to,
)
from mlscore.store import MemorySessionStore


def config(name: bytes, **overrides: object) -> ProfileConfig:
    signature_priv, _ = get_suite(1).generate_signature_key_pair()
    return ProfileConfig(credential=Credential.basic(name), signature_priv=signature_priv, **overrides)  # type: ignore[arg-type]


def sent(actions: list[Action]) -> list[bytes]:
    return [a.data for a in actions if isinstance(a, SendMessage)]


def keys(actions: list[Action]) -> list[int]:
    return [a.epoch for a in actions if isinstance(a, KeysChanged)]


def pump(a: TwoPartySession, b: TwoPartySession, a_out: list[bytes], b_out: list[bytes] | None = None) -> None:
    """Deliver messages both ways until both sides are quiet."""
    b_out = list(b_out or [])
    a_out = list(a_out)
    while a_out or b_out:
        if a_out:
            b_out += sent(b.receive(a_out.pop(0)))
        if b_out:
            a_out += sent(a.receive(b_out.pop(0)))


class Pair:
    """Alice (initial initiator) and Bob, established, each persisting to its own store."""

    def __init__(self) -> None:
        self.alice_store = MemorySessionStore()
        self.bob_store = MemorySessionStore()
        self.alice_config = config(b"alice")
        self.bob_config = config(b"bob")
        self.alice, hello = TwoPartySession.initiator(self.alice_config, on_state_change=persist_to(self.alice_store))
        self.bob = TwoPartySession.responder(self.bob_config, on_state_change=persist_to(self.bob_store))
        pump(self.alice, self.bob, sent(hello))

    def restart(self) -> None:
        """Both processes die and come back from their stores (the connection is gone too)."""
        group_id = self.alice.group_id or self.bob.group_id
        assert group_id is not None
        self.alice = TwoPartySession.from_state(self.alice_store.load(group_id), self.alice_config,
                                                on_state_change=persist_to(self.alice_store))
        self.bob = TwoPartySession.from_state(self.bob_store.load(group_id), self.bob_config,
                                              on_state_change=persist_to(self.bob_store))

    def in_sync(self) -> bool:
        a, b = self.alice, self.bob
        return (a.epoch == b.epoch and a.pending is None and b.pending is None
                and a.export_secret("check", b"", 16) == b.export_secret("check", b"", 16))
