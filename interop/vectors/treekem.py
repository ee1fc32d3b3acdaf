"""treekem.json: every member applies every UpdatePath; fresh paths round-trip too."""

from __future__ import annotations

from mlscore.crypto import get_suite
from mlscore.leaf_node import PROTOCOL_VERSION_MLS10
from mlscore.schedule.key_schedule import GroupContext
from mlscore.tree.ratchet_tree import RatchetTree, UpdatePath, decode_ratchet_tree
from mlscore.tree.treekem import PathState, apply_update_path, create_update_path


def check(entry: dict) -> None:
    suite = get_suite(entry["cipher_suite"])
    h = bytes.fromhex
    group_id = h(entry["group_id"])
    base = RatchetTree.from_nodes(suite, decode_ratchet_tree(h(entry["ratchet_tree"])))

    def context(tree_hash: bytes) -> bytes:
        return GroupContext(PROTOCOL_VERSION_MLS10, suite.id, group_id, entry["epoch"], tree_hash,
                            h(entry["confirmed_transcript_hash"])).to_bytes()

    states = {}
    for member in entry["leaves_private"]:
        state = PathState.for_leaf(suite, member["index"], h(member["encryption_priv"]))
        for item in member["path_secrets"]:
            state.keys[item["node"]] = suite.derive_key_pair(suite.derive_secret(h(item["path_secret"]), "node"))[0]
        states[member["index"]] = state

    for update in entry["update_paths"]:
        sender = update["sender"]
        path = UpdatePath.from_bytes(h(update["update_path"]))
        path.leaf_node.verify(suite, group_id, sender)
        for index, state in states.items():
            if index == sender:
                continue
            tree = base.copy()
            commit_secret, _ = apply_update_path(suite, tree, sender, path, group_id, index, state,
                                                 provisional_context=context)
            assert commit_secret == h(update["commit_secret"]), f"commit secret at leaf {index}"
            assert tree.tree_hash() == h(update["tree_hash_after"]), f"tree hash after at leaf {index}"

    signers = {m["index"]: h(m["signature_priv"]) for m in entry["leaves_private"]}
    for sender, signature_priv in signers.items():
        tree = base.copy()
        template = tree.leaf(sender)
        assert template is not None
        creation = create_update_path(suite, tree, sender, group_id, signature_priv, template)
        path = creation.encrypt(context(tree.tree_hash()))
        for index, state in states.items():
            if index == sender:
                continue
            receiver_tree = base.copy()
            commit_secret, _ = apply_update_path(suite, receiver_tree, sender, path, group_id, index, state,
                                                 provisional_context=context)
            assert commit_secret == creation.commit_secret, f"own path: commit secret at leaf {index}"
            assert receiver_tree.tree_hash() == tree.tree_hash(), "own path: tree hash"
