"""What hostile input costs a server, next to what an honest peer costs it, measured in the same run.

    python -m benchmarks.bench_hostile [--rounds N] [--json FILE]

Each row is the CPU time (process time, median of N) a server or client spends
on one message, and its ratio to an honest ClientHello handled the same way.
The budget (docs/security.md) is 50 ms for any single hostile message.  Also:
what 200 unauthenticated connections that each sent an almost complete
64 KiB message hold in memory (traced allocations), and how many state files 1,000 replayed
ClientHellos leave.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable

from benchmarks.report import Figure, versions, write_json
from mls2p import FileSessionStore, TwoPartySession
from mls2p.command import run_command
from mls2p.testing import TEST_PINS, config, sent
from mls2p.wire import MAX_MESSAGE_SIZE, MessageBuffer, ProfileMessage, ProfileMessageType
from mlscore import safe_app
from mlscore.codec import Writer
from mlscore.credentials import Credential, key_fingerprint
from mlscore.crypto import get_suite
from mlscore.errors import MLSError
from mlscore.extensions import MAX_CAPABILITY_ENTRIES, MAX_EXTENSIONS, Extension
from mlscore.framing import MLSMessage
from mlscore.key_package import create_key_package, default_capabilities
from mlscore.tree.ratchet_tree import decode_ratchet_tree
from mlstls import MlsTlsConfiguration
from mlstls.connection import MlsTlsConnection
from mlstls.record import ContentType, plaintext_records
from mlstls.testing import TlsPair


def hostile_hello(extensions: int, capabilities: int, extension_size: int) -> bytes:
    priv, pub = get_suite(1).generate_signature_key_pair()
    TEST_PINS.setdefault(b"client", set()).add(key_fingerprint(pub))  # worst case: a pinned peer
    caps = default_capabilities(1, extensions=(*range(0x1000, 0x1000 + capabilities), 6))
    exts = (safe_app.app_data_dictionary_extension([0x8001]),
            *(Extension(0x1000 + i, bytes(extension_size)) for i in range(extensions)))
    bundle = create_key_package(1, Credential.basic(b"client"), priv, capabilities=caps, leaf_extensions=exts)
    return ProfileMessage(ProfileMessageType.CLIENT_HELLO, MLSMessage(bundle.key_package).to_bytes()).to_bytes()


def cpu_ms(work: Callable[[], object], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        started = time.process_time()
        with contextlib.suppress(MLSError):
            work()
        samples.append(1000 * (time.process_time() - started))
    return statistics.median(samples)


def server_receives(hello: bytes) -> Callable[[], object]:
    server = config(b"server")
    return lambda: TwoPartySession.responder(server).receive(hello)


def oversized_stream(size: int) -> Callable[[], object]:
    """A transport receiving a profile message that declares ``size`` bytes (refused on its length prefix)."""
    data = bytes([ProfileMessageType.SERVER_HELLO]) + Writer().varint(size).getvalue() + bytes(size)
    return lambda: MessageBuffer().feed_frames(data)


def blank_tree(nodes: int) -> Callable[[], object]:
    """A joiner decoding a Welcome's ratchet tree of ``nodes`` blank nodes (the profile allows 3)."""
    tree = Writer().vector([0] * nodes, Writer.u8).getvalue()
    return lambda: decode_ratchet_tree(tree, max_leaves=2)


def unauthenticated_memory(connections: int) -> float:
    """Memory (MB, traced) held by ``connections`` servers that each hold an almost complete largest message."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    header = bytes([ProfileMessageType.CLIENT_HELLO]) + Writer().varint(MAX_MESSAGE_SIZE - 8).getvalue()
    partial = plaintext_records(ContentType.HANDSHAKE, header + bytes(MAX_MESSAGE_SIZE - 1024))
    configuration = MlsTlsConfiguration(config(b"server"), is_client=False)
    held = []
    for _ in range(connections):
        server = MlsTlsConnection(configuration)
        server.receive_data(partial)
        held.append(server)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert all(not s.closed for s in held)
    return (after - before) / (1 << 20)


def replayed_hellos(count: int) -> int:
    pair = TlsPair()
    pair.client.connect()
    hello = pair.client.data_to_send()
    folder = tempfile.mkdtemp(prefix="bench-hostile-")
    store = FileSessionStore(folder)
    configuration = MlsTlsConfiguration(pair.server_profile, False, store)
    for _ in range(count):
        server = MlsTlsConnection(configuration)
        server.receive_data(hello)
        server.connection_lost()
    return len(store.group_ids())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return run_command(functools.partial(report, args), prog="bench_hostile", verbose=args.verbose)


def report(args: argparse.Namespace) -> int:
    honest = hostile_hello(0, 0, 0)
    _, hello = TwoPartySession.initiator(config(b"client"))
    largest = hostile_hello(MAX_EXTENSIONS - 1, MAX_CAPABILITY_ENTRIES - 1, 180)
    over_limit = hostile_hello(MAX_EXTENSIONS + 100, 10, 700)
    rows = {  # JSON key: (label, bytes, CPU ms)
        "honest_hello": ("honest ClientHello (server)", len(sent(hello)[0]),
                         cpu_ms(server_receives(sent(hello)[0]), args.rounds)),
        "pinned_hello": ("pinned peer, no extensions", len(honest), cpu_ms(server_receives(honest), args.rounds)),
        "largest_hello": ("largest acceptable ClientHello", len(largest),
                          cpu_ms(server_receives(largest), args.rounds)),
        "over_limit_hello": ("ClientHello over the limits", len(over_limit),
                             cpu_ms(server_receives(over_limit), args.rounds)),
        "oversized_message": ("1 MiB profile message (transport)", 1 << 20,
                              cpu_ms(oversized_stream(1 << 20), args.rounds)),
        "blank_tree": ("ratchet tree of 60,000 blank nodes (joiner)", 60_000,
                       cpu_ms(blank_tree(60_000), args.rounds)),
    }
    base = rows["honest_hello"][2]
    print(f"{'message':42} {'bytes':>8} {'CPU ms':>8} {'x honest':>9}")
    for label, size, ms in rows.values():
        print(f"{label:42} {size:8} {ms:8.2f} {ms / base:9.2f}")
    memory = unauthenticated_memory(200)
    files = replayed_hellos(1000)
    print(f"200 unauthenticated connections holding a 63 KiB partial message: {memory:.1f} MB held")
    print(f"1,000 replayed ClientHellos: {files} state files")
    figures: dict[str, Figure] = {"unauthenticated_mb_200": memory, "state_files_after_1000_replays": files,
                                  **versions()}
    for key, (_, size, ms) in rows.items():
        figures.update({f"{key}_bytes": size, f"{key}_cpu_ms": ms, f"{key}_vs_honest_hello": ms / base})
    write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
