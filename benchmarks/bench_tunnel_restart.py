"""How long the tunnel takes to carry data again after its processes are killed (SIGKILL) and restarted.

    python -m benchmarks.bench_tunnel_restart [--rounds N] [--json FILE]

Real ``mls-tunnel`` processes on loopback with state folders; each scenario
kills, restarts, and measures wall time from the restart until 256 KiB go
through the tunnel and back intact.  Next to it, in the same run, the time of a
first start (fresh handshake) as the baseline.  Medians of N rounds.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from benchmarks.report import Figure, versions, write_json
from mls2p.command import run_command
from mlstls.testing import TunnelProcesses


async def timed(tunnel: TunnelProcesses, restart: Callable[[], Awaitable[None]]) -> float:
    started = time.monotonic()
    await restart()
    await tunnel.echo_through()
    return time.monotonic() - started


async def scenario(name: str) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-tunnel-") as folder:
        tunnel = TunnelProcesses(Path(folder))
        await tunnel.start_target()

        async def first_start() -> None:
            await tunnel.start_server()
            await tunnel.start_client()

        if name == "first start (fresh handshake)":
            seconds = await timed(tunnel, first_start)
            await tunnel.stop()
            return seconds
        await first_start()
        await tunnel.echo_through()

        async def restart() -> None:
            if name in ("client killed", "both killed"):
                await tunnel.kill(tunnel.client)
            if name in ("server killed", "both killed", "server lost its state"):
                await tunnel.kill(tunnel.server)
            if name == "server lost its state":
                shutil.rmtree(tunnel.server_dir / "sessions")
            if name != "client killed":
                await tunnel.start_server()
            if name in ("client killed", "both killed"):
                await tunnel.start_client()

        seconds = await timed(tunnel, restart)
        await tunnel.stop()
        return seconds


SCENARIOS = {  # label: JSON key prefix
    "first start (fresh handshake)": "first_start", "client killed": "client_killed",
    "server killed": "server_killed", "both killed": "both_killed", "server lost its state": "server_lost_state",
}


async def report(args: argparse.Namespace) -> int:
    results = {name: statistics.median([await scenario(name) for _ in range(args.rounds)]) for name in SCENARIOS}
    base = results["first start (fresh handshake)"]
    print(f"{'scenario':32} {'seconds to data again':>22} {'x first start':>14}")
    figures: dict[str, Figure] = {"rounds": args.rounds, **versions()}
    for name, median in results.items():
        print(f"{name:32} {median:22.2f} {median / base:14.2f}")
        figures[f"{SCENARIOS[name]}_seconds"] = median
        figures[f"{SCENARIOS[name]}_vs_first_start"] = median / base
    write_json(args.json, figures)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="also write the medians to this file")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return run_command(functools.partial(report, args), prog="bench_tunnel_restart", verbose=args.verbose)


if __name__ == "__main__":
    raise SystemExit(main())
