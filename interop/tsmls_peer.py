"""ts-mls (npm ``ts-mls``) as an independent RFC 9420 peer, speaking MLSMessage bytes.

ts-mls is a TypeScript MLS stack that shares no code (and no crypto library)
with ours, and it ships post-quantum suites (ML-KEM-1024 and X-Wing, Ed25519 or
ML-DSA-87: 81-88), so it gives an MLS-level check of our PQ suites that test
vectors alone cannot.  It runs in a
long-lived Node process (``interop/tsmls/driver.mjs``) that holds one client
and at most one group; :class:`TsMlsPeer` talks to it in JSON lines and offers
the same bytes-in, bytes-out methods as :class:`interop.mlsrs_peer.MlsRsPeer`,
so the same scenarios drive either peer.

Commits are created and merged in two explicit steps (``add``/``commit_update``
then ``merge_pending``), as RFC 9420 section 12.4 describes them.  Every
request has a timeout, so a wedged Node process fails a test instead of
hanging it.

The Node packages are installed by ``npm ci --prefix interop/tsmls``; importing
this module never fails: check :data:`TSMLS_AVAILABLE` (and
:data:`TSMLS_REASON` for why not).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import subprocess
import threading
from collections import deque
from pathlib import Path
from types import TracebackType
from typing import Any

from mlscore.errors import (
    ConfigurationError,
    CryptoError,
    DecodeError,
    EpochError,
    InvalidSignatureError,
    MLSError,
    StateError,
    TreeError,
    UnsupportedError,
    ValidationError,
)

DRIVER_DIR = Path(__file__).resolve().parent / "tsmls"
DRIVER = DRIVER_DIR / "driver.mjs"
INSTALL_COMMAND = "npm ci --prefix interop/tsmls"

SUITES = {
    1: "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519",
    81: "MLS_256_MLKEM1024_AES256GCM_SHA512_Ed25519",
    82: "MLS_256_MLKEM1024_CHACHA20POLY1305_SHA512_Ed25519",
    83: "MLS_256_XWING_AES256GCM_SHA512_Ed25519",
    84: "MLS_256_XWING_CHACHA20POLY1305_SHA512_Ed25519",
    85: "MLS_256_MLKEM1024_AES256GCM_SHA512_MLDSA87",
    86: "MLS_256_MLKEM1024_CHACHA20POLY1305_SHA512_MLDSA87",
    87: "MLS_256_XWING_AES256GCM_SHA512_MLDSA87",
    88: "MLS_256_XWING_CHACHA20POLY1305_SHA512_MLDSA87",
}
"""The suites the interop test runs: ts-mls's that we share (its ML-KEM suites on SHA-256/384 cannot work, see
mlscore.crypto; ML-KEM-512 is not in `cryptography`)."""

DEFAULT_TIMEOUT = 30.0
"""Seconds one request may take; X-Wing operations are milliseconds, Node's start-up well under this."""


def _availability() -> tuple[bool, str, str | None]:
    node = os.environ.get("TSMLS_NODE") or shutil.which("node")
    if node is None:
        return False, f"ts-mls interop needs Node.js 20+ (node is not on PATH), then run: {INSTALL_COMMAND}", None
    if not (DRIVER_DIR / "node_modules" / "ts-mls").is_dir():
        missing = DRIVER_DIR / "node_modules"
        return False, f"ts-mls is not installed ({missing} is missing): run: {INSTALL_COMMAND}", node
    return True, "", node


TSMLS_AVAILABLE, TSMLS_REASON, _NODE = _availability()

# The driver reports "<ErrorName>: <message>"; ts-mls names its errors
# (ValidationError, CodecError, CryptoVerificationError...) and the driver adds
# UsageError for requests out of order, UnsupportedError for a suite ts-mls
# lacks, TypeError for malformed arguments.  The message refines the class.
_NAMED_CLASSES: dict[str, type[MLSError]] = {
    "CodecError": DecodeError,
    "CryptoVerificationError": CryptoError,
    "CryptoError": CryptoError,
    "DependencyError": UnsupportedError,
    "UsageError": StateError,
    "UnsupportedError": UnsupportedError,
    "TypeError": ConfigurationError,
    "ValidationError": ValidationError,
    "InternalError": ValidationError,
}
_MESSAGE_CLASSES: tuple[tuple[str, type[MLSError]], ...] = (
    ("signature", InvalidSignatureError),
    ("epoch", EpochError),
    ("tree hash", TreeError),
    ("parent hash", TreeError),
    ("ratchet tree", TreeError),
)


def _error_class(report: str) -> type[MLSError]:
    name, _, message = report.partition(": ")
    lowered = message.lower()
    for fragment, cls in _MESSAGE_CLASSES:
        if fragment in lowered:
            return cls
    return _NAMED_CLASSES.get(name, ValidationError)


class TsMlsDriverError(RuntimeError):
    """The Node process itself failed (did not start, died, timed out, spoke garbage).

    Deliberately not an :class:`MLSError`: a test expecting ts-mls to reject
    a message must not pass because the driver crashed.
    """


