"""tree-operations.json: an Add, Update or Remove applied to a tree."""

from __future__ import annotations

from mlscore.crypto import get_suite
from mlscore.messages import Add, Remove, Update, proposal_from_bytes
from mlscore.tree.ratchet_tree import RatchetTree, decode_ratchet_tree, encode_ratchet_tree


def check(entry: dict) -> None:
    suite = get_suite(entry["cipher_suite"])
    h = bytes.fromhex
    tree = RatchetTree.from_nodes(suite, decode_ratchet_tree(h(entry["tree_before"])))
    assert tree.tree_hash() == h(entry["tree_hash_before"]), "tree hash before"
    proposal = proposal_from_bytes(h(entry["proposal"]))
    if isinstance(proposal, Add):
        tree.add_leaf(proposal.key_package.leaf_node)
    elif isinstance(proposal, Update):
        tree.update_leaf(entry["proposal_sender"], proposal.leaf_node)
    elif isinstance(proposal, Remove):
        tree.remove_leaf(proposal.removed)
    else:
        raise AssertionError(f"unexpected proposal {type(proposal).__name__}")
    assert encode_ratchet_tree(tree.nodes_for_export()) == h(entry["tree_after"]), "tree after"
    assert tree.tree_hash() == h(entry["tree_hash_after"]), "tree hash after"
