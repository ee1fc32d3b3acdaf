"""A first start as a new user makes it, run as real processes: nothing guessed, every mistake one line.

mls-tunnel without --state-dir or --identity (the defaults are said), -v before or after the command, a
wrong --target reported on the client, a folder it cannot write; the QUIC demo's two roles started the
first time exactly as README.md says, in both modes.  (issue 21, "First start without guessing")
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from mls2p.errors import StoreError
from mls2p.store import MemorySessionStore
from mls2p.testing import config
from mlsquic.testing import free_udp_port
from mlstls import MlsTlsConfiguration
from mlstls.errors import TunnelError
from mlstls.testing import free_port
from mlstls.tunnel import TunnelClient, TunnelServer

ROOT = Path(__file__).resolve().parents[1]
TUNNEL = [sys.executable, "-m", "mlstls.cli"]
GUARD = 60
"""Seconds: a hang guard only, never a measure of speed."""
FINGERPRINT = re.compile(r"sha256:[0-9a-f]{64}")


@pytest.fixture(autouse=True)
def state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The XDG state folder of every command run here: a temporary one, never the real home's."""
    home = tmp_path / "xdg-state"
    monkeypatch.setenv("XDG_STATE_HOME", str(home))
    return home




def run(command: Sequence[str], *, cwd: Path | None = None, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(command), capture_output=True, text=True, timeout=GUARD, cwd=cwd, env=env)


