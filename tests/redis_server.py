"""A real redis-server for the tests: started and stopped by the test itself, with AOF fsync on every write.

Without redis-server these tests cannot prove anything, so under CI
(``CI=true``) a missing binary is a failure (``.ci/run`` installs it); on a
developer machine they are skipped with the same message.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from mlstls.testing import free_port

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


class RedisServer:
    """One redis-server on loopback, data in ``folder`` (AOF, appendfsync always): kill, restart, keep data."""

    def __init__(self, folder: Path) -> None:
        self.binary = require_redis()
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no",
             "--logfile", str(self.folder / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        import redis

        client = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if client.ping():
                    return
            except redis.RedisError:
                pass
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {(self.folder / 'redis.log').read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: what a crash or an OOM kill does; only fsynced AOF survives."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
            self.process = None
