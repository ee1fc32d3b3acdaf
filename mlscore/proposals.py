"""Proposal list validation and application (RFC 9420 sections 12.1-12.3).

A commit covers a list of proposals, each tagged with who sent it.  This
module checks the list against the rules of section 12.2 and applies it, in
the order of section 12.3, to a *copy* of the tree; the caller swaps the copy
in only when the whole commit has been verified.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .errors import ValidationError
from .extensions import Extension, ExtensionType, RequiredCapabilities, check_unique, get_extension
from .leaf_node import Capabilities
from .messages import (
    Add,
    AppDataUpdate,
    ExternalInit,
    GroupContextExtensions,
    PreSharedKey,
    Proposal,
    ProposalType,
    ReInit,
    Remove,
    Update,
)
from .safe_app import AppDataComponent, apply_app_data_updates
from .schedule.psk import PreSharedKeyID
from .tree.ratchet_tree import RatchetTree

# Proposal types a Commit may cover without an UpdatePath (RFC 9420 section 17.4 "Path Required").
PATH_NOT_REQUIRED = frozenset({ProposalType.ADD, ProposalType.PSK, ProposalType.REINIT,
                               ProposalType.APP_DATA_UPDATE})  # draft-ietf-mls-extensions 4.7: "Path Required: N"


@dataclass(frozen=True)
class CoveredProposal:
    """A proposal and the leaf that sent it (None for the committer's by-value proposals from a new member)."""

    proposal: Proposal
    sender: int | None


@dataclass
class AppliedProposals:
    """What applying a proposal list changed, for the rest of the commit to use."""

    added_leaves: list[int] = field(default_factory=list)
    psks: list[PreSharedKeyID] = field(default_factory=list)
    extensions: tuple[Extension, ...] | None = None  # new GroupContext extensions, if any
    reinit: ReInit | None = None
    external_init: ExternalInit | None = None

    @property
    def welcome_needed(self) -> bool:
        return bool(self.added_leaves)


def path_required(proposals: Sequence[CoveredProposal]) -> bool:
    return not proposals or any(p.proposal.proposal_type not in PATH_NOT_REQUIRED for p in proposals)


def validate_proposal_list(proposals: Sequence[CoveredProposal], committer: int | None,
                           tree: RatchetTree, *, external: bool = False) -> None:
    """Section 12.2: reject lists that no honest committer would produce."""
    types = [p.proposal.proposal_type for p in proposals]
    touched: set[int] = set()
    added_keys: set[bytes] = set()
    psk_ids: set[bytes] = set()
    for covered in proposals:
        proposal = covered.proposal
        if isinstance(proposal, Update):
            if covered.sender is None or covered.sender == committer:
                raise ValidationError("a commit must not cover an Update from the committer")
            _touch(touched, covered.sender)
        elif isinstance(proposal, Remove):
            if proposal.removed == committer:
                raise ValidationError("a commit must not remove the committer")
            if tree.leaf(proposal.removed) is None:
                raise ValidationError(f"Remove of blank or absent leaf {proposal.removed}")
            _touch(touched, proposal.removed)
        elif isinstance(proposal, Add):
            key = proposal.key_package.leaf_node.signature_key
            if key in added_keys:
                raise ValidationError("two Add proposals for the same client")
            added_keys.add(key)
        elif isinstance(proposal, PreSharedKey):
            encoded = proposal.psk.to_bytes()
            if encoded in psk_ids:
                raise ValidationError("the same PSK is proposed twice")
            psk_ids.add(encoded)
    removed = {p.proposal.removed for p in proposals if isinstance(p.proposal, Remove)}
    for index in range(tree.n_leaves):
        leaf = tree.leaf(index)
        if leaf is not None and index not in removed and leaf.signature_key in added_keys:
            raise ValidationError(f"Add of a client already in the group (leaf {index})")
    if types.count(ProposalType.GROUP_CONTEXT_EXTENSIONS) > 1:
        raise ValidationError("more than one GroupContextExtensions proposal")
    if ProposalType.GROUP_CONTEXT_EXTENSIONS in types and ProposalType.APP_DATA_UPDATE in types:
        # draft-ietf-mls-extensions 4.7 forbids a GroupContextExtensions proposal to touch the dictionary that
        # AppDataUpdate manages; with both in one commit, which one wins would be ambiguous
        raise ValidationError("a commit must not cover both GroupContextExtensions and AppDataUpdate")
    if ProposalType.REINIT in types and len(types) != 1:
        raise ValidationError("a ReInit proposal must be the only proposal of its commit")
    external_inits = types.count(ProposalType.EXTERNAL_INIT)
    if external:
        if external_inits != 1:
            raise ValidationError("an external commit needs exactly one ExternalInit proposal")
        allowed = {ProposalType.EXTERNAL_INIT, ProposalType.REMOVE, ProposalType.PSK}
        if any(t not in allowed for t in types):
            raise ValidationError("an external commit may only cover ExternalInit, Remove and PSK")
        if any(p.sender is not None for p in proposals):
            raise ValidationError("an external commit must carry its proposals by value")
    elif external_inits:
        raise ValidationError("ExternalInit is only allowed in an external commit")


def _touch(touched: set[int], leaf: int) -> None:
    if leaf in touched:
        raise ValidationError(f"leaf {leaf} is updated or removed more than once")
    touched.add(leaf)


def apply_proposals(tree: RatchetTree, proposals: Sequence[CoveredProposal], extensions: tuple[Extension, ...],
                    app_data_components: Mapping[int, AppDataComponent] | None = None) -> AppliedProposals:
    """Apply in the order of section 12.3 to ``tree`` (which the caller has copied); AppDataUpdate proposals
    last, through ``app_data_components`` (draft-ietf-mls-extensions 4.7)."""
    result = AppliedProposals()
    for covered in proposals:
        if isinstance(covered.proposal, GroupContextExtensions):
            result.extensions = covered.proposal.extensions
            check_unique(result.extensions, "GroupContextExtensions")
            check_required_capabilities(tree, result.extensions)
    for covered in proposals:
        if isinstance(covered.proposal, Update):
            assert covered.sender is not None
            tree.update_leaf(covered.sender, covered.proposal.leaf_node)
    for covered in proposals:
        if isinstance(covered.proposal, Remove):
            tree.remove_leaf(covered.proposal.removed)
    required = _required_capabilities(result.extensions if result.extensions is not None else extensions)
    for covered in proposals:
        if isinstance(covered.proposal, Add):
            leaf = covered.proposal.key_package.leaf_node
            if required is not None:
                check_leaf_supports(leaf.capabilities, required, "the added member")
            result.added_leaves.append(tree.add_leaf(leaf))
    for covered in proposals:
        if isinstance(covered.proposal, PreSharedKey):
            result.psks.append(covered.proposal.psk)
        elif isinstance(covered.proposal, ReInit):
            result.reinit = covered.proposal
        elif isinstance(covered.proposal, ExternalInit):
            result.external_init = covered.proposal
    if result.extensions is None:
        result.extensions = extensions
    app_data = [p.proposal for p in proposals if isinstance(p.proposal, AppDataUpdate)]
    if app_data:
        result.extensions = apply_app_data_updates(result.extensions, app_data, app_data_components or {})
    return result


def _required_capabilities(extensions: Sequence[Extension]) -> RequiredCapabilities | None:
    extension = get_extension(extensions, ExtensionType.REQUIRED_CAPABILITIES)
    return extension.decoded(RequiredCapabilities) if extension is not None else None


def check_required_capabilities(tree: RatchetTree, extensions: Sequence[Extension]) -> None:
    """Every member must support what a ``required_capabilities`` extension demands."""
    required = _required_capabilities(extensions)
    if required is None:
        return
    for index in range(tree.n_leaves):
        leaf = tree.leaf(index)
        if leaf is None:
            continue
        check_leaf_supports(leaf.capabilities, required, f"leaf {index}")


def check_leaf_supports(capabilities: Capabilities, required: RequiredCapabilities, who: str) -> None:
    from .extensions import DEFAULT_EXTENSION_TYPES

    missing_ext = [t for t in required.extension_types
                   if t not in capabilities.extensions and t not in DEFAULT_EXTENSION_TYPES]
    missing_prop = [t for t in required.proposal_types
                    if t not in capabilities.proposals and t not in set(ProposalType)]
    missing_cred = [t for t in required.credential_types if t not in capabilities.credentials]
    if missing_ext or missing_prop or missing_cred:
        raise ValidationError(f"{who} lacks required capabilities: extensions {missing_ext}, "
                              f"proposals {missing_prop}, credentials {missing_cred}")
