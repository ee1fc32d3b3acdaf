"""The README's code runs as written: its shell snippet makes keys and trust files, its Python snippets
(a server, its client, a QUIC program) are saved under the names the README gives and run."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
GUARD = 60


def blocks(language: str) -> list[tuple[str, str]]:
    """(the paragraph before it, code) for each fenced block of ``language``."""
    text = README.read_text()
    return [(m.group(1), m.group(2)) for m in re.finditer(
        r"([^\n]*)\n\n```" + language + r"\n(.*?)```", text, re.DOTALL)]


def wait_for_port(port: int) -> None:
    deadline = time.monotonic() + GUARD
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


def test_the_readme_snippets_run_as_written(tmp_path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    keys = next(code for _, code in blocks("sh") if "fingerprint --state-dir server" in code)
    subprocess.run(["bash", "-euc", keys], cwd=tmp_path, env=env, check=True, timeout=GUARD)
    programs = {}
    for before, code in blocks("python"):
        name = re.search(r"`(\w+\.py)`", before)
        assert name, f"a Python snippet without a file name before it: {before!r}"
        (tmp_path / name.group(1)).write_text(code)
        programs[name.group(1)] = code
    assert set(programs) == {"server.py", "client.py", "quic.py"}
    assert not any(re.search(r"^\s*await ", code, re.MULTILINE) and "async def" not in code
                   for code in programs.values()), "top-level await"
    server = subprocess.Popen([sys.executable, "server.py"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(8443)
        client = subprocess.run([sys.executable, "client.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=GUARD)
        assert client.returncode == 0 and "hello over MLS-TLS at MLS epoch 1" in client.stdout, client.stderr
    finally:
        server.terminate()
        server.wait(GUARD)
    quic = subprocess.run([sys.executable, "quic.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=GUARD)
    assert quic.returncode == 0 and "hello over QUIC-MLS at MLS epoch 1" in quic.stdout, quic.stderr


def test_the_docs_start_page_has_the_readme_set_up_commands() -> None:
    """docs/README.md repeats the two set-up commands (the built site does not include README.md): the same ones."""
    block = re.compile(r"^# 1\..*?\n(.*?)\n\n# 2\..*?\n(.*?)\n", re.DOTALL | re.MULTILINE)
    readme = block.search(README.read_text())
    docs = block.search((README.parent / "docs" / "README.md").read_text())
    assert readme is not None and docs is not None
    assert docs.groups() == readme.groups()
