"""The Ray a command starts or joins, around the command: on loopback when it is genre's own, watched
when joined, stopped after; runs in the `genre` process."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator

from data_pipeline.loopback import is_loopback_address, keep_local_ray_on_loopback, requested_cluster
from genre.cli import lost_cluster


@contextlib.contextmanager
def ray_session(args: argparse.Namespace, hint: Callable[[], str] | None = None) -> Iterator[None]:
    """Around the command parsed into `args`; `hint` says how to go on should a joined cluster be lost.

    A caller's own Ray (a notebook's, the tests' session) is left running; the command's is stopped.
    """
    cluster = requested_cluster(getattr(args, "address", None))
    if cluster is None or is_loopback_address(cluster):
        # Before anything imports Ray: a Ray that genre starts listens on 127.0.0.1 only, and a
        # driver joining one on 127.0.0.1 must stay there too (data_pipeline.loopback).
        keep_local_ray_on_loopback()
    joins_cluster = cluster is not None and "address" in vars(args)
    if joins_cluster:
        lost_cluster.watch(args.command, hint)
    ray_was_running = _ray_running()
    try:
        yield
    finally:
        if not ray_was_running:
            _stop_ray()
        if joins_cluster:
            lost_cluster.stop_watching()


def _ray_running() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def _stop_ray() -> None:
    """Stop the Ray this process started or joined, now rather than at interpreter exit.

    Left to its exit hook, Ray's teardown can race the interpreter's own and crash (seen: a
    segmentation fault after Ctrl-C while Ray was starting), and first sleeps half a second.
    """
    if not _ray_running():
        return
    with contextlib.suppress(KeyboardInterrupt):
        sys.modules["ray"].shutdown()
