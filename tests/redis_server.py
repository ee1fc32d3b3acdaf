"""A real redis-server for the tests: started and stopped by the test itself, with AOF fsync on every write.

Without redis-server these tests cannot prove anything, so under CI
(``CI=true``) a missing binary is a failure (``.ci/run`` installs it); on a
developer machine they are skipped with the same message.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import benchmarks.fleet

WHERE = "redis-server is not installed (Debian: apt-get install redis-server; .ci/run installs it)"


def require_redis() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(WHERE + " (required under CI=true)", pytrace=False)
        pytest.skip(WHERE)
    try:
        import redis  # noqa: F401
    except ImportError:
        pytest.skip("the redis package is not installed: pip install -e '.[redis]'")
    return binary


class RedisServer(benchmarks.fleet.RedisServer):
    """The harness's redis-server; skips (or, under CI, fails) the test when it is not installed."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder, require_redis())
