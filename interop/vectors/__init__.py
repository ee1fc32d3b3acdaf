"""Runner for the official RFC 9420 test vectors.

Each vector file has one checker module here that exposes
``check(entry: dict) -> None``; it raises on a mismatch and raises
:class:`VectorSkip` (with the reason) for an entry it cannot run.  The
command line (``python -m interop vectors``) and pytest both go through
:func:`run_file`, so they can never disagree.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

VECTOR_FILES = (
    "crypto-basics",
    "deserialization",
    "key-schedule",
    "message-protection",
    "messages",
    "passive-client-handling-commit",
    "passive-client-welcome",
    "psk_secret",
    "secret-tree",
    "transcript-hashes",
    "tree-math",
    "tree-operations",
    "tree-validation",
    "treekem",
    "welcome",
)


class VectorSkip(Exception):
    """An entry that cannot be run, with the reason."""


@dataclass(frozen=True)
class Outcome:
    file: str
    index: int
    cipher_suite: int | None
    status: str  # "passed", "failed" or "skipped"
    detail: str = ""


def default_dir() -> Path:
    """``$MLS_TEST_VECTORS``, else ``../shared/mls-test-vectors`` beside the repository."""
    env = os.environ.get("MLS_TEST_VECTORS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "mls-test-vectors"


def checker(name: str) -> Callable[[dict], None]:
    module = importlib.import_module(f"interop.vectors.{name.replace('-', '_')}")
    return module.check


def load(name: str, directory: Path | None = None) -> list[dict]:
    path = (directory or default_dir()) / f"{name}.json"
    with path.open() as handle:
        return json.load(handle)


def run_entry(name: str, index: int, entry: dict) -> Outcome:
    suite = entry.get("cipher_suite")
    try:
        checker(name)(entry)
    except VectorSkip as skip:
        return Outcome(name, index, suite, "skipped", str(skip))
    except Exception as exc:
        return Outcome(name, index, suite, "failed", f"{type(exc).__name__}: {exc}")
    return Outcome(name, index, suite, "passed")


def run_file(name: str, directory: Path | None = None) -> Iterator[Outcome]:
    for index, entry in enumerate(load(name, directory)):
        yield run_entry(name, index, entry)
