"""mls2p: the MLS two-party profile (draft-kohbrok-mls-two-party-profile-01), sans-I/O.

``session`` runs the profile for one two-member group across connections;
``transitions`` is its state machine as a table; ``wire`` frames the six
messages; ``persistence`` and ``store`` keep a session between connections;
``policy`` decides when to rekey; ``bootstrap`` is what both transports
(``mlstls``, ``mlsquic``) run per connection; ``traffic`` maps suites to the
AEAD that protects traffic; ``errors`` holds the error classes and alert map.
Built on :mod:`mlscore`, which knows nothing of two parties or transports.
"""

from .bootstrap import ProfileEndpoint, persist_to
from .config import TWO_PARTY_PROFILE_COMPONENT, ProfileConfig, Role
from .errors import ConfigurationError, StaleStateError, StoredStateError, StoreError, UnexpectedMessage
from .persistence import PendingCommit
from .policy import RekeyMeter, RekeyPolicy
from .session import KeysChanged, ResumptionIgnored, SendMessage, SessionAction, TwoPartySession
from .store import FileSessionStore, MemorySessionStore, SessionStore
from .transitions import State

__all__ = [
    "TWO_PARTY_PROFILE_COMPONENT",
    "ConfigurationError",
    "FileSessionStore",
    "KeysChanged",
    "MemorySessionStore",
    "PendingCommit",
    "ProfileConfig",
    "ProfileEndpoint",
    "RekeyMeter",
    "RekeyPolicy",
    "ResumptionIgnored",
    "Role",
    "SendMessage",
    "SessionAction",
    "SessionStore",
    "StaleStateError",
    "State",
    "StoreError",
    "StoredStateError",
    "TwoPartySession",
    "UnexpectedMessage",
    "persist_to",
]
