"""Every benchmark, in a few seconds each, writing valid JSON with the keys it promises (run by .ci/run).

    python -m benchmarks.smoke

Speed is never judged here (CI machines are shared and noisy): this only
proves that each benchmark runs to the end and that its ``--json`` output is a
flat object of named numbers carrying its stable keys.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.report import check_figures

SMOKE_RUNS = {  # module: (tiny arguments, keys its JSON must have)
    "bench_core": (["--rounds", "5"], ["rekey_vs_openssl_handshake", "phase1_vs_openssl_handshake",
                                      "apq_full_every_10_vs_classical", "apq_full_every_100_vs_xwing",
                                      "apq_profile_rekey_vs_suite1", "apq_profile_full_rekey_bytes",
                                       "resumption_vs_openssl_handshake", "rekey_vs_crypto_floor",
                                       "xwing_rekey_vs_suite1", "xwing_phase1_bytes", "xwing_rekey_bytes",
                                       "openssl_handshake_ms", "rekey_ms", "rekey_bytes", "openssl_version"]),
    "bench_tls": (["--seconds", "0.2", "--rounds", "1"], ["alongside_throughput_vs_ssl",
                                                          "alongside_rekey_throughput_vs_ssl",
                                                          "in_place_throughput_vs_ssl", "ssl_throughput_mb_s",
                                                          "housley_throughput_vs_tlslite",
                                                          "housley_rekey_throughput_vs_tlslite",
                                                          "housley_setup_vs_tlslite"]),
    "bench_quic": (["--seconds", "0.2", "--rounds", "1"], ["quic_handshake_vs_aioquic", "quic_bulk_vs_aioquic",
                                                           "quic_bulk_rekey_vs_aioquic", "aioquic_version"]),
    "bench_scale": (["--connections", "10", "--window", "1"], ["rss_per_idle_connection_kb_n10",
                                                               "rekeys_per_second_n10", "rekeys_per_cpu_second_n10"]),
    "bench_hostile": (["--rounds", "1"], ["honest_hello_cpu_ms", "largest_hello_vs_honest_hello",
                                          "unauthenticated_mb_200", "state_files_after_1000_replays"]),
    "bench_tunnel_restart": (["--rounds", "1"], ["first_start_seconds", "both_killed_seconds"]),
    "mlsrs_baseline": (["--rounds", "5"], ["mlsrs_available"]),
    "bench_fleet": (["--rounds", "2"], ["redis_round_trips_resumption", "redis_round_trips_client_rekey",
                                        "resume_fleet_vs_local", "rekey_fleet_vs_local",
                                        "resume_sentinel_vs_local", "rekey_sentinel_wait_vs_local",
                                        "resume_cluster_vs_local", "rekey_cluster_vs_local", "redis_server_version"]),
}


def smoke(module: str, arguments: list[str], keys: list[str], folder: Path) -> str | None:
    """None if ``module`` ran and wrote what it promises, else what went wrong."""
    out = folder / f"{module}.json"
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", *arguments, "--json", str(out)],
                         capture_output=True, text=True, timeout=600)
    took = time.monotonic() - started
    if run.returncode != 0:
        return f"exit status {run.returncode}: {run.stderr.strip()[-500:]}"
    try:
        figures = json.loads(out.read_text())
        if not isinstance(figures, dict):
            return "the JSON is not an object"
        check_figures(figures)
    except (OSError, ValueError) as exc:
        return f"bad JSON: {exc}"
    missing = [key for key in keys if key not in figures]
    if missing:
        return f"missing keys {missing}"
    print(f"ok   {module:22} {len(figures):3} figures in {took:5.1f} s")
    return None


def main() -> int:
    failures = 0
    with tempfile.TemporaryDirectory(prefix="bench-smoke-") as name:
        for module, (arguments, keys) in SMOKE_RUNS.items():
            problem = smoke(module, arguments, keys, Path(name))
            if problem is not None:
                print(f"FAIL {module}: {problem}", file=sys.stderr)
                failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
