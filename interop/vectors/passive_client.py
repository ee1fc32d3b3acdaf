"""Shared procedure of the passive-client vector files (test-vectors.md)."""

from __future__ import annotations

from mlscore.framing import MLSMessage
from mlscore.group import CommitMessage, Group, GroupConfig
from mlscore.key_package import KeyPackageBundle
from mlscore.messages import KeyPackage
from mlscore.schedule.psk import PreSharedKeyID


def run_passive_client(entry: dict) -> None:
    h = bytes.fromhex
    key_package = MLSMessage.from_bytes(h(entry["key_package"])).body
    assert isinstance(key_package, KeyPackage)
    bundle = KeyPackageBundle(key_package, h(entry["init_priv"]), h(entry["encryption_priv"]),
                              h(entry["signature_priv"]))
    psks = {h(p["psk_id"]): h(p["psk"]) for p in entry["external_psks"]}

    def lookup(psk_id: PreSharedKeyID) -> bytes | None:
        return psks.get(psk_id.psk_id)

    tree = h(entry["ratchet_tree"]) if entry.get("ratchet_tree") else None
    group = Group.join(h(entry["welcome"]), bundle, ratchet_tree=tree, config=GroupConfig(external_psks=lookup))
    assert group.epoch_authenticator == h(entry["initial_epoch_authenticator"]), "initial epoch authenticator"
    for number, epoch in enumerate(entry["epochs"]):
        for proposal in epoch["proposals"]:
            group.process(h(proposal))
        result = group.process(h(epoch["commit"]))
        assert isinstance(result, CommitMessage), "commit expected"
        group = result.group
        assert group.epoch_authenticator == h(epoch["epoch_authenticator"]), f"epoch authenticator {number}"
