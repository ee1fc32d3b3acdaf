"""Shared helpers for the transport benchmarks: interleaved rounds and ratio tables."""

from __future__ import annotations

import statistics
from collections.abc import Awaitable, Callable

Sample = tuple[float, float]  # (set-up seconds, MB/s)


async def interleaved(modes: dict[str, Callable[[], Awaitable[Sample]]], rounds: int) -> dict[str, list[Sample]]:
    """Run every mode once per round, so machine noise spreads over all of them alike."""
    results: dict[str, list[Sample]] = {name: [] for name in modes}
    for _ in range(rounds):
        for name, run in modes.items():
            results[name].append(await run())
    return results


def print_ratios(results: dict[str, list[Sample]], baseline: str, setup_label: str = "set-up") -> None:
    """Medians, and each mode's ratio to ``baseline`` measured in the same run."""
    base_setup = statistics.median(r[0] for r in results[baseline])
    base_rate = statistics.median(r[1] for r in results[baseline])
    print(f"{'':20} {setup_label + ' ms':>13} {'MB/s':>8} {setup_label + ' ratio':>16} {'throughput ratio':>17}")
    for name, samples in results.items():
        setup = statistics.median(s[0] for s in samples)
        rate = statistics.median(s[1] for s in samples)
        print(f"{name:20} {1000 * setup:13.2f} {rate:8.1f} {setup / base_setup:16.2f} {rate / base_rate:17.2f}")
