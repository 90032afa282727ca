"""Which nodes an autoscaling cluster can add, read from the shipped cluster definitions."""

import json

import yaml

from genre.node_types import kuberay_autoscaling_config, node_types_from_config, scalable_node_types
from genre.resources import NodeType
from tests.ray_nodes import REPO


def test_the_launchers_bootstrap_config_on_the_head_gives_its_worker_types(tmp_path, monkeypatch):
    # `ray up` leaves the cluster YAML on the head as JSON, with each node type's resources filled in.
    launcher = yaml.safe_load((REPO / "cluster" / "launcher" / "aws-gpu.yaml").read_text())
    (tmp_path / "ray_bootstrap_config.yaml").write_text(json.dumps(launcher))
    monkeypatch.setenv("HOME", str(tmp_path))
    node_types, source = scalable_node_types()
    assert node_types == (NodeType("gpu", cpus=4, gpus=1, max_workers=4),)  # the 0-CPU head is not one
    assert str(tmp_path) in source


def test_the_kuberay_cluster_resource_gives_its_gpu_group():
    cluster = next(yaml.safe_load_all((REPO / "cluster" / "kuberay" / "raycluster.yaml").read_text()))
    cluster["metadata"]["namespace"] = "default"  # as the Kubernetes API returns it
    node_types = node_types_from_config(kuberay_autoscaling_config(cluster))
    assert node_types == (NodeType("gpu", cpus=8, gpus=1, max_workers=4),)


def test_a_cluster_without_autoscaler_configuration_has_unknown_node_types(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_CLUSTER_NAME", raising=False)
    assert scalable_node_types() == (None, "no autoscaler configuration found")


def test_an_unreadable_launcher_config_leaves_the_node_types_unknown_with_the_reason(tmp_path, monkeypatch):
    (tmp_path / "ray_bootstrap_config.yaml").write_text("{not json")
    monkeypatch.setenv("HOME", str(tmp_path))
    node_types, source = scalable_node_types()
    assert node_types is None and "could not be read" in source


def test_a_kuberay_cluster_without_its_autoscaler_adds_no_node():
    cluster = next(yaml.safe_load_all((REPO / "cluster" / "kuberay" / "raycluster.yaml").read_text()))
    cluster["metadata"]["namespace"] = "default"
    cluster["spec"]["enableInTreeAutoscaling"] = False
    assert node_types_from_config(kuberay_autoscaling_config(cluster)) == ()
