"""tree-validation.json: tree hashes and resolutions of every node; the tree validates."""

from __future__ import annotations

from mlscore.crypto import get_suite
from mlscore.tree.ratchet_tree import RatchetTree, decode_ratchet_tree


def check(entry: dict) -> None:
    suite = get_suite(entry["cipher_suite"])
    tree = RatchetTree.from_nodes(suite, decode_ratchet_tree(bytes.fromhex(entry["tree"])))
    for index, expected in enumerate(entry["tree_hashes"]):
        assert tree.tree_hash(index).hex() == expected, f"tree hash of node {index}"
    for index, expected in enumerate(entry["resolutions"]):
        assert tree.resolution(index) == expected, f"resolution of node {index}"
    tree.validate(bytes.fromhex(entry["group_id"]))
