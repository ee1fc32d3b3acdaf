"""Live interop with AWS mls-rs (PyPI ``agentvault-mls-rs-uniffi``): the RFC 9420 two-party flow.

Both roles are run: mls-rs creates the group and we join, and we create the
group and mls-rs joins.  Then the two sides alternate UpdatePath commits,
compare the MLS exporter at every epoch, and exchange application messages
both ways.  The wheel supports suite 1, basic credentials and PublicMessage
handshakes, so that is what both sides use here (no Safe AAD: mls-rs does
not speak the two-party profile).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

from mlscore.credentials import Credential
from mlscore.crypto import get_suite
from mlscore.framing import MLSMessage, WireFormat
from mlscore.group import ApplicationMessage, CommitMessage, Group, GroupConfig
from mlscore.key_package import KeyPackageBundle, create_key_package
from mlscore.messages import Add, KeyPackage

try:
    import mls_rs_uniffi as _mlsrs

    MLSRS_AVAILABLE = True
    MLSRS_REASON = ""
except ImportError as exc:  # the wheel exists for Linux x86_64 only
    _mlsrs = None
    MLSRS_AVAILABLE = False
    MLSRS_REASON = f"agentvault-mls-rs-uniffi is not installed for this platform ({exc})"

ROUNDS = 50
SUITE = 1


class MlsRsPeer:
    """One mls-rs client and its group, speaking RFC 9420 bytes."""

    def __init__(self, identity: bytes) -> None:
        if _mlsrs is None:
            raise RuntimeError(MLSRS_REASON)
        keypair = _mlsrs.generate_signature_keypair(_mlsrs.CipherSuite.CURVE25519_AES128)
        self._client = _mlsrs.Client(identity, keypair, _mlsrs.client_config_default())
        self._group = None

    def key_package(self) -> bytes:
        return self._client.generate_key_package_message().to_bytes()

    def create_group(self) -> None:
        self._group = self._client.create_group(None)

    def add(self, key_package: bytes) -> tuple[bytes, bytes, bytes | None]:
        """Commit an Add; returns (commit, welcome, ratchet tree if not in the Welcome)."""
        out = self._group.add_members([_mlsrs.Message.from_bytes(key_package)])
        self._group.process_incoming_message(out.commit_message)
        tree = out.ratchet_tree.bytes if out.ratchet_tree is not None else None
        return out.commit_message.to_bytes(), out.welcome_message.to_bytes(), tree

    def join(self, welcome: bytes, ratchet_tree: bytes | None) -> None:
        tree = _mlsrs.RatchetTree(bytes=ratchet_tree) if ratchet_tree is not None else None
        self._group = self._client.join_group(tree, _mlsrs.Message.from_bytes(welcome)).group

    def commit(self) -> bytes:
        """An empty commit with a fresh UpdatePath, merged at once."""
        out = self._group.commit()
        self._group.process_incoming_message(out.commit_message)
        return out.commit_message.to_bytes()

    def process(self, message: bytes) -> bytes | None:
        received = self._group.process_incoming_message(_mlsrs.Message.from_bytes(message))
        return received.data if received.is_application_message() else None

    def encrypt(self, plaintext: bytes) -> bytes:
        return self._group.encrypt_application_message(plaintext).to_bytes()

    def export(self, label: bytes, context: bytes, length: int) -> bytes:
        return self._group.export_secret(label, context, length)


@dataclass
class Result:
    name: str
    ok: bool
    detail: str = ""


def _ours(name: bytes) -> KeyPackageBundle:
    signature_priv, _ = get_suite(SUITE).generate_signature_key_pair()
    return create_key_package(SUITE, Credential.basic(name), signature_priv)


CONFIG = GroupConfig(handshake_wire_format=WireFormat.PUBLIC_MESSAGE)


def _exchange(ours: Group, theirs: MlsRsPeer, rounds: int, check: Callable[[str, bool, str], None]) -> Group:
    for round_number in range(rounds):
        if round_number % 2 == 0:
            result = ours.commit()
            theirs.process(result.message.to_bytes())
            ours = result.group
        else:
            processed = ours.process(theirs.commit())
            assert isinstance(processed, CommitMessage)
            ours = processed.group
        same = ours.export_secret(b"interop", b"ctx", 32) == theirs.export(b"interop", b"ctx", 32)
        check(f"epoch {ours.epoch} exporter", same, "")
    received = theirs.process(ours.protect(b"from mlscore").to_bytes())
    check("application mlscore -> mls-rs", received == b"from mlscore", repr(received))
    reply = ours.process(theirs.encrypt(b"from mls-rs"))
    check("application mls-rs -> mlscore", isinstance(reply, ApplicationMessage) and reply.data == b"from mls-rs",
          repr(reply))
    return ours


def run(rounds: int = ROUNDS) -> list[Result]:
    results: list[Result] = []

    def check(name: str, ok: bool, detail: str) -> None:
        results.append(Result(name, ok, detail))

    def scenario(name: str, body: Callable[[], None]) -> None:
        try:
            body()
        except Exception as exc:
            results.append(Result(name, False, f"{type(exc).__name__}: {exc}"))

    def mlsrs_creates() -> None:
        peer = MlsRsPeer(b"mls-rs")
        peer.create_group()
        bundle = _ours(b"mlscore")
        _, welcome, tree = peer.add(MLSMessage(bundle.key_package).to_bytes())
        ours = Group.join(welcome, bundle, ratchet_tree=tree, config=CONFIG)
        check("mls-rs creates, mlscore joins", True, f"epoch {ours.epoch}")
        _exchange(ours, peer, rounds, check)

    def mlscore_creates() -> None:
        peer = MlsRsPeer(b"mls-rs")
        ours = Group.create(_ours(b"mlscore"), config=CONFIG)
        their_kp = MLSMessage.from_bytes(peer.key_package()).body
        assert isinstance(their_kp, KeyPackage)
        result = ours.commit([Add(their_kp)], force_path=False)
        assert result.welcome is not None
        peer.join(result.welcome.to_bytes(), None)
        ours = result.group
        check("mlscore creates, mls-rs joins", True, f"epoch {ours.epoch}")
        _exchange(ours, peer, rounds, check)

    scenario("mls-rs creates, mlscore joins", mlsrs_creates)
    scenario("mlscore creates, mls-rs joins", mlscore_creates)
    return results


def main(rounds: int = ROUNDS) -> int:
    if not MLSRS_AVAILABLE:
        print(f"skipped: {MLSRS_REASON}")
        print("0 passed, 0 failed")
        return 0
    results = run(rounds)
    for result in results:
        if not result.ok:
            print(f"FAILED {result.name}: {result.detail}")
    passed = sum(r.ok for r in results)
    print(f"{len(results)} checks: both roles, {rounds} alternating commits each, exporter at every epoch")
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
