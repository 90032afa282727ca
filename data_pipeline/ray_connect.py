"""Connecting to Ray: a local instance of genre's own, or a running cluster that answers."""

from __future__ import annotations

import _thread
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import ray

from data_pipeline.errors import UserInputError
from data_pipeline.loopback import RAY_ADDRESS_VARIABLE, requested_cluster
from data_pipeline.ray_internals import read_ray_address
from data_pipeline.ray_sessions import claim_and_prune_sessions

# A head that is up accepts a connection at once; Ray's own client would retry for minutes.
CONNECT_TIMEOUT_S = 5.0
# A Ray GCS (or Ray Client server) answers gRPC's health check in milliseconds; a server that accepts
# the connection and says nothing (not Ray) is given this long.
ANSWER_TIMEOUT_S = 10.0
# Ray's default ports: GCS for `host` alone, the Ray Client server for `ray://host`.
_DEFAULT_PORTS = {"": 6379, "ray": 10001}
# gRPC's standard health service (grpc/health/v1/health.proto), which Ray's GCS serves; its request
# with no service named is empty, and its answer SERVING is status (field 1) = 1.
_HEALTH_CHECK = "/grpc.health.v1.Health/Check"
# gRPC's codes for "no gRPC server answered": refused, not HTTP/2 (an HTTP/1 server), TLS, silence.
_NO_ANSWER_CODES = ("UNAVAILABLE", "DEADLINE_EXCEEDED")
# Ray's driver ends its own process (exit 1, one C++ log line) when the GCS has not answered for this
# long (Ray's setting gcs_rpc_server_reconnect_timeout_s, which Ray reads from this variable).
GCS_RECONNECT_VARIABLE = "RAY_gcs_rpc_server_reconnect_timeout_s"
GCS_RECONNECT_DEFAULT_S = 60.0
WATCH_EVERY_S = 2.0
# Processes Ray had started when its start was interrupted: asked to stop, then killed after this.
STOP_GRACE_S = 5.0


def connect_ray(address: str | None = None, *, dashboard: bool = False, worker_logs: bool = True) -> None:
    """Join the cluster at `address` (else RAY_ADDRESS), or start a Ray of genre's own.

    Without an address, Ray's address file of the last `ray start` is never followed (`"local"`): a
    head stopped by a signal leaves it behind. A cluster that does not answer is a one-line error.
    `dashboard` starts Ray's dashboard with a local instance (on 127.0.0.1): Ray Train's placement
    group cleaner queries its state API to free the workers' resources of a trial that Tune stops
    early (ASHA). Without that need it stays off: on 2 cores `ray.init` takes 5.5 s with it and 3.5 s
    without, and it keeps a share of a laptop's CPU busy all along. `worker_logs` False
    keeps the workers' output in Ray's log files instead of the terminal (the sweep prints its own
    live view).

    The caller's SIGTERM handler is kept (Ray's start installs its own, see `_ray_start`). A joined
    cluster is watched: a head that stops answering is reported by `lost_cluster` (and the main thread
    interrupted) before Ray's driver would end the process on its own.
    """
    quiet_ray_data_logs()
    if ray.is_initialized():
        return
    address = requested_cluster(address)
    logging_options = {"logging_level": logging.WARNING, "log_to_driver": worker_logs}
    if address is None:
        with _ray_start(local=True):
            ray.init(address="local", include_dashboard=dashboard, **logging_options)
        claim_and_prune_sessions()
        return
    check_answers(address)
    try:
        with _ray_start(local=False):
            ray.init(address=address, **logging_options)
    except ConnectionError as error:
        hint = (
            ""
            if os.environ.get("RAY_AUTH_MODE") == "token"
            else "; a cluster with token authentication (cluster/local-head.sh, the shipped clusters) also "
            "needs RAY_AUTH_MODE=token and its token (cluster/README.md)"
        )
        raise UserInputError(f"cannot connect to Ray at {address!r}: {error}{hint}") from None
    _watch_cluster(address)


@contextlib.contextmanager
def _ray_start(*, local: bool) -> Iterator[None]:
    """Around `ray.init`: keep the caller's SIGTERM handler, hold a Ctrl-C until the start returns
    (`_ctrl_c_held`), and stop what an interrupted start began.

    Ray's start installs a SIGTERM handler of its own (`sys.exit(15)` wherever the start is), and its
    C++ core one in front of that which prints stack lines; both are replaced by the caller's again.
    A SIGTERM that Ray's handler turned into an exit is handed to the caller's handler. The processes
    an interrupted local start had begun (GCS, raylet, the raylet's agents) are stopped here: Ray knows
    of them only once its start returns, and agents orphaned by a killed raylet wait a minute for the
    GCS before they exit.
    """
    import psutil  # after ray: Ray's own copy (in ray/thirdparty_files) where it ships one

    in_main_thread = threading.current_thread() is threading.main_thread()
    callers_handler = signal.getsignal(signal.SIGTERM) if in_main_thread else None
    before = {child.pid for child in psutil.Process().children(recursive=True)} if local else set()
    try:
        with _ctrl_c_held() if in_main_thread else contextlib.nullcontext():
            yield
    except BaseException as error:
        if local:
            _stop_started_processes(before)
        if in_main_thread:
            _restore_sigterm_handler(callers_handler)
            if isinstance(error, SystemExit) and error.code == signal.SIGTERM and callable(callers_handler):
                signal.raise_signal(signal.SIGTERM)  # the caller's handler runs (and raises) here
        raise
    if in_main_thread:
        _restore_sigterm_handler(callers_handler)


