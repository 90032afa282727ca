"""SIGTERM stops a command as Ctrl-C does; runs in the `genre` process."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt, so that both stop the command alike."""


_received = threading.Event()
# Long enough for the unraisable hook to return before its signal is handled again.
REDELIVER_AFTER_S = 0.05


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises Terminated in the main thread while the command runs; a second one ends the
    process at once (a stop taking too long), as it would without genre. The caller's handler after."""
    if threading.current_thread() is not threading.main_thread():
        yield  # a command run from a thread (a notebook's): Python handles signals in the main one only
        return

    def terminated(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _received.set()  # Ray and Tune may re-raise it as a plain KeyboardInterrupt
        raise Terminated

    callers_hook = sys.unraisablehook

    def redeliver_if_swallowed(unraisable: sys.UnraisableHookArgs) -> None:
        # Python runs a signal's handler wherever the main thread is, and when that is a finalizer or
        # a weakref callback (the CI run that exited 0 after SIGTERM: Ray's WeakValueDictionary), the
        # raise is printed as "Exception ignored" and lost. The signal is sent again from a thread a
        # moment later (raised here, its handler would run inside this hook): the handler then runs in
        # the command's own code, which unwinds.
        if isinstance(unraisable.exc_value, Terminated):
            signal.signal(signal.SIGTERM, terminated)
            again = threading.Timer(REDELIVER_AFTER_S, os.kill, (os.getpid(), signal.SIGTERM))
            again.daemon = True
            again.start()
            return
        callers_hook(unraisable)

    _received.clear()
    callers = signal.signal(signal.SIGTERM, terminated)
    sys.unraisablehook = redeliver_if_swallowed
    try:
        yield
    finally:
        sys.unraisablehook = callers_hook
        signal.signal(signal.SIGTERM, callers if callers is not None else signal.SIG_DFL)


def sigterm_received() -> bool:
    """Whether the interruption being handled came from SIGTERM (else Ctrl-C)."""
    return _received.is_set()
