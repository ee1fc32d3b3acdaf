"""One member's view of one epoch of an MLS group (RFC 9420 sections 11-12).

A :class:`Group` is the state of one epoch.  Operations that change the epoch
(creating or processing a Commit, joining) never modify the object they are
called on: they build the next epoch's :class:`Group` and return it, so a
failure half-way leaves nothing half-applied, and a committer can keep both
the current and the pending epoch (the two-party profile needs exactly that).
Within an epoch, :meth:`Group.protect` and :meth:`Group.process` of
application messages advance the secret tree, and only on success.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace

from .. import framing as _protection
from ..codec import Reader, Writer
from ..crypto import CipherSuite, SignatureKey, get_suite
from ..errors import DecodeError, EpochError, StateError, ValidationError
from ..extensions import Extension, ExtensionType, check_unique, find_extension
from ..framing import (
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
from ..key_package import KeyPackageBundle, validate_key_package
from ..leaf_node import PROTOCOL_VERSION_MLS10, LeafNode, LeafNodeSource, validate_leaf_node
from ..messages import Add, Commit, GroupInfo, Proposal, Update, Welcome
from ..proposals import CoveredProposal, check_required_capabilities
from ..safe_app import ExporterTree
from ..schedule import key_schedule as _schedule
from ..schedule.key_schedule import EpochSecrets, GroupContext
from ..schedule.psk import PreSharedKeyID, PSKType, compute_psk_secret
from ..schedule.secret_tree import RatchetType, SecretTree
from ..tree.ratchet_tree import RatchetTree, decode_ratchet_tree, encode_ratchet_tree
from ..tree.treekem import PathState
from .commit import create_commit, process_commit
from .results import (
    DEFAULT_RESUMPTION_PSK_HISTORY,
    ApplicationMessage,
    CommitResult,
    GroupConfig,
    ProcessedMessage,
    ProposalMessage,
    resolve_held_psk,
)
from .welcome import join

_FORMAT_1 = 1
"""The group state format of releases before format 2: still read, never written."""


def _tree_limits(config: GroupConfig) -> dict[str, int]:
    """The secret tree's out-of-order limits, as the group is configured."""
    return {"out_of_order_tolerance": config.out_of_order_tolerance,
            "maximum_forward_distance": config.maximum_forward_distance}


