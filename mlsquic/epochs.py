"""MLS epochs as 1-RTT Key Phase flips: what both mlsquic modes share (docs/quic.md).

RFC 9001 section 6 key updates are replaced by the two-party profile's
rekeys: every confirmed MLS epoch is one Key Phase flip, and the secrets of
the next phase come from that epoch instead of "quic ku".  The replier flips
when it sends its EpochKeyUpdate, the committer when it receives it; the
committer can already open the replier's flipped packets because the next
secrets come from its pending epoch (:meth:`TwoPartySession.next_epoch_group`).
A flip we start waits for what RFC 9001 section 6.1 asks (the handshake confirmed, a
packet of the current phase acknowledged); meanwhile the confirmed epoch's secrets wait
in the crypto pair, and the MLS session goes on without waiting for the key phase.

:class:`EpochKeyedConnection` holds the connection's
:class:`~mls2p.bootstrap.ProfileEndpoint` (start, resume, store, rekey
policy: the same object mlstls uses) and the flipping 1-RTT crypto pair; the
two modes differ only in where profile messages travel and how an epoch's
secrets are derived.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import cast

from aioquic import tls
from aioquic.quic.events import PingAcknowledged, QuicEvent

from mls2p.bootstrap import ProfileEndpoint
from mls2p.errors import AlertDescription, MLSError, as_project_error
from mls2p.session import SessionAction, TwoPartySession
from mls2p.trust import watch_trust

from ._aioquic_compat import HookedQuicConnection, MlsCryptoPair, may_initiate_key_update, probe_timeout
from .config import MlsQuicConfiguration
from .errors import CRYPTO_ERROR, TRANSPORT_CLOSE, KeyPhaseStalled, error_code_for, reason_for

log = logging.getLogger(__name__)

OLD_KEYS_PTO = 3
"""How many PTOs the previous Key Phase's receive keys stay for late packets (RFC 9001 section 6.5)."""
MAX_PHASES_BEHIND = 8
"""Confirmed MLS epochs the Key Phase may lag behind before the connection closes: an honest peer acknowledges
our packets within a round trip, and every MLS epoch takes one, so more means acknowledgements are withheld."""
FLIP_PING = 0x6D6C73_6B70  # "mlskp"
"""The uid of the PING sent with each Key Phase flip we start (its acknowledgement is not the application's)."""
PACKETS_PER_PHASE = 1 << 22
"""Packets sealed under one Key Phase before new keys are asked for: half the smallest confidentiality
limit of RFC 9001 section 6.6 (AES-GCM, 2^23), so the rekey completes well before it whatever the policy."""


class EpochChanged(QuicEvent):
    """The 1-RTT keys now come from MLS epoch ``epoch`` (a PCS rekey took effect)."""

    def __init__(self, epoch: int, reason: str) -> None:
        self.epoch = epoch
        self.reason = reason

    def __repr__(self) -> str:
        return f"EpochChanged(epoch={self.epoch}, reason={self.reason!r})"


