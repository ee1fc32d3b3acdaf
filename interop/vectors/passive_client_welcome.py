"""passive-client-welcome.json: join from a Welcome (tree in-band or given)."""

from __future__ import annotations

from interop.vectors.passive_client import run_passive_client


def check(entry: dict) -> None:
    run_passive_client(entry)