def one_line_error(done: subprocess.CompletedProcess[str], code: int, *fragments: str) -> str:
    """The mistake is exit status ``code`` and one line on stderr holding every fragment; no traceback."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and len(lines) == 1, done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- mls-tunnel: the defaults are said --------------------------------------------------------------

def test_without_state_dir_the_key_is_kept_per_user_and_the_folder_is_said(state_home: Path) -> None:
    server = [*TUNNEL, "server", "--listen", "127.0.0.1:0", "--target", "127.0.0.1:9"]
    first = run(server)
    one_line_error(first, 2, "no peer is trusted", "--allow NAME=FINGERPRINT")
    folder = state_home / "mls-tunnel" / "server"
    assert f"no --state-dir given: this end's key and sessions are kept in {folder}" in first.stdout
    key = FINGERPRINT.search(first.stdout)
    assert key is not None, first.stdout
    assert f"no --identity given: this end is named 'mls-tunnel'; the peer pins it with --allow " \
           f"mls-tunnel={key.group()}" in first.stdout
    assert mode(folder / "signature.key") == 0o600
    assert mode(state_home) == mode(state_home / "mls-tunnel") == mode(folder) == 0o700
    # Not a key for one run: the next start and the fingerprint command show the same one.
    assert key.group() in run(server).stdout
    assert run([*TUNNEL, "fingerprint", "--state-dir", str(folder)]).stdout.strip() == key.group()
    # The client's default folder is its own: the two ends never share sessions.
    client = run([*TUNNEL, "client", "--listen", "127.0.0.1:0", "--connect", "127.0.0.1:9"])
    assert str(state_home / "mls-tunnel" / "client") in client.stdout
    assert key.group() not in client.stdout


@pytest.mark.parametrize("xdg", [None, "relative/state"])
def test_without_xdg_state_home_the_default_is_under_the_home(tmp_path: Path, xdg: str | None) -> None:
    """XDG_STATE_HOME unset, or not absolute (the specification says to ignore it then): ~/.local/state."""
    env = {key: value for key, value in os.environ.items() if key != "XDG_STATE_HOME"}
    env["HOME"] = str(tmp_path / "home")
    if xdg is not None:
        env["XDG_STATE_HOME"] = xdg
    done = run([*TUNNEL, "client", "--listen", "127.0.0.1:0", "--connect", "127.0.0.1:9",
                "--identity", "client"], cwd=tmp_path, env=env)
    one_line_error(done, 2, "no peer is trusted")
    folder = tmp_path / "home" / ".local" / "state" / "mls-tunnel" / "client"
    assert str(folder) in done.stdout and (folder / "signature.key").is_file()
    assert "no --identity given" not in done.stdout  # a name that was given is not announced as a default
    assert not (tmp_path / "relative").exists()


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_goes_before_or_after_the_command(where: str) -> None:
    """-v in either place is accepted and turns on the info logs (here: the first failed connection)."""
    client = ["client", "--listen", "127.0.0.1:0", "--connect", f"127.0.0.1:{free_port()}",
              "--identity", "client", "--allow", "server=sha256:" + "a" * 64, "--connect-timeout", "0.5"]
    quiet = run([*TUNNEL, *client])
    one_line_error(quiet, 1, "cannot reach the tunnel server")
    loud = run([*TUNNEL, "-v", *client] if where == "before" else [*TUNNEL, *client, "-v"])
    assert loud.returncode == 1, loud.stderr
    assert "unrecognized arguments" not in loud.stderr
    assert "INFO cannot reach the tunnel server" in loud.stderr, loud.stderr


# -- mls-tunnel: mistakes reported where the user looks ------------------------------------------------

async def _read_until(stream: asyncio.StreamReader | None, text: str) -> str:
    """The first line holding ``text`` (the process says it; no sleeping in its place)."""
    assert stream is not None
    while True:
        line = (await asyncio.wait_for(stream.readline(), GUARD)).decode()
        assert line, f"the stream ended before {text!r}"
        if text in line:
            return line


async def _start_tunnel(*args: str) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(*TUNNEL, *args, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    await _read_until(process.stdout, " on 127.0.0.1:")
    return process


async def test_a_target_the_server_cannot_reach_is_reported_on_the_client(tmp_path: Path) -> None:
    server_dir, client_dir = tmp_path / "server", tmp_path / "client"
    server_key = run([*TUNNEL, "fingerprint", "--state-dir", str(server_dir)]).stdout.strip()
    client_key = run([*TUNNEL, "fingerprint", "--state-dir", str(client_dir)]).stdout.strip()
    dead, server_port, client_port = free_port(), free_port(), free_port()  # nothing listens on ``dead``
    server = await _start_tunnel("server", "--listen", f"127.0.0.1:{server_port}", "--target", f"127.0.0.1:{dead}",
                                 "--state-dir", str(server_dir), "--identity", "server",
                                 "--allow", f"client={client_key}")
    client = await _start_tunnel("client", "--listen", f"127.0.0.1:{client_port}", "--connect",
                                 f"127.0.0.1:{server_port}", "--state-dir", str(client_dir), "--identity", "client",
                                 "--allow", f"server={server_key}")
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", client_port)
        writer.write(b"hello?")
        await writer.drain()
        with contextlib.suppress(ConnectionResetError):  # closed abruptly: as good as closed
            assert await asyncio.wait_for(reader.read(), GUARD) == b""  # closed, nothing forwarded
        writer.close()
        line = await _read_until(client.stderr, "could not reach")
        assert f"WARNING a tunnelled connection was closed: the server could not reach its target " \
               f"127.0.0.1:{dead}: connection refused" in line, line
        assert "cannot reach target" in await _read_until(server.stderr, "cannot reach target")
        # The link is unharmed: the client still runs, the next connection is refused the same way.
        assert client.returncode is None and server.returncode is None
    finally:
        for process in (client, server):
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), GUARD) == 143


def _as_file_permissions_say() -> list[str]:
    """A command prefix under which permission bits hold: root ignores them unless CAP_DAC_OVERRIDE is dropped."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    prefix = [setpriv or "setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
    if setpriv is None or run([*prefix, "true"]).returncode != 0:
        pytest.skip("running as root, where a read-only folder is still writable, and setpriv (util-linux) "
                    "cannot drop CAP_DAC_OVERRIDE here")
    return prefix


