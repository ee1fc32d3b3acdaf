"""Two parties, one MLS group: key establishment, PCS rekeys, a dropped connection, resumption.

Runs both sides of draft-kohbrok-mls-two-party-profile-01 in one process over
an in-memory "connection", printing every message and key switch, so the whole
protocol can be watched end to end:

    python -m examples.two_party [--rekeys N] [--suite S] [--state-dir DIR]
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time

from mls2p import (
    KeysChanged,
    ProfileConfig,
    SendMessage,
    SessionAction,
    TwoPartySession,
    persist_to,
)
from mls2p.command import run_command
from mls2p.errors import StoreError
from mls2p.store import FileSessionStore
from mlscore.credentials import Credential, PinnedKeys, key_fingerprint
from mlscore.crypto import SUPPORTED_SUITES, get_suite


def show(who: str, actions: list[SessionAction]) -> list[bytes]:
    out = []
    for action in actions:
        if isinstance(action, SendMessage):
            print(f"  {who} -> {action.msg_type.name:<20} {len(action.data):5} bytes")
            out.append(action.data)
        elif isinstance(action, KeysChanged):
            print(f"  {who} switches to epoch {action.epoch} keys ({action.reason})")
    return out


def deliver(a: TwoPartySession, b: TwoPartySession, names: tuple[str, str], first: list[bytes]) -> None:
    queues = {0: list(first), 1: []}
    sides = (a, b)
    while queues[0] or queues[1]:
        for sender in (0, 1):
            if queues[sender]:
                receiver = 1 - sender
                queues[receiver] += show(names[receiver], sides[receiver].receive(queues[sender].pop(0)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rekeys", type=int, default=6, help="PCS rekeys to run (default 6)")
    parser.add_argument("--suite", type=int, default=1, choices=SUPPORTED_SUITES, help="MLS cipher suite")
    parser.add_argument("--state-dir", help="where both sides persist their state (default: a temporary folder, "
                        "removed at the end)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    if args.rekeys < 0:
        parser.error("--rekeys must be 0 or more")
    if args.state_dir:
        return run_command(functools.partial(demo, args, args.state_dir), prog="two_party", verbose=args.verbose)
    with tempfile.TemporaryDirectory(prefix="mls-transport-demo-") as folder:
        return run_command(functools.partial(demo, args, folder), prog="two_party", verbose=args.verbose)


def demo(args: argparse.Namespace, state_dir: str) -> int:
    suite = get_suite(args.suite)

    (alice_priv, alice_pub), (bob_priv, bob_pub) = suite.generate_signature_key_pair(), \
        suite.generate_signature_key_pair()

    def config(name: bytes, own: bytes, peer: bytes, peer_key: bytes) -> ProfileConfig:
        """``name`` trusts exactly one peer: ``peer`` with ``peer_key`` (a name alone is no identity)."""
        return ProfileConfig(credential=Credential.basic(name), signature_priv=own, cipher_suite=suite.id,
                             authentication_service=PinnedKeys({peer: {key_fingerprint(peer_key)}}))

    alice_config = config(b"alice", alice_priv, b"bob", bob_pub)
    bob_config = config(b"bob", bob_priv, b"alice", alice_pub)
    alice_store = FileSessionStore(f"{state_dir}/alice")
    bob_store = FileSessionStore(f"{state_dir}/bob")
    print(f"suite {suite.id} ({suite.name}); state in {state_dir}")

    print("phase 1: key establishment")
    started = time.perf_counter()
    alice, hello = TwoPartySession.initiator(alice_config, on_state_change=persist_to(alice_store))
    bob = TwoPartySession.responder(bob_config, on_state_change=persist_to(bob_store))
    deliver(alice, bob, ("alice", "bob"), show("alice", hello))
    print(f"  established epoch {alice.epoch} in {1000 * (time.perf_counter() - started):.1f} ms")

    print(f"phase 2: {args.rekeys} ping-pong PCS rekeys")
    for i in range(args.rekeys):
        sender, receiver, names = (alice, bob, ("alice", "bob")) if i % 2 == 0 else (bob, alice, ("bob", "alice"))
        deliver(sender, receiver, names, show(names[0], sender.update()))
    same = alice.export_secret("demo", b"", 16) == bob.export_secret("demo", b"", 16)
    print(f"  both at epoch {alice.epoch}; exporters equal: {same}")

    print("connection drops while alice's ConnectionUpdate is in flight; both processes restart")
    show("alice", alice.update())  # lost with the connection
    group_id = alice.group_id
    assert group_id is not None
    alice_state = alice_store.load(group_id)
    if alice_state is None:  # persist_to stored every state change
        raise StoreError("no stored state for alice's group")
    alice = TwoPartySession.from_state(alice_state, alice_config, on_state_change=persist_to(
        alice_store, loaded=alice_state, group_id=group_id))
    bob_state = bob_store.load(group_id)
    if bob_state is None:
        raise StoreError("no stored state for bob's group")
    bob = TwoPartySession.from_state(bob_state, bob_config, on_state_change=persist_to(
        bob_store, loaded=bob_state, group_id=group_id))

    print("phase 3: bob resumes on a new connection")
    deliver(bob, alice, ("bob", "alice"), show("bob", bob.resume()))
    same = alice.export_secret("demo", b"", 16) == bob.export_secret("demo", b"", 16)
    print(f"  both at epoch {alice.epoch}; exporters equal: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
