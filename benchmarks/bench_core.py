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
from typing import Any, cast

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
from mls2p import ProfileConfig, RekeyPolicy, SendMessage, TwoPartySession
from mls2p.command import run_command
from mls2p.testing import Pair, apq_two_party, bundle, sent, two_party
from mlscore.crypto import XWING_SUITE
from mlscore.errors import StateError
from mlscore.group import CommitMessage, Group
from mlscore.messages import Add

median_ms = median_cpu_ms


def mlscore_commit_round(rounds: int) -> float:
    alice, bob = two_party()
    state = {"a": alice, "b": bob}

    def round_trip() -> None:
        out = state["a"].commit()
        # processing the peer's commit yields a CommitMessage
        state["b"] = cast(CommitMessage, state["b"].process(out.message.to_bytes())).group
        state["a"] = out.group
        state["a"], state["b"] = state["b"], state["a"]

    return median_ms(round_trip, rounds)


class ApqOperations:
    """Core-level rekeys, committer and receiver together, each timed on the same state every round (a commit
    leaves its sender unchanged): a classical rekey (suite 1), an X-Wing rekey (0x004D), and APQ-MLS's PARTIAL
    and FULL rekeys (T suite 1, PQ suite 0x0051: ML-KEM-1024 + Ed25519).  The profile does not carry APQ yet,
    so these are mlscore figures: the profile adds the EpochKeyUpdate and framing on top of each."""

    PQ_SUITE = 0x0051

    def __init__(self) -> None:
        self.classical = two_party(1)
        self.xwing = two_party(XWING_SUITE)
        self.apq = apq_two_party(1, self.PQ_SUITE)
        self.sizes: dict[str, int] = {}

    def operations(self) -> dict[str, Callable[[], object]]:
        return {"core_classical_rekey": functools.partial(self._rekey, "core_classical_rekey", self.classical),
                "core_xwing_rekey": functools.partial(self._rekey, "core_xwing_rekey", self.xwing),
                "apq_partial_rekey": self.partial, "apq_full_rekey": self.full}

    def _rekey(self, name: str, groups: tuple[Group, Group]) -> None:
        message = groups[0].commit().message.to_bytes()
        groups[1].process(message)
        self.sizes[name] = len(message)

    def partial(self) -> None:
        message, _ = self.apq[0].commit_partial()
        self.apq[1].process_partial(message.to_bytes())
        self.sizes["apq_partial_rekey"] = len(message.to_bytes())

    def full(self) -> None:
        full = self.apq[0].commit_full()
        pq, t = full.pq_message.to_bytes(), full.t_message.to_bytes()
        self.apq[1].process_full(pq, t)
        self.sizes["apq_full_rekey"] = len(pq) + len(t)


def apq_figures(ms: dict[str, float], sizes: dict[str, int]) -> dict[str, float | str]:
    """APQ's costs against classical and X-Wing-every-time, and the average rekey at 1 FULL per N."""
    figures: dict[str, float | str] = {}
    for name in ("core_classical_rekey", "core_xwing_rekey", "apq_partial_rekey", "apq_full_rekey"):
        figures[f"{name}_ms"], figures[f"{name}_bytes"] = ms[name], sizes[name]
    for every in (10, 100):
        average_ms = (ms["apq_full_rekey"] + (every - 1) * ms["apq_partial_rekey"]) / every
        average_bytes = (sizes["apq_full_rekey"] + (every - 1) * sizes["apq_partial_rekey"]) / every
        figures[f"apq_rekey_ms_full_every_{every}"] = average_ms
        figures[f"apq_rekey_bytes_full_every_{every}"] = average_bytes
        figures[f"apq_full_every_{every}_vs_classical"] = average_ms / ms["core_classical_rekey"]
        figures[f"apq_full_every_{every}_vs_xwing"] = average_ms / ms["core_xwing_rekey"]
        figures[f"apq_full_every_{every}_bytes_vs_classical"] = average_bytes / sizes["core_classical_rekey"]
    figures["apq_full_vs_classical"] = ms["apq_full_rekey"] / ms["core_classical_rekey"]
    figures["core_xwing_vs_classical"] = ms["core_xwing_rekey"] / ms["core_classical_rekey"]
    return figures


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

    def __init__(self, suite_id: int = 1, prefix: str = "", **overrides: Any) -> None:
        self.pair = Pair(suite_id, **overrides)
        self.prefix = prefix
        self.sizes: dict[str, int] = {}

    def operations(self) -> dict[str, Callable[[], object]]:
        """Named ``<prefix><operation>``; sizes are recorded under the same names."""
        return {f"{self.prefix}rekey": self.rekey, f"{self.prefix}phase1": self.establish,
                f"{self.prefix}resumption": self.resume}

    def rekey(self, full: bool = False, name: str = "rekey") -> None:
        pair, sizes = self.pair, self.sizes

        update = pair.alice.update(full=full)
        reply = pair.bob.receive(sent(update)[0])
        pair.alice.receive(sent(reply)[0])
        sizes[f"{self.prefix}{name}"] = sum(len(a.data) for a in update + reply if isinstance(a, SendMessage))

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


