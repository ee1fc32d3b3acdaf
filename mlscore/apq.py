"""The Amortized PQ MLS combiner (APQ-MLS, draft-ietf-mls-combiner, editor's copy of 2026-08) for two members.

APQ-MLS runs two MLS groups side by side: a *traditional* (T) group on a
classical suite, which carries the application's keys, and a post-quantum (PQ)
group on an ML-KEM suite.  A PARTIAL commit is an ordinary commit of the T
group alone (cheap).  A FULL commit commits the PQ group first, exports
``apq_exporter = SafeExportSecret(0x0006)`` from its new epoch, and commits the T
group with an application PSK derived from it (section 5.2), so the T key
schedule is PQ-secure from that epoch on, and stays so through the PARTIAL
commits that follow until a quantum attacker also learns a later PQ epoch.

Both groups hold an :class:`APQInfo` (group ids, mode, suites, and the epochs of
the last FULL commit) in their GroupContext ``app_data_dictionary`` under
component 0x0006; FULL commits update it with AppDataUpdate proposals
(draft-ietf-mls-extensions 4.7) and both members check that the two copies
agree with the real epochs.  Adding the second member is a FULL commit, and
joining takes the PQ Welcome first (its exporter opens the T Welcome).

This module is the core, sans-I/O like the rest of mlscore: :class:`APQPair` is
one member's pair of groups.  The two-party profile and the transports carry
its messages (docs/pq.md).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Self

from .codec import Reader, Struct, Writer, decode_enum
from .crypto import DHKEM_IDS, get_suite
from .errors import DecodeError, ValidationError
from .extensions import Extension
from .framing import ContentType, MLSMessage, PrivateMessage, PublicMessage, WireFormat
from .group import CommitMessage, Group, GroupConfig
from .hpke_pq import MLKEM768, MLKEM1024
from .key_package import KeyPackageBundle
from .leaf_node import PROTOCOL_VERSION_MLS10
from .messages import (
    Add,
    AppDataUpdate,
    AppDataUpdateOperation,
    ExternalInit,
    KeyPackage,
    PreSharedKey,
    Proposal,
    ReInit,
    Remove,
)
from .safe_app import app_data_entries, with_app_data
from .schedule.psk import PreSharedKeyID, PSKType

APQ_COMPONENT = 0x0006
"""``apq_mls_info``: the component id of APQInfo, the APQ exporter and the APQ PSK (section 9.1)."""


class APQMode(IntEnum):
    CONFIDENTIALITY = 0  # PQ/T confidentiality only: the PQ group may sign classically
    CONFIDENTIALITY_AND_AUTHENTICITY = 1  # the PQ group signs with ML-DSA too


@dataclass(frozen=True)
class APQInfo(Struct):
    """Section 5.1: the pair's fixed description and the epochs of its last FULL commit."""

    t_group_id: bytes
    pq_group_id: bytes
    mode: APQMode
    t_cipher_suite: int
    pq_cipher_suite: int
    t_epoch: int
    pq_epoch: int

    def encode(self, w: Writer) -> None:
        w.opaque(self.t_group_id).opaque(self.pq_group_id).u8(self.mode).u16(self.t_cipher_suite)
        w.u16(self.pq_cipher_suite).u64(self.t_epoch).u64(self.pq_epoch)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.opaque(), r.opaque(), decode_enum(APQMode, r.u8(), "APQ mode"), r.u16(), r.u16(), r.u64(),
                   r.u64())

    def same_pair(self, other: APQInfo) -> bool:
        """Everything but the epochs is equal: the fields that may never change."""
        return replace(self, t_epoch=0, pq_epoch=0) == replace(other, t_epoch=0, pq_epoch=0)


class APQUpdateType(IntEnum):
    FULL_UPDATE = 0
    NEW_T_EPOCH = 1
    NEW_PQ_EPOCH = 2