class _Driver:
    """The Node process and its line protocol: one JSON request, one JSON response, with a timeout.

    stdout and stderr are drained by threads, so a request can wait on a queue
    with a timeout (a blocking ``readline`` cannot) and a chatty stderr never
    fills its pipe; the last stderr lines go into error messages.
    """

    def __init__(self, timeout: float) -> None:
        if not TSMLS_AVAILABLE or _NODE is None:
            raise UnsupportedError(TSMLS_REASON)
        self.timeout = timeout
        self._next_id = 0
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: deque[str] = deque(maxlen=20)
        try:
            self._process = subprocess.Popen(
                [_NODE, str(DRIVER)], cwd=DRIVER_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True, encoding="utf-8", bufsize=1)
        except OSError as exc:
            raise TsMlsDriverError(f"cannot start the ts-mls driver with {_NODE}: {exc}") from exc
        threading.Thread(target=self._pump_stdout, name="tsmls-stdout", daemon=True).start()
        threading.Thread(target=self._pump_stderr, name="tsmls-stderr", daemon=True).start()

    def _pump_stdout(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _pump_stderr(self) -> None:
        assert self._process.stderr is not None
        for line in self._process.stderr:
            self._stderr.append(line.rstrip("\n"))

    def _failure(self, what: str) -> TsMlsDriverError:
        self.close()
        tail = "\n".join(self._stderr)
        return TsMlsDriverError(f"ts-mls driver {what}" + (f"; its stderr ends with:\n{tail}" if tail else ""))

    def request(self, op: str, **arguments: Any) -> dict[str, Any]:
        """Send one request and return its ``result``; a driver-reported error becomes an MLSError."""
        if self._process.poll() is not None or self._process.stdin is None:
            raise self._failure(f"is not running (exit code {self._process.returncode})")
        self._next_id += 1
        request_id = self._next_id
        try:
            self._process.stdin.write(json.dumps({"id": request_id, "op": op, **arguments}) + "\n")
            self._process.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise self._failure(f"stopped reading requests ({exc})") from exc
        try:
            line = self._lines.get(timeout=self.timeout)
        except queue.Empty:
            raise self._failure(f"did not answer {op!r} within {self.timeout} s") from None
        if line is None:
            raise self._failure(f"exited while handling {op!r} (exit code {self._process.wait()})")
        try:
            response = json.loads(line)
        except json.JSONDecodeError as exc:
            raise self._failure(f"answered {op!r} with a line that is not JSON: {line[:200]!r}") from exc
        if not isinstance(response, dict) or response.get("id") != request_id:
            raise self._failure(f"answered request {request_id} ({op!r}) out of order: {line[:200]!r}")
        if "error" in response:
            report = str(response["error"])
            raise _error_class(report)(f"ts-mls rejected {op!r}: {report}")
        result = response.get("result")
        if not isinstance(result, dict):
            raise self._failure(f"answered {op!r} without a result: {line[:200]!r}")
        return result

    def close(self) -> None:
        """End the process: closing stdin ends its request loop; kill it if it does not exit promptly."""
        process = self._process
        if process.poll() is None:
            try:
                if process.stdin is not None:
                    process.stdin.close()
                process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                process.kill()
                process.wait()
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None and not stream.closed:
                with contextlib.suppress(OSError):
                    stream.close()


class TsMlsPeer:
    """One ts-mls client (basic credential, one suite) and at most one group of it, in its own Node process.

    Every input and output is an RFC 9420 ``MLSMessage`` encoding, except the
    ratchet tree (the ``ratchet_tree`` extension's data) and exporter output.
    Use it as a context manager, or call :meth:`close`, to end the process.
    """

    def __init__(self, driver: _Driver, suite: int, identity: bytes, signature_key: bytes,
                 key_package: bytes) -> None:
        self._driver = driver
        self._suite = suite
        self._identity = identity
        self._signature_key = signature_key
        self._unused_key_package: bytes | None = key_package
        self._in_group = False
        self._has_pending = False

    @classmethod
    def new(cls, identity: bytes, suite: int = 1, *, ratchet_tree_extension: bool = True,
            public_handshake: bool = True, timeout: float = DEFAULT_TIMEOUT) -> TsMlsPeer:
        """Start a driver with a fresh signature key and a basic credential naming ``identity``.

        With ``ratchet_tree_extension`` the Welcomes it sends carry the tree
        (ts-mls's default is not to).  ``public_handshake`` sends commits as
        PublicMessage; otherwise as PrivateMessage, ts-mls's own default.
        """
        driver = _Driver(timeout)
        try:
            result = driver.request("new", suite=suite, identity=bytes(identity).hex(),
                                    ratchet_tree_extension=ratchet_tree_extension,
                                    public_handshake=public_handshake)
        except BaseException:
            driver.close()
            raise
        return cls(driver, suite, bytes(identity), bytes.fromhex(result["signature_key"]),
                   bytes.fromhex(result["key_package"]))

    def __enter__(self) -> TsMlsPeer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """End the Node process (idempotent); the peer is unusable afterwards."""
        self._driver.close()

    @property
    def suite(self) -> int:
        return self._suite

    @property
    def identity(self) -> bytes:
        return self._identity

    @property
    def signature_key(self) -> bytes:
        """Our signature public key, as it appears in our LeafNode."""
        return self._signature_key

    @property
    def in_group(self) -> bool:
        return self._in_group

    @property
    def has_pending_commit(self) -> bool:
        return self._has_pending

    def _require_group(self) -> None:
        if not self._in_group:
            raise StateError("this ts-mls peer is not in a group yet: create_group() or join() first")

    def _require_no_group(self) -> None:
        if self._in_group:
            raise StateError("this ts-mls peer already has a group; use a new TsMlsPeer for another one")

    def key_package(self) -> bytes:
        """A new KeyPackage (MLSMessage); ts-mls keeps its private keys for a later Welcome."""
        if self._unused_key_package is not None:  # the one ``new`` made comes first
            key_package, self._unused_key_package = self._unused_key_package, None
            return key_package
        return bytes.fromhex(self._driver.request("key_package")["key_package"])

    def create_group(self, group_id: bytes | None = None) -> None:
        """A one-member group at epoch 0; the driver picks a random 16-byte group id when none is given."""
        self._require_no_group()
        self._driver.request("create_group", group_id=None if group_id is None else bytes(group_id).hex())
        self._in_group = True

    def join(self, welcome: bytes, ratchet_tree: bytes | None = None) -> None:
        """Join from a Welcome; ``ratchet_tree`` is required if the GroupInfo does not carry one."""
        self._require_no_group()
        self._driver.request("join", welcome=bytes(welcome).hex(),
                             ratchet_tree=None if ratchet_tree is None else bytes(ratchet_tree).hex())
        self._in_group = True

    def _commit(self, op: str, **arguments: Any) -> dict[str, Any]:
        self._require_group()
        if self._has_pending:
            raise StateError("a commit is already pending: merge_pending() or process the peer's commit first")
        result = self._driver.request(op, **arguments)
        self._has_pending = True
        return result

    def add(self, key_package: bytes) -> tuple[bytes, bytes]:
        """Commit an Add of ``key_package``: returns (commit, Welcome); the commit stays pending."""
        result = self._commit("add", key_package=bytes(key_package).hex())
        return bytes.fromhex(result["commit"]), bytes.fromhex(result["welcome"])

    def commit_update(self) -> bytes:
        """An empty commit, which by RFC 9420 carries a fresh UpdatePath; it stays pending.

        ts-mls commits any proposals it has received by reference too.
        """
        return bytes.fromhex(self._commit("commit_update")["commit"])

    def merge_pending(self) -> None:
        """Move to the epoch of our pending commit (once the delivery service accepted it)."""
        self._require_group()
        if not self._has_pending:
            raise StateError("no pending commit to merge")
        self._driver.request("merge_pending")
        self._has_pending = False

    def process(self, message: bytes) -> bytes | None:
        """Process a message from the group.

        Returns the plaintext of an application message, or None for a
        commit (now applied; any pending commit of ours is dropped) or a
        proposal (cached for our next commit).
        """
        self._require_group()
        result = self._driver.request("process", message=bytes(message).hex())
        if result["kind"] == "application":
            return bytes.fromhex(result["plaintext"])
        if result["kind"] == "commit":
            self._has_pending = False
        return None

    def encrypt(self, plaintext: bytes) -> bytes:
        """An application message (PrivateMessage) in the current epoch."""
        self._require_group()
        return bytes.fromhex(self._driver.request("encrypt", plaintext=bytes(plaintext).hex())["message"])

    def export(self, label: bytes, context: bytes, length: int) -> bytes:
        """MLS-Exporter(label, context, length) of the current epoch (RFC 9420 section 8.5).

        ts-mls takes the label as a string, so it must be UTF-8.
        """
        self._require_group()
        result = self._driver.request("export", label=bytes(label).hex(), context=bytes(context).hex(),
                                      length=length)
        return bytes.fromhex(result["secret"])

    def ratchet_tree(self) -> bytes:
        """The current epoch's ratchet tree, to give a joiner when Welcomes omit it.

        After an ``add``, call :meth:`merge_pending` first: before, this is the old tree.
        """
        self._require_group()
        return bytes.fromhex(self._driver.request("ratchet_tree")["ratchet_tree"])

    @property
    def group_id(self) -> bytes:
        self._require_group()
        return bytes.fromhex(self._driver.request("group_id")["group_id"])

    @property
    def epoch(self) -> int:
        """ts-mls's own idea of the current epoch (asked from its state, not counted here)."""
        self._require_group()
        return int(self._driver.request("epoch")["epoch"])
