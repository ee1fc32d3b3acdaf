"""When to rekey: the policy a user sets and the per-connection meter that applies it.

The session never reads a clock.  A transport owns one :class:`RekeyMeter` per
connection, reports the bytes it sends and the time, and asks :meth:`RekeyMeter.due`
(a pure query) whether the policy wants new keys now.  Every new epoch, whoever
committed it, restarts the meter: the policy bounds how long and how much one
set of keys protects.  Who commits when the policy is due is the turn's
business (``take_turns``, docs/profile.md "Taking turns"): on the peer's turn
we ask it to commit, so each side's own commit comes at least every second
rekey, which is what locks a thief of that side's state out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from mlscore.errors import ConfigurationError


@dataclass(frozen=True)
class RekeyPolicy:
    """New keys after ``max_bytes`` sent or ``max_seconds`` elapsed; ``None`` disables a trigger."""

    max_bytes: int | None = None
    max_seconds: float | None = None
    take_turns: bool = True
    """Ping-pong: when the policy is due on the peer's turn (it did not make the last commit), ask the peer
    to commit instead of committing again ourselves.  False commits whenever due (the draft's bare MAY),
    which lets one side commit every time and leaves a thief of the other side's state reading on."""
    turn_timeout: float = 30.0
    """Seconds a CommitRequest may go unanswered before ``on_unanswered`` applies."""
    on_unanswered: Literal["commit", "close"] = "commit"
    """What an unanswered CommitRequest leads to: our own commit (logged and counted), or closing the
    connection with insufficient_security (a peer that never commits leaves a thief of its state in)."""
    peer_commit_interval: float = 0.1
    """Sustained minimum seconds between commits the *peer* forces on us (its ConnectionUpdates); 0 disables."""
    peer_commit_burst: int = 64
    """How many peer commits may come faster than that before the next one waits (a token bucket)."""
    full_every: int | None = 10
    """APQ sessions (docs/pq.md): one of every ``full_every`` of our own commits is FULL (1: all of them; None:
    only those below).  A FULL commit is what locks a quantum thief of our state out; the others are PARTIAL,
    at classical cost.  The joiner's first commit, resumption commits and ``rekey(full=True)`` are always FULL."""
    full_seconds: float | None = None
    """APQ sessions: our next commit is FULL once our last FULL commit on this connection is this old."""

    def __post_init__(self) -> None:
        if self.max_bytes is not None and (not isinstance(self.max_bytes, int) or self.max_bytes < 1):
            raise ConfigurationError(f"RekeyPolicy.max_bytes must be a positive integer, not {self.max_bytes!r}")
        if self.max_seconds is not None and not (self.max_seconds >= 0 and math.isfinite(self.max_seconds)):
            raise ConfigurationError(f"RekeyPolicy.max_seconds must be >= 0 and finite, not {self.max_seconds!r}")
        if not (self.peer_commit_interval >= 0 and math.isfinite(self.peer_commit_interval)):
            raise ConfigurationError("RekeyPolicy.peer_commit_interval must be >= 0 and finite, "
                                     f"not {self.peer_commit_interval!r}")
        if not (self.turn_timeout > 0 and math.isfinite(self.turn_timeout)):
            raise ConfigurationError(f"RekeyPolicy.turn_timeout must be > 0 and finite, not {self.turn_timeout!r}")
        if self.on_unanswered not in ("commit", "close"):
            raise ConfigurationError(f"RekeyPolicy.on_unanswered must be 'commit' or 'close', "
                                     f"not {self.on_unanswered!r}")
        if self.full_every is not None and (isinstance(self.full_every, bool) or not isinstance(self.full_every, int)
                                            or self.full_every < 1):
            raise ConfigurationError(f"RekeyPolicy.full_every must be a positive integer or None, "
                                     f"not {self.full_every!r}")
        if self.full_seconds is not None and not (self.full_seconds >= 0 and math.isfinite(self.full_seconds)):
            raise ConfigurationError(f"RekeyPolicy.full_seconds must be >= 0 and finite, not {self.full_seconds!r}")
        if not isinstance(self.peer_commit_burst, int) or self.peer_commit_burst < 1:
            raise ConfigurationError(f"RekeyPolicy.peer_commit_burst must be a positive integer, "
                                     f"not {self.peer_commit_burst!r}")


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
        due_at = self.due_at()
        return due_at is not None and now >= due_at

    def due_at(self) -> float | None:
        """When the time trigger fires (None: no time trigger, or keys not installed yet)."""
        if self.policy.max_seconds is None or self.since is None:
            return None
        return self.since + self.policy.max_seconds


@dataclass
class PeerCommitBudget:
    """A token bucket over the commits a peer forces on us: ``burst`` at once, then one per ``interval``.

    A ConnectionUpdate costs the receiver a commit's worth of HPKE and a store
    write; without a bound a peer turns rekeying into a CPU and disk amplifier.
    A commit that finds the bucket empty waits (the endpoint holds it) until
    :meth:`ready_at`; the peer keeps its old keys meanwhile and loses nothing.
    """

    policy: RekeyPolicy
    tokens: float = field(init=False)
    updated: float | None = None
    deferred: int = 0
    """How many peer commits had to wait (a metric: an honest peer on a sane policy never waits)."""

    def __post_init__(self) -> None:
        self.tokens = float(self.policy.peer_commit_burst)

    def _refill(self, now: float) -> None:
        interval = self.policy.peer_commit_interval
        if self.updated is not None and interval > 0:
            self.tokens = min(float(self.policy.peer_commit_burst), self.tokens + (now - self.updated) / interval)
        self.updated = now if self.updated is None else max(self.updated, now)

    def take(self, now: float) -> bool:
        """Spend one token if there is one (True), else False: the commit must wait."""
        if self.policy.peer_commit_interval == 0:
            return True
        self._refill(now)
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def ready_at(self, now: float) -> float:
        """When the next token is there."""
        self._refill(now)
        return now + max(0.0, 1 - self.tokens) * self.policy.peer_commit_interval
