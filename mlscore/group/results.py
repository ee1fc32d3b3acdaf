"""What group operations return, and the policy a group runs with."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..credentials import AuthenticationService
from ..errors import ValidationError
from ..framing import MLSMessage, Sender, WireFormat
from ..messages import Commit, GroupInfo, Proposal
from ..safe_app import AppDataComponent
from ..schedule.psk import PreSharedKeyID, PSKType

if TYPE_CHECKING:
    from .state import Group

PskLookup = Callable[[PreSharedKeyID], bytes | None]

DEFAULT_RESUMPTION_PSK_HISTORY = 8
"""Resumption PSKs kept for core users: the current epoch and 7 before it."""


@dataclass(frozen=True)
class GroupConfig:
    """Policy that is not part of the protocol state.

    ``authentication_service`` validates every credential the group meets.
    ``external_psks`` resolves external PSK ids, ``application_psks`` the
    application PSK ids of draft-ietf-mls-extensions (a component's own PSKs),
    and ``app_data_components`` holds each component's logic for the
    AppDataUpdate proposals that change its GroupContext data.  ``handshake_wire_format``
    chooses PublicMessage or PrivateMessage for the commits we send.
    ``now`` (seconds since the epoch) enables lifetime checks; the core never
    reads a clock, so a caller that wants them passes the time in (here, or
    per message to :meth:`Group.process`).  ``max_leaves`` bounds the trees a
    group accepts (checked before any hashing); None leaves them unbounded.
    ``resumption_psk_history`` is how many epochs' resumption PSKs (the
    current one included) the group keeps, in memory and in its stored state,
    for PSK proposals that name them; 0 keeps none, for users whose commits
    never carry PSK proposals.  ``out_of_order_tolerance`` and
    ``maximum_forward_distance`` configure each epoch's secret tree.
    """

    authentication_service: AuthenticationService | None = None
    external_psks: PskLookup | None = None
    application_psks: PskLookup | None = None
    app_data_components: Mapping[int, AppDataComponent] = field(default_factory=dict)
    handshake_wire_format: WireFormat = WireFormat.PUBLIC_MESSAGE
    padding: int = 0
    resumption_psk_history: int = DEFAULT_RESUMPTION_PSK_HISTORY
    now: int | None = None
    out_of_order_tolerance: int = 16
    maximum_forward_distance: int = 1000
    max_leaves: int | None = None


@dataclass(frozen=True)
class CommitResult:
    """What creating a commit produces: the message to send and the next epoch."""

    message: MLSMessage
    welcome: MLSMessage | None
    group: Group

    @property
    def group_info(self) -> GroupInfo:
        """The next epoch's signed GroupInfo, with the tree: built on demand, as most commits never need one."""
        return self.group.group_info()


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


def resolve_held_psk(psk_id: PreSharedKeyID, config: GroupConfig | None) -> bytes:
    """The value of an external or application PSK: the application holds those (RFC 9420 section 8.4,
    draft-ietf-mls-extensions section 4.5), through ``config``'s lookups."""
    if psk_id.psktype == PSKType.APPLICATION:
        lookup = config.application_psks if config else None
        what = f"application PSK {psk_id.psk_id.hex()} of component {psk_id.component_id:#06x}"
    else:
        lookup = config.external_psks if config else None
        what = f"external PSK {psk_id.psk_id.hex()}"
    value = lookup(psk_id) if lookup else None
    if value is None:
        raise ValidationError(f"unknown {what}")
    return value
