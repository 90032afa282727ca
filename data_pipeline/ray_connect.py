"""Connecting to Ray: a local instance started here, or a running cluster."""

from __future__ import annotations

import logging

import ray

from data_pipeline.errors import UserInputError


def connect_ray(address: str | None = None, *, dashboard: bool = False, worker_logs: bool = True) -> None:
    """Start a local Ray (address None) or join the cluster at `address` ('auto', 'ray://...').

    `dashboard` starts Ray's dashboard with a local instance (on 127.0.0.1): Ray Train's placement
    group cleaner queries its state API. `worker_logs` False keeps the workers' output in Ray's log
    files instead of the terminal (the sweep prints its own live view).
    """
    quiet_ray_data_logs()
    if ray.is_initialized():
        return
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=worker_logs)
        else:
            ray.init(include_dashboard=dashboard, logging_level=logging.WARNING, log_to_driver=worker_logs)
    except ConnectionError as error:
        raise UserInputError(f"cannot connect to Ray at {address!r}: {error}") from None


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
