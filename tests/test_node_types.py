"""Which nodes an autoscaling cluster can add, read from the shipped cluster definitions."""

import json

import pytest
import yaml

from genre.sweep import autoscaler
from genre.sweep.autoscaler import kuberay_autoscaling_config, node_types_from_config, scalable_node_types
from genre.sweep.plan import ClusterGrowth, NodeType
from tests.ray_nodes import REPO


@pytest.fixture
def nowhere(tmp_path, monkeypatch):
    """A driver with no launcher configuration, outside KubeRay, and no service account."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_CLUSTER_NAME", raising=False)
    monkeypatch.delenv("RAY_CLUSTER_NAMESPACE", raising=False)
    monkeypatch.setattr(autoscaler, "SERVICE_ACCOUNT", tmp_path / "serviceaccount")
    return tmp_path


def test_the_launchers_bootstrap_config_on_the_head_gives_its_worker_types(tmp_path, monkeypatch):
    # `ray up` leaves the cluster YAML on the head as JSON, with each node type's resources filled in.
    launcher = yaml.safe_load((REPO / "cluster" / "launcher" / "aws-gpu.yaml").read_text())
    (tmp_path / "ray_bootstrap_config.yaml").write_text(json.dumps(launcher))
    monkeypatch.setenv("HOME", str(tmp_path))
    growth = scalable_node_types()
    assert growth.node_types == (NodeType("gpu", cpus=4, gpus=1, max_workers=4),)  # the 0-CPU head is not one
    assert str(tmp_path) in growth.source


def test_the_kuberay_cluster_resource_gives_its_gpu_group():
    cluster = next(yaml.safe_load_all((REPO / "cluster" / "kuberay" / "raycluster.yaml").read_text()))
    cluster["metadata"]["namespace"] = "default"  # as the Kubernetes API returns it
    node_types = node_types_from_config(kuberay_autoscaling_config(cluster))
    assert node_types == (NodeType("gpu", cpus=8, gpus=1, max_workers=4),)


def test_a_cluster_of_ray_start_nodes_has_no_autoscaler(nowhere):
    assert scalable_node_types() == ClusterGrowth(
        None, autoscaler=False, source="no autoscaler configuration found"
    )


def test_an_unreadable_launcher_config_is_an_autoscaler_whose_node_types_are_unknown(nowhere):
    (nowhere / "ray_bootstrap_config.yaml").write_text("{not json")
    growth = scalable_node_types()
    assert growth.node_types is None and growth.autoscaler and "could not be read" in growth.source


def test_a_kuberay_pod_without_a_service_account_token_has_an_autoscaler_that_cannot_be_read(
    nowhere, monkeypatch
):
    monkeypatch.setenv("RAY_CLUSTER_NAME", "genre")
    growth = scalable_node_types()
    assert growth.node_types is None and growth.autoscaler
    assert "the RayCluster 'genre' cannot be read: no " in growth.source


def test_a_raycluster_the_pod_may_not_read_is_an_autoscaler_whose_node_types_are_unknown(
    nowhere, monkeypatch
):
    account = nowhere / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("t")
    (account / "namespace").write_text("default")
    monkeypatch.setenv("RAY_CLUSTER_NAME", "genre")

    def forbidden(namespace, name, *, timeout_s):
        raise RuntimeError("403 Forbidden: rayclusters.ray.io 'genre' is forbidden")

    monkeypatch.setattr(autoscaler.ray_internals, "get_ray_cluster", forbidden)
    growth = scalable_node_types()
    assert growth.node_types is None and growth.autoscaler and "403 Forbidden" in growth.source


def test_a_readable_raycluster_gives_its_node_types(nowhere, monkeypatch):
    account = nowhere / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("t")
    (account / "namespace").write_text("default")
    monkeypatch.setenv("RAY_CLUSTER_NAME", "genre")
    cluster = next(yaml.safe_load_all((REPO / "cluster" / "kuberay" / "raycluster.yaml").read_text()))
    cluster["metadata"]["namespace"] = "default"
    asked = []
    monkeypatch.setattr(
        autoscaler.ray_internals,
        "get_ray_cluster",
        lambda namespace, name, *, timeout_s: asked.append((namespace, name)) or cluster,
    )
    growth = scalable_node_types()
    assert growth.node_types == (NodeType("gpu", cpus=8, gpus=1, max_workers=4),)
    assert asked == [("default", "genre")]


def test_through_ray_client_an_autoscaler_may_run_unseen(nowhere):
    growth = scalable_node_types(ray_client=True)
    assert growth.node_types is None and growth.autoscaler and "ray://" in growth.source


def test_a_kuberay_cluster_without_its_autoscaler_has_what_its_replicas_say_and_no_more():
    cluster = next(yaml.safe_load_all((REPO / "cluster" / "kuberay" / "raycluster.yaml").read_text()))
    cluster["metadata"]["namespace"] = "default"
    cluster["spec"]["enableInTreeAutoscaling"] = False
    group = cluster["spec"]["workerGroupSpecs"][0]
    group.update(replicas=2, maxReplicas=4)
    # Its GPU pods may still be pending: a sweep plans for them and waits, rather than train on CPU.
    (gpu,) = node_types_from_config(kuberay_autoscaling_config(cluster))
    assert (gpu.name, gpu.gpus, gpu.max_workers) == (group["groupName"], 1, 2)
    group["replicas"] = 0
    assert node_types_from_config(kuberay_autoscaling_config(cluster)) == ()