@dataclass(frozen=True)
class APQInfoUpdate(Struct):
    """Section 5.1.1: the ``update`` of an AppDataUpdate for component 0x0006."""

    update_type: APQUpdateType
    info: APQInfo | None = None  # full_update
    epoch: int = 0  # new_t_epoch / new_pq_epoch

    def encode(self, w: Writer) -> None:
        w.u8(self.update_type)
        if self.update_type == APQUpdateType.FULL_UPDATE:
            assert self.info is not None
            w.struct(self.info)
        else:
            w.u64(self.epoch)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        update_type = decode_enum(APQUpdateType, r.u8(), "APQInfo update type")
        if update_type == APQUpdateType.FULL_UPDATE:
            return cls(update_type, info=APQInfo.decode(r))
        return cls(update_type, epoch=r.u64())


def apq_info_logic(current: bytes | None, updates: Sequence[bytes]) -> bytes:
    """The component logic of 0x0006 for AppDataUpdate (section 5.1.1): one ``full_update``, or a
    ``new_t_epoch`` and a ``new_pq_epoch`` applied to an existing APQInfo; the fixed fields never change."""
    changes = [APQInfoUpdate.from_bytes(update) for update in updates]
    old = APQInfo.from_bytes(current) if current is not None else None
    if len(changes) == 1 and changes[0].update_type == APQUpdateType.FULL_UPDATE:
        new = changes[0].info
        assert new is not None
        if old is not None and not old.same_pair(new):
            raise ValidationError("an APQInfo update changes more than the two epochs")
        return new.to_bytes()
    kinds = sorted(change.update_type for change in changes)
    if kinds != [APQUpdateType.NEW_T_EPOCH, APQUpdateType.NEW_PQ_EPOCH] or old is None:
        raise ValidationError("an APQInfo changes by one full_update, or by new_t_epoch and new_pq_epoch together")
    epochs = {change.update_type: change.epoch for change in changes}
    return replace(old, t_epoch=epochs[APQUpdateType.NEW_T_EPOCH],
                   pq_epoch=epochs[APQUpdateType.NEW_PQ_EPOCH]).to_bytes()


def apq_info_of(group: Group) -> APQInfo | None:
    data = app_data_entries(group.context.extensions).get(APQ_COMPONENT)
    return APQInfo.from_bytes(data) if data is not None else None


def with_apq_info(extensions: Sequence[Extension], info: APQInfo) -> tuple[Extension, ...]:
    """GroupContext extensions with ``info`` put into (or added as) the app_data_dictionary (group creation)."""
    return with_app_data(extensions, {**app_data_entries(extensions), APQ_COMPONENT: info.to_bytes()})


APQ_MESSAGE_PAIR = 0x0007
"""The ``apq_message_pair`` wire format (section 9.2): an MLSMessage whose body is an :class:`APQMessagePair`."""


@dataclass(frozen=True)
class APQMessagePair(Struct):
    """Section 6: the T and PQ halves of one APQ message (KeyPackages, Welcomes or a FULL commit's two commits),
    both of ``wire_format``.  Sent as an MLSMessage of wire format 0x0007 (:meth:`to_message_bytes`); the
    generic MLSMessage decoder does not know that wire format, so only code that expects a pair reads one."""

    wire_format: WireFormat
    t_message: MLSMessage
    pq_message: MLSMessage

    def __post_init__(self) -> None:
        for half, message in (("T", self.t_message), ("PQ", self.pq_message)):
            if message.wire_format != self.wire_format:
                raise ValidationError(f"the {half} message of an APQMessagePair is {message.wire_format.name}, "
                                      f"not {self.wire_format.name}")
            body = message.body
            if isinstance(body, PrivateMessage) and body.content_type == ContentType.APPLICATION:
                raise ValidationError("an APQMessagePair must not carry application messages")

    def encode(self, w: Writer) -> None:
        w.u16(self.wire_format).struct(self.t_message).struct(self.pq_message)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        wire_format = decode_enum(WireFormat, r.u16(), "APQMessagePair wire format")  # never 0x0007 itself
        return cls(wire_format, MLSMessage.decode(r), MLSMessage.decode(r))

    def to_message_bytes(self) -> bytes:
        """The MLSMessage carrying this pair: version, wire format 0x0007, the pair."""
        return Writer().u16(PROTOCOL_VERSION_MLS10).u16(APQ_MESSAGE_PAIR).struct(self).getvalue()

    @classmethod
    def from_message_bytes(cls, data: bytes) -> APQMessagePair:
        """Read an MLSMessage of wire format 0x0007 (the whole of ``data``)."""
        r = Reader(data)
        pair = cls.read_message(r)
        r.finish()
        return pair

    @classmethod
    def read_message(cls, r: Reader) -> APQMessagePair:
        """Read one MLSMessage of wire format 0x0007 from ``r`` (others may follow it)."""
        if r.u16() != PROTOCOL_VERSION_MLS10:
            raise DecodeError("an APQMessagePair must be an MLS 1.0 message")
        if r.u16() != APQ_MESSAGE_PAIR:
            raise DecodeError("expected an MLSMessage of wire format apq_message_pair (0x0007)")
        return cls.decode(r)


