"""An MLS group as seen by one member (RFC 9420 sections 11-12).

``state`` holds :class:`Group` (one epoch: views, exporter, framing,
persistence), ``commit`` creates and processes commits (section 12.4),
``welcome`` builds Welcomes and joins from them (section 12.4.3.1),
``results`` the values they return and :class:`GroupConfig`.
"""

from .results import (
    ApplicationMessage,
    CommitMessage,
    CommitResult,
    GroupConfig,
    ProcessedMessage,
    ProposalMessage,
    PskLookup,
)
from .state import Group
from .welcome import OpenedWelcome, open_welcome

__all__ = [
    "ApplicationMessage",
    "CommitMessage",
    "CommitResult",
    "Group",
    "GroupConfig",
    "OpenedWelcome",
    "ProcessedMessage",
    "ProposalMessage",
    "PskLookup",
    "open_welcome",
]
