"""Connecting to Ray: a local instance of genre's own, or a running cluster that answers."""

from __future__ import annotations

import logging
import os
import socket
from urllib.parse import urlsplit

import ray

from data_pipeline.errors import UserInputError
from data_pipeline.loopback import RAY_ADDRESS_VARIABLE, requested_cluster
from data_pipeline.ray_internals import read_ray_address

# A head that is up accepts a connection at once; Ray's own client would retry for minutes.
CONNECT_TIMEOUT_S = 5.0
# Ray's default ports: GCS for `host` alone, the Ray Client server for `ray://host`.
_DEFAULT_PORTS = {"": 6379, "ray": 10001}


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
    """
    quiet_ray_data_logs()
    if ray.is_initialized():
        return
    address = requested_cluster(address)
    logging_options = {"logging_level": logging.WARNING, "log_to_driver": worker_logs}
    if address is None:
        ray.init(address="local", include_dashboard=dashboard, **logging_options)
        return
    check_answers(address)
    try:
        ray.init(address=address, **logging_options)
    except ConnectionError as error:
        hint = (
            ""
            if os.environ.get("RAY_AUTH_MODE") == "token"
            else "; a cluster with token authentication (cluster/local-head.sh, the shipped clusters) also "
            "needs RAY_AUTH_MODE=token and its token (cluster/README.md)"
        )
        raise UserInputError(f"cannot connect to Ray at {address!r}: {error}{hint}") from None


def check_answers(address: str) -> None:
    """Refuse at once a cluster address where nothing listens (Ray itself would hang for minutes)."""
    target = _bootstrap_host_port(address)
    if target is None:
        return  # "auto" with no address file: Ray's own error says so at once
    try:
        socket.create_connection(target, timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        reason = "no answer" if isinstance(error, TimeoutError) else error.strerror or str(error)
        raise UserInputError(
            f"no Ray cluster answers at {address!r} ({target[0]}:{target[1]}: {reason}); start it, "
            f"or leave out --address and {RAY_ADDRESS_VARIABLE} to let genre start a Ray of its own"
        ) from None


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
