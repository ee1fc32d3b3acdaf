"""Speed of the MLS core and the two-party profile, next to AWS mls-rs measured in the same run.

    python -m benchmarks.bench_core [--rounds N]

Timings on shared machines are noisy, so only ratios against a baseline taken
in the same run are meaningful; each figure is the median of N rounds.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from typing import cast

from benchmarks.mlsrs_baseline import mlsrs_commit_round_seconds, mlsrs_setup_seconds
from interop import mlsrs
from mls2p import SendMessage, TwoPartySession
from mls2p.command import run_command
from mls2p.testing import Pair, bundle, config, pump, sent
from mlscore.errors import StateError
from mlscore.group import CommitMessage, Group
from mlscore.messages import Add


def median_ms(fn: Callable[[], object], rounds: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return 1000 * statistics.median(samples)


def mlscore_commit_round(rounds: int) -> float:
    alice = Group.create(bundle(b"alice"))
    bob_bundle = bundle(b"bob")
    result = alice.commit([Add(bob_bundle.key_package)], force_path=False)
    if result.welcome is None:  # a commit with an Add always has a Welcome
        raise StateError("the commit adding bob has no Welcome")
    state = {"a": result.group, "b": Group.join(result.welcome, bob_bundle)}

    def round_trip() -> None:
        out = state["a"].commit()
        # processing the peer's commit yields a CommitMessage
        state["b"] = cast(CommitMessage, state["b"].process(out.message.to_bytes())).group
        state["a"] = out.group
        state["a"], state["b"] = state["b"], state["a"]

    return median_ms(round_trip, rounds)


def mlscore_setup() -> float:
    def setup() -> None:
        alice = Group.create(bundle(b"alice"))
        bob_bundle = bundle(b"bob")
        result = alice.commit([Add(bob_bundle.key_package)], force_path=False)
        if result.welcome is None:  # a commit with an Add always has a Welcome
            raise StateError("the commit adding bob has no Welcome")
        Group.join(result.welcome, bob_bundle)

    return median_ms(setup, 30)


def profile_costs(rounds: int) -> dict[str, float]:
    pair = Pair()
    sizes: dict[str, int] = {}

    def rekey() -> None:
        update = pair.alice.update()
        reply = pair.bob.receive(sent(update)[0])
        pair.alice.receive(sent(reply)[0])
        sizes["rekey"] = sum(len(a.data) for a in update + reply if isinstance(a, SendMessage))

    def establish() -> None:
        alice, hello = TwoPartySession.initiator(config(b"a"))
        bob = TwoPartySession.responder(config(b"b"))
        reply = bob.receive(sent(hello)[0])
        alice.receive(sent(reply)[0])
        sizes["phase1"] = len(sent(hello)[0]) + len(sent(reply)[0])

    def resume() -> None:
        pair.alice.connection_lost()  # each resumption is a new connection
        pair.bob.connection_lost()
        request = sent(pair.alice.resume())
        sizes["resumption"] = len(request[0])
        response = sent(pair.bob.receive(request[0]))
        ack = sent(pair.alice.receive(response[0]))
        pair.bob.receive(ack[0])
        sizes["resumption"] += len(response[0]) + len(ack[0])

    out = {"rekey_ms": median_ms(rekey, rounds), "phase1_ms": median_ms(establish, 30),
           "resumption_ms": median_ms(resume, 30)}
    out.update({f"{k}_bytes": v for k, v in sizes.items()})
    pump(pair.alice, pair.bob, [])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return run_command(functools.partial(report, args), prog="bench_core", verbose=args.verbose)


def report(args: argparse.Namespace) -> int:
    ours = mlscore_commit_round(args.rounds)
    print(f"commit round (suite 1, create + merge + peer processes): mlscore {ours:.3f} ms")
    if mlsrs.MLSRS_AVAILABLE:
        theirs = 1000 * mlsrs_commit_round_seconds(args.rounds)
        print(f"                                                          mls-rs  {theirs:.3f} ms")
        print(f"  ratio mlscore/mls-rs = {ours / theirs:.2f} (goal <= 1.00)")
        setup_ours, setup_theirs = mlscore_setup(), 1000 * mlsrs_setup_seconds(30)
        print(f"two-party setup (KeyPackage + Add + Welcome + join): mlscore {setup_ours:.3f} ms, "
              f"mls-rs {setup_theirs:.3f} ms, ratio {setup_ours / setup_theirs:.2f}")
    else:
        print(f"mls-rs baseline skipped: {mlsrs.MLSRS_REASON}")
    costs = profile_costs(args.rounds)
    print(f"profile PCS rekey (ConnectionUpdate + EpochKeyUpdate, both sides): {costs['rekey_ms']:.3f} ms, "
          f"{costs['rekey_bytes']} bytes")
    print(f"profile phase 1 (ClientHello + ServerHello, both sides): {costs['phase1_ms']:.3f} ms, "
          f"{costs['phase1_bytes']} bytes")
    print(f"profile resumption (Request + Response + EpochKeyUpdate): {costs['resumption_ms']:.3f} ms, "
          f"{costs['resumption_bytes']} bytes")
    if mlsrs.MLSRS_AVAILABLE:
        print(f"  rekey / mls-rs commit round = {costs['rekey_ms'] / theirs:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