def is_message_pair(data: bytes, offset: int = 0) -> bool:
    """Whether the MLSMessage at ``offset`` of ``data`` has wire format apq_message_pair (read from its header
    only: the rest is checked when it is decoded)."""
    return data[offset + 2 : offset + 4] == APQ_MESSAGE_PAIR.to_bytes(2, "big")


def key_package_pair(t_bundle: KeyPackageBundle, pq_bundle: KeyPackageBundle) -> APQMessagePair:
    """Section 3.2: a joiner's two KeyPackages, one pair."""
    return APQMessagePair(WireFormat.KEY_PACKAGE, MLSMessage(t_bundle.key_package), MLSMessage(pq_bundle.key_package))


@dataclass(frozen=True)
class FullCommit:
    """The two commits of a FULL commit (PQ first), the Welcomes if it added the peer, and the next pair."""

    pq_message: MLSMessage
    t_message: MLSMessage
    pq_welcome: MLSMessage | None
    t_welcome: MLSMessage | None
    pair: APQPair

    def messages(self) -> APQMessagePair:
        """The two commits as one APQMessagePair (their shared handshake wire format)."""
        return APQMessagePair(self.t_message.wire_format, self.t_message, self.pq_message)

    def welcomes(self) -> APQMessagePair | None:
        """The two Welcomes as one APQMessagePair, if this commit added the peer."""
        if self.t_welcome is None or self.pq_welcome is None:
            return None
        return APQMessagePair(WireFormat.WELCOME, self.t_welcome, self.pq_welcome)