@contextlib.contextmanager
def _ctrl_c_held() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) that comes while Ray starts until its start returns, then hand it to the
    caller's handler; a second one is handed over at once.

    A KeyboardInterrupt raised at a random point of `ray.init` leaves Ray's core half made: seen, a
    command that then hung for minutes, and a segmentation fault at exit. Once the start has returned,
    Ray stops cleanly (the caller's `ray.shutdown`), within seconds.
    """
    callers = signal.getsignal(signal.SIGINT)
    if not callable(callers):  # SIGINT ignored (a background job) or the OS default: left as it is
        yield
        return
    held = []

    def hold(signum: int, frame: object) -> None:
        if held:
            callers(signum, frame)  # the second: at once (by default, a KeyboardInterrupt here)
            return
        held.append(signum)
        print("interrupted: stopping as soon as Ray's start returns (Ctrl-C again: now)", file=sys.stderr)

    signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, callers)
    if held:
        callers(signal.SIGINT, None)


def _restore_sigterm_handler(callers_handler: object) -> None:
    # Installing a handler again also removes Ray's C++ one (it chains in front at the OS level). A
    # caller without a handler of its own keeps Ray's, whose exit runs Ray's shutdown at exit.
    keep = callers_handler if callable(callers_handler) else signal.getsignal(signal.SIGTERM)
    if keep is not None:
        signal.signal(signal.SIGTERM, keep)


def _stop_started_processes(before: set[int]) -> None:
    """Stop this process's descendants that were not there before Ray's start: Ray's, and only Ray's."""
    import psutil

    def started_since() -> dict[int, psutil.Process]:
        return {p.pid: p for p in psutil.Process().children(recursive=True) if p.pid not in before}

    # Listed before Ray's shutdown as well as after: the raylet it stops leaves its agents orphaned,
    # no longer this process's descendants (a full suite once found them up 15 s after the stop).
    seen = started_since()
    with contextlib.suppress(Exception):
        ray.shutdown()  # what Ray knows of already; the rest is found below
    seen.update(started_since())
    started = [process for process in seen.values() if process.is_running()]
    for process in started:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(started, timeout=STOP_GRACE_S)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()


def check_answers(address: str) -> None:
    """Refuse at once a cluster address where no Ray answers (Ray itself would hang for minutes).

    First a TCP connection (nothing listens: refused at once), then gRPC's health check, which Ray's
    GCS and Ray Client server answer and which any other server (HTTP, SSH, a silent one) fails.
    """
    target = _bootstrap_host_port(address)
    if target is None:
        return  # "auto" with no address file: Ray's own error says so at once
    where = f"{target[0]}:{target[1]}"
    try:
        socket.create_connection(target, timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        reason = "no answer" if isinstance(error, TimeoutError) else error.strerror or str(error)
        raise UserInputError(_no_ray_message(address, f"{where}: {reason}")) from None
    reason = grpc_no_answer(target, ANSWER_TIMEOUT_S)
    if reason is not None:
        raise UserInputError(
            _no_ray_message(address, f"{where} accepts connections but is not Ray: {reason}")
        )


def _no_ray_message(address: str, why: str) -> str:
    return (
        f"no Ray cluster answers at {address!r} ({why}); start it, "
        f"or leave out --address and {RAY_ADDRESS_VARIABLE} to let genre start a Ray of its own"
    )


def grpc_no_answer(target: tuple[str, int], timeout_s: float) -> str | None:
    """None when a gRPC server answers at `target` (any answer, even a refusal: Ray's GCS with token
    authentication may refuse a health check without the token); else why not, in a few words."""
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        return None  # a TLS cluster's probe would need its certificates: Ray's connect reports TLS itself
    import grpc  # a dependency of Ray's

    host, port = target
    with grpc.insecure_channel(f"[{host}]:{port}" if ":" in host else f"{host}:{port}") as channel:
        check = channel.unary_unary(_HEALTH_CHECK)
        try:
            check(b"", timeout=timeout_s)
        except grpc.RpcError as error:
            code = error.code()
            if code is not None and code.name in _NO_ANSWER_CODES:
                if code.name == "DEADLINE_EXCEEDED":
                    return f"no gRPC answer within {timeout_s:.0f} s"
                # gRPC's details end with the last error, after the address: "...:PORT: Connection refused".
                return f"no gRPC answer, {(error.details() or code.name).rsplit(': ', 1)[-1]}"
    return None


@dataclass(frozen=True)
class _Watched:
    address: str
    target: tuple[str, int]
    lost_after_s: float  # without an answer: the head is lost, and the main thread interrupted
    grace_s: float  # then this long for the main thread to end the command, before the last resort


_watching: _Watched | None = None
_lost: str | None = None
_last_resort: Callable[[str], None] | None = None


def lost_cluster() -> str | None:
    """Why the cluster this process joined was declared lost (its head stopped answering), or None."""
    return _lost


def when_cluster_lost(last_resort: Callable[[str], None] | None) -> None:
    """`last_resort(why)` runs in the watching thread when a lost head's interrupted main thread has not
    ended the process in time: a call into Ray waiting on the lost GCS does not return to Python (seen:
    Tune freeing a dead trial's placement group), and Ray's driver then ends the process itself."""
    global _last_resort
    _last_resort = last_resort


def _watch_cluster(address: str) -> None:
    """Watch the head of the cluster just joined, in a daemon thread, while Ray stays connected.

    Ray's driver, when the GCS stops answering, waits `RAY_gcs_rpc_server_reconnect_timeout_s` (60 s)
    and then ends the process itself with one C++ log line. Here, after half that: `lost_cluster()`
    says what was lost and the main thread gets KeyboardInterrupt, to stop as after Ctrl-C; after
    three quarters, `when_cluster_lost`'s last resort. A Ray Client (ray://) connection is not watched:
    its client raises in the main thread on its own.
    """
    global _watching, _lost
    target = _bootstrap_host_port(address)
    if target is None or address.startswith("ray://"):
        return
    try:
        reconnect_s = float(os.environ.get(GCS_RECONNECT_VARIABLE, GCS_RECONNECT_DEFAULT_S))
    except ValueError:
        reconnect_s = GCS_RECONNECT_DEFAULT_S
    watched = _Watched(address, target, max(WATCH_EVERY_S, reconnect_s / 2), max(1.0, reconnect_s / 4))
    _watching, _lost = watched, None
    threading.Thread(target=_watch, args=(watched,), name="genre-head-watch", daemon=True).start()


def _watch(watched: _Watched) -> None:
    global _lost
    answered = time.monotonic()
    while True:
        time.sleep(WATCH_EVERY_S)
        if _watching is not watched or not ray.is_initialized():
            return  # disconnected, or connected anew (and watched by a thread of its own)
        # A GCS answers in milliseconds; a probe never outlasts the watch's period.
        reason = grpc_no_answer(watched.target, WATCH_EVERY_S)
        if reason is None:
            answered = time.monotonic()
        elif time.monotonic() - answered >= watched.lost_after_s:
            host, port = watched.target
            _lost = (
                f"the Ray cluster at {watched.address!r} stopped answering ({host}:{port}: {reason}, for "
                f"{time.monotonic() - answered:.0f} s): its head is gone, and with it the work running there"
            )
            _thread.interrupt_main()  # KeyboardInterrupt in the main thread, as Ctrl-C would raise
            time.sleep(watched.grace_s)
            if _last_resort is not None:
                _last_resort(_lost)  # the process is still here: the main thread is stuck in Ray
            return


def _bootstrap_host_port(address: str) -> tuple[str, int] | None:
    """(host, port) that `address` names: 'auto' reads the address file of the last `ray start`."""
    if address == "auto":
        # Ray's order for "auto": RAY_ADDRESS, then the file.
        address = os.environ.get(RAY_ADDRESS_VARIABLE, "").replace("auto", "") or read_ray_address() or ""
        if not address:
            return None
    parts = urlsplit(address if "://" in address else f"//{address}")
    if not parts.hostname:
        raise UserInputError(f"--address {address!r} is not host:port, ray://host:port or auto")
    try:
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme, _DEFAULT_PORTS[""])
    except ValueError:
        raise UserInputError(f"--address {address!r} has no valid port") from None
    return parts.hostname, port


class _DropProgressBarNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Progress bars disabled" not in record.getMessage()


def quiet_ray_data_logs() -> None:
    """Keep Ray Data's warnings on the terminal, without its per-dataset INFO lines.

    Its full log still goes to the Ray session's ray-data.log.
    """
    import ray.data  # noqa: F401  (importing it installs the handlers adjusted here)

    for handler in logging.getLogger("ray.data").handlers:
        if handler.__class__.__name__ != "SessionFileHandler":
            handler.setLevel(logging.WARNING)
            handler.addFilter(_DropProgressBarNotice())
