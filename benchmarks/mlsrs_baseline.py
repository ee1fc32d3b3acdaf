"""AWS mls-rs timings (suite 1, two parties) to set our own numbers against, taken in the same run.

    python -m benchmarks.mlsrs_baseline [--rounds N] [--json FILE]

Both figures go through :class:`interop.mlsrs_peer.MlsRsPeer`, so they include
the same MLSMessage encode/decode our own implementation pays for, plus the
UniFFI call overhead (a few microseconds per call).  Each is the median of
``rounds`` samples after a warm-up, because shared machines are noisy.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

from benchmarks.report import versions, write_json
from interop.mlsrs_peer import MLSRS_AVAILABLE, MLSRS_REASON, MlsRsPeer

WARMUP = 5


def median_seconds(sample: Callable[[], float], rounds: int, warmup: int = WARMUP) -> float:
    """Median of ``rounds`` calls of ``sample`` (each returns the seconds it measured)."""
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    for _ in range(warmup):
        sample()
    return statistics.median(sample() for _ in range(rounds))


def _timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def _two_party_group() -> tuple[MlsRsPeer, MlsRsPeer]:
    alice, bob = MlsRsPeer.new(b"alice"), MlsRsPeer.new(b"bob")
    alice.create_group()
    _, welcome = alice.add(bob.key_package())
    alice.merge_pending()
    bob.join(welcome)
    return alice, bob


def mlsrs_commit_round_seconds(rounds: int) -> float:
    """Median time of one commit round: create an UpdatePath commit, merge it, the peer processes it.

    The two members take turns committing, as in the two-party profile.
    """
    peers = list(_two_party_group())

    def commit_round() -> None:
        sender, receiver = peers
        commit = sender.commit_update()
        sender.merge_pending()
        receiver.process(commit)
        peers.reverse()

    return median_seconds(lambda: _timed(commit_round), rounds)


def mlsrs_setup_seconds(rounds: int) -> float:
    """Median time of a two-party setup: create a group, KeyPackage, Add commit + merge, join from the Welcome.

    Client creation (signature key generation) is outside the timed part:
    an MlsRsPeer holds one group, so each sample needs fresh ones.
    """

    def setup() -> float:
        alice, bob = MlsRsPeer.new(b"alice"), MlsRsPeer.new(b"bob")

        def two_party() -> None:
            alice.create_group()
            _, welcome = alice.add(bob.key_package())
            alice.merge_pending()
            bob.join(welcome)

        return _timed(two_party)

    return median_seconds(setup, rounds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200, help="samples per figure (default 200)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if not MLSRS_AVAILABLE:
        print(f"skipped: {MLSRS_REASON}")
        write_json(args.json, {"mlsrs_available": 0})
        return 0
    commit_ms, setup_ms = 1000 * mlsrs_commit_round_seconds(args.rounds), 1000 * mlsrs_setup_seconds(args.rounds)
    print(f"mls-rs commit round (suite 1, 2 members): {commit_ms:.3f} ms")
    print(f"mls-rs two-party setup (KeyPackage + Add + join): {setup_ms:.3f} ms")
    write_json(args.json, {"mlsrs_available": 1, "mlsrs_commit_round_ms": commit_ms, "mlsrs_setup_ms": setup_ms,
                           **versions("agentvault-mls-rs-uniffi")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
