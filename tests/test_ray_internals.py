"""Ray's private names that genre uses: all in one module, all present, and one line when one is gone."""

import ast
import importlib
import inspect
import re
import tomllib
from importlib import metadata

import pytest

from data_pipeline import ray_internals
from data_pipeline.errors import UserInputError
from data_pipeline.ray_internals import (
    INTERNALS,
    KUBERAY_REQUEST_TIMEOUT_VARIABLE,
    TESTED_RAY,
    TRAIN_VARIABLES,
    Internal,
    RayInternalMissing,
)
from tests.ray_nodes import REPO

# A private module (a name of it starts with _), or Train V2's own modules: ray.train exports what is public.
PRIVATE_RAY = re.compile(r"^ray(\.\w+)*\._\w+|^ray\.train\.v2\b")


@pytest.mark.parametrize("internal", INTERNALS, ids=lambda internal: internal.name)
def test_every_private_ray_name_genre_uses_is_in_the_installed_ray(internal):
    assert internal.load() is not None


@pytest.mark.parametrize("variable", sorted(TRAIN_VARIABLES))
def test_ray_train_still_reads_the_environment_variables_genre_sets(variable):
    assert TRAIN_VARIABLES[variable].load() == variable


def test_ray_still_reads_the_variable_that_keeps_genres_own_ray_on_loopback():
    assert ray_internals.RAY_CLUSTER_MODE.load() == ray_internals.RAY_CLUSTER_MODE_VARIABLE


def test_kuberays_client_still_reads_its_timeout_from_the_environment():
    module = importlib.import_module(ray_internals.KUBERNETES_API_CLIENT.module)
    assert f'os.getenv("{KUBERAY_REQUEST_TIMEOUT_VARIABLE}"' in inspect.getsource(module)


def test_a_missing_private_name_stops_with_one_line_naming_the_ray_versions(monkeypatch):
    monkeypatch.setattr(ray_internals, "READ_RAY_ADDRESS", Internal("ray._private.utils", "moved_away", "x"))
    with pytest.raises(RayInternalMissing) as raised:
        ray_internals.read_ray_address()
    message = str(raised.value)
    assert "\n" not in message and isinstance(raised.value, UserInputError)  # the CLI's one-line error
    assert f"Ray {metadata.version('ray')} has no ray._private.utils.moved_away" in message
    assert f"tested with Ray {TESTED_RAY}" in message


def test_a_missing_private_module_is_said_the_same_way_and_not_worked_around():
    gone = Internal("ray._private.no_such_module", "anything", "a test")
    with pytest.raises(RayInternalMissing, match=r"has no ray\._private\.no_such_module\.anything"):
        gone.load()


def test_kuberay_node_types_stop_on_a_moved_ray_module_instead_of_reading_as_unknown(monkeypatch, tmp_path):
    from genre.sweep import autoscaler as node_types

    (tmp_path / "token").write_text("t")
    (tmp_path / "namespace").write_text("default")
    monkeypatch.setattr(node_types, "SERVICE_ACCOUNT", tmp_path)
    monkeypatch.setattr(node_types, "LAUNCHER_CONFIG", tmp_path / "absent.yaml")
    monkeypatch.setenv("RAY_CLUSTER_NAME", "genre")
    gone = Internal("ray.autoscaler._private.kuberay.moved", "KubernetesHttpApiClient", "a test")
    monkeypatch.setattr(ray_internals, "KUBERNETES_API_CLIENT", gone)
    with pytest.raises(RayInternalMissing, match="tested with Ray"):
        node_types.scalable_node_types()


def _private_ray_imports(path) -> list[str]:
    tree = ast.parse(path.read_text())
    names = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module]
    names += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    return [name for name in names if PRIVATE_RAY.match(name)]


def test_no_module_but_ray_internals_imports_a_private_ray_module():
    sources = [*(REPO / "genre").rglob("*.py"), *(REPO / "data_pipeline").rglob("*.py")]
    found = {
        str(path.relative_to(REPO)): _private_ray_imports(path)
        for path in sources
        if path.name != "ray_internals.py"
    }
    assert {path: names for path, names in found.items() if names} == {}


def test_pyproject_admits_only_the_ray_minor_genre_was_tested_with():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    ray = next(spec for spec in project["dependencies"] if spec.startswith("ray["))
    major, minor = TESTED_RAY.split(".")
    assert ray.endswith(f">={TESTED_RAY},<{major}.{int(minor) + 1}")
    assert metadata.version("ray").startswith(f"{TESTED_RAY}.")


def test_constraints_pin_a_ray_of_the_tested_minor():
    pins = (REPO / "constraints.txt").read_text().splitlines()
    assert any(line.startswith(f"ray=={TESTED_RAY}.") for line in pins)
