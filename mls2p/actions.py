"""What a session asks its transport to do, in order (h11's events, the other way round).

* :class:`SendMessage`: write these bytes to the peer under the keys in use now;
* :class:`KeysChanged`: from now on protect and unprotect with keys exported
  from ``epoch``;
* :class:`ResumptionIgnored`: the peer's crossed ResumptionRequest lost the tie-break.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .wire import ProfileMessageType


@dataclass(frozen=True)
class SendMessage:
    data: bytes = field(repr=False)
    msg_type: ProfileMessageType


OUR_COMMIT_CONFIRMED = "peer confirmed our commit"
"""The ``reason`` of the KeysChanged (and of the transports' EpochChanged) that adopts our own commit:
how an observer tells who committed an epoch (the PCS experiment, the turn-taking tests)."""


@dataclass(frozen=True)
class KeysChanged:
    """Switch the transport to keys exported from this epoch."""

    epoch: int
    reason: str


@dataclass(frozen=True)
class ResumptionIgnored:
    """The peer's colliding ResumptionRequest lost the tie-break (we are the initial initiator)."""

    epoch: int


SessionAction = SendMessage | KeysChanged | ResumptionIgnored


