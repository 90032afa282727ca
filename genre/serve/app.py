"""Starting and stopping `genre serve`'s Ray Serve application: the options checked, the deployment bound
to a checkpoint's bytes, Serve's HTTP proxy on the asked host and port; runs in the `genre` process."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
from dataclasses import dataclass

import ray
from ray import serve

from data_pipeline.errors import UserInputError
from data_pipeline.loopback import is_loopback_address
from genre.serve.deployment import GenreClassifier, ReplicaModel, ReplicaSetup
from genre.serve.uploads import MAX_BODY_BYTES, ROUTE
from genre.train.checkpoints import CheckpointBytes, check_finite_weights, load_checkpoint

APP_NAME = "genre"
# A replica that fails to start (a GPU that will not initialise) is tried this often, not Serve's 20.
CONSTRUCTOR_RETRIES = 3
# On the way out, requests in progress get this long to finish before their replica is stopped.
GRACEFUL_SHUTDOWN_S = 5.0


@dataclass(frozen=True)
class ServeOptions:
    """How `genre serve` serves: where it listens, its replicas and their GPUs, how it batches."""

    host: str
    port: int
    replicas: int
    gpus_per_replica: float
    max_batch_size: int
    batch_wait_s: float
    max_body_bytes: int = MAX_BODY_BYTES

    def check(self) -> None:
        """One line on the first value that cannot be served with."""
        if not 1 <= self.port <= 65535:
            raise UserInputError(f"--port must be 1 to 65535, not {self.port}")
        if self.replicas < 1:
            raise UserInputError(f"--replicas must be at least 1, not {self.replicas}")
        if self.gpus_per_replica < 0:
            raise UserInputError(f"--gpus-per-replica must be 0 or more, not {self.gpus_per_replica:g}")
        if self.gpus_per_replica > 1 and not self.gpus_per_replica.is_integer():
            raise UserInputError(
                f"--gpus-per-replica above 1 must be a whole number (Ray's rule), not "
                f"{self.gpus_per_replica:g}"
            )
        if self.max_batch_size < 1:
            raise UserInputError(f"--max-batch-size must be at least 1, not {self.max_batch_size}")
        if self.batch_wait_s < 0:
            raise UserInputError(f"--batch-wait-s must be 0 or more, not {self.batch_wait_s:g}")

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if _is_ipv6(self.host) else self.host
        return f"http://{host}:{self.port}{ROUTE}"


@dataclass(frozen=True)
class Serving:
    """What `genre serve` serves, once its replicas are up."""

    model: ReplicaModel
    options: ServeOptions

    def ready_line(self) -> str:
        replicas = self.options.replicas
        gpus = f", {self.options.gpus_per_replica:g} GPU each" if self.options.gpus_per_replica else ""
        return (
            f"genre serve: {self.model.name} ({self.model.checkpoint}) at {self.options.url} "
            f"({replicas} replica{'s' if replicas > 1 else ''} on {self.model.device}{gpus})"
        )


def start_serving(checkpoint: CheckpointBytes, options: ServeOptions, cluster: str | None = None) -> Serving:
    """Serve the checkpoint on the connected Ray until `stop_serving`; returns once every replica is up
    (stopped again if they do not come up).

    `cluster`: the address joined (None: a Ray of genre's own). Serve must not run there yet: its HTTP
    options are fixed when it starts, so another's proxy would not listen where this one was asked to.
    """
    options.check()
    # A checkpoint that cannot load is one line here, rather than every replica failing to start.
    check_finite_weights(load_checkpoint(checkpoint), checkpoint.location)
    _check_gpus(options.gpus_per_replica, cluster)
    _check_serve_not_running()
    if cluster is None or is_loopback_address(cluster):
        _check_port_free(options.host, options.port)  # the proxy's on this machine: Serve would retry forever
    try:
        # Serve's own start-up lines stay in its log files; the replicas' request lines (the access log)
        # come to the terminal, with Ray's other worker output.
        logging.getLogger("ray.serve").setLevel(logging.WARNING)
        serve.start(
            http_options={"host": options.host, "port": options.port}, logging_config={"log_level": "WARNING"}
        )
        handle = serve.run(
            _application(checkpoint, options),
            name=APP_NAME,
            route_prefix=ROUTE,
            logging_config={"log_level": "INFO"},
        )
        return Serving(handle.describe.remote().result(), options)
    except RuntimeError as error:  # Serve's "Deploying ... failed" with the replica's traceback
        stop_serving()
        lines = [line for line in str(error).strip().splitlines() if line.strip()]
        raise UserInputError(f"the replicas did not start: {lines[-1] if lines else error}") from None
    except BaseException:  # Ctrl-C while the replicas start: what had started stops
        stop_serving()
        raise


def stop_serving() -> None:
    """Stop the application and Serve with it (its controller and proxies), whatever had started."""
    with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C: the Ray's own stop still follows
        serve.shutdown()


def _application(checkpoint: CheckpointBytes, options: ServeOptions) -> serve.Application:
    setup = ReplicaSetup(checkpoint, options.max_batch_size, options.batch_wait_s, options.max_body_bytes)
    return GenreClassifier.options(
        num_replicas=options.replicas,
        ray_actor_options={"num_gpus": options.gpus_per_replica},  # and Serve's default of one CPU
        # Room for a full batch being predicted and the next one gathering meanwhile.
        max_ongoing_requests=2 * options.max_batch_size,
        max_constructor_retry_count=CONSTRUCTOR_RETRIES,
        graceful_shutdown_timeout_s=GRACEFUL_SHUTDOWN_S,
        graceful_shutdown_wait_loop_s=min(1.0, GRACEFUL_SHUTDOWN_S),
    ).bind(setup)


def _check_gpus(gpus_per_replica: float, cluster: str | None) -> None:
    """Refuse GPUs from a Ray that has none and whose autoscaler cannot add any."""
    if gpus_per_replica == 0 or ray.cluster_resources().get("GPU", 0) > 0:
        return
    if cluster is not None:
        from genre.sweep.autoscaler import scalable_node_types

        growth = scalable_node_types(ray_client=cluster.startswith("ray://"))
        if growth.node_types is None and growth.autoscaler:
            return  # it may add GPU nodes: the replicas wait for them, as a sweep's trials do
        if any(node.gpus >= gpus_per_replica for node in growth.node_types or ()):
            return
    raise UserInputError(
        f"--gpus-per-replica {gpus_per_replica:g} asks for GPUs, but this Ray has none (nor can its "
        "autoscaler add any); leave it out to serve on the CPU"
    )


def _check_serve_not_running() -> None:
    status = serve.status()
    if status.proxies or status.applications:
        names = ", ".join(sorted(status.applications)) or "none"
        raise UserInputError(
            f"Ray Serve already runs on this Ray (applications: {names}), with HTTP options of its own; "
            "stop it first (`serve shutdown`, or the `genre serve` that started it)"
        )


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if _is_ipv6(host) else socket.AF_INET
    try:
        with socket.socket(family) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the proxy's uvicorn binds
            probe.bind((host, port))
    except OSError as error:
        raise UserInputError(f"cannot listen on {host} port {port}: {error.strerror or error}") from None


def _is_ipv6(host: str) -> bool:
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host).version == 6
    return False
