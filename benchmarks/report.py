"""Shared helpers for the benchmarks: interleaved rounds, ratio tables, and figures as JSON.

Every benchmark writes its figures with :func:`write_json` as one flat object
of named numbers (plus the versions of what was measured, as strings), so a
run can be compared with another by key: ``benchmarks/smoke.py`` checks the
shape and the keys each module promises.
"""

from __future__ import annotations

import json
import math
import platform
import ssl
import statistics
from collections.abc import Awaitable, Callable, Mapping
from importlib import metadata
from pathlib import Path

Sample = tuple[float, float]  # (set-up seconds, MB/s)
Figure = float | int | str


async def interleaved(modes: dict[str, Callable[[], Awaitable[Sample]]], rounds: int) -> dict[str, list[Sample]]:
    """Run every mode once per round, so machine noise spreads over all of them alike."""
    results: dict[str, list[Sample]] = {name: [] for name in modes}
    for _ in range(rounds):
        for name, run in modes.items():
            results[name].append(await run())
    return results


def medians(results: dict[str, list[Sample]]) -> dict[str, Sample]:
    """Each mode's median set-up time and median throughput."""
    return {name: (statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples))
            for name, samples in results.items()}


def print_ratios(results: dict[str, list[Sample]], baseline: str, setup_label: str = "set-up") -> None:
    """Medians, and each mode's ratio to ``baseline`` measured in the same run."""
    table = medians(results)
    base_setup, base_rate = table[baseline]
    print(f"{'':20} {setup_label + ' ms':>13} {'MB/s':>8} {setup_label + ' ratio':>16} {'throughput ratio':>17}")
    for name, (setup, rate) in table.items():
        print(f"{name:20} {1000 * setup:13.2f} {rate:8.1f} {setup / base_setup:16.2f} {rate / base_rate:17.2f}")


def versions(*packages: str) -> dict[str, str]:
    """What the figures were measured with: Python, OpenSSL, and the named packages."""
    found = {"python_version": platform.python_version(), "openssl_version": ssl.OPENSSL_VERSION}
    for package in ("cryptography", *packages):
        try:
            found[f"{package.lower()}_version"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[f"{package.lower()}_version"] = "not installed"
    return found


def check_figures(figures: Mapping[str, object]) -> None:
    """Raise ValueError unless ``figures`` is flat: names to finite numbers or strings."""
    for name, value in figures.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"figure name {name!r} is not a non-empty string")
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"figure {name} is {type(value).__name__}, not a number or a string")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"figure {name} is {value}")


def write_json(path: str | None, figures: Mapping[str, Figure]) -> None:
    """Write ``figures`` (checked) to ``path``, sorted by name; nothing when ``path`` is None."""
    check_figures(figures)
    if path:
        Path(path).write_text(json.dumps(dict(figures), indent=2, sort_keys=True) + "\n", encoding="utf-8")
