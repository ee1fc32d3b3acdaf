"""When to rekey: the policy a user sets and the per-connection meter that applies it.

The session never reads a clock.  A transport owns one :class:`RekeyMeter` per
connection, reports the bytes it sends and the time, and asks :meth:`RekeyMeter.due`
(a pure query) whether the policy wants a ConnectionUpdate now.  Every new
epoch, whoever committed it, restarts the meter: the policy bounds how long
and how much one set of keys protects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mlscore.errors import ConfigurationError


@dataclass(frozen=True)
class RekeyPolicy:
    """Send a ConnectionUpdate after ``max_bytes`` sent or ``max_seconds`` elapsed; ``None`` disables a trigger."""

    max_bytes: int | None = None
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.max_bytes is not None and (not isinstance(self.max_bytes, int) or self.max_bytes < 1):
            raise ConfigurationError(f"RekeyPolicy.max_bytes must be a positive integer, not {self.max_bytes!r}")
        if self.max_seconds is not None and not (self.max_seconds >= 0 and math.isfinite(self.max_seconds)):
            raise ConfigurationError(f"RekeyPolicy.max_seconds must be >= 0 and finite, not {self.max_seconds!r}")


@dataclass
class RekeyMeter:
    """Bytes and time since the current keys were installed, for one connection."""

    policy: RekeyPolicy
    bytes_sent: int = 0
    since: float | None = field(default=None)

    def record_sent(self, count: int) -> None:
        """Count ``count`` application bytes protected under the current keys."""
        self.bytes_sent += count

    def restart(self, now: float) -> None:
        """New keys are in use from ``now``."""
        self.bytes_sent = 0
        self.since = now

    def due(self, now: float) -> bool:
        """True when the policy asks for a rekey; changes nothing."""
        policy = self.policy
        if policy.max_bytes is not None and self.bytes_sent >= policy.max_bytes:
            return True
        return policy.max_seconds is not None and self.since is not None and now - self.since >= policy.max_seconds