class APQPair:
    """One member's pair of groups (T and PQ) under APQ-MLS, for a group of two (see the module).

    Like :class:`~mlscore.group.Group`, every operation returns the next pair and leaves this one as it was:
    the caller adopts the next pair when the profile says so.
    """

    def __init__(self, t: Group, pq: Group, info: APQInfo, psks: ApqPsks | None = None) -> None:
        self.t, self.pq, self.info = t, pq, info
        # seen by the T group's config: holds one PSK only while a T commit is made or read (the T group needs
        # it for nothing else, and an old PSK is an old secret)
        self._psks = psks if psks is not None else ApqPsks()

    def __repr__(self) -> str:
        return f"APQPair(t_epoch={self.t.epoch}, pq_epoch={self.pq.epoch}, mode={self.info.mode.name})"

    # -- configuration shared by both groups ---------------------------------------------------------------

    @staticmethod
    def shared_config(base: GroupConfig | None, psks: ApqPsks) -> GroupConfig:
        """``base`` with the APQInfo logic and a lookup of the APQ PSKs this pair derived."""
        base = base or GroupConfig()

        def lookup(psk_id: PreSharedKeyID) -> bytes | None:
            if psk_id.component_id == APQ_COMPONENT:
                return psks.resolve(psk_id.psk_id)
            return base.application_psks(psk_id) if base.application_psks else None
        return replace(base, application_psks=lookup,
                       app_data_components={**base.app_data_components, APQ_COMPONENT: apq_info_logic})

    # -- creating and joining ------------------------------------------------------------------------------

    @classmethod
    def create(cls, t_bundle: KeyPackageBundle, pq_bundle: KeyPackageBundle, *, mode: APQMode = APQMode.CONFIDENTIALITY,
               extensions: Sequence[Extension] = (), config: GroupConfig | None = None,
               psks: ApqPsks | None = None, t_group_id: bytes | None = None) -> APQPair:
        """Both groups, one member each, epoch 0, each holding the pair's APQInfo (its epochs 0).

        ``psks`` is the slot through which the T group reads the APQ PSKs (a new one if not given); a caller
        that rebuilds pairs from their groups later (:meth:`of`) keeps it."""
        t_suite, pq_suite = t_bundle.key_package.cipher_suite, pq_bundle.key_package.cipher_suite
        info = APQInfo(t_group_id or os.urandom(16), os.urandom(16), mode, t_suite, pq_suite, 0, 0)
        check_suites(info)
        psks = psks if psks is not None else ApqPsks()
        shared = cls.shared_config(config, psks)
        pq = Group.create(pq_bundle, group_id=info.pq_group_id, extensions=with_apq_info(extensions, info),
                          config=shared)
        t = Group.create(t_bundle, group_id=info.t_group_id, extensions=with_apq_info(extensions, info),
                         config=shared)
        return cls(t, pq, info, psks)

    @classmethod
    def join(cls, pq_welcome: MLSMessage | bytes, t_welcome: MLSMessage | bytes, t_bundle: KeyPackageBundle,
             pq_bundle: KeyPackageBundle, *, config: GroupConfig | None = None,
             psks: ApqPsks | None = None) -> APQPair:
        """Section 3.2: the PQ Welcome first, its exporter opens the T Welcome; then both APQInfos are checked."""
        psks = psks if psks is not None else ApqPsks()
        shared = cls.shared_config(config, psks)
        pq = Group.join(pq_welcome, pq_bundle, config=shared)
        info = apq_info_of(pq)
        if info is None:
            raise ValidationError("the PQ Welcome's group has no APQInfo")
        check_suites(info)
        psk_id, psk = derive_apq_psk(pq, info.t_cipher_suite)
        with psks.offering(psk_id, psk):
            t = Group.join(t_welcome, t_bundle, config=shared)
            if not psks.used:
                raise ValidationError("the T Welcome does not use the PQ group's PSK: its first epoch would be "
                                      "classical only")
        pair = cls(t, pq, info, psks)
        pair._check_after_full()
        return pair

    # -- commits --------------------------------------------------------------------------------------------

    @classmethod
    def of(cls, t: Group, pq: Group, psks: ApqPsks) -> APQPair:
        """The pair of two groups built by :meth:`create` or :meth:`join` with ``psks`` (or read back from their
        states with a :meth:`shared_config` over ``psks``); APQInfo is the T group's, checked."""
        info = apq_info_of(t)
        if info is None:
            raise ValidationError("the T group has no APQInfo")
        pq_info = apq_info_of(pq)
        if pq_info is None or not info.same_pair(pq_info):
            raise ValidationError("the T and PQ groups do not belong to one pair")
        return cls(t, pq, info, psks)

    def commit_full(self, *, add: tuple[KeyPackage, KeyPackage] | None = None,
                    authenticated_data: bytes = b"") -> FullCommit:
        """A FULL commit (section 3.1): the PQ group's commit (with an UpdatePath), then the T group's with the
        APQ PSK; ``add`` = (T KeyPackage, PQ KeyPackage) adds the peer (adding is always FULL).  Both commits
        carry ``authenticated_data``."""
        info = replace(self.info, t_epoch=self.t.epoch + 1, pq_epoch=self.pq.epoch + 1)
        update = AppDataUpdate(APQ_COMPONENT, AppDataUpdateOperation.UPDATE,
                               APQInfoUpdate(APQUpdateType.FULL_UPDATE, info=info).to_bytes())
        pq_proposals: list[Proposal] = [update]
        t_proposals: list[Proposal] = [update]
        if add is not None:
            pq_proposals.insert(0, Add(add[1]))
            t_proposals.insert(0, Add(add[0]))
        pq_result = self.pq.commit(pq_proposals, force_path=True, authenticated_data=authenticated_data)
        psk_id, psk = derive_apq_psk(pq_result.group, self.info.t_cipher_suite)
        t_suite = get_suite(self.info.t_cipher_suite)
        nonce = os.urandom(t_suite.hash_len)
        t_proposals.append(PreSharedKey(PreSharedKeyID.application(APQ_COMPONENT, psk_id, nonce)))
        with self._psks.offering(psk_id, psk):
            t_result = self.t.commit(t_proposals, force_path=True, authenticated_data=authenticated_data)
        pair = APQPair(t_result.group, pq_result.group, info, self._psks)
        pair._check_after_full()
        return FullCommit(pq_result.message, t_result.message, pq_result.welcome, t_result.welcome, pair)

    @classmethod
    def join_pair(cls, welcomes: APQMessagePair | bytes, t_bundle: KeyPackageBundle, pq_bundle: KeyPackageBundle,
                  *, config: GroupConfig | None = None, psks: ApqPsks | None = None) -> APQPair:
        """:meth:`join` from the Welcomes' APQMessagePair (or its MLSMessage bytes)."""
        pair = APQMessagePair.from_message_bytes(welcomes) if isinstance(welcomes, bytes) else welcomes
        if pair.wire_format != WireFormat.WELCOME:
            raise ValidationError(f"expected a pair of Welcomes, not of {pair.wire_format.name}")
        return cls.join(pair.pq_message, pair.t_message, t_bundle, pq_bundle, config=config, psks=psks)

    def process_full_pair(self, messages: APQMessagePair | bytes, *, now: int | None = None,
                          check: CommitCheck | None = None) -> APQPair:
        """:meth:`process_full` from the commits' APQMessagePair (or its MLSMessage bytes)."""
        pair = APQMessagePair.from_message_bytes(messages) if isinstance(messages, bytes) else messages
        if pair.wire_format not in (WireFormat.PUBLIC_MESSAGE, WireFormat.PRIVATE_MESSAGE):
            raise ValidationError(f"expected a pair of commits, not of {pair.wire_format.name}")
        return self.process_full(pair.pq_message, pair.t_message, now=now, check=check)

    def commit_partial(self, *, authenticated_data: bytes = b"") -> tuple[MLSMessage, APQPair]:
        """A PARTIAL commit: the T group alone, with an UpdatePath (classical PCS; the PQ PSK stays in force)."""
        result = self.t.commit([], force_path=True, authenticated_data=authenticated_data)
        return result.message, APQPair(result.group, self.pq, self.info, self._psks)

    def process_full(self, pq_message: MLSMessage | bytes, t_message: MLSMessage | bytes, *,
                     now: int | None = None, check: CommitCheck | None = None) -> APQPair:
        """The peer's FULL commit: the PQ commit first, then the T commit, which must carry the APQ PSK; both
        with an UpdatePath (a FULL commit is the committer's PQ post-compromise security).  ``now`` is the
        time credentials are checked at; ``check`` (a profile's own rules) sees each processed commit, PQ
        first, before the pair is built, and refuses by raising."""
        pq_message, t_message = _commit_message(pq_message, "PQ"), _commit_message(t_message, "T")
        pq_processed = _process_without_consuming(self.pq, pq_message, now)
        psk_id, psk = derive_apq_psk(pq_processed.group, self.info.t_cipher_suite)
        with self._psks.offering(psk_id, psk):
            t_processed = _process_without_consuming(self.t, t_message, now)
        if check is not None:
            check(pq_processed, "PQ")
            check(t_processed, "T")
        if pq_processed.commit.path is None or t_processed.commit.path is None:
            raise ValidationError("both commits of a FULL commit must carry an UpdatePath")
        carried = [p.proposal.psk for p in t_processed.commit.proposals
                   if p.proposal is not None and isinstance(p.proposal, PreSharedKey)]
        if not any(p.psktype == PSKType.APPLICATION and p.component_id == APQ_COMPONENT and p.psk_id == psk_id
                   for p in carried):
            raise ValidationError("the T commit of a FULL commit does not carry the PQ group's PSK")
        pair = APQPair(t_processed.group, pq_processed.group, self.info, self._psks)
        pair._check_after_full()  # both APQInfos present, equal, with the pair's fixed fields and the new epochs
        return pair

    def process_partial(self, t_message: MLSMessage | bytes, *, now: int | None = None,
                        check: CommitCheck | None = None) -> APQPair:
        """The peer's PARTIAL commit: a T commit with an UpdatePath that changes neither membership (Add and
        Remove must be FULL, section 3) nor APQInfo."""
        processed = _process_without_consuming(self.t, _commit_message(t_message, "T"), now)
        if check is not None:
            check(processed, "T")
        if processed.commit.path is None:
            raise ValidationError("a PARTIAL commit must carry an UpdatePath")
        if any(p.reference is not None or isinstance(p.proposal, (Add, Remove, ReInit, ExternalInit))
               for p in processed.commit.proposals):
            raise ValidationError("a PARTIAL commit must not change the membership (Add and Remove are FULL)")
        if apq_info_of(processed.group) != apq_info_of(self.t):
            raise ValidationError("a PARTIAL commit must not change APQInfo")
        return APQPair(processed.group, self.pq, self.info, self._psks)

    # -- checks ---------------------------------------------------------------------------------------------

    def _check_after_full(self) -> None:
        """Sections 5.1.1-5.1.2: both groups' APQInfo agree with each other, with the pair, and with the real
        epochs and suites."""
        t_info, pq_info = apq_info_of(self.t), apq_info_of(self.pq)
        if t_info is None or pq_info is None or t_info != pq_info:
            raise ValidationError("the T and PQ groups' APQInfo differ")
        if not t_info.same_pair(self.info):
            raise ValidationError("APQInfo changed a field that is fixed for the pair")
        if (t_info.t_epoch, t_info.pq_epoch) != (self.t.epoch, self.pq.epoch):
            raise ValidationError(f"APQInfo names epochs {t_info.t_epoch}/{t_info.pq_epoch}, the groups are at "
                                  f"{self.t.epoch}/{self.pq.epoch}")
        if (self.t.group_id, self.pq.group_id) != (t_info.t_group_id, t_info.pq_group_id) or (
                self.t.suite.id, self.pq.suite.id) != (t_info.t_cipher_suite, t_info.pq_cipher_suite):
            raise ValidationError("APQInfo does not describe these two groups")
        if t_info.t_group_id == t_info.pq_group_id:
            raise ValidationError("the T and PQ groups share a group id")
        if _members(self.t) != _members(self.pq):
            raise ValidationError("the T and PQ groups do not have the same members (sections 3.2.1, 3.3)")
        self.info = t_info