class ApqProfileOperations(ProfileOperations):
    """The same through the profile with APQ (T suite 1, PQ 0x0051): a PARTIAL rekey, a FULL one (ConnectionUpdate
    and EpochKeyUpdate), key establishment (the Welcome pair) and resumption (two FULL commits)."""

    def __init__(self) -> None:
        super().__init__(1, "apq_profile_", apq="require", rekey=RekeyPolicy(full_every=None))
        self.rekey(full=True)  # the joiner's first commit is FULL: from now on ``rekey`` is PARTIAL

    def operations(self) -> dict[str, Callable[[], object]]:
        return {**super().operations(), "apq_profile_full_rekey": functools.partial(self.rekey, True, "full_rekey")}


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
    apq = ApqOperations()
    apq_profile = ApqProfileOperations()
    try:
        primitives = floor_primitives()
        ms = interleaved_medians_ms({"openssl_handshake": handshake, **primitives, **profile.operations(),
                                     **xwing.operations(), **apq.operations(), **apq_profile.operations()}, rounds)
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
        **apq_figures(ms, apq.sizes),
        **{f"apq_profile_{name}_{unit}": value for name in APQ_PROFILE for unit, value in (
            ("ms", ms[f"apq_profile_{name}"]), ("bytes", apq_profile.sizes[f"apq_profile_{name}"]),
            ("vs_suite1", ms[f"apq_profile_{name}"] / ms[APQ_PROFILE[name]]),
            ("bytes_vs_suite1", apq_profile.sizes[f"apq_profile_{name}"] / profile.sizes[APQ_PROFILE[name]]))},
        **versions(),
    }
    if mlsrs.MLSRS_AVAILABLE:
        theirs = 1000 * mlsrs_commit_round_seconds(rounds)
        figures.update(mlsrs_commit_round_ms=theirs, commit_round_vs_mlsrs=float(figures["commit_round_ms"]) / theirs,
                       mlsrs_version="agentvault-mls-rs-uniffi 0.1.1")
    return figures


APQ_PROFILE = {"rekey": "rekey", "full_rekey": "rekey", "phase1": "phase1", "resumption": "resumption"}
"""The profile's APQ operations and the suite-1 operation each is compared with."""


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
    for name, label in (("core_classical_rekey", "core rekey, suite 1"), ("core_xwing_rekey", "core rekey, X-Wing"),
                        ("apq_partial_rekey", "APQ PARTIAL rekey"), ("apq_full_rekey", "APQ FULL rekey")):
        print(f"{label:24} {float(figures[f'{name}_ms']):7.3f} ms, {figures[f'{name}_bytes']:6} bytes")
    for every in (10, 100):
        print(f"APQ, 1 FULL per {every:3}: {float(figures[f'apq_rekey_ms_full_every_{every}']):7.3f} ms and "
              f"{float(figures[f'apq_rekey_bytes_full_every_{every}']):7.0f} bytes per rekey: "
              f"{float(figures[f'apq_full_every_{every}_vs_classical']):.2f}x classical, "
              f"{float(figures[f'apq_full_every_{every}_vs_xwing']):.2f}x X-Wing every time")
    for name in APQ_PROFILE:
        print(f"profile with APQ {name:10} {float(figures[f'apq_profile_{name}_ms']):7.3f} ms, "
              f"{figures[f'apq_profile_{name}_bytes']:5} bytes: {float(figures[f'apq_profile_{name}_vs_suite1']):.2f}x "
              f"the time and {float(figures[f'apq_profile_{name}_bytes_vs_suite1']):.2f}x the bytes of suite 1's "
              f"{APQ_PROFILE[name]}")
    print(f"rekey vs crypto floor: {float(figures['rekey_vs_crypto_floor']):.2f}x")
    if "commit_round_vs_mlsrs" in figures:
        print(f"commit round: mlscore {float(figures['commit_round_ms']):.3f} ms, mls-rs "
              f"{float(figures['mlsrs_commit_round_ms']):.3f} ms, ratio {float(figures['commit_round_vs_mlsrs']):.2f}")
    write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
