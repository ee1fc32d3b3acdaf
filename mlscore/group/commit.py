"""Commits (RFC 9420 section 12.4): creating one, with its Welcome, and processing a received one.

These functions are :class:`~mlscore.group.Group`'s commit operations, kept
in their own module because section 12.4 is a concept of its own; they read
the group's private state (package-internal) and never modify it: both return
the next epoch as a new Group.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from .. import framing as _protection
from ..errors import StateError, ValidationError
from ..framing import (
    AuthenticatedContent,
    ContentType,
    FramedContent,
    FramedContentAuthData,
    Sender,
    SenderType,
)
from ..key_package import validate_key_package
from ..leaf_node import LeafNode, LeafNodeSource, validate_leaf_node
from ..messages import (
    Add,
    Commit,
    Proposal,
    ProposalOrRef,
    Update,
)
from ..proposals import CoveredProposal, apply_proposals, path_required, validate_proposal_list
from ..schedule import key_schedule as _schedule
from ..schedule.key_schedule import GroupContext
from ..tree.treekem import apply_update_path, create_update_path
from .results import CommitMessage, CommitResult
from .welcome import build_welcome

if TYPE_CHECKING:
    from .state import Group

log = logging.getLogger("mlscore.group")


def create_commit(group: Group, proposals: Sequence[Proposal] = (), *, force_path: bool = True,
                  by_reference: Sequence[bytes] = (), include_tree_in_welcome: bool = True,
                  authenticated_data: bytes = b"",
                  leaf_node_update: Callable[[LeafNode], LeafNode] | None = None,
                  path_secret: bytes | None = None) -> CommitResult:
    """Create a Commit covering ``proposals`` (by value) and cached proposal references.

    Returns the message, the Welcome (if members were added) and the next
    epoch's Group; ``group`` is left untouched, so the caller decides when to
    switch (the two-party profile waits for the peer's confirmation).
    """
    group._check_alive()
    covered = [CoveredProposal(p, group.own_leaf) for p in proposals]
    for ref in by_reference:
        if ref not in group._proposals:
            raise StateError(f"no cached proposal with reference {ref.hex()}")
        covered.append(group._proposals[ref])
    for proposal in proposals:
        if isinstance(proposal, Add):
            validate_key_package(proposal.key_package, expected_suite=group.suite.id,
                                 authentication_service=group.config.authentication_service,
                                 now=group.config.now)
        if isinstance(proposal, Update):
            raise ValidationError("a committer updates its own leaf through the UpdatePath, "
                                  "not an Update proposal")
    validate_proposal_list(covered, group.own_leaf, group.tree)
    tree = group.tree.copy()
    applied = apply_proposals(tree, covered, group.context.extensions, group.config.app_data_components)
    with_path = force_path or path_required(covered)

    def provisional_context(tree_hash: bytes) -> GroupContext:
        return replace(group.context, epoch=group.epoch + 1, tree_hash=tree_hash,
                       extensions=applied.extensions or ())

    path_state = group._path_state
    commit_secret = bytes(group.suite.hash_len)
    path = None
    joiner_path_secrets: dict[int, bytes | None] = {}
    if with_path:
        leaf_template = group.own_leaf_node
        if leaf_node_update is not None:
            leaf_template = leaf_node_update(leaf_template)
        creation = create_update_path(
            group.suite, tree, group.own_leaf, group.group_id, group._signer, leaf_template,
            exclude=applied.added_leaves, path_secret=path_secret)
        provisional = provisional_context(tree.tree_hash())
        path = creation.encrypt(provisional.to_bytes())
        commit_secret = creation.commit_secret
        path_state = creation.path_state
        joiner_path_secrets = {leaf: creation.path_secret_for(leaf) for leaf in applied.added_leaves}
    else:
        provisional = provisional_context(tree.tree_hash())

    commit = Commit(tuple(ProposalOrRef(proposal=p) for p in proposals)
                    + tuple(ProposalOrRef(reference=r) for r in by_reference), path)
    content = FramedContent(group.group_id, group.epoch, Sender.member(group.own_leaf), authenticated_data,
                            ContentType.COMMIT, commit)
    wire_format = group.config.handshake_wire_format
    signature = _protection.sign_content(group.suite, group._signer, wire_format, content,
                                         group.context)
    authenticated = AuthenticatedContent(wire_format, content, FramedContentAuthData(signature, b""))
    psk_secret = group._psk_secret(applied.psks)
    next_group, confirmation_tag, joiner_secret = group._next_epoch(
        authenticated, tree, provisional, commit_secret, psk_secret, path_state, group.own_leaf)
    auth = FramedContentAuthData(signature, confirmation_tag)
    message = group._frame(content, auth, wire_format)
    welcome = None
    if applied.added_leaves:
        group_info = next_group.group_info(include_tree=include_tree_in_welcome)
        welcome = build_welcome(group, group_info, joiner_secret, applied, covered, joiner_path_secrets,
                                psk_ids=applied.psks)
    log.debug("created commit for epoch %d -> %d (%d proposals, path=%s)", group.epoch,
              next_group.epoch, len(covered), path is not None)
    return CommitResult(message, welcome, next_group)


def process_commit(group: Group, authenticated: AuthenticatedContent, now: int | None = None) -> CommitMessage:
    content = authenticated.content
    commit = content.content
    assert isinstance(commit, Commit)
    sender = content.sender
    external = sender.sender_type == SenderType.NEW_MEMBER_COMMIT
    if sender.sender_type not in (SenderType.MEMBER, SenderType.NEW_MEMBER_COMMIT):
        raise ValidationError(f"a commit cannot come from a {sender.sender_type.name} sender")
    if not external and sender.index == group.own_leaf:
        raise StateError("this is our own commit: use the pending group from commit()")
    if authenticated.auth.confirmation_tag is None:
        raise ValidationError("commit without confirmation tag")
    covered = _resolve_proposals(group, commit, sender)
    committer = None if external else sender.index
    validate_proposal_list(covered, committer, group.tree, external=external)
    for item in covered:
        if isinstance(item.proposal, Add) and item.sender == committer:
            validate_key_package(item.proposal.key_package, expected_suite=group.suite.id,
                                 authentication_service=group.config.authentication_service,
                                 now=now)
    if path_required(covered) and commit.path is None:
        raise ValidationError("this commit must carry an UpdatePath")
    tree = group.tree.copy()
    applied = apply_proposals(tree, covered, group.context.extensions, group.config.app_data_components)
    own_leaf = group.own_leaf
    if own_leaf >= tree.n_leaves or tree.leaf(own_leaf) is None:
        raise StateError("this commit removes us from the group")
    init_secret = None
    if external:
        assert applied.external_init is not None
        init_secret = _schedule.external_init_secret(group.suite, group._secrets.external_secret,
                                                     applied.external_init.kem_output)
        committer = tree.add_leaf(commit.path.leaf_node) if commit.path else None
    commit_secret = bytes(group.suite.hash_len)
    path_state = group._path_state
    if commit.path is not None:
        assert committer is not None
        validate_leaf_node(commit.path.leaf_node, group.suite, expected_source=LeafNodeSource.COMMIT,
                           authentication_service=group.config.authentication_service,
                           group_id=group.group_id, leaf_index=committer, now=now)

        def provisional_bytes(tree_hash: bytes) -> bytes:
            return replace(group.context, epoch=group.epoch + 1, tree_hash=tree_hash,
                           extensions=applied.extensions or ()).to_bytes()

        commit_secret, path_state = apply_update_path(
            group.suite, tree, committer, commit.path, group.group_id, own_leaf, group._path_state,
            exclude=applied.added_leaves, provisional_context=provisional_bytes)
    provisional = replace(group.context, epoch=group.epoch + 1, tree_hash=tree.tree_hash(),
                          extensions=applied.extensions or ())
    psk_secret = group._psk_secret(applied.psks)
    group, confirmation_tag, _ = group._next_epoch(authenticated, tree, provisional, commit_secret,
                                                  psk_secret, path_state, own_leaf, init_secret)
    if not _protection.constant_time_equal(confirmation_tag, authenticated.auth.confirmation_tag):
        raise ValidationError("confirmation tag does not match")
    log.debug("processed commit epoch %d -> %d from %s", group.epoch, group.epoch, sender)
    return CommitMessage(group, sender, commit, content.authenticated_data)

def _resolve_proposals(group: Group, commit: Commit, sender: Sender) -> list[CoveredProposal]:
    covered = []
    for item in commit.proposals:
        if item.proposal is not None:
            owner = sender.index if sender.sender_type == SenderType.MEMBER else None
            covered.append(CoveredProposal(item.proposal, owner))
        else:
            assert item.reference is not None
            cached = group._proposals.get(item.reference)
            if cached is None:
                raise ValidationError(f"commit references unknown proposal {item.reference.hex()}")
            covered.append(cached)
    return covered

