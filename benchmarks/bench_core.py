"""Cost of the MLS core and the two-party profile, against baselines measured in the same run.

    python -m benchmarks.bench_core [--rounds N] [--json FILE]

Baselines: a real OpenSSL TLS 1.3 full handshake (stdlib ssl, memory BIOs,
X25519, Ed25519 certificate, no tickets), the crypto floor of one rekey, and
AWS mls-rs.  Timings on shared machines are noisy, so only ratios against a
baseline taken in the same run are meaningful; each figure is the median CPU
time of N rounds.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from typing import cast

from benchmarks.baselines import (
    OpenSslHandshake,
    floor_primitives,
    interleaved_medians_ms,
    median_cpu_ms,
    rekey_floor_ms,
)
from benchmarks.mlsrs_baseline import mlsrs_commit_round_seconds
from benchmarks.report import versions, write_json
from interop import mlsrs
from mls2p import ProfileConfig, SendMessage, TwoPartySession
from mls2p.command import run_command
from mls2p.testing import Pair, bundle, sent
from mlscore.crypto import XWING_SUITE
from mlscore.errors import StateError
from mlscore.group import CommitMessage, Group
from mlscore.messages import Add

median_ms = median_cpu_ms


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


class ProfileOperations:
    """One PCS rekey, one key establishment and one resumption per call, both sides, persisting."""

    def __init__(self, suite_id: int = 1, prefix: str = "") -> None:
        self.pair = Pair(suite_id)
        self.prefix = prefix
        self.sizes: dict[str, int] = {}

    def operations(self) -> dict[str, Callable[[], object]]:
        """Named ``<prefix><operation>``; sizes are recorded under the same names."""
        return {f"{self.prefix}rekey": self.rekey, f"{self.prefix}phase1": self.establish,
                f"{self.prefix}resumption": self.resume}

    def rekey(self) -> None:
        pair, sizes = self.pair, self.sizes

        update = pair.alice.update()
        reply = pair.bob.receive(sent(update)[0])
        pair.alice.receive(sent(reply)[0])
        sizes[f"{self.prefix}rekey"] = sum(len(a.data) for a in update + reply if isinstance(a, SendMessage))

    def establish(self) -> None:
        alice, hello = TwoPartySession.initiator(self.alice_config)
        bob = TwoPartySession.responder(self.bob_config)
        reply = bob.receive(sent(hello)[0])
        alice.receive(sent(reply)[0])
        self.sizes[f"{self.prefix}phase1"] = len(sent(hello)[0]) + len(sent(reply)[0])

    def resume(self) -> None:
        pair = self.pair
        pair.alice.connection_lost()  # each resumption is a new connection
        pair.bob.connection_lost()
        request = sent(pair.alice.resume())
        response = sent(pair.bob.receive(request[0]))
        ack = sent(pair.alice.receive(response[0]))
        pair.bob.receive(ack[0])
        self.sizes[f"{self.prefix}resumption"] = len(request[0]) + len(response[0]) + len(ack[0])

    @property
    def alice_config(self) -> ProfileConfig:
        return self.pair.alice_config

    @property
    def bob_config(self) -> ProfileConfig:
        return self.pair.bob_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--json", help="also write every figure to this file (stable keys)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return run_command(functools.partial(report, args), prog="bench_core", verbose=args.verbose)


def measure(rounds: int) -> dict[str, float | str]:
    """Every figure of this benchmark, under stable keys.

    The TLS handshake, the floor's primitives and the profile operations take
    turns round by round, so every ratio compares figures taken side by side.
    """
    handshake = OpenSslHandshake()
    profile = ProfileOperations()
    xwing = ProfileOperations(XWING_SUITE, prefix="xwing_")
    try:
        primitives = floor_primitives()
        ms = interleaved_medians_ms({"openssl_handshake": handshake, **primitives, **profile.operations(),
                                     **xwing.operations()}, rounds)
    finally:
        handshake.close()
    floor = rekey_floor_ms(ms)
    tls_ms = ms["openssl_handshake"]
    figures: dict[str, float | str] = {
        "openssl_handshake_ms": tls_ms, "openssl_handshake_bytes": handshake.bytes_on_wire,
        "openssl_version": handshake.version,
        **{f"floor_{name}_ms": ms[name] for name in primitives}, "floor_rekey_floor_ms": floor,
        **{f"{name}_ms": ms[name] for name in ("rekey", "phase1", "resumption")},
        **{f"{name}_bytes": size for name, size in (profile.sizes | xwing.sizes).items()},
        **{f"xwing_{name}_ms": ms[f"xwing_{name}"] for name in ("rekey", "phase1", "resumption")},
        **{f"xwing_{name}_vs_suite1": ms[f"xwing_{name}"] / ms[name] for name in ("rekey", "phase1", "resumption")},
        **{f"xwing_{name}_bytes_vs_suite1": xwing.sizes[f"xwing_{name}"] / profile.sizes[name]
           for name in ("rekey", "phase1", "resumption")},
        "rekey_vs_openssl_handshake": ms["rekey"] / tls_ms,
        "phase1_vs_openssl_handshake": ms["phase1"] / tls_ms,
        "resumption_vs_openssl_handshake": ms["resumption"] / tls_ms,
        "rekey_vs_crypto_floor": ms["rekey"] / floor,
        "commit_round_ms": mlscore_commit_round(rounds),
        **versions(),
    }
    if mlsrs.MLSRS_AVAILABLE:
        theirs = 1000 * mlsrs_commit_round_seconds(rounds)
        figures.update(mlsrs_commit_round_ms=theirs, commit_round_vs_mlsrs=float(figures["commit_round_ms"]) / theirs,
                       mlsrs_version="agentvault-mls-rs-uniffi 0.1.1")
    return figures


def report(args: argparse.Namespace) -> int:
    figures = measure(args.rounds)
    tls = float(figures["openssl_handshake_ms"])
    print(f"baseline: OpenSSL TLS 1.3 full handshake ({figures['openssl_version']}): {tls:.3f} ms CPU, "
          f"{figures['openssl_handshake_bytes']} bytes; crypto floor of one rekey "
          f"{float(figures['floor_rekey_floor_ms']):.3f} ms")
    for name in ("rekey", "phase1", "resumption"):
        ms = float(figures[f"{name}_ms"])
        print(f"profile {name:10} {ms:7.3f} ms CPU (both sides), {figures[f'{name}_bytes']:5} bytes, "
              f"{ms / tls:5.2f}x the TLS handshake")
    for name in ("rekey", "phase1", "resumption"):
        print(f"X-Wing suite 0x004D {name:10} {float(figures[f'xwing_{name}_ms']):7.3f} ms, "
              f"{figures[f'xwing_{name}_bytes']:5} bytes: {float(figures[f'xwing_{name}_vs_suite1']):.2f}x the time "
              f"and {float(figures[f'xwing_{name}_bytes_vs_suite1']):.2f}x the bytes of suite 1")
    print(f"rekey vs crypto floor: {float(figures['rekey_vs_crypto_floor']):.2f}x")
    if "commit_round_vs_mlsrs" in figures:
        print(f"commit round: mlscore {float(figures['commit_round_ms']):.3f} ms, mls-rs "
              f"{float(figures['mlsrs_commit_round_ms']):.3f} ms, ratio {float(figures['commit_round_vs_mlsrs']):.2f}")
    write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