def test_a_state_folder_it_cannot_write_is_a_configuration_mistake(tmp_path: Path) -> None:
    """Found by a new user: a read-only state folder was reported as "cannot reach the tunnel server"."""
    prefix = _as_file_permissions_say()
    client = ["client", "--listen", "127.0.0.1:0", "--connect", f"127.0.0.1:{free_port()}", "--identity", "client",
              "--allow", "server=sha256:" + "a" * 64, "--connect-timeout", "1"]
    fresh, used = tmp_path / "fresh", tmp_path / "used"
    run([*TUNNEL, "fingerprint", "--state-dir", str(used)])  # a folder that already ran once: key and sessions
    (used / "sessions").mkdir(mode=0o700)
    fresh.mkdir(mode=0o700)
    try:
        for folder in (fresh, used / "sessions", used):
            folder.chmod(0o500)
        one_line_error(run([*prefix, *TUNNEL, *client, "--state-dir", str(fresh)]), 2,
                       f"mls-tunnel: cannot write the state folder {fresh}: permission denied")
        one_line_error(run([*prefix, *TUNNEL, "fingerprint", "--state-dir", str(fresh)]), 2,
                       f"cannot write the state folder {fresh}: permission denied")
        done = run([*prefix, *TUNNEL, *client, "--state-dir", str(used)])
        one_line_error(done, 2, f"cannot write the state folder {used}: permission denied")
        assert "cannot reach" not in done.stderr
        used.chmod(0o700)  # the state folder is writable again, its session folder is not
        one_line_error(run([*prefix, *TUNNEL, *client, "--state-dir", str(used)]), 2,
                       f"cannot write the session folder {used / 'sessions'}: permission denied")
    finally:
        for folder in (fresh, used / "sessions", used):
            folder.chmod(0o700)


async def test_a_store_failing_on_the_client_is_not_called_an_unreachable_server() -> None:
    """At run time too (a disk that fills up, a folder made read-only later): the cause is on this side."""

    class Unwritable(MemorySessionStore):
        def save(self, group_id: bytes, state: bytes, *, replaces: bytes | None) -> None:
            raise StoreError("cannot save session state to /state/sessions: read-only file system")

    server = TunnelServer(MlsTlsConfiguration(config(b"server"), False, MemorySessionStore()), ("127.0.0.1", 9))
    port = await server.start("127.0.0.1", 0)
    client = TunnelClient(MlsTlsConfiguration(config(b"client"), True, Unwritable()), ("127.0.0.1", port),
                          retry_delay=GUARD, max_retry_delay=GUARD)  # one attempt, then a long backoff
    starting = asyncio.ensure_future(client.start("127.0.0.1", 0, connect_timeout=GUARD))
    try:
        async with asyncio.timeout(GUARD):
            while not client.link.stats.failed_connects:  # waiting for the attempt to end, however long it takes
                await asyncio.sleep(0.01)
        client.stopped.set()  # what a refusal does: start() reports at once instead of waiting for its timeout
        with pytest.raises(TunnelError) as raised:
            await starting
        assert str(raised.value).startswith(f"the connection to the tunnel server at 127.0.0.1:{port} failed on "
                                            "this side: StoreError: cannot save session state"), raised.value
        assert "cannot reach" not in str(raised.value)
    finally:
        starting.cancel()
        await client.close()
        await server.close()


# -- the QUIC demo's first run, as README.md says -------------------------------------------------------

def readme_demo_commands() -> list[str]:
    """The shell lines of README.md's "The QUIC demo's two roles", in order."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## The QUIC demo's two roles\n", 1)[1].split("\n## ", 1)[0]
    return [line for block in re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
            for line in block.splitlines() if line.strip()]


def demo_argv(line: str, port: int, prints: dict[str, str]) -> list[str]:
    """A README line as argv: this Python, the fingerprints printed so far, a free port (tests run side by side)."""
    for name, key in prints.items():
        line = line.replace(f"sha256:<{name} fingerprint>", key)
    assert "<" not in line, f"a placeholder the first runs did not fill: {line}"
    argv = shlex.split(line, comments=True)
    assert argv[:3] == ["python", "-m", "examples.quic_demo"], line
    return [sys.executable, *argv[1:], "--port", str(port)]


def demo_env() -> dict[str, str]:
    """The demo runs in a folder of its own (its key files land there), importing the checkout's examples."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def start_demo_server(argv: list[str], cwd: Path) -> tuple[subprocess.Popen[str], str]:
    """Start a demo server; returns it and its banner line (read, not waited for with a sleep)."""
    process = subprocess.Popen(argv, cwd=cwd, env=demo_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    assert process.stdout is not None
    for line in process.stdout:  # the process ends, or says it serves; the test's timeout guards a hang
        if " server on " in line:
            return process, line
    raise AssertionError(f"the server ended before serving: {process.wait()} {process.stderr.read()}")  # type: ignore[union-attr]


def stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=GUARD)
    assert process.returncode == 143 and "Traceback" not in stderr, (process.returncode, stderr)


