"""Which nodes an autoscaling cluster can add: read from the cluster's own autoscaler configuration.

Ray 2.58 gives a driver no such list (its GCS entry for it stays empty in open-source Ray), so it is
read where the autoscaler reads it: the cluster launcher's `~/ray_bootstrap_config.yaml` on the head
(a Ray Job's driver runs there), or, under KubeRay, the RayCluster resource, through the Kubernetes
API with the head pod's service account (the in-tree autoscaler's own, which may read it). Anything
else (a cluster of `ray start` nodes, a read that fails) is None: genre cannot tell what may join.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from genre.resources import NodeType

LAUNCHER_CONFIG = Path("~/ray_bootstrap_config.yaml")
KUBERAY_CLUSTER_VARIABLE = "RAY_CLUSTER_NAME"
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
KUBERNETES_TIMEOUT_S = 10


def scalable_node_types() -> tuple[tuple[NodeType, ...] | None, str]:
    """The worker node types the cluster's autoscaler can add (None: unknown), and where they came from."""
    launcher = LAUNCHER_CONFIG.expanduser()
    if launcher.is_file():
        try:
            # `ray up` writes it as JSON, which is also YAML.
            return node_types_from_config(json.loads(launcher.read_text())), f"the launcher's {launcher}"
        except (OSError, ValueError, KeyError, TypeError) as error:
            return None, f"{launcher} could not be read ({error})"
    cluster = os.environ.get(KUBERAY_CLUSTER_VARIABLE)
    if cluster and (SERVICE_ACCOUNT / "token").is_file():
        try:
            return node_types_from_config(_kuberay_config(cluster)), f"the RayCluster {cluster!r}"
        except Exception as error:  # the Kubernetes API's errors are many; none may stop the sweep
            return None, f"the RayCluster {cluster!r} could not be read ({type(error).__name__}: {error})"
    return None, "no autoscaler configuration found"


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
    """A RayCluster resource as KubeRay's autoscaler sees it (its groups as node types); one
    without KubeRay's autoscaler adds no node (its worker groups are as the resource says)."""
    # A private module of Ray's (pinned at 2.58): check it when Ray is upgraded.
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

    config = _derive_autoscaling_config_from_ray_cr(ray_cluster)
    if not ray_cluster["spec"].get("enableInTreeAutoscaling", False):
        config["available_node_types"] = {}
    return config


def _kuberay_config(cluster: str) -> dict[str, Any]:
    # Read when Ray's module is imported; its default (60 s) would hold the sweep's start that long.
    os.environ.setdefault("KUBERAY_REQUEST_TIMEOUT_S", str(KUBERNETES_TIMEOUT_S))
    from ray.autoscaler._private.kuberay.node_provider import KubernetesHttpApiClient

    namespace = os.environ.get("RAY_CLUSTER_NAMESPACE") or (SERVICE_ACCOUNT / "namespace").read_text().strip()
    ray_cluster = KubernetesHttpApiClient(namespace, kuberay_crd_version="v1").get(f"rayclusters/{cluster}")
    return kuberay_autoscaling_config(ray_cluster)
