"""An MLS group as seen by one member (RFC 9420 sections 11-12).

A :class:`Group` is the state of one epoch.  Operations that change the epoch
(creating or processing a Commit, joining) never modify the object they are
called on: they build the next epoch's :class:`Group` and return it, so a
failure half-way leaves nothing half-applied, and a committer can keep both
the current and the pending epoch (the two-party profile needs exactly that).
Within an epoch, :meth:`Group.protect` and :meth:`Group.process` of
application messages advance the secret tree, and only on success.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from . import framing as _protection
from . import key_schedule as _schedule
from .codec import Reader, Writer
from .credentials import AuthenticationService
from .crypto import CipherSuite, get_suite
from .errors import DecodeError, EpochError, StateError, ValidationError
from .extensions import Extension, ExtensionType, check_unique, find_extension
from .framing import (
    AuthenticatedContent,
    ContentType,
    FramedContent,
    FramedContentAuthData,
    MLSMessage,
    PrivateMessage,
    PublicMessage,
    Sender,
    SenderType,
    WireFormat,
)
from .key_package import KeyPackageBundle, validate_key_package
from .key_schedule import EpochSecrets, GroupContext
from .leaf_node import PROTOCOL_VERSION_MLS10, LeafNode, LeafNodeSource, validate_leaf_node
from .messages import (
    Add,
    Commit,
    EncryptedGroupSecrets,
    GroupInfo,
    GroupSecrets,
    KeyPackage,
    Proposal,
    ProposalOrRef,
    Update,
    Welcome,
)
from .proposals import (
    AppliedProposals,
    CoveredProposal,
    apply_proposals,
    check_required_capabilities,
    path_required,
    validate_proposal_list,
)
from .psk import PreSharedKeyID, PSKType, compute_psk_secret
from .ratchet_tree import HPKECiphertext, RatchetTree, decode_ratchet_tree, encode_ratchet_tree
from .safe_app import ExporterTree
from .secret_tree import RatchetType, SecretTree
from .treekem import PathState, apply_update_path, create_update_path, import_path_secret

log = logging.getLogger(__name__)

PskLookup = Callable[[PreSharedKeyID], bytes | None]


@dataclass(frozen=True)
class GroupConfig:
    """Policy that is not part of the protocol state.

    ``authentication_service`` validates every credential the group meets.
    ``external_psks`` resolves external PSK ids.  ``handshake_wire_format``
    chooses PublicMessage or PrivateMessage for the commits we send.
    ``now`` (seconds since the epoch) enables lifetime checks; the core never
    reads a clock, so a caller that wants them passes the time in.
    """

    authentication_service: AuthenticationService | None = None
    external_psks: PskLookup | None = None
    handshake_wire_format: WireFormat = WireFormat.PUBLIC_MESSAGE
    padding: int = 0
    resumption_psk_history: int = 8
    now: int | None = None
    out_of_order_tolerance: int = 16
    maximum_forward_distance: int = 1000


@dataclass(frozen=True)
class CommitResult:
    """What creating a commit produces: the message to send and the next epoch."""

    message: MLSMessage
    welcome: MLSMessage | None
    group: Group
    group_info: GroupInfo


@dataclass(frozen=True)
class ApplicationMessage:
    data: bytes = field(repr=False)
    sender: int
    authenticated_data: bytes


@dataclass(frozen=True)
class ProposalMessage:
    proposal: Proposal
    sender: Sender
    reference: bytes


@dataclass(frozen=True)
class CommitMessage:
    """A processed commit: ``group`` is the next epoch, not yet adopted by anyone."""

    group: Group
    sender: Sender
    commit: Commit
    authenticated_data: bytes


ProcessedMessage = ApplicationMessage | ProposalMessage | CommitMessage


class Group:
    """One member's view of one epoch of an MLS group."""

    def __init__(self, *, suite: CipherSuite, context: GroupContext, tree: RatchetTree, own_leaf: int,
                 signature_priv: bytes, path_state: PathState, secrets: EpochSecrets,
                 interim_transcript_hash: bytes, config: GroupConfig,
                 resumption_psks: dict[int, bytes] | None = None) -> None:
        self.suite = suite
        self.context = context
        self.tree = tree
        self.own_leaf = own_leaf
        self._signature_priv = signature_priv
        self._path_state = path_state
        self._secrets = secrets
        self.interim_transcript_hash = interim_transcript_hash
        self.config = config
        self._secret_tree = SecretTree(suite, secrets.encryption_secret, tree.n_leaves)
        self._proposals: dict[bytes, CoveredProposal] = {}
        self._resumption_psks = dict(resumption_psks or {})
        self._resumption_psks[context.epoch] = secrets.resumption_psk
        while len(self._resumption_psks) > config.resumption_psk_history:
            del self._resumption_psks[min(self._resumption_psks)]
        self._destroyed = False
        self._exporter_tree: ExporterTree | None = None

    def __repr__(self) -> str:
        return (f"Group(group_id={self.context.group_id.hex()}, epoch={self.epoch}, "
                f"suite={self.suite.id}, own_leaf={self.own_leaf}, members={len(self.members())})")

    # -- read-only views ---------------------------------------------------

    @property
    def group_id(self) -> bytes:
        return self.context.group_id

    @property
    def epoch(self) -> int:
        return self.context.epoch

    @property
    def epoch_authenticator(self) -> bytes:
        self._check_alive()
        return self._secrets.epoch_authenticator

    @property
    def own_leaf_node(self) -> LeafNode:
        leaf = self.tree.leaf(self.own_leaf)
        assert leaf is not None
        return leaf

    def members(self) -> list[tuple[int, LeafNode]]:
        return [(i, leaf) for i in range(self.tree.n_leaves) if (leaf := self.tree.leaf(i)) is not None]

    def export_secret(self, label: bytes | str, context: bytes, length: int) -> bytes:
        """MLS-Exporter (RFC 9420 section 8.5)."""
        self._check_alive()
        return _schedule.mls_exporter(self.suite, self._secrets.exporter_secret, label, context, length)

    def safe_export(self, component_id: int) -> bytes:
        """The draft-ietf-mls-extensions safe export for ``component_id``; once per epoch."""
        self._check_alive()
        if self._exporter_tree is None:
            self._exporter_tree = ExporterTree(self.suite, self._secrets.application_export_secret)
        return self._exporter_tree.export(component_id)

    def ratchet_tree_extension(self) -> Extension:
        return Extension(ExtensionType.RATCHET_TREE, encode_ratchet_tree(self.tree.nodes_for_export()))

    def destroy(self) -> None:
        """Drop this epoch's secrets (forward secrecy once the next epoch is confirmed)."""
        self._secrets = None  # type: ignore[assignment]
        self._secret_tree = None  # type: ignore[assignment]
        self._path_state = None  # type: ignore[assignment]
        self._exporter_tree = None
        self._proposals.clear()
        self._destroyed = True

    def _check_alive(self) -> None:
        if self._destroyed:
            raise StateError("this epoch's secrets were deleted")

    # -- persistence ---------------------------------------------------------

    STATE_FORMAT = 1

    def to_state(self) -> bytes:
        """Everything needed to continue this epoch later, secrets included: store it safely."""
        self._check_alive()
        w = Writer().u16(self.STATE_FORMAT).u16(self.suite.id)
        self.context.encode(w)
        w.opaque(encode_ratchet_tree(self.tree.nodes_for_export())).u32(self.own_leaf)
        w.opaque(self._signature_priv)
        w.vector(sorted(self._path_state.keys.items()), lambda w2, kv: w2.u32(kv[0]).opaque(kv[1]))
        self._secrets.encode(w)
        w.opaque(self.interim_transcript_hash)
        w.vector(sorted(self._resumption_psks.items()), lambda w2, kv: w2.u64(kv[0]).opaque(kv[1]))
        for ratchet in (RatchetType.HANDSHAKE, RatchetType.APPLICATION):
            w.u32(self._secret_tree.generation(self.own_leaf, ratchet))
        return w.getvalue()

    @classmethod
    def from_state(cls, data: bytes, config: GroupConfig | None = None) -> Group:
        """Rebuild a Group from :meth:`to_state`; our sending ratchets continue where they were."""
        r = Reader(data)
        if r.u16() != cls.STATE_FORMAT:
            raise DecodeError("unknown group state format")
        suite = get_suite(r.u16())
        context = GroupContext.decode(r)
        tree = RatchetTree.from_nodes(suite, decode_ratchet_tree(r.opaque()))
        own_leaf = r.u32()
        signature_priv = r.opaque()
        keys = dict(r.vector(lambda r2: (r2.u32(), r2.opaque())))
        secrets = EpochSecrets.decode(r)
        interim = r.opaque()
        psks = dict(r.vector(lambda r2: (r2.u64(), r2.opaque())))
        generations = (r.u32(), r.u32())
        r.finish()
        group = cls(suite=suite, context=context, tree=tree, own_leaf=own_leaf, signature_priv=signature_priv,
                    path_state=PathState(own_leaf, keys), secrets=secrets, interim_transcript_hash=interim,
                    config=config or GroupConfig(), resumption_psks=psks)
        for ratchet, generation in zip((RatchetType.HANDSHAKE, RatchetType.APPLICATION), generations, strict=True):
            group._secret_tree.skip_to(own_leaf, ratchet, generation)
        return group

    # -- creation ----------------------------------------------------------

    @classmethod
    def create(cls, bundle_or_leaf: KeyPackageBundle, *, group_id: bytes | None = None,
               extensions: Sequence[Extension] = (), config: GroupConfig | None = None) -> Group:
        """A one-member group at epoch 0 (section 11), built from our own key material."""
        config = config or GroupConfig()
        key_package = bundle_or_leaf.key_package
        suite = get_suite(key_package.cipher_suite)
        group_id = group_id if group_id is not None else os.urandom(16)
        check_unique(extensions, "GroupContext")
        leaf = key_package.leaf_node
        tree = RatchetTree.with_leaves(suite, [leaf])
        check_required_capabilities(tree, extensions)
        context = GroupContext(PROTOCOL_VERSION_MLS10, suite.id, group_id, 0, tree.tree_hash(), b"",
                               tuple(extensions))
        init_secret = os.urandom(suite.hash_len)
        zero = bytes(suite.hash_len)
        _, secrets = _schedule.derive_epoch_secrets(suite, init_secret, zero, zero, context.to_bytes())
        confirmation_tag = suite.mac(secrets.confirmation_key, b"")
        interim = _schedule.interim_transcript_hash(suite, b"", confirmation_tag)
        path_state = PathState.for_leaf(suite, 0, bundle_or_leaf.encryption_priv)
        return cls(suite=suite, context=context, tree=tree, own_leaf=0,
                   signature_priv=bundle_or_leaf.signature_priv, path_state=path_state, secrets=secrets,
                   interim_transcript_hash=interim, config=config)

    # -- commits we create ---------------------------------------------------

    def commit(self, proposals: Sequence[Proposal] = (), *, force_path: bool = True,
               by_reference: Sequence[bytes] = (), include_tree_in_welcome: bool = True,
               authenticated_data: bytes = b"", leaf_node_update: Callable[[LeafNode], LeafNode] | None = None,
               path_secret: bytes | None = None) -> CommitResult:
        """Create a Commit covering ``proposals`` (by value) and cached proposal references.

        Returns the message, the Welcome (if members were added) and the next
        epoch's Group; ``self`` is left untouched, so the caller decides when to
        switch (the two-party profile waits for the peer's confirmation).
        """
        self._check_alive()
        covered = [CoveredProposal(p, self.own_leaf) for p in proposals]
        for ref in by_reference:
            if ref not in self._proposals:
                raise StateError(f"no cached proposal with reference {ref.hex()}")
            covered.append(self._proposals[ref])
        for proposal in proposals:
            if isinstance(proposal, Add):
                validate_key_package(proposal.key_package, expected_suite=self.suite.id,
                                     authentication_service=self.config.authentication_service,
                                     now=self.config.now)
            if isinstance(proposal, Update):
                raise ValidationError("a committer updates its own leaf through the UpdatePath, "
                                      "not an Update proposal")
        validate_proposal_list(covered, self.own_leaf, self.tree)
        tree = self.tree.copy()
        applied = apply_proposals(tree, covered, self.context.extensions)
        with_path = force_path or path_required(covered)

        def provisional_context(tree_hash: bytes) -> GroupContext:
            return replace(self.context, epoch=self.epoch + 1, tree_hash=tree_hash,
                           extensions=applied.extensions or ())

        path_state = self._path_state
        commit_secret = bytes(self.suite.hash_len)
        path = None
        joiner_path_secrets: dict[int, bytes] = {}
        if with_path:
            leaf_template = self.own_leaf_node
            if leaf_node_update is not None:
                leaf_template = leaf_node_update(leaf_template)
            creation = create_update_path(
                self.suite, tree, self.own_leaf, self.group_id, self._signature_priv, leaf_template,
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
        content = FramedContent(self.group_id, self.epoch, Sender.member(self.own_leaf), authenticated_data,
                                ContentType.COMMIT, commit)
        wire_format = self.config.handshake_wire_format
        signature = _protection.sign_content(self.suite, self._signature_priv, wire_format, content,
                                             self.context)
        authenticated = AuthenticatedContent(wire_format, content, FramedContentAuthData(signature, b""))
        psk_secret = self._psk_secret(applied.psks)
        next_group, confirmation_tag, joiner_secret = self._next_epoch(
            authenticated, tree, provisional, commit_secret, psk_secret, path_state, self.own_leaf)
        auth = FramedContentAuthData(signature, confirmation_tag)
        message = self._frame(content, auth, wire_format)
        group_info = next_group.group_info(include_tree=include_tree_in_welcome)
        welcome = None
        if applied.added_leaves:
            welcome = self._welcome(group_info, joiner_secret, applied, covered, joiner_path_secrets,
                                    psk_ids=applied.psks)
        log.debug("created commit for epoch %d -> %d (%d proposals, path=%s)", self.epoch,
                  next_group.epoch, len(covered), path is not None)
        return CommitResult(message, welcome, next_group, group_info)

    def group_info(self, *, include_tree: bool = True, extensions: Sequence[Extension] = ()) -> GroupInfo:
        """A signed GroupInfo for this epoch (section 12.4.3)."""
        self._check_alive()
        exts = list(extensions)
        if include_tree:
            exts.append(self.ratchet_tree_extension())
        info = GroupInfo(self.context, tuple(exts), self._confirmation_tag, self.own_leaf)
        return info.signed(self.suite, self._signature_priv)

    def _welcome(self, group_info: GroupInfo, joiner_secret: bytes, applied: AppliedProposals,
                 covered: Sequence[CoveredProposal], path_secrets: dict[int, bytes],
                 psk_ids: Sequence[PreSharedKeyID]) -> MLSMessage:
        psk_secret = self._psk_secret(psk_ids)
        welcome_secret = _schedule.welcome_secret(self.suite, joiner_secret, psk_secret)
        key, nonce = _schedule.welcome_key_nonce(self.suite, welcome_secret)
        encrypted_group_info = self.suite.aead_encrypt(key, nonce, b"", group_info.to_bytes())
        adds = [c.proposal for c in covered if isinstance(c.proposal, Add)]
        secrets = []
        for leaf_index, add in zip(applied.added_leaves, adds, strict=True):
            group_secrets = GroupSecrets(joiner_secret, path_secrets.get(leaf_index), tuple(psk_ids))
            kem_output, ciphertext = self.suite.encrypt_with_label(
                add.key_package.init_key, "Welcome", encrypted_group_info, group_secrets.to_bytes())
            secrets.append(EncryptedGroupSecrets(add.key_package.ref(self.suite),
                                                 HPKECiphertext(kem_output, ciphertext)))
        return MLSMessage(Welcome(self.suite.id, tuple(secrets), encrypted_group_info))

    # -- the key schedule step shared by commit creation and processing ------

    def _next_epoch(self, authenticated: AuthenticatedContent, tree: RatchetTree, provisional: GroupContext,
                    commit_secret: bytes, psk_secret: bytes, path_state: PathState,
                    own_leaf: int, init_secret: bytes | None = None) -> tuple[Group, bytes, bytes]:
        confirmed = _schedule.confirmed_transcript_hash(
            self.suite, self.interim_transcript_hash, authenticated.confirmed_transcript_hash_input())
        context = replace(provisional, confirmed_transcript_hash=confirmed)
        joiner_secret, secrets = _schedule.derive_epoch_secrets(
            self.suite, init_secret if init_secret is not None else self._secrets.init_secret,
            commit_secret, psk_secret, context.to_bytes())
        confirmation_tag = self.suite.mac(secrets.confirmation_key, confirmed)
        interim = _schedule.interim_transcript_hash(self.suite, confirmed, confirmation_tag)
        group = Group(suite=self.suite, context=context, tree=tree, own_leaf=own_leaf,
                      signature_priv=self._signature_priv, path_state=path_state, secrets=secrets,
                      interim_transcript_hash=interim, config=self.config,
                      resumption_psks=self._resumption_psks)
        return group, confirmation_tag, joiner_secret

    @property
    def _confirmation_tag(self) -> bytes:
        return self.suite.mac(self._secrets.confirmation_key, self.context.confirmed_transcript_hash)

    def _psk_secret(self, psk_ids: Sequence[PreSharedKeyID]) -> bytes:
        return compute_psk_secret(self.suite, [(psk_id, self._resolve_psk(psk_id)) for psk_id in psk_ids])

    def _resolve_psk(self, psk_id: PreSharedKeyID) -> bytes:
        if psk_id.psktype == PSKType.EXTERNAL:
            value = self.config.external_psks(psk_id) if self.config.external_psks else None
            if value is None:
                raise ValidationError(f"unknown external PSK {psk_id.psk_id.hex()}")
            return value
        if psk_id.psk_group_id != self.group_id:
            raise ValidationError("resumption PSK from another group is not available")
        value = self._resumption_psks.get(psk_id.psk_epoch)
        if value is None:
            raise ValidationError(f"no resumption PSK for epoch {psk_id.psk_epoch}")
        return value

    # -- framing -----------------------------------------------------------

    def _frame(self, content: FramedContent, auth: FramedContentAuthData,
               wire_format: WireFormat) -> MLSMessage:
        if wire_format == WireFormat.PUBLIC_MESSAGE:
            return MLSMessage(_protection.protect_public(
                self.suite, content, auth, self._secrets.membership_key, self.context))
        return MLSMessage(_protection.protect_private(
            self.suite, self._secret_tree, self._secrets.sender_data_secret, content, auth,
            self.config.padding))

    def protect(self, data: bytes, authenticated_data: bytes = b"") -> MLSMessage:
        """An application message (always a PrivateMessage, section 6.3)."""
        self._check_alive()
        content = FramedContent(self.group_id, self.epoch, Sender.member(self.own_leaf), authenticated_data,
                                ContentType.APPLICATION, data)
        signature = _protection.sign_content(self.suite, self._signature_priv, WireFormat.PRIVATE_MESSAGE,
                                             content, self.context)
        return self._frame(content, FramedContentAuthData(signature), WireFormat.PRIVATE_MESSAGE)

    def _unframe(self, message: MLSMessage) -> AuthenticatedContent:
        body = message.body
        if isinstance(body, PublicMessage):
            self._check_header(body.content.group_id, body.content.epoch)
            sender = body.content.sender
            signer_key = self._signer_key(sender, body.content)
            return _protection.verify_public(self.suite, body, self._secrets.membership_key, self.context,
                                             signer_key)
        if isinstance(body, PrivateMessage):
            self._check_header(body.group_id, body.epoch)
            return _protection.unprotect_private(
                self.suite, self._secret_tree, self._secrets.sender_data_secret, body,
                self._member_signature_key, self.context)
        raise ValidationError(f"{type(body).__name__} is not a group message")

    def _check_header(self, group_id: bytes, epoch: int) -> None:
        if group_id != self.group_id:
            raise EpochError("message for another group")
        if epoch != self.epoch:
            raise EpochError(f"message for epoch {epoch}, the group is at epoch {self.epoch}")

    def _member_signature_key(self, leaf_index: int) -> bytes:
        leaf = self.tree.leaf(leaf_index) if leaf_index < self.tree.n_leaves else None
        if leaf is None:
            raise ValidationError(f"sender {leaf_index} is not a member")
        return leaf.signature_key

    def _signer_key(self, sender: Sender, content: FramedContent) -> bytes:
        if sender.sender_type == SenderType.MEMBER:
            return self._member_signature_key(sender.index)
        if sender.sender_type == SenderType.NEW_MEMBER_COMMIT:
            commit = content.content
            if not isinstance(commit, Commit) or commit.path is None:
                raise ValidationError("a new_member_commit must be a commit with a path")
            return commit.path.leaf_node.signature_key
        if sender.sender_type == SenderType.NEW_MEMBER_PROPOSAL:
            proposal = content.content
            if not isinstance(proposal, Add):
                raise ValidationError("a new_member_proposal must be an Add")
            return proposal.key_package.leaf_node.signature_key
        data = find_extension(self.context.extensions, ExtensionType.EXTERNAL_SENDERS)
        if data is None:
            raise ValidationError("external sender but the group has no external_senders")
        return _schedule.external_sender_key(data, sender.index)

    # -- processing ----------------------------------------------------------

    def process(self, message: MLSMessage | bytes) -> ProcessedMessage:
        """Verify and interpret a message from the group.

        Application and proposal messages update this epoch (secret tree,
        proposal cache).  A commit returns the next epoch's Group in a
        :class:`CommitMessage`; this object stays at the current epoch.
        """
        self._check_alive()
        if isinstance(message, bytes):
            message = MLSMessage.from_bytes(message)
        authenticated = self._unframe(message)
        content = authenticated.content
        if content.content_type == ContentType.APPLICATION:
            if authenticated.wire_format != WireFormat.PRIVATE_MESSAGE:
                raise ValidationError("application data must be sent as a PrivateMessage")
            return ApplicationMessage(content.content, content.sender.index,  # type: ignore[arg-type]
                                      content.authenticated_data)
        if content.content_type == ContentType.PROPOSAL:
            return self._cache_proposal(authenticated)
        return self._process_commit(authenticated)

    def _cache_proposal(self, authenticated: AuthenticatedContent) -> ProposalMessage:
        content = authenticated.content
        proposal = content.content
        assert not isinstance(proposal, (bytes, Commit))
        sender = content.sender
        if sender.sender_type == SenderType.MEMBER:
            if isinstance(proposal, Update):
                validate_leaf_node(proposal.leaf_node, self.suite, expected_source=LeafNodeSource.UPDATE,
                                   authentication_service=self.config.authentication_service,
                                   group_id=self.group_id, leaf_index=sender.index, now=self.config.now)
            cached = CoveredProposal(proposal, sender.index)
        else:
            cached = CoveredProposal(proposal, None)
        if isinstance(proposal, Add):
            validate_key_package(proposal.key_package, expected_suite=self.suite.id,
                                 authentication_service=self.config.authentication_service,
                                 now=self.config.now)
        reference = self.suite.ref_hash("MLS 1.0 Proposal Reference", authenticated.to_bytes())
        self._proposals[reference] = cached
        return ProposalMessage(proposal, sender, reference)

    def _process_commit(self, authenticated: AuthenticatedContent) -> CommitMessage:
        content = authenticated.content
        commit = content.content
        assert isinstance(commit, Commit)
        sender = content.sender
        external = sender.sender_type == SenderType.NEW_MEMBER_COMMIT
        if sender.sender_type not in (SenderType.MEMBER, SenderType.NEW_MEMBER_COMMIT):
            raise ValidationError(f"a commit cannot come from a {sender.sender_type.name} sender")
        if not external and sender.index == self.own_leaf:
            raise StateError("this is our own commit: use the pending group from commit()")
        if authenticated.auth.confirmation_tag is None:
            raise ValidationError("commit without confirmation tag")
        covered = self._resolve_proposals(commit, sender)
        committer = None if external else sender.index
        validate_proposal_list(covered, committer, self.tree, external=external)
        for item in covered:
            if isinstance(item.proposal, Add) and item.sender == committer:
                validate_key_package(item.proposal.key_package, expected_suite=self.suite.id,
                                     authentication_service=self.config.authentication_service,
                                     now=self.config.now)
        if path_required(covered) and commit.path is None:
            raise ValidationError("this commit must carry an UpdatePath")
        tree = self.tree.copy()
        applied = apply_proposals(tree, covered, self.context.extensions)
        own_leaf = self.own_leaf
        if own_leaf >= tree.n_leaves or tree.leaf(own_leaf) is None:
            raise StateError("this commit removes us from the group")
        init_secret = None
        if external:
            assert applied.external_init is not None
            init_secret = _schedule.external_init_secret(self.suite, self._secrets.external_secret,
                                                         applied.external_init.kem_output)
            committer = tree.add_leaf(commit.path.leaf_node) if commit.path else None  # type: ignore[union-attr]
        commit_secret = bytes(self.suite.hash_len)
        path_state = self._path_state
        if commit.path is not None:
            assert committer is not None
            validate_leaf_node(commit.path.leaf_node, self.suite, expected_source=LeafNodeSource.COMMIT,
                               authentication_service=self.config.authentication_service,
                               group_id=self.group_id, leaf_index=committer, now=None)

            def provisional_bytes(tree_hash: bytes) -> bytes:
                return replace(self.context, epoch=self.epoch + 1, tree_hash=tree_hash,
                               extensions=applied.extensions or ()).to_bytes()

            commit_secret, path_state = apply_update_path(
                self.suite, tree, committer, commit.path, self.group_id, own_leaf, self._path_state,
                exclude=applied.added_leaves, provisional_context=provisional_bytes)
        provisional = replace(self.context, epoch=self.epoch + 1, tree_hash=tree.tree_hash(),
                              extensions=applied.extensions or ())
        psk_secret = self._psk_secret(applied.psks)
        group, confirmation_tag, _ = self._next_epoch(authenticated, tree, provisional, commit_secret,
                                                      psk_secret, path_state, own_leaf, init_secret)
        if not _protection.constant_time_equal(confirmation_tag, authenticated.auth.confirmation_tag):
            raise ValidationError("confirmation tag does not match")
        log.debug("processed commit epoch %d -> %d from %s", self.epoch, group.epoch, sender)
        return CommitMessage(group, sender, commit, content.authenticated_data)

    def _resolve_proposals(self, commit: Commit, sender: Sender) -> list[CoveredProposal]:
        covered = []
        for item in commit.proposals:
            if item.proposal is not None:
                owner = sender.index if sender.sender_type == SenderType.MEMBER else None
                covered.append(CoveredProposal(item.proposal, owner))
            else:
                assert item.reference is not None
                cached = self._proposals.get(item.reference)
                if cached is None:
                    raise ValidationError(f"commit references unknown proposal {item.reference.hex()}")
                covered.append(cached)
        return covered

    # -- joining -------------------------------------------------------------

    @classmethod
    def join(cls, welcome: MLSMessage | Welcome | bytes, bundle: KeyPackageBundle, *,
             ratchet_tree: bytes | None = None, config: GroupConfig | None = None) -> Group:
        """Join from a Welcome (section 12.4.3.1); the tree comes in-band or from ``ratchet_tree``."""
        config = config or GroupConfig()
        opened = open_welcome(welcome, bundle.key_package, bundle.init_priv, config.external_psks)
        suite, group_secrets, group_info = opened.suite, opened.group_secrets, opened.group_info
        context = group_info.group_context
        tree_data = find_extension(group_info.extensions, ExtensionType.RATCHET_TREE)
        if tree_data is None:
            tree_data = ratchet_tree
        if tree_data is None:
            raise ValidationError("no ratchet tree: not in the GroupInfo and none given")
        tree = RatchetTree.from_nodes(suite, decode_ratchet_tree(tree_data))
        signer = tree.leaf(group_info.signer)
        if signer is None:
            raise ValidationError("GroupInfo signer is not a member")
        group_info.verify(suite, signer.signature_key)
        if tree.tree_hash() != context.tree_hash:
            raise ValidationError("ratchet tree does not match the GroupContext tree hash")
        tree.validate(context.group_id, check_signatures=False)  # signatures: validate_leaf_node below
        for index, leaf in tree.leaves():
            validate_leaf_node(leaf, suite, expected_source=leaf.leaf_node_source,
                               authentication_service=config.authentication_service,
                               group_id=context.group_id, leaf_index=index, now=None)
        check_required_capabilities(tree, context.extensions)
        own_leaf = tree.find_leaf(bundle.key_package.leaf_node)
        if own_leaf is None:
            raise ValidationError("our KeyPackage's leaf is not in the tree")
        path_state = PathState.for_leaf(suite, own_leaf, bundle.encryption_priv)
        if group_secrets.path_secret is not None:
            path_state = import_path_secret(suite, tree, own_leaf, group_info.signer,
                                            group_secrets.path_secret, path_state)
        secrets = opened.secrets
        interim = _schedule.interim_transcript_hash(suite, context.confirmed_transcript_hash,
                                                    group_info.confirmation_tag)
        return cls(suite=suite, context=context, tree=tree, own_leaf=own_leaf,
                   signature_priv=bundle.signature_priv, path_state=path_state, secrets=secrets,
                   interim_transcript_hash=interim, config=config)


@dataclass(frozen=True)
class OpenedWelcome:
    """A Welcome decrypted for one KeyPackage, its GroupInfo not yet checked against a tree."""

    suite: CipherSuite
    group_secrets: GroupSecrets = field(repr=False)
    group_info: GroupInfo
    secrets: EpochSecrets = field(repr=False)


def open_welcome(welcome: MLSMessage | Welcome | bytes, key_package: KeyPackage, init_priv: bytes,
                 external_psks: PskLookup | None = None) -> OpenedWelcome:
    """Decrypt our GroupSecrets and the GroupInfo, and check the GroupInfo's confirmation tag.

    The GroupInfo signature needs the signer's key from the tree, so the caller checks it.
    """
    if isinstance(welcome, bytes):
        welcome = MLSMessage.from_bytes(welcome)
    if isinstance(welcome, MLSMessage):
        if not isinstance(welcome.body, Welcome):
            raise ValidationError(f"expected a Welcome, got {welcome.wire_format.name}")
        welcome = welcome.body
    if welcome.cipher_suite != key_package.cipher_suite:
        raise ValidationError("Welcome cipher suite differs from our KeyPackage's")
    suite = get_suite(welcome.cipher_suite)
    ref = key_package.ref(suite)
    mine = next((s for s in welcome.secrets if s.new_member == ref), None)
    if mine is None:
        raise ValidationError("the Welcome has no secrets for our KeyPackage")
    group_secrets = GroupSecrets.from_bytes(suite.decrypt_with_label(
        init_priv, "Welcome", welcome.encrypted_group_info,
        mine.encrypted_group_secrets.kem_output, mine.encrypted_group_secrets.ciphertext))
    psks = []
    for psk_id in group_secrets.psks:
        if psk_id.psktype != PSKType.EXTERNAL:
            raise ValidationError("a resumption PSK cannot be resolved by a new member")
        value = external_psks(psk_id) if external_psks else None
        if value is None:
            raise ValidationError(f"unknown external PSK {psk_id.psk_id.hex()}")
        psks.append((psk_id, value))
    psk_secret = compute_psk_secret(suite, psks)
    welcome_secret = _schedule.welcome_secret(suite, group_secrets.joiner_secret, psk_secret)
    key, nonce = _schedule.welcome_key_nonce(suite, welcome_secret)
    group_info = GroupInfo.from_bytes(suite.aead_decrypt(key, nonce, b"", welcome.encrypted_group_info))
    context = group_info.group_context
    if context.cipher_suite != suite.id or context.version != PROTOCOL_VERSION_MLS10:
        raise ValidationError("GroupInfo cipher suite or version differs from the Welcome's")
    secrets = _schedule.epoch_secrets_from_joiner(suite, group_secrets.joiner_secret, psk_secret,
                                                  context.to_bytes())
    expected_tag = suite.mac(secrets.confirmation_key, context.confirmed_transcript_hash)
    if not _protection.constant_time_equal(expected_tag, group_info.confirmation_tag):
        raise ValidationError("GroupInfo confirmation tag does not match")
    return OpenedWelcome(suite, group_secrets, group_info, secrets)


__all__ = [
    "ApplicationMessage",
    "CommitMessage",
    "CommitResult",
    "Group",
    "GroupConfig",
    "OpenedWelcome",
    "ProcessedMessage",
    "ProposalMessage",
    "open_welcome",
]