def test_the_quic_demo_first_run_works_as_the_readme_says(tmp_path: Path) -> None:
    commands = readme_demo_commands()
    assert len(commands) == 5, commands
    first_server, first_client, share, server_line, client_line = commands
    port, prints = free_udp_port(), {}
    for role, line in (("server", first_server), ("client", first_client)):
        done = run(demo_argv(line, port, prints), cwd=tmp_path, env=demo_env())
        other = "client" if role == "server" else "server"
        one_line_error(done, 2, "no peer is trusted", f"--allow {other}=FINGERPRINT",
                       f"python -m examples.quic_demo {other} --key-file {other}.key")
        key = FINGERPRINT.search(done.stdout)
        assert key is not None and done.stdout.startswith(f"{role}: key {key.group()}"), done.stdout
        assert f"--allow {role}={key.group()}" in done.stdout
        assert mode(tmp_path / f"{role}.key") == 0o600
        prints[role] = key.group()
    subprocess.run(["bash", "-euc", share], cwd=tmp_path, check=True, timeout=GUARD)
    server, banner = start_demo_server(demo_argv(server_line, port, prints), tmp_path)
    try:
        assert "mode mls (MLS in place of the TLS handshake)" in banner, banner
        done = run(demo_argv(client_line, port, prints), cwd=tmp_path, env=demo_env())
        assert done.returncode == 0, (done.stdout, done.stderr)
        assert "connected in" in done.stdout and "(mode mls)" in done.stdout
        assert f"downloaded {len((tmp_path / 'share' / 'hello.txt').read_bytes())} bytes" in done.stdout
        assert done.stdout.count("intact=True") == 10
    finally:
        stop(server)


def test_the_quic_demo_alongside_makes_its_certificate(tmp_path: Path) -> None:
    """--cert and --key naming new files make a self-signed certificate; the client trusts it with --cafile."""
    demo = [sys.executable, "-m", "examples.quic_demo"]
    port = free_udp_port()
    keys = {role: run([*demo, role, "--key-file", f"{role}.key"], cwd=tmp_path, env=demo_env()) for role in
            ("server", "client")}
    prints = {role: FINGERPRINT.search(done.stdout).group() for role, done in keys.items()}  # type: ignore[union-attr]
    server = [*demo, "server", "--mode", "alongside", "--port", str(port), "--key-file", "server.key",
              "--allow", f"client={prints['client']}"]
    client = [*demo, "client", "--mode", "alongside", "--port", str(port), "--key-file", "client.key",
              "--allow", f"server={prints['server']}", "--rounds", "2", "--interval", "0"]
    one_line_error(run(server, cwd=tmp_path, env=demo_env()), 2, "needs --cert and --key",
                   "a self-signed certificate", "--cafile cert.pem")
    one_line_error(run(client, cwd=tmp_path, env=demo_env()), 2, "needs --cafile", "the file its --cert names")
    process, banner = start_demo_server([*server, "--cert", "cert.pem", "--key", "cert.key"], tmp_path)
    try:
        assert "mode alongside (TLS 1.3 first, then MLS rekeys)" in banner, banner
        assert mode(tmp_path / "cert.key") == 0o600 and (tmp_path / "cert.pem").is_file()
        done = run([*client, "--cafile", "cert.pem"], cwd=tmp_path, env=demo_env())
        assert done.returncode == 0 and "(mode alongside)" in done.stdout, (done.stdout, done.stderr)
        assert done.stdout.count("intact=True") == 2
    finally:
        stop(process)
    made = (tmp_path / "cert.pem").read_bytes()
    again, _ = start_demo_server([*server, "--cert", "cert.pem", "--key", "cert.key"], tmp_path)
    stop(again)
    assert (tmp_path / "cert.pem").read_bytes() == made  # made once, then used as it is
