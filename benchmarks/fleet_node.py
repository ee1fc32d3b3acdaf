"""One fleet node: the real ``mls-tunnel server`` or QUIC demo server, for the fleet test and benchmark.

    python -m benchmarks.fleet_node tunnel server --listen ... --store redis://... (mls-tunnel's options)
    python -m benchmarks.fleet_node quic server --port ... --store redis://...    (examples.quic_demo's)

With ``FLEET_DIE_AFTER_COMMITS=N`` in the environment the node kills itself
with SIGKILL right after the Nth time it *stored* one of its own commits
(state "awaiting EpochKeyUpdate"), before the commit is sent: the worst
moment for a crash, since the store is ahead of what any client has seen.
This is fault injection for tests only; the servers themselves are unchanged.
"""

from __future__ import annotations

import os
import signal
import sys

from mls2p.persistence import STATE_CODES
from mls2p.redis_store import RedisSessionStore
from mls2p.transitions import State

AWAITING_EPOCH_KEY_UPDATE = STATE_CODES[State.AWAITING_EPOCH_KEY_UPDATE]
STATE_OFFSET = 2
"""The state code's position in the stored format (after the u16 format number)."""


def die_after_commits(count: int) -> None:
    save = RedisSessionStore.save
    stored = 0

    def save_then_maybe_die(self: RedisSessionStore, group_id: bytes, state: bytes, *, replaces: bytes | None
                            ) -> None:
        nonlocal stored
        save(self, group_id, state, replaces=replaces)
        if state[STATE_OFFSET] == AWAITING_EPOCH_KEY_UPDATE:
            stored += 1
            if stored >= count:
                os.kill(os.getpid(), signal.SIGKILL)

    RedisSessionStore.save = save_then_maybe_die  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    if os.environ.get("FLEET_DIE_AFTER_COMMITS"):
        die_after_commits(int(os.environ["FLEET_DIE_AFTER_COMMITS"]))
    verbose = argv[:1] == ["-v"]  # the node's own log lines (no secrets), kept by the harness
    kind, rest = argv[verbose], argv[verbose + 1:]
    if verbose:
        rest = ["-v", *rest] if kind == "tunnel" else [*rest, "-v"]
    if kind == "tunnel":
        from mlstls.cli import main as tunnel_main

        return tunnel_main(rest)
    from examples.quic_demo import main as quic_main

    return quic_main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