CommitCheck = Callable[[CommitMessage, str], None]
"""A caller's own rules for a processed commit (the T or PQ half, named by the second argument)."""


class ApqPsks:
    """The APQ PSK the T group may use right now (one at a time, only while a T commit or Welcome is made or
    read), and whether the T group asked for it."""

    def __init__(self) -> None:
        self._offered: tuple[bytes, bytes] | None = None
        self.used = False

    def __repr__(self) -> str:
        return f"ApqPsks(offered={self._offered is not None})"

    def __bool__(self) -> bool:
        return self._offered is not None

    @contextlib.contextmanager
    def offering(self, psk_id: bytes, psk: bytes) -> Iterator[None]:
        self._offered, self.used = (psk_id, psk), False
        try:
            yield
        finally:
            self._offered = None

    def resolve(self, psk_id: bytes) -> bytes | None:
        if self._offered is None or self._offered[0] != psk_id:
            return None
        self.used = True
        return self._offered[1]


def _commit_message(message: MLSMessage | bytes, which: str) -> MLSMessage:
    """``message`` if it is a commit by its cleartext content type; refused before any key is used otherwise
    (an application message handed here must not burn its generation)."""
    parsed = MLSMessage.from_bytes(message) if isinstance(message, bytes) else message
    body = parsed.body
    content_type = (body.content.content_type if isinstance(body, PublicMessage)
                    else body.content_type if isinstance(body, PrivateMessage) else None)
    if content_type != ContentType.COMMIT:
        raise ValidationError(f"expected the {which} group's commit, got {parsed.wire_format.name}"
                              + (f" ({content_type.name})" if content_type is not None else ""))
    return parsed


