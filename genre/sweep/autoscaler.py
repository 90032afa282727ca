"""Which nodes an autoscaling cluster can add: read from the cluster's own autoscaler configuration.

Ray 2.58 gives a driver no such list (its GCS entry for it stays empty in open-source Ray), nor a
public way to ask whether an autoscaler runs: `ray start --head` runs the same monitor process as a
launcher's head, with a read-only provider, so even Ray's private status key is there on both. So it
is read where the autoscaler reads it: the cluster launcher's `~/ray_bootstrap_config.yaml` on the
head (a Ray Job's driver runs there), or, under KubeRay (its pods carry RAY_CLUSTER_NAME), the
RayCluster resource, through the Kubernetes API with the head pod's service account (the in-tree
autoscaler's own, which may read it). Neither present: no autoscaler runs (a cluster of `ray start`
nodes), unless genre runs outside the cluster (Ray Client, `ray://`), where neither could be seen.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from data_pipeline import ray_internals
from data_pipeline.ray_internals import RayInternalMissing
from genre.sweep.plan import ClusterGrowth, NodeType

LAUNCHER_CONFIG = Path("~/ray_bootstrap_config.yaml")
KUBERAY_CLUSTER_VARIABLE = "RAY_CLUSTER_NAME"
KUBERAY_NAMESPACE_VARIABLE = "RAY_CLUSTER_NAMESPACE"
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
KUBERNETES_TIMEOUT_S = 10
NO_AUTOSCALER = "no autoscaler configuration found"


def scalable_node_types(*, ray_client: bool = False) -> ClusterGrowth:
    """What the cluster's autoscaler can add, or why that is unknown. `ray_client`: genre reached the
    cluster through Ray Client (`ray://`), so runs outside it, where its configuration is not.

    A private Ray module that is gone raises RayInternalMissing (one line naming the Ray version).
    """
    launcher = LAUNCHER_CONFIG.expanduser()
    if launcher.is_file():
        try:
            # `ray up` writes it as JSON, which is also YAML.
            types = node_types_from_config(json.loads(launcher.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as error:
            return ClusterGrowth(None, autoscaler=True, source=f"{launcher} could not be read ({error})")
        return ClusterGrowth(types, autoscaler=True, source=f"the launcher's {launcher}")
    cluster = os.environ.get(KUBERAY_CLUSTER_VARIABLE)
    if cluster:
        return _kuberay_growth(cluster)
    if ray_client:
        return ClusterGrowth(
            None,
            autoscaler=True,
            source="genre reached it through Ray Client (ray://), from outside, where its autoscaler's "
            "configuration cannot be read",
        )
    return ClusterGrowth(None, autoscaler=False, source=NO_AUTOSCALER)


def _kuberay_growth(cluster: str) -> ClusterGrowth:
    """A KubeRay cluster's node types, from its RayCluster resource; unknown (an autoscaler may run)
    where this pod may not read it."""
    token = SERVICE_ACCOUNT / "token"
    if not token.is_file():
        return ClusterGrowth(
            None, autoscaler=True, source=f"the RayCluster {cluster!r} cannot be read: no {token}"
        )
    try:
        types = node_types_from_config(_kuberay_config(cluster))
    except RayInternalMissing:
        raise  # an upgraded Ray: said as such, never taken for a cluster that cannot be read
    except Exception as error:  # the Kubernetes API's errors are many; each one means "unknown"
        source = f"the RayCluster {cluster!r} could not be read ({type(error).__name__}: {error})"
        return ClusterGrowth(None, autoscaler=True, source=source)
    return ClusterGrowth(types, autoscaler=bool(types), source=f"the RayCluster {cluster!r}")


def node_types_from_config(config: dict[str, Any]) -> tuple[NodeType, ...]:
    """The worker types of an autoscaler configuration (launcher YAML, or KubeRay's derived one)."""
    head = config.get("head_node_type")
    return tuple(
        NodeType(
            name=name,
            cpus=float(spec.get("resources", {}).get("CPU", 0)),
            gpus=float(spec.get("resources", {}).get("GPU", 0)),
            max_workers=int(spec.get("max_workers", 0)),
        )
        for name, spec in config["available_node_types"].items()
        if name != head and int(spec.get("max_workers", 0)) > 0
    )


def kuberay_autoscaling_config(ray_cluster: dict[str, Any]) -> dict[str, Any]:
    """A RayCluster resource as KubeRay's autoscaler sees it (its groups as node types). One without
    KubeRay's autoscaler has the nodes its worker groups' `replicas` say, and no more: they are its
    node types, up to that many each (pods that are still pending are nodes on their way)."""
    config = ray_internals.kuberay_autoscaling_config(ray_cluster)
    if not ray_cluster["spec"].get("enableInTreeAutoscaling", False):
        groups = ray_cluster["spec"].get("workerGroupSpecs", [])
        replicas = {group["groupName"]: int(group.get("replicas", 0)) for group in groups}
        config["available_node_types"] = {
            name: {**spec, "max_workers": replicas[name]}
            for name, spec in config["available_node_types"].items()
            if name in replicas
        }
    return config


def _kuberay_config(cluster: str) -> dict[str, Any]:
    namespace = (
        os.environ.get(KUBERAY_NAMESPACE_VARIABLE) or (SERVICE_ACCOUNT / "namespace").read_text().strip()
    )
    ray_cluster = ray_internals.get_ray_cluster(namespace, cluster, timeout_s=KUBERNETES_TIMEOUT_S)
    return kuberay_autoscaling_config(ray_cluster)