class EpochKeyedConnection(HookedQuicConnection):
    """A QuicConnection whose 1-RTT keys follow the epochs of a two-party MLS session."""

    endpoint: ProfileEndpoint
    wakeup: Callable[[], None] | None = None
    """Sends what the connection queued outside aioquic's handlers (serve/connect set the protocol's transmit)."""
    _now: float = 0.0
    _deadline: float | None = None
    _flip_wanted: int = 0  # the epoch our Key Phase flips toward once RFC 9001 section 6.1 allows
    mls_failure: MLSError | None = None
    """Why MLS closed this connection, in full, for the local application (a peer not yet authenticated
    is told only the alert's name)."""

    def after_initialize(self) -> None:
        config = self.mls_configuration
        self.endpoint = ProfileEndpoint(config.mls_profile, is_client=self.is_client, store=config.store,
                                        resume_group_id=config.resume_group_id)
        watch_trust(config.mls_profile.authentication_service, self)
        self.replace_crypto_pair(tls.Epoch.ONE_RTT, MlsCryptoPair(
            self.crypto_pair(tls.Epoch.ONE_RTT), self.next_epoch_secrets, clock=lambda: self._now,
            retention=lambda: OLD_KEYS_PTO * probe_timeout(self)))

    # -- mode-specific -----------------------------------------------------------------------

    def next_epoch_secrets(self, epoch: int) -> tuple[bytes, bytes] | None:
        """(receive, send) 1-RTT secrets of MLS epoch ``epoch``, or None while it is unknown."""
        raise NotImplementedError

    def act(self, actions: list[SessionAction]) -> None:
        """Carry out what the session asked for (send profile messages, move keys)."""
        raise NotImplementedError

    def mls_complete(self) -> bool:
        """The MLS handshake is over: the peer is authenticated and holds the keys (or needs no MLS)."""
        return self.endpoint.confirmed

    # -- shared ------------------------------------------------------------------------------

    @property
    def mls_configuration(self) -> MlsQuicConfiguration:
        return cast(MlsQuicConfiguration, self.quic_configuration)

    @property
    def one_rtt(self) -> MlsCryptoPair:
        return cast(MlsCryptoPair, self.crypto_pair(tls.Epoch.ONE_RTT))

    @property
    def mls_session(self) -> TwoPartySession | None:
        return self.endpoint.session

    @property
    def mls_epoch(self) -> int | None:
        """The MLS epoch of the 1-RTT keys in use (0 in alongside mode before the first MLS epoch)."""
        return self.one_rtt.epoch

    def rekey(self, *, full: bool = False) -> bool:
        """Start a PCS rekey now: our own ConnectionUpdate, whoever's turn it is (the rekey policy takes
        turns instead, docs/profile.md); False before keys exist or while one is in flight.  ``full``: a FULL
        commit in an APQ session (docs/pq.md)."""
        if self.one_rtt.epoch is None:
            return False
        actions = self.endpoint.rekey(full=full, now=self._now)
        self.act(actions)
        return bool(actions)

    def request_key_update(self) -> None:
        """RFC 9001 key update is replaced by an MLS rekey."""
        self.rekey()

    def flip_to(self, epoch: int, reason: str, *, now: bool = True) -> None:
        """Move the 1-RTT keys to the confirmed ``epoch``: as soon as RFC 9001 section 6.1 lets us start a
        flip (``now``), or when the peer's packets flip.  The epoch's secrets are kept until then: the
        MLS session moves on (and drops its old epochs) without waiting for the key phase."""
        pair = self.one_rtt
        if pair.epoch is not None and pair.epoch < epoch:
            if epoch - pair.epoch > MAX_PHASES_BEHIND:
                self._close_for(KeyPhaseStalled(f"the Key Phase is {epoch - pair.epoch} MLS epochs behind: the "
                                                "peer does not acknowledge our packets"))
                return
            secrets = self.next_epoch_secrets(epoch)
            if secrets is not None:
                pair.ahead[epoch] = secrets
            if now:
                self._flip_wanted = max(self._flip_wanted, epoch)
        self.queue_event(EpochChanged(epoch, reason))
        log.info("QUIC 1-RTT keys move to MLS epoch %d (%s)", epoch, reason)

    def _flip_when_allowed(self) -> None:
        """Start the next Key Phase flip we want, if RFC 9001 section 6.1 allows it now (called before sending)."""
        pair = self.one_rtt
        if (pair.epoch is not None and pair.epoch < self._flip_wanted and not pair.update_requested
                and may_initiate_key_update(self, pair.first_sealed)):
            pair.update_key()
            # a PING makes sure a packet carries the flip now (the alongside server waits for the client's
            # first one) and is acknowledged, which the flip after this one waits for
            self.send_ping(FLIP_PING)

    def next_event(self) -> QuicEvent | None:
        """aioquic's next event, without the acknowledgements of our own flip PINGs."""
        while (event := super().next_event()) is not None:
            if not (isinstance(event, PingAcknowledged) and event.uid == FLIP_PING):
                return event
        return None

    @property
    def now(self) -> float:
        """The time aioquic last passed in (the rekey policy's clock)."""
        return self._now

    # -- the clock aioquic passes in: the rekey policy, and a deadline on the MLS handshake --------

    def _tick(self, now: float) -> None:
        self._now = now
        started = hasattr(self, "endpoint")  # after_initialize ran (a client's connect() runs it)
        if started:
            self.one_rtt.expire(now)
        if started and self._deadline is None and not self.mls_complete():
            self._deadline = now + self.mls_configuration.mls_handshake_timeout

    def connect(self, addr: tuple[str, int] | tuple[str, int, int, int], now: float) -> None:
        self._tick(now)
        super().connect(addr, now)

    def get_timer(self) -> float | None:
        timers = [super().get_timer()]
        if self._deadline is not None and not self.mls_complete():
            timers.append(self._deadline)
        if hasattr(self, "endpoint"):
            timers += [self.endpoint.next_timer(self._now), self.one_rtt.previous_until]
        return min((t for t in timers if t is not None), default=None)

    def run_endpoint(self, step: Callable[[], object]) -> None:
        """Run an endpoint step outside aioquic's handlers; a failure closes the connection with its alert."""
        try:
            step()
        except Exception as caught:  # ours or a library's: the connection closes with one reason
            self._close_for(as_project_error(caught))

    def _close_for(self, exc: MLSError) -> None:
        """Close with ``exc``'s alert as a transport error; a peer not yet authenticated learns only the code."""
        detailed = self.mls_complete()
        self.mls_failure = self.mls_failure or exc
        (log.warning if detailed else log.info)("MLS failed: %s: %s", type(exc).__name__, exc)
        self.close(error_code=error_code_for(exc), frame_type=TRANSPORT_CLOSE,
                   reason_phrase=reason_for(exc, "MLS: ", detailed=detailed))

    def trust_changed(self) -> None:
        """The trust configuration was replaced (mls2p.trust.TrustPolicy.replace): close if the peer is out."""
        if not self.mls_complete():
            return  # the handshake checks the peer against the configuration in force when it gets there
        self.run_endpoint(self.endpoint.check_peer)  # RevokedPeer: closed, logged with the peer's name
        if self.wakeup is not None:
            self.wakeup()

    def handle_timer(self, now: float) -> None:
        self._tick(now)
        if self._deadline is not None and now >= self._deadline and not self.mls_complete():
            self._deadline = None
            log.warning("QUIC: the peer did not complete the MLS handshake in time")
            self.close(error_code=CRYPTO_ERROR + AlertDescription.HANDSHAKE_FAILURE, frame_type=TRANSPORT_CLOSE,
                       reason_phrase="MLS: the peer did not complete the MLS handshake in time")
        if hasattr(self, "endpoint"):
            self.run_endpoint(lambda: self.act(self.endpoint.poll(now)))
        own = super().get_timer()
        if own is not None and now >= own:  # aioquic's handler assumes its own timer is the one that fired
            super().handle_timer(now)

    def receive_datagram(self, data: bytes, addr: tuple[str, int] | tuple[str, int, int, int], now: float) -> None:
        self._tick(now)
        super().receive_datagram(data, addr, now)
        self.after_receive()

    def after_receive(self) -> None:
        """Called after each datagram (alongside mode processes its MLS stream here)."""

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, tuple[str, int] | tuple[str, int, int, int]]]:
        self._tick(now)
        pair = self.one_rtt
        if pair.epoch is not None and (self.endpoint.rekey_due(now) or pair.packets_sealed >= PACKETS_PER_PHASE):
            self.run_endpoint(lambda: self.act(self.endpoint.want_new_keys(now)))
        self._flip_when_allowed()
        datagrams = super().datagrams_to_send(now)
        self.endpoint.record_sent(sum(len(data) for data, _ in datagrams))
        return datagrams
