"""Welcome messages (RFC 9420 section 12.4.3.1): building one for new members, and joining from one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import framing as _protection
from ..crypto import CipherSuite, get_suite
from ..errors import ValidationError
from ..extensions import ExtensionType, find_extension
from ..framing import MLSMessage
from ..key_package import KeyPackageBundle
from ..leaf_node import PROTOCOL_VERSION_MLS10, validate_leaf_node
from ..messages import Add, EncryptedGroupSecrets, GroupInfo, GroupSecrets, KeyPackage, Welcome
from ..proposals import AppliedProposals, CoveredProposal, check_required_capabilities
from ..schedule import key_schedule as _schedule
from ..schedule.key_schedule import EpochSecrets
from ..schedule.psk import PreSharedKeyID, PSKType, compute_psk_secret
from ..tree.ratchet_tree import HPKECiphertext, RatchetTree, decode_ratchet_tree
from ..tree.treekem import PathState, import_path_secret
from .results import GroupConfig, resolve_held_psk

if TYPE_CHECKING:
    from .state import Group


def build_welcome(group: Group, group_info: GroupInfo, joiner_secret: bytes, applied: AppliedProposals,
                  covered: Sequence[CoveredProposal], path_secrets: dict[int, bytes | None],
                  psk_ids: Sequence[PreSharedKeyID]) -> MLSMessage:
    psk_secret = group._psk_secret(psk_ids)
    welcome_secret = _schedule.welcome_secret(group.suite, joiner_secret, psk_secret)
    key, nonce = _schedule.welcome_key_nonce(group.suite, welcome_secret)
    encrypted_group_info = group.suite.aead_encrypt(key, nonce, b"", group_info.to_bytes())
    adds = [c.proposal for c in covered if isinstance(c.proposal, Add)]
    secrets = []
    for leaf_index, add in zip(applied.added_leaves, adds, strict=True):
        group_secrets = GroupSecrets(joiner_secret, path_secrets.get(leaf_index), tuple(psk_ids))
        kem_output, ciphertext = group.suite.encrypt_with_label(
            add.key_package.init_key, "Welcome", encrypted_group_info, group_secrets.to_bytes())
        secrets.append(EncryptedGroupSecrets(add.key_package.ref(group.suite),
                                             HPKECiphertext(kem_output, ciphertext)))
    return MLSMessage(Welcome(group.suite.id, tuple(secrets), encrypted_group_info))


def join(cls: type[Group], welcome: MLSMessage | Welcome | bytes, bundle: KeyPackageBundle, *,
         ratchet_tree: bytes | None = None, config: GroupConfig | None = None) -> Group:
    """Join from a Welcome (section 12.4.3.1); the tree comes in-band or from ``ratchet_tree``."""
    config = config or GroupConfig()
    opened = open_welcome(welcome, bundle.key_package, bundle.init_priv, config)
    suite, group_secrets, group_info = opened.suite, opened.group_secrets, opened.group_info
    context = group_info.group_context
    tree_data = find_extension(group_info.extensions, ExtensionType.RATCHET_TREE)
    if tree_data is None:
        tree_data = ratchet_tree
    if tree_data is None:
        raise ValidationError("no ratchet tree: not in the GroupInfo and none given")
    # Bounded while decoding, before any hashing: nothing ties this tree to the sender until the
    # GroupInfo signature, and that needs the signer's key from the tree.
    tree = RatchetTree.from_nodes(suite, decode_ratchet_tree(tree_data, config.max_leaves))
    signer = tree.leaf(group_info.signer)
    if signer is None:
        raise ValidationError("GroupInfo signer is not a member")
    group_info.verify(suite, signer.signature_key)
    if tree.tree_hash() != context.tree_hash:
        raise ValidationError("ratchet tree does not match the GroupContext tree hash")
    tree.validate(context.group_id, check_signatures=False)  # signatures: validate_leaf_node below
    own_leaf = tree.find_leaf(bundle.key_package.leaf_node)
    if own_leaf is None:
        raise ValidationError("our KeyPackage's leaf is not in the tree")
    for index, leaf in tree.leaves():
        # Our own leaf is the one we built and signed for our KeyPackage (find_leaf matched it
        # field for field): checking it again would only verify our own signature.
        if index != own_leaf:
            validate_leaf_node(leaf, suite, expected_source=leaf.leaf_node_source,
                               authentication_service=config.authentication_service,
                               group_id=context.group_id, leaf_index=index, now=config.now)
    check_required_capabilities(tree, context.extensions)
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
                 config: GroupConfig | None = None) -> OpenedWelcome:
    """Decrypt our GroupSecrets and the GroupInfo, and check the GroupInfo's confirmation tag.

    ``config`` resolves the external and application PSKs the Welcome names.

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
        if psk_id.psktype == PSKType.RESUMPTION:
            raise ValidationError("a resumption PSK cannot be resolved by a new member")
        psks.append((psk_id, resolve_held_psk(psk_id, config)))
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
