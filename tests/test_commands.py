"""Every program, run as a user runs it: each mistake is one line on stderr and a non-zero status, never a
traceback; Ctrl-C ends with 130 and SIGTERM with 143.  (mls-tunnel has its own file, test_tunnel_cli.py.)"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

GUARD = 120


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=GUARD)


def fails_with(done: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.strip() and "WITHOUT authenticating" not in line]
    assert len(errors) == 1, errors
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def start(*args: str, ready: str) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    assert process.stdout is not None
    deadline = time.monotonic() + GUARD
    for line in process.stdout:
        if ready in line:
            return process
        assert time.monotonic() < deadline, "the program never got ready"
    raise AssertionError(f"the program ended before it was ready: {process.wait()} {process.stderr.read()}")


def stops_with(process: subprocess.Popen[str], signum: int) -> None:
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=GUARD)
    assert process.returncode == 128 + signum, (process.returncode, stderr)
    assert "Traceback" not in stderr, stderr


@pytest.fixture
def share(tmp_path) -> Path:
    (tmp_path / "share").mkdir()
    (tmp_path / "share" / "a.txt").write_text("hello")
    (tmp_path / "secret.txt").write_text("not shared")
    return tmp_path / "share"


def quic_server(port: int, *extra: str) -> subprocess.Popen[str]:
    return start("examples.quic_demo", "server", "--port", str(port), *extra, ready="server on")


def test_quic_demo_mistakes(share: Path) -> None:
    fails_with(run("examples.quic_demo", "server", "--mode", "alongside", "--insecure-accept-any-peer"), 2,
               "needs --cert and --key")
    fails_with(run("examples.quic_demo", "server", "--port", str(free_udp_port())), 2, "no peer is trusted")
    fails_with(run("examples.quic_demo", "client", "--insecure-accept-any-peer", "--port", str(free_udp_port()),
                   "--connect-timeout", "1"), 1, "no QUIC-MLS server answered")
    port = free_udp_port()
    server = quic_server(port, "--insecure-accept-any-peer", "--serve-dir", str(share))
    try:
        fails_with(run("examples.quic_demo", "server", "--port", str(port), "--insecure-accept-any-peer"), 1,
                   "already in use")
        client = ("examples.quic_demo", "client", "--insecure-accept-any-peer", "--port", str(port), "--rounds", "0")
        fails_with(run(*client, "--download", "missing.txt"), 1, "no file 'missing.txt'")
        fails_with(run(*client, "--download", "../secret.txt"), 1, "outside the shared folder")
        done = run(*client, "--download", "a.txt")
        assert done.returncode == 0 and "downloaded 5 bytes" in done.stdout, done.stderr
        stranger = run("examples.quic_demo", "client", "--port", str(port), "--rounds", "0",
                       "--allow", "server=sha256:" + "a" * 64)
        fails_with(stranger, 1, "refused", "CredentialError")
    finally:
        stops_with(server, signal.SIGINT)


def test_quic_demo_server_stops_on_sigterm() -> None:
    stops_with(quic_server(free_udp_port(), "--insecure-accept-any-peer"), signal.SIGTERM)


def test_two_party_mistakes_and_no_leftovers(tmp_path) -> None:
    fails_with(run("examples.two_party", "--state-dir", "/proc/no-such-folder"), 1, "cannot create the session folder")
    env_tmp = tmp_path / "tmp"
    env_tmp.mkdir()
    done = subprocess.run([sys.executable, "-m", "examples.two_party", "--rekeys", "1"], capture_output=True,
                          text=True, timeout=GUARD, env={**os.environ, "TMPDIR": str(env_tmp)})
    assert done.returncode == 0 and "exporters equal: True" in done.stdout
    assert list(env_tmp.iterdir()) == []  # its temporary state folder is gone


def test_pcs_runner_mistake() -> None:
    fails_with(run("examples.pcs.runner", "--quick", "--out", "/proc/no-such-folder/report"), 2,
               "cannot write the report")


def test_interop_mistake(tmp_path) -> None:
    fails_with(run("interop", "vectors", "--dir", str(tmp_path / "missing")), 2, "no RFC 9420 test vectors")


@pytest.mark.parametrize("command", [("benchmarks.bench_core", "--rounds", "0"),
                                     ("benchmarks.bench_tls", "--seconds", "0"),
                                     ("benchmarks.bench_scale", "--window", "0"),
                                     ("benchmarks.bench_scale", "--connections", "0"),
                                     ("benchmarks.bench_quic", "--rounds", "0"),
                                     ("benchmarks.bench_hostile", "--rounds", "0"),
                                     ("benchmarks.bench_tunnel_restart", "--rounds", "0")])
def test_benchmark_argument_mistakes(command: tuple[str, ...]) -> None:
    done = run(*command)
    assert done.returncode == 2 and "error:" in done.stderr and "Traceback" not in done.stderr


def test_a_long_benchmark_stops_on_ctrl_c() -> None:
    process = subprocess.Popen([sys.executable, "-m", "benchmarks.bench_tls", "--seconds", "600"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2)  # it is somewhere in its set-up or its first transfer; where does not matter
    stops_with(process, signal.SIGINT)


def test_quic_demo_client_resumes_from_its_store(tmp_path) -> None:
    fails_with(run("examples.quic_demo", "--store", str(tmp_path / "s"), "--insecure-accept-any-peer"), 2,
               "in 'both' they would share it")
    fails_with(run("examples.quic_demo", "server", "--store-keyring", str(tmp_path / "k"),
                   "--insecure-accept-any-peer"), 2, "give --store redis://")
    fails_with(run("examples.quic_demo", "client", "--store", "redis://127.0.0.1:1/0",
                   "--insecure-accept-any-peer"), 2, "Redis is for servers")
    port = free_udp_port()
    server = quic_server(port, "--insecure-accept-any-peer", "--store", str(tmp_path / "server"))
    try:
        client = ("examples.quic_demo", "client", "--insecure-accept-any-peer", "--port", str(port),
                  "--rounds", "1", "--interval", "0", "--store", str(tmp_path / "client"))
        first, second = run(*client), run(*client)
        assert first.returncode == 0 and "connected in" in first.stdout, first.stderr
        assert second.returncode == 0 and "resumed the stored session" in second.stdout, second.stderr
        assert "intact=True" in second.stdout
    finally:
        stops_with(server, signal.SIGTERM)
