"""SIGTERM stops a command as Ctrl-C does; runs in the `genre` process."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt, so that both stop the command alike."""


_received = threading.Event()


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

    _received.clear()
    callers = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, callers if callers is not None else signal.SIG_DFL)


def sigterm_received() -> bool:
    """Whether the interruption being handled came from SIGTERM (else Ctrl-C)."""
    return _received.is_set()
