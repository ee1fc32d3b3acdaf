"""``python -m interop vectors [--dir DIR]`` and ``python -m interop mlsrs``."""

from __future__ import annotations

import argparse
import functools
import sys
from collections import Counter
from pathlib import Path

from mls2p.command import run_command
from mls2p.errors import ConfigurationError

from .vectors import VECTOR_FILES, default_dir, run_file


def run_vectors(directory: Path, verbose: bool) -> int:
    totals: Counter[str] = Counter()
    for name in VECTOR_FILES:
        per_suite: dict[int | None, Counter[str]] = {}
        for outcome in run_file(name, directory):
            totals[outcome.status] += 1
            per_suite.setdefault(outcome.cipher_suite, Counter())[outcome.status] += 1
            if outcome.status != "passed" and (verbose or outcome.status == "failed"):
                print(f"  {outcome.status}: {name}[{outcome.index}] suite {outcome.cipher_suite}: "
                      f"{outcome.detail}")
        for suite, counts in sorted(per_suite.items(), key=lambda kv: kv[0] or 0):
            label = f"suite {suite}" if suite is not None else "all"
            print(f"{name:32} {label:8} passed {counts['passed']:4} failed {counts['failed']:3} "
                  f"skipped {counts['skipped']:3}")
    print(f"{totals['passed']} passed, {totals['failed']} failed, {totals['skipped']} skipped")
    return 0 if totals["failed"] == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m interop")
    sub = parser.add_subparsers(dest="command", required=True)
    vec = sub.add_parser("vectors", help="run the official RFC 9420 test vectors")
    vec.add_argument("--dir", type=Path, default=None, help="vector folder (default: $MLS_TEST_VECTORS "
                     "or ../shared/mls-test-vectors)")
    vec.add_argument("-v", "--verbose", action="store_true", help="list skipped entries too")
    sub.add_parser("mlsrs", help="live two-party interop with AWS mls-rs")
    args = parser.parse_args(argv)
    return run_command(functools.partial(run, args), prog="interop", verbose=getattr(args, "verbose", False))


def run(args: argparse.Namespace) -> int:
    if args.command == "vectors":
        directory = args.dir or default_dir()
        if not directory.is_dir():
            raise ConfigurationError(f"no RFC 9420 test vectors at {directory}: put the JSON files of "
                                     "mlswg/mls-implementations test-vectors there, or pass --dir / MLS_TEST_VECTORS")
        return run_vectors(directory, args.verbose)
    from .mlsrs import MLSRS_AVAILABLE, MLSRS_REASON
    from .mlsrs import main as mlsrs_main

    if not MLSRS_AVAILABLE:
        raise ConfigurationError(f"mls-rs is not available: {MLSRS_REASON}")
    return mlsrs_main()


if __name__ == "__main__":
    sys.exit(main())
