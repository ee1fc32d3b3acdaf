"""TreeKEM: creating and applying UpdatePaths (RFC 9420 sections 7.4-7.6, 12.4.2).

A member's private view of the tree is a :class:`PathState`: the HPKE
private keys it holds, by node index.  Both operations here work on a tree
copy and a new PathState, so a failure leaves the caller's state untouched.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from ..crypto import CipherSuite, SignatureKey
from ..errors import CryptoError, TreeError, ValidationError
from ..leaf_node import LeafNode, LeafNodeSource
from . import math as tree_math
from .ratchet_tree import HPKECiphertext, ParentNode, RatchetTree, UpdatePath, UpdatePathNode


@dataclass
class PathState:
    """The HPKE private keys one member holds, by node index."""

    leaf_index: int
    keys: dict[int, bytes] = field(default_factory=dict, repr=False)

    @classmethod
    def for_leaf(cls, suite: CipherSuite, leaf_index: int, encryption_priv: bytes) -> PathState:
        return cls(leaf_index, {2 * leaf_index: encryption_priv})

    def copy(self) -> PathState:
        return PathState(self.leaf_index, dict(self.keys))

    def retain(self, tree: RatchetTree) -> None:
        """Forget keys of nodes that are now blank or beyond the tree."""
        width = 2 * tree.n_leaves - 1
        for node in [n for n in self.keys if n >= width or tree.node(n) is None]:
            del self.keys[node]


def _path_keys(suite: CipherSuite, path_secret: bytes) -> tuple[bytes, bytes]:
    return suite.derive_key_pair(suite.derive_secret(path_secret, "node"))


def _next_path_secret(suite: CipherSuite, path_secret: bytes) -> bytes:
    return suite.derive_secret(path_secret, "path")


def _encryption_targets(tree: RatchetTree, parent: int, below: int, exclude: set[int]) -> list[int]:
    """Resolution of the copath child of ``parent`` (relative to ``below``), minus new members."""
    left = tree_math.left(parent)
    copath_child = tree_math.right(parent) if _is_below(below, left) else left
    return [node for node in tree.resolution(copath_child) if node not in exclude]


def _is_below(node: int, ancestor: int) -> bool:
    k = tree_math.level(ancestor)
    return ancestor - ((1 << k) - 1) <= node <= ancestor + ((1 << k) - 1)


@dataclass
class PathCreation:
    """A new path set into the tree, waiting for the provisional GroupContext to encrypt."""

    suite: CipherSuite
    tree: RatchetTree
    leaf_index: int
    leaf_node: LeafNode
    filtered_path: list[int]
    path_secrets: list[bytes] = field(repr=False)
    commit_secret: bytes = field(repr=False)
    path_state: PathState = field(repr=False)
    exclude: set[int] = field(default_factory=set)

    def encrypt(self, group_context: bytes, ephemeral: Sequence[bytes] | None = None) -> UpdatePath:
        nodes = []
        for parent, secret in zip(self.filtered_path, self.path_secrets, strict=True):
            targets = _encryption_targets(self.tree, parent, 2 * self.leaf_index, self.exclude)
            ciphertexts = []
            for target in targets:
                kem_output, ciphertext = self.suite.encrypt_with_label(
                    self.tree.node(target).encryption_key, "UpdatePathNode", group_context, secret)  # type: ignore[union-attr]
                ciphertexts.append(HPKECiphertext(kem_output, ciphertext))
            nodes.append(UpdatePathNode(self.tree.node(parent).encryption_key, tuple(ciphertexts)))  # type: ignore[union-attr]
        return UpdatePath(self.leaf_node, tuple(nodes))

    def path_secret_for(self, leaf_index: int) -> bytes | None:
        """The path secret a new member needs: at the lowest common filtered-path node."""
        target = 2 * leaf_index
        for parent, secret in zip(self.filtered_path, self.path_secrets, strict=True):
            if _is_below(target, parent):
                return secret
        return None


def create_update_path(suite: CipherSuite, tree: RatchetTree, leaf_index: int, group_id: bytes,
                       signature_priv: SignatureKey, leaf_template: LeafNode, *, exclude: Sequence[int] = (),
                       path_secret: bytes | None = None, leaf_encryption_priv: bytes | None = None) -> PathCreation:
    """Blank our direct path, set a fresh one into ``tree`` (a copy) and sign our new leaf."""
    tree.blank_path(leaf_index)
    filtered = tree.filtered_direct_path(leaf_index)
    if leaf_encryption_priv is None:
        leaf_encryption_priv, leaf_encryption_pub = suite.generate_hpke_key_pair()
    else:
        leaf_encryption_pub = suite.hpke_public_key(leaf_encryption_priv)
    state = PathState.for_leaf(suite, leaf_index, leaf_encryption_priv)
    secret = path_secret if path_secret is not None else os.urandom(suite.hash_len)
    secrets = []
    for parent in filtered:
        secrets.append(secret)
        priv, pub = _path_keys(suite, secret)
        state.keys[parent] = priv
        tree.set_node(parent, ParentNode(pub))
        secret = _next_path_secret(suite, secret)
    commit_secret = secret  # path_secret[n] after the n filtered-path nodes
    leaf_parent_hash = tree.set_path_parent_hashes(leaf_index, filtered)
    leaf = replace(leaf_template, encryption_key=leaf_encryption_pub, leaf_node_source=LeafNodeSource.COMMIT,
                   lifetime=None, parent_hash=leaf_parent_hash, signature=b"")
    leaf = leaf.signed(suite, signature_priv, group_id, leaf_index)
    tree.set_node(2 * leaf_index, leaf)
    return PathCreation(suite, tree, leaf_index, leaf, filtered, secrets, commit_secret, state,
                        {2 * i for i in exclude})


def apply_update_path(suite: CipherSuite, tree: RatchetTree, sender: int, path: UpdatePath, group_id: bytes,
                      own_leaf: int, path_state: PathState, *, exclude: Sequence[int] = (),
                      provisional_context: Callable[[bytes], bytes]) -> tuple[bytes, PathState]:
    """Merge a received UpdatePath into ``tree`` (a copy); return (commit_secret, our new PathState).

    ``provisional_context(tree_hash)`` builds the encoded provisional GroupContext
    once the new public keys are in the tree.
    """
    tree.blank_path(sender)
    filtered = tree.filtered_direct_path(sender)
    if len(filtered) != len(path.nodes):
        raise ValidationError(f"UpdatePath has {len(path.nodes)} nodes, the filtered direct path "
                              f"has {len(filtered)}")
    for parent, path_node in zip(filtered, path.nodes, strict=True):
        tree.set_node(parent, ParentNode(path_node.encryption_key))
    leaf_parent_hash = tree.set_path_parent_hashes(sender, filtered)
    if path.leaf_node.parent_hash != leaf_parent_hash:
        raise TreeError("UpdatePath leaf parent_hash does not match the path")
    tree.set_node(2 * sender, path.leaf_node)
    group_context = provisional_context(tree.tree_hash())

    excluded = {2 * i for i in exclude}
    own_node = 2 * own_leaf
    position = next((i for i, parent in enumerate(filtered) if _is_below(own_node, parent)), None)
    if position is None:
        raise ValidationError("the UpdatePath does not cover our leaf")
    targets = _encryption_targets(tree, filtered[position], 2 * sender, excluded)
    ciphertexts = path.nodes[position].encrypted_path_secret
    if len(ciphertexts) != len(targets):
        raise ValidationError(f"UpdatePath node has {len(ciphertexts)} ciphertexts for {len(targets)} "
                              "resolution nodes")
    slot = next(((j, node) for j, node in enumerate(targets) if node in path_state.keys), None)
    if slot is None:
        raise ValidationError("no private key for any node of the UpdatePath's resolution")
    j, node = slot
    try:
        secret = suite.decrypt_with_label(path_state.keys[node], "UpdatePathNode", group_context,
                                          ciphertexts[j].kem_output, ciphertexts[j].ciphertext)
    except CryptoError as exc:
        raise CryptoError(f"cannot decrypt the UpdatePath secret: {exc}") from None
    state = path_state.copy()
    for parent in tree_math.direct_path(2 * sender, tree.n_leaves):
        state.keys.pop(parent, None)
    commit_secret = _derive_up(suite, tree, filtered[position:], secret, state)
    state.retain(tree)
    return commit_secret, state


def _derive_up(suite: CipherSuite, tree: RatchetTree, nodes: Sequence[int], secret: bytes,
               state: PathState) -> bytes:
    """Derive keys for ``nodes`` from ``secret`` upward, checking them against the tree."""
    for parent in nodes:
        priv, pub = _path_keys(suite, secret)
        node = tree.node(parent)
        if node is None or node.encryption_key != pub:
            raise TreeError(f"derived public key of node {parent} does not match the tree")
        state.keys[parent] = priv
        secret = _next_path_secret(suite, secret)
    return secret


def import_path_secret(suite: CipherSuite, tree: RatchetTree, own_leaf: int, committer: int,
                       path_secret: bytes, path_state: PathState) -> PathState:
    """A joiner's keys from GroupSecrets.path_secret (section 12.4.3.1)."""
    filtered = tree.filtered_direct_path(committer)
    own_node = 2 * own_leaf
    position = next((i for i, parent in enumerate(filtered) if _is_below(own_node, parent)), None)
    if position is None:
        raise ValidationError("path_secret given, but no committer path node is above us")
    state = path_state.copy()
    _derive_up(suite, tree, filtered[position:], path_secret, state)
    return state
