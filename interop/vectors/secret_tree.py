"""secret-tree.json: sender-data keys and per-leaf ratchet keys at given generations."""

from __future__ import annotations

from mlscore.crypto import get_suite
from mlscore.schedule.secret_tree import RatchetType, SecretTree, sender_data_key_nonce


def check(entry: dict) -> None:
    suite = get_suite(entry["cipher_suite"])
    h = bytes.fromhex
    sd = entry["sender_data"]
    key, nonce = sender_data_key_nonce(suite, h(sd["sender_data_secret"]), h(sd["ciphertext"]))
    assert (key, nonce) == (h(sd["key"]), h(sd["nonce"])), "sender data key/nonce"
    leaves = entry["leaves"]
    tree = SecretTree(suite, h(entry["encryption_secret"]), len(leaves), maximum_forward_distance=1 << 20)
    for leaf, generations in enumerate(leaves):
        for item in generations:
            for ratchet, prefix in ((RatchetType.HANDSHAKE, "handshake"), (RatchetType.APPLICATION, "application")):
                found = tree.receive_key(leaf, ratchet, item["generation"])
                assert found.key == h(item[f"{prefix}_key"]), f"{prefix} key leaf {leaf} gen {item['generation']}"
                assert found.nonce == h(item[f"{prefix}_nonce"]), f"{prefix} nonce"
                tree.consume(found)
