"""Every private Ray name genre uses, in one place, each with why no public API does its job.

Ray moves its private modules between minor versions without notice, so pyproject.toml admits only
the Ray minor genre was tested with (`TESTED_RAY`), and tests/test_ray_internals.py loads every name
here: an upgrade that moves one fails there first. At run time a name that is gone stops the command
with one line naming the installed Ray and the tested one; genre never does something else instead.
Nothing else in genre or data_pipeline imports a private Ray module.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from data_pipeline.errors import UserInputError

# The Ray minor the test suite passed with; pyproject.toml's bound admits it alone (a test keeps the
# two equal). Raise both on purpose, after the suite passes on the new minor.
TESTED_RAY = "2.58"


class RayInternalMissing(UserInputError):
    """A private Ray name genre needs is not in the installed Ray (an upgrade moved or removed it)."""


@dataclass(frozen=True)
class Internal:
    """One private name of Ray's: where it lives, and what genre needs it for (said when it is gone)."""

    module: str
    name: str
    purpose: str

    def load(self) -> Any:
        """The name itself, imported now; RayInternalMissing, in one line, if this Ray has none."""
        try:
            return getattr(importlib.import_module(self.module), self.name)
        except (ImportError, AttributeError) as error:
            raise RayInternalMissing(
                f"Ray {installed_ray()} has no {self.module}.{self.name} ({type(error).__name__}), which "
                f"genre needs for {self.purpose}; genre was tested with Ray {TESTED_RAY}: install "
                f"'ray=={TESTED_RAY}.*' (the README's install command, -c constraints.txt, does)"
            ) from None


def installed_ray() -> str:
    """The installed Ray's version, read without importing Ray."""
    try:
        return metadata.version("ray")
    except metadata.PackageNotFoundError:
        return "(not installed)"


# `--address auto`: where the last `ray start` left the head's address. `ray.init("auto")` follows the
# same file, but only after waiting minutes on a head that is gone; no public API reads it, and where
# it lies (Ray's temp folder, RAY_TMPDIR) is Ray's own business.
READ_RAY_ADDRESS = Internal("ray._private.utils", "read_ray_address", "--address auto (the head's address)")

# KubeRay: the node types an autoscaler may add, as Ray's KubeRay autoscaler derives them from the
# RayCluster resource. Ray gives a driver no such list (the GCS's cluster config stays empty in
# open-source Ray 2.58), and deriving it again would copy Ray's rules for KubeRay's resource fields.
KUBERAY_AUTOSCALING_CONFIG = Internal(
    "ray.autoscaler._private.kuberay.autoscaling_config",
    "_derive_autoscaling_config_from_ray_cr",
    "the node types of a KubeRay cluster",
)
# The Kubernetes API client that autoscaler reads the RayCluster with, with the head pod's service
# account (its token and CA, refreshed as Kubernetes rotates them).
KUBERNETES_API_CLIENT = Internal(
    "ray.autoscaler._private.kuberay.node_provider",
    "KubernetesHttpApiClient",
    "reading a KubeRay cluster's RayCluster resource",
)
# Read once, when that client's module is imported: its default, 60 s, would hold a sweep's start.
KUBERAY_REQUEST_TIMEOUT_VARIABLE = "KUBERAY_REQUEST_TIMEOUT_S"

# A DeveloperAPI (it may change in any minor): Ray Train V2's trainer with a backend of one's choice.
# The public TorchTrainer always joins its workers in a torch process group, which a one-worker
# trial does not need (and whose store listens on every interface), and imports torch in the trial's
# processes; ray.train exports no other trainer.
DATA_PARALLEL_TRAINER = Internal(
    "ray.train.v2.api.data_parallel_trainer",
    "DataParallelTrainer",
    "one-worker trials (Ray Train's trainer without a process group)",
)

# Ray Train V2's settings, read from the environment by its controller; no public API sets them and
# Ray's docs do not list them. Named here, with the internal constants Ray reads them by, which the
# test compares: an upgrade that renames one would otherwise leave it silently ignored.
TRAIN_POLL_VARIABLE = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
TRAIN_PREEMPTION_WATCHER_VARIABLE = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
TRAIN_VARIABLES = {
    TRAIN_POLL_VARIABLE: Internal(
        "ray.train.v2._internal.constants", "HEALTH_CHECK_INTERVAL_S_ENV_VAR", "Ray Train's poll interval"
    ),
    TRAIN_PREEMPTION_WATCHER_VARIABLE: Internal(
        "ray.train.v2._internal.constants",
        "ENABLE_PREEMPTION_WATCHER_ENV_VAR",
        "turning off Ray Train's preemption watcher on genre's own Ray",
    ),
}

# Ray's switch between its single-node mode (everything on 127.0.0.1: "0") and its cluster mode,
# read when `ray` is imported (so set before that, in data_pipeline.loopback, and never checked at run
# time); a Ray that renamed it would put genre's own Ray on every interface: the test compares it.
RAY_CLUSTER_MODE_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
RAY_CLUSTER_MODE = Internal(
    "ray._private.ray_constants", "ENABLE_RAY_CLUSTERS_ENV_VAR", "keeping genre's own Ray on loopback"
)

INTERNALS = (READ_RAY_ADDRESS, KUBERAY_AUTOSCALING_CONFIG, KUBERNETES_API_CLIENT, DATA_PARALLEL_TRAINER)


def read_ray_address() -> str | None:
    """The address the last `ray start` on this machine left behind, or None."""
    return READ_RAY_ADDRESS.load()()


def kuberay_autoscaling_config(ray_cluster: dict[str, Any]) -> dict[str, Any]:
    """A RayCluster resource as Ray's KubeRay autoscaler configures itself from it."""
    return KUBERAY_AUTOSCALING_CONFIG.load()(ray_cluster)


def get_ray_cluster(namespace: str, name: str, *, timeout_s: int) -> dict[str, Any]:
    """The RayCluster resource `name`, through the Kubernetes API with this pod's service account."""
    os.environ.setdefault(KUBERAY_REQUEST_TIMEOUT_VARIABLE, str(timeout_s))
    client = KUBERNETES_API_CLIENT.load()(namespace, kuberay_crd_version="v1")
    return client.get(f"rayclusters/{name}")


def data_parallel_trainer() -> type:
    """Ray Train V2's DataParallelTrainer class."""
    return DATA_PARALLEL_TRAINER.load()
