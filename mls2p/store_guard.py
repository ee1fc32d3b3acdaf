"""A session store that cannot stall the event loop it is called from for long (docs/fleet.md).

Store calls are synchronous (the profile's :class:`~mls2p.store.SessionStore`),
and a transport makes them inside its event loop.  A store that *refuses* fails
fast; one that *hangs* (a stopped Redis, a stalled host, a full disk) would hold
the loop, and every link on it, for as long as its client waits.
:class:`GuardedStore` bounds that:

* each call runs on a small worker pool and is waited for at most ``deadline``
  seconds (:class:`~mls2p.errors.StoreUnavailable` after it; the call itself
  is abandoned, not cancelled: a write may still land later, which the fenced
  writes handle like a crash right after the write);
* at most ``max_in_flight`` calls are outstanding: a hung store keeps its
  workers, and further calls fail at once instead of queueing behind them;
* a call that times out or cannot reach the store opens the circuit, and
  every call fails at once until the store answers again; so does a write
  that too few replicas acknowledged (``replicas``: each held its caller for
  the store's replica timeout), until they acknowledge again.  A store with a
  ``ping()`` (the Redis store) is probed by a thread of the guard's own every
  ``cool_down`` seconds (doubling up to ``max_cool_down``, a second), so no caller ever
  waits for a probe; for a store without one, one call is let through after
  each cool-down.

So a hung Redis costs the loop one ``deadline``, once per outage, instead of
the client's whole timeout and retries per call.  What a failed call means
for a connection is the bootstrap's business: a rekey of ours is abandoned and
tried later, a peer's commit waits (mls2p.bootstrap), a resumption fails at once.

This is an I/O adapter, like :mod:`mls2p.redis_store`: it owns threads and a
clock, and the sans-I/O session never sees it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import StaleStateError, StoredStateError, StoreError, StoreUnavailable
from .store import SessionStore

log = logging.getLogger(__name__)

T = TypeVar("T")

DEADLINE = 0.05
"""Seconds a store call may hold the caller: a same-site Redis answers in about a millisecond."""
MAX_IN_FLIGHT = 4
COOL_DOWN = 0.5
MAX_COOL_DOWN = 1.0
"""At most this long between probes: a probe is one round trip from the guard's own thread, and a longer wait
would keep the circuit open (rekeys put off) that long after the store is back."""


@dataclass
class GuardCounters:
    """What the guard saw, for status and metrics."""

    calls: int = 0
    timeouts: int = 0
    failures: int = 0
    fast_failures: int = 0  # refused at once: the circuit was open or too many calls were outstanding
    circuit_opened: int = 0


class GuardedStore:
    """Wrap ``store`` so that no call holds its caller for more than ``deadline`` seconds (see the module)."""

    def __init__(self, store: SessionStore, *, deadline: float = DEADLINE, max_in_flight: int = MAX_IN_FLIGHT,
                 cool_down: float = COOL_DOWN, max_cool_down: float = MAX_COOL_DOWN,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.deadline = deadline
        self.max_in_flight = max_in_flight
        self.cool_down = cool_down
        self.max_cool_down = max_cool_down
        self.clock = clock
        self.counters = GuardCounters()
        self._pool = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="session-store")
        self._lock = threading.Lock()
        self._in_flight = 0
        self._open_until: float | None = None  # the circuit is open (calls fail at once) until then
        self._next_cool_down = cool_down
        # the prober's check: "would a write count as stored?" (with replica acknowledgement, more than a ping)
        self._ping: Callable[[], object] | None = getattr(store, "check_writable", None) or getattr(store, "ping",
                                                                                                    None)
        self._prober: threading.Thread | None = None
        self._closing = threading.Event()

    def __repr__(self) -> str:
        return f"GuardedStore({self.store!r}, deadline={self.deadline}, circuit={'open' if self.is_open else 'closed'})"

    @property
    def is_open(self) -> bool:
        if self._ping is not None:
            return self._open_until is not None  # until the prober hears the store answer
        return self._open_until is not None and self.clock() < self._open_until

    def report(self) -> dict[str, Any]:
        """For status and metrics: whether calls go through now, and the counters."""
        return {"available": not self.is_open, **dataclasses.asdict(self.counters)}

    def save(self, group_id: bytes, state: bytes, *, replaces: bytes | None) -> None:
        self._call(lambda: self.store.save(group_id, state, replaces=replaces))

    def load(self, group_id: bytes) -> bytes | None:
        return self._call(lambda: self.store.load(group_id))

    def delete(self, group_id: bytes, *, replaces: bytes | None) -> None:
        self._call(lambda: self.store.delete(group_id, replaces=replaces))

    def group_ids(self) -> list[bytes]:
        return self._call(self.store.group_ids)

    def _call(self, operation: Callable[[], T]) -> T:
        self.counters.calls += 1
        with self._lock:
            if self.is_open or self._in_flight >= self.max_in_flight:
                self.counters.fast_failures += 1
                why = "marked down after a failure" if self.is_open else "too many store calls outstanding"
                raise StoreUnavailable(f"the session store is unavailable ({why}); try again later")
            self._in_flight += 1
        future: Future[T] = self._pool.submit(operation)
        future.add_done_callback(self._finished)
        try:
            result = future.result(timeout=self.deadline)
        except FutureTimeout:
            self.counters.timeouts += 1
            self._trip(f"no answer within {self.deadline * 1000:.0f} ms")
            error = StoreUnavailable(f"the session store did not answer within {self.deadline * 1000:.0f} ms")
            error.late = future  # it may still land: the bootstrap's writer settles it before its next write
            raise error from None
        except (StaleStateError, StoredStateError):
            self._healthy()  # the store answered: it is up, and said no
            raise
        except StoreUnavailable as exc:
            # The store answered, but could not take the write as asked: too few replicas acknowledged it, each
            # such write having held its caller for the replica timeout.  Open the circuit too: the prober asks
            # for acknowledgements, and calls fail at once until replicas answer.
            self.counters.failures += 1
            self._trip(str(exc))
            raise
        except StoreError as exc:
            self.counters.failures += 1
            self._trip(str(exc))
            raise StoreUnavailable(f"the session store failed: {exc}") from exc
        self._healthy()
        return result

    def _finished(self, call: Future[Any]) -> None:
        """A worker finished a call (in its thread).  One that answered closes the circuit, even after its caller
        gave up on it: a store that was only slow for a moment (a loaded machine) is up again at once, while a
        hung one never gets here."""
        with self._lock:
            self._in_flight -= 1
        if not call.cancelled() and (call.exception() is None
                                     or isinstance(call.exception(), (StaleStateError, StoredStateError))):
            self._healthy()

    def _trip(self, why: str) -> None:
        with self._lock:
            first = self._open_until is None
            self._open_until = self.clock() + self._next_cool_down
            self._next_cool_down = min(self.max_cool_down, self._next_cool_down * 2)
            start_prober = self._ping is not None and (self._prober is None or not self._prober.is_alive())
            if start_prober:
                self._prober = threading.Thread(target=self._probe, name="session-store-probe", daemon=True)
                self._prober.start()
        self.counters.circuit_opened += 1
        if self._ping is not None:
            (log.warning if first else log.info)("session store unavailable (%s): store calls fail at once until "
                                                 "it answers again", why)
        else:
            (log.warning if first else log.info)("session store unavailable (%s): store calls fail at once for the "
                                                 "next %.1f s", why, self._open_until - self.clock())

    def _probe(self) -> None:
        """The prober thread: ping the store every cool-down (doubling) until it answers, then close the circuit."""
        assert self._ping is not None
        interval = self.cool_down
        while not self._closing.wait(interval):
            try:
                self._ping()
            except StoreError:  # StoreUnavailable too: replicas still do not acknowledge
                interval = min(self.max_cool_down, interval * 2)
                continue
            self._healthy()
            return

    def _healthy(self) -> None:
        with self._lock:
            was_open = self._open_until is not None
            self._open_until = None
            self._next_cool_down = self.cool_down
        if was_open:
            log.warning("session store answers again")

    def close(self) -> None:
        """Stop the workers and the prober (calls still outstanding are abandoned)."""
        self._closing.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