class Group:
    """One member's view of one epoch of an MLS group."""

    def __init__(self, *, suite: CipherSuite, context: GroupContext, tree: RatchetTree, own_leaf: int,
                 signature_priv: SignatureKey, path_state: PathState, secrets: EpochSecrets,
                 interim_transcript_hash: bytes, config: GroupConfig,
                 resumption_psks: dict[int, bytes] | None = None, secret_tree: SecretTree | None = None) -> None:
        """A new epoch when ``secret_tree`` is None: its tree starts at ``secrets.encryption_secret``
        and its resumption PSK joins ``resumption_psks``.  A restored epoch otherwise: the tree and
        the PSKs are taken as stored, and the secrets the file leaves out are not needed."""
        self.suite = suite
        self.context = context
        self.tree = tree
        self.own_leaf = own_leaf
        self._signer = suite.signing_key(signature_priv)
        self._path_state = path_state
        self._secrets = secrets
        self.interim_transcript_hash = interim_transcript_hash
        self.config = config
        psks = dict(resumption_psks or {})
        if secret_tree is None:
            secret_tree = SecretTree(suite, secrets.encryption_secret, tree.n_leaves, **_tree_limits(config))
            psks[context.epoch] = secrets.resumption_psk
        self._secret_tree = secret_tree
        self._proposals: dict[bytes, CoveredProposal] = {}
        kept = sorted(psks)[-config.resumption_psk_history:] if config.resumption_psk_history > 0 else []
        self._resumption_psks = {epoch: psks[epoch] for epoch in kept}
        self._destroyed = False
        self._exporter_tree: ExporterTree | None = None
        self._stored_epoch: bytes | None = None  # to_state() without the secret tree, which changes within an epoch

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
        self._stored_epoch = None
        self._proposals.clear()
        self._destroyed = True

    def _check_alive(self) -> None:
        if self._destroyed:
            raise StateError("this epoch's secrets were deleted")

    # -- persistence ---------------------------------------------------------

    STATE_FORMAT = 2
    """The format :meth:`to_state` writes; :meth:`from_state` also reads format 1."""
    MAX_RESTORED_GENERATION = 1 << 16
    """Ceiling on a format-1 stored sending generation whatever the config: restoring steps the ratchet that
    many times."""

    @classmethod
    def max_restored_generation(cls, config: GroupConfig) -> int:
        """The highest sending generation :meth:`from_state` accepts in a format-1 state.

        Format 1 stored only our sending generations, so restoring one replays
        the ratchet from generation 0 (one derivation per step), and the
        restored tree's other ratchets restart at generation 0 too: a peer
        accepts at most ``maximum_forward_distance`` ahead, so a larger stored
        value is tampered or unusable, and refusing it bounds the replay (at
        most :attr:`MAX_RESTORED_GENERATION`).  Format 2 stores the ratchets
        themselves and derives nothing on load, whatever their generations.
        """
        return max(0, min(config.maximum_forward_distance, cls.MAX_RESTORED_GENERATION))

    def to_state(self) -> bytes:
        """What continuing this epoch later needs, and no more: secrets included, so store it safely.

        Format 2::

            uint16 format = 2;
            uint16 cipher_suite;
            GroupContext context;
            opaque ratchet_tree<V>;                 /* encoded as in the ratchet_tree extension */
            uint32 own_leaf;
            opaque signature_priv<V>;
            struct { uint32 node; opaque hpke_priv<V>; } path_keys<V>;
            opaque sender_data_secret<V>, exporter_secret<V>, external_secret<V>, confirmation_key<V>,
                   membership_key<V>, epoch_authenticator<V>, init_secret<V>, application_export_secret<V>;
            opaque interim_transcript_hash<V>;
            struct { uint64 epoch; opaque psk<V>; } resumption_psks<V>;  /* ascending, at most the history */
            SecretTreeState secret_tree;            /* SecretTree.encode: unconsumed nodes and ratchets */

        Not stored (:attr:`EpochSecrets.NOT_STORED`): the encryption_secret
        (the secret tree's root: it would derive again every key already used
        in this epoch; our own leaf's ratchets are created before saving, so
        the tree holds no root either), the welcome_secret (only a committer
        needs one, at commit time, and derives it then) and the epoch's
        resumption_psk outside the ``resumption_psks`` map, which holds the
        newest ``config.resumption_psk_history`` epochs (none in the two-party
        profile, whose commits carry no PSK proposals).
        """
        self._check_alive()
        if self._stored_epoch is None:
            # Only the secret tree changes within an epoch; the rest is encoded once (and
            # dropped with the epoch's secrets by destroy()).
            w = Writer().u16(self.STATE_FORMAT).u16(self.suite.id)
            w.struct(self.context)
            w.opaque(encode_ratchet_tree(self.tree.nodes_for_export())).u32(self.own_leaf)
            w.opaque(self._signer.raw)
            w.vector(sorted(self._path_state.keys.items()), lambda w2, kv: w2.u32(kv[0]).opaque(kv[1]))
            self._secrets.encode_stored(w)
            w.opaque(self.interim_transcript_hash)
            w.vector(sorted(self._resumption_psks.items()), lambda w2, kv: w2.u64(kv[0]).opaque(kv[1]))
            self._stored_epoch = w.getvalue()
        # Our leaf's ratchets are created first, as our first message would (and format 1 did, reading our
        # sending generations): the root, the encryption_secret, is consumed before anything is stored.
        self._secret_tree.expand(self.own_leaf)
        w = Writer().raw(self._stored_epoch)
        self._secret_tree.encode(w)
        return w.getvalue()

    @classmethod
    def from_state(cls, data: bytes, config: GroupConfig | None = None) -> Group:
        """Rebuild a Group from :meth:`to_state` (format 2), or from format 1 of earlier releases.

        Format 2 restores the secret tree as it was held, deriving nothing:
        every ratchet, ours and the peers', continues where it was, so a
        message accepted before the save is refused after it.

        Format 1 (read, never written) is format 2 with two differences: all
        eleven :class:`EpochSecrets` fields in declaration order (sender_data,
        encryption, exporter, external, confirmation_key, membership_key,
        resumption_psk, epoch_authenticator, init, welcome,
        application_export) in place of the eight stored ones, and ``uint32
        handshake_generation; uint32 application_generation;`` (our sending
        ratchets) in place of the secret tree.  Its tree restarts at the stored
        encryption_secret, our ratchets are stepped forward (bounded by
        :meth:`max_restored_generation`, checked first) and the peers' restart
        at generation 0, as they always did with format 1, until the next epoch.

        Either way at most ``max(config.resumption_psk_history, 8)`` stored
        resumption PSKs are read, and the newest ``resumption_psk_history`` kept.
        """
        r = Reader(data)
        version = r.u16()
        if version not in (_FORMAT_1, cls.STATE_FORMAT):
            raise DecodeError(f"unknown group state format {version}")
        config = config or GroupConfig()
        suite = get_suite(r.u16())
        context = GroupContext.decode(r)
        tree = RatchetTree.from_nodes(suite, decode_ratchet_tree(r.opaque(), config.max_leaves))
        own_leaf = r.u32()
        if own_leaf >= tree.n_leaves or tree.leaf(own_leaf) is None:
            raise DecodeError(f"stored own leaf {own_leaf} is not a member of the stored tree")
        signature_priv = r.opaque()
        keys = dict(r.vector(lambda r2: (r2.u32(), r2.opaque()), tree.n_leaves * 2))
        secrets = EpochSecrets.decode(r) if version == _FORMAT_1 else EpochSecrets.decode_stored(r)
        interim = r.opaque()
        psk_bound = max(config.resumption_psk_history, DEFAULT_RESUMPTION_PSK_HISTORY)
        psks = dict(r.vector(lambda r2: (r2.u64(), r2.opaque()), psk_bound))
        secret_tree, sending = None, {}
        if version == _FORMAT_1:
            sending = {RatchetType.HANDSHAKE: r.u32(), RatchetType.APPLICATION: r.u32()}
            limit = cls.max_restored_generation(config)
            if max(sending.values()) > limit:
                # Checked before any derivation: a tampered file must not make restoring step a ratchet 2^32 times.
                raise DecodeError(f"stored sending generation {max(sending.values())} is beyond {limit}, the most "
                                  "a secret tree accepts ahead (maximum_forward_distance)")
        else:
            secret_tree = SecretTree.decode(r, suite, tree.n_leaves, **_tree_limits(config))
        r.finish()
        group = cls(suite=suite, context=context, tree=tree, own_leaf=own_leaf, signature_priv=signature_priv,
                    path_state=PathState(own_leaf, keys), secrets=secrets, interim_transcript_hash=interim,
                    config=config, resumption_psks=psks, secret_tree=secret_tree)
        for ratchet, generation in sending.items():  # format 1 only: format 2 derives nothing
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

    # -- commits (section 12.4, in commit.py) -------------------------------

    def commit(self, proposals: Sequence[Proposal] = (), *, force_path: bool = True,
               by_reference: Sequence[bytes] = (), include_tree_in_welcome: bool = True,
               authenticated_data: bytes = b"", leaf_node_update: Callable[[LeafNode], LeafNode] | None = None,
               path_secret: bytes | None = None) -> CommitResult:
        """Create a Commit covering ``proposals`` (by value) and cached proposal references (section 12.4).

        Returns the message, the Welcome (if members were added) and the next
        epoch's Group; ``self`` is left untouched, so the caller decides when to
        switch (the two-party profile waits for the peer's confirmation).
        """
        return create_commit(self, proposals, force_path=force_path, by_reference=by_reference,
                             include_tree_in_welcome=include_tree_in_welcome,
                             authenticated_data=authenticated_data, leaf_node_update=leaf_node_update,
                             path_secret=path_secret)

    def group_info(self, *, include_tree: bool = True, extensions: Sequence[Extension] = ()) -> GroupInfo:
        """A signed GroupInfo for this epoch (section 12.4.3)."""
        self._check_alive()
        exts = list(extensions)
        if include_tree:
            exts.append(self.ratchet_tree_extension())
        info = GroupInfo(self.context, tuple(exts), self._confirmation_tag, self.own_leaf)
        return info.signed(self.suite, self._signer)

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
                      signature_priv=self._signer, path_state=path_state, secrets=secrets,
                      interim_transcript_hash=interim, config=self.config,
                      resumption_psks=self._resumption_psks)
        return group, confirmation_tag, joiner_secret

    @property
    def _confirmation_tag(self) -> bytes:
        return self.suite.mac(self._secrets.confirmation_key, self.context.confirmed_transcript_hash)

    def _psk_secret(self, psk_ids: Sequence[PreSharedKeyID]) -> bytes:
        return compute_psk_secret(self.suite, [(psk_id, self._resolve_psk(psk_id)) for psk_id in psk_ids])

    def _resolve_psk(self, psk_id: PreSharedKeyID) -> bytes:
        if psk_id.psktype != PSKType.RESUMPTION:
            return resolve_held_psk(psk_id, self.config)
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
        signature = _protection.sign_content(self.suite, self._signer, WireFormat.PRIVATE_MESSAGE,
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

    def process(self, message: MLSMessage | bytes, *, now: int | None = None) -> ProcessedMessage:
        """Verify and interpret a message from the group.

        Application and proposal messages update this epoch (secret tree,
        proposal cache).  A commit returns the next epoch's Group in a
        :class:`CommitMessage`; this object stays at the current epoch.
        ``now`` (seconds since the epoch) is the time credentials and
        lifetimes are checked against; without it, ``config.now``.
        """
        self._check_alive()
        now = now if now is not None else self.config.now
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
            return self._cache_proposal(authenticated, now)
        return process_commit(self, authenticated, now)

    def _cache_proposal(self, authenticated: AuthenticatedContent, now: int | None) -> ProposalMessage:
        content = authenticated.content
        proposal = content.content
        assert not isinstance(proposal, (bytes, Commit))
        sender = content.sender
        if sender.sender_type == SenderType.MEMBER:
            if isinstance(proposal, Update):
                validate_leaf_node(proposal.leaf_node, self.suite, expected_source=LeafNodeSource.UPDATE,
                                   authentication_service=self.config.authentication_service,
                                   group_id=self.group_id, leaf_index=sender.index, now=now)
            cached = CoveredProposal(proposal, sender.index)
        else:
            cached = CoveredProposal(proposal, None)
        if isinstance(proposal, Add):
            validate_key_package(proposal.key_package, expected_suite=self.suite.id,
                                 authentication_service=self.config.authentication_service, now=now)
        reference = self.suite.ref_hash("MLS 1.0 Proposal Reference", authenticated.to_bytes())
        self._proposals[reference] = cached
        return ProposalMessage(proposal, sender, reference)

    # -- joining (section 12.4.3.1, in welcome.py) ---------------------------

    @classmethod
    def join(cls, welcome: MLSMessage | Welcome | bytes, bundle: KeyPackageBundle, *,
             ratchet_tree: bytes | None = None, config: GroupConfig | None = None) -> Group:
        """Join from a Welcome; the tree comes in-band or from ``ratchet_tree``."""
        return join(cls, welcome, bundle, ratchet_tree=ratchet_tree, config=config)

