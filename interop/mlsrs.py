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

from .mlsrs_peer import MLSRS_AVAILABLE, MLSRS_REASON, MlsRsPeer

ROUNDS = 50
SUITE = 1


@dataclass
class Result:
    name: str
    ok: bool
    detail: str = ""


def our_key_package(name: bytes, suite: int = SUITE) -> KeyPackageBundle:
    """A fresh KeyPackage of ours (basic credential ``name``, new signature key) for an interop peer."""
    signature_priv, _ = get_suite(suite).generate_signature_key_pair()
    return create_key_package(suite, Credential.basic(name), signature_priv)


CONFIG = GroupConfig(handshake_wire_format=WireFormat.PUBLIC_MESSAGE)


def _exchange(ours: Group, theirs: MlsRsPeer, rounds: int, check: Callable[[str, bool, str], None]) -> Group:
    for round_number in range(rounds):
        if round_number % 2 == 0:
            result = ours.commit()
            theirs.process(result.message.to_bytes())
            ours = result.group
        else:
            commit = theirs.commit_update()
            theirs.merge_pending()
            processed = ours.process(commit)
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
        peer = MlsRsPeer.new(b"mls-rs")
        peer.create_group()
        bundle = our_key_package(b"mlscore")
        _, welcome = peer.add(MLSMessage(bundle.key_package).to_bytes())
        peer.merge_pending()
        ours = Group.join(welcome, bundle, config=CONFIG)
        check("mls-rs creates, mlscore joins", True, f"epoch {ours.epoch}")
        _exchange(ours, peer, rounds, check)

    def mlscore_creates() -> None:
        peer = MlsRsPeer.new(b"mls-rs")
        ours = Group.create(our_key_package(b"mlscore"), config=CONFIG)
        their_kp = MLSMessage.from_bytes(peer.key_package()).body
        assert isinstance(their_kp, KeyPackage)
        result = ours.commit([Add(their_kp)], force_path=False)
        assert result.welcome is not None
        peer.join(result.welcome.to_bytes())
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
