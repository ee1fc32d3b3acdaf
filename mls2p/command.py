"""Running one of the project's command-line programs: one line per mistake, the usual exit codes.

Every program (``mls-tunnel``, the examples, ``interop``, the benchmarks)
runs its main function through :func:`run_command`, so all of them behave
alike: a mistake is one line on stderr naming the problem and what to do, with
exit status 2 for a configuration mistake and 1 for anything else; Ctrl-C ends
with 130 and SIGTERM with 143, cleanly; never a traceback unless ``verbose``.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import logging
import signal
import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from mlscore.errors import ConfigurationError, MLSError

EXIT_FAILURE = 1
EXIT_CONFIGURATION = 2
EXIT_SIGINT = 128 + signal.SIGINT
EXIT_SIGTERM = 128 + signal.SIGTERM

_HINTS = {
    errno.EADDRINUSE: "another program uses that address: choose another port, or stop it",
    errno.ECONNREFUSED: "nothing listens there: is the server running, and is the address right?",
    errno.EACCES: "permission denied: choose a folder this user may write, or fix its permissions",
    errno.ENOENT: "no such file or folder: check the path",
    errno.EROFS: "read-only file system: choose another folder",
    errno.EHOSTUNREACH: "the host cannot be reached: check the address and the network",
}


class Interrupted(Exception):
    """A signal asked the program to stop; ``code`` is its exit status."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def describe(error: BaseException) -> str:
    """The one line a user reads: the error's own words, and for system errors what to do."""
    if isinstance(error, OSError):
        text = error.strerror or str(error)
        where = error.filename or ""
        hint = _HINTS.get(error.errno or 0)
        message = str(error) if "attempting to bind" in str(error) or "connect call" in str(error) else text
        return f"{message}{f' ({where})' if where and where not in message else ''}" + (f"; {hint}" if hint else "")
    return str(error) or type(error).__name__


def run_command(main: Callable[[], Any], *, prog: str, verbose: bool = False) -> int:
    """Run ``main`` (a function or a coroutine function) and turn its ending into an exit status."""
    try:
        if inspect.iscoroutinefunction(main):
            result = asyncio.run(_with_signals(main))
        else:
            previous = signal.signal(signal.SIGTERM, _raise_interrupted)
            try:
                result = main()
            finally:
                signal.signal(signal.SIGTERM, previous)
        return int(result or 0)
    except Interrupted as stop:
        return stop.code
    except KeyboardInterrupt:
        return EXIT_SIGINT
    except (MLSError, OSError, TimeoutError) as error:
        if verbose:
            traceback.print_exc()
        print(f"{prog}: {describe(error)}", file=sys.stderr)
        return EXIT_CONFIGURATION if isinstance(error, ConfigurationError) else EXIT_FAILURE


def _quiet_after_stop(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Once stopping, tasks cancelled on the way out are expected: do not print them as errors."""
    if isinstance(context.get("exception"), asyncio.CancelledError | Interrupted):
        return
    loop.default_exception_handler(context)


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(128 + signum)


async def _with_signals(main: Callable[[], Awaitable[Any]]) -> Any:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received: list[int] = []

    def stop(signum: int) -> None:
        if not received:
            received.append(signum)
            logging.getLogger(__name__).info("signal %d: stopping", signum)
            loop.set_exception_handler(_quiet_after_stop)
            task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop, signum)
    try:
        return await main()
    except asyncio.CancelledError:
        if received:
            raise Interrupted(128 + received[0]) from None
        raise
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