def _process_without_consuming(group: Group, message: MLSMessage, now: int | None) -> CommitMessage:
    """Process a commit so that a refusal uses up nothing: a PrivateMessage is opened on a copy of ``group``
    (opening it takes its handshake key from the secret tree, and a misrouted or forged half of a FULL commit,
    refused after that, would leave the real one unreadable).  The new epoch is the copy's."""
    target = group if isinstance(message.body, PublicMessage) else Group.from_state(group.to_state(),
                                                                                    config=group.config)
    processed = target.process(message, now=now)
    assert isinstance(processed, CommitMessage)  # _commit_message checked the content type
    return processed


def _members(group: Group) -> list[tuple[int, bytes]]:
    """Who is in ``group``: each leaf's index and credential (the same members at the same places in both)."""
    return [(index, leaf.credential.to_bytes()) for index, leaf in group.members()]


def derive_apq_psk(pq: Group, t_suite_id: int) -> tuple[bytes, bytes]:
    """Section 5.2: (apq_psk_id, apq_psk) from the PQ epoch's SafeExportSecret(0x0006), derived with the T suite's
    KDF; the exporter is single-use (it cannot be asked for again in this epoch) and is not kept."""
    exporter = pq.safe_export(APQ_COMPONENT)
    t_suite = get_suite(t_suite_id)
    return t_suite.derive_secret(exporter, "psk_id"), t_suite.derive_secret(exporter, "psk")


