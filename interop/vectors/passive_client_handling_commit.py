"""passive-client-handling-commit.json: join, then follow commits and proposals epoch by epoch."""

from __future__ import annotations

from interop.vectors.passive_client import run_passive_client


def check(entry: dict) -> None:
    run_passive_client(entry)
