"""A joined cluster lost mid-command: its one-line report, and the exit when the command cannot end;
runs in the `genre` process."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable

from genre.cli.exit_codes import EXIT_CLUSTER_LOST

_reported = threading.Event()


def watch(command: str, hint: Callable[[], str] | None = None) -> None:
    """Should the joined cluster's head go, and the interrupted command not end in time (stuck in a
    call into Ray that waits on the lost head), report it (after `hint`, how to go on) and exit here,
    before Ray's driver exits 1."""
    from data_pipeline import ray_connect

    def exit_now(lost: str) -> None:
        report(command, lost, hint=hint() if hint is not None else None)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_CLUSTER_LOST)  # from the watching thread: sys.exit would end that thread alone

    _reported.clear()
    ray_connect.when_cluster_lost(exit_now)


def stop_watching() -> None:
    """No exit from the watching thread any more: for a caller that goes on (a notebook, the tests)."""
    sys.modules["data_pipeline.ray_connect"].when_cluster_lost(None)


def report(command: str, lost: str, *, hint: str | None = None) -> None:
    """The line naming the lost cluster (once: the main thread and the last resort may both get here)."""
    if _reported.is_set():
        return
    _reported.set()
    if hint is not None:
        print(f"genre {command}: {hint}", file=sys.stderr)
    print(f"genre {command}: error: {lost}", file=sys.stderr)


def lost_cluster() -> str | None:
    """Why the joined cluster was lost, if it was (never imports Ray for the question)."""
    ray_connect = sys.modules.get("data_pipeline.ray_connect")
    return ray_connect.lost_cluster() if ray_connect is not None else None