def pq_group_suites() -> tuple[int, ...]:
    """The registered suites a PQ group may use (pure ML-KEM; :func:`check_suites`)."""
    from .crypto import SUPPORTED_SUITES  # read at the call: register_suite replaces the tuple

    return tuple(suite for suite in SUPPORTED_SUITES if get_suite(suite).kem_id in (MLKEM768, MLKEM1024))


def check_suites(info: APQInfo) -> None:
    """Section 7.1: a classical T suite, a PQ suite whose KEM is ML-KEM (not hybrid), and in mode 1 a PQ
    signature in the PQ group."""
    t_suite, pq_suite = get_suite(info.t_cipher_suite), get_suite(info.pq_cipher_suite)
    if t_suite.kem_id not in DHKEM_IDS:
        raise ValidationError(f"the T group's suite {t_suite.name} is not a classical (DHKEM) suite")
    if pq_suite.kem_id not in (MLKEM768, MLKEM1024):
        raise ValidationError(f"the PQ group's suite {pq_suite.name} does not use a pure ML-KEM (hybrid KEMs are "
                              "refused in the PQ group)")
    if info.mode == APQMode.CONFIDENTIALITY_AND_AUTHENTICITY and not pq_suite.signature_scheme.startswith("mldsa"):
        raise ValidationError(f"mode 1 needs a PQ signature in the PQ group, not {pq_suite.signature_scheme}")
