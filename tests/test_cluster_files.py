"""The cluster files as written: one image built from cluster/Dockerfile with constraints.txt's exact
versions, token authentication on everywhere, shared storage that each manifest brings or mounts.

Running them for real: tests/test_cluster.py (a local head with its token, a job, a sweep).
"""

import re
import shlex
import tomllib
from pathlib import Path

import yaml

from tests.ray_nodes import REPO

CLUSTER = REPO / "cluster"
RAYCLUSTER = CLUSTER / "kuberay" / "raycluster.yaml"
RAYJOB = CLUSTER / "kuberay" / "rayjob.yaml"
LAUNCHER = CLUSTER / "launcher" / "aws-gpu.yaml"
DOCKERFILE = CLUSTER / "Dockerfile"
RUNTIME_ENV = REPO / "jobs" / "runtime_env.yaml"
# What the image copies and installs from the repository.
IMAGE_SOURCES = ("pyproject.toml", "constraints.txt", "README.md", "genre/", "data_pipeline/")
# Runtime-environment fields that install packages on every node, per job.
INSTALLING_FIELDS = {"pip", "uv", "conda", "py_executable", "image_uri", "container"}
# GPUs per instance type used in the launcher YAML.
GPUS_PER_INSTANCE = {"g5.xlarge": 1, "g5.12xlarge": 4, "p4d.24xlarge": 8}


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifests() -> list[tuple[Path, dict]]:
    """Every YAML document under cluster/, with its file."""
    return [(path, doc) for path in sorted(CLUSTER.rglob("*.yaml")) for doc in documents(path)]


def walk(node, key):
    """Every value stored under `key` anywhere in a parsed YAML tree."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from walk(v, key)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item, key)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def constrained_versions() -> dict[str, str]:
    """constraints.txt: the exact version of each package, by canonical name."""
    versions = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            versions[canonical(name)] = version.strip()
    return versions


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) of each line of cluster/Dockerfile, comments left out."""
    lines = [line.split(maxsplit=1) for line in DOCKERFILE.read_text().splitlines()]
    return [(words[0].upper(), words[1]) for words in lines if words and not words[0].startswith("#")]


def built_image() -> str:
    """The tag the Dockerfile's own build command gives the image."""
    build = next(line for line in DOCKERFILE.read_text().splitlines() if "docker build" in line)
    words = shlex.split(build.lstrip("# "))
    return words[words.index("-t") + 1]


def kuberay_cluster_specs() -> list[dict]:
    """The RayCluster spec of raycluster.yaml and the one rayjob.yaml makes for its job."""
    specs = [doc["spec"] for doc in documents(RAYCLUSTER) if doc["kind"] == "RayCluster"]
    specs += [doc["spec"]["rayClusterSpec"] for doc in documents(RAYJOB) if doc["kind"] == "RayJob"]
    return specs


def test_every_manifest_parses_and_names_the_ray_version_of_the_constraints():
    docs = manifests()
    assert len(docs) >= 5
    versions = [v for _, doc in docs for v in walk(doc, "rayVersion")]
    assert len(versions) == 2 and set(versions) == {constrained_versions()["ray"]}


def test_the_dockerfile_starts_from_the_ray_gpu_image_of_the_constraints():
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", f"rayproject/ray:{constrained_versions()['ray']}-py311-gpu")
    assert [name for name, _ in instructions].count("FROM") == 1


def test_the_dockerfile_installs_genre_with_the_exact_versions_of_constraints_txt():
    instructions = dockerfile_instructions()
    copied = {word for name, args in instructions if name == "COPY" for word in args.split()}
    assert set(IMAGE_SOURCES) <= copied
    installs = [args for name, args in instructions if name == "RUN" and "pip install" in args]
    assert len(installs) == 1
    words = installs[0].split("&&")[0].split()
    assert words[words.index("-c") + 1] == "constraints.txt" and words[-1] == "."


def test_the_image_build_context_holds_what_the_dockerfile_copies_and_not_the_local_venv():
    patterns = (CLUSTER / "Dockerfile.dockerignore").read_text().splitlines()
    patterns = [p for p in patterns if p.strip() and not p.startswith("#")]
    assert patterns[0] == "*"  # everything out, then what the image needs back in
    assert {f"!{source}" for source in IMAGE_SOURCES} <= set(patterns)


def test_every_cluster_runs_the_one_image_that_the_dockerfile_builds():
    image = built_image()
    assert image.endswith(":" + tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"])
    images = [found for _, doc in manifests() for found in walk(doc, "image")]
    assert len(images) == 5  # head and workers of raycluster.yaml and rayjob.yaml, the launcher's
    assert set(images) == {image}


def test_no_job_reinstalls_what_the_image_has():
    runtime_envs = [yaml.safe_load(RUNTIME_ENV.read_text())]
    runtime_envs += [yaml.safe_load(doc["spec"]["runtimeEnvYAML"]) for doc in documents(RAYJOB)
                     if doc["kind"] == "RayJob"]  # fmt: skip
    assert len(runtime_envs) == 2
    for runtime_env in runtime_envs:
        assert not INSTALLING_FIELDS & set(runtime_env), runtime_env
    launcher = yaml.safe_load(LAUNCHER.read_text())
    assert not any("pip install" in command for command in launcher.get("setup_commands") or [])


def test_the_rayjob_runs_the_genre_of_its_image_without_a_working_directory():
    job = next(doc for doc in documents(RAYJOB) if doc["kind"] == "RayJob")
    assert "working_dir" not in yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    entrypoint = shlex.split(job["spec"]["entrypoint"])
    assert entrypoint[:2] == ["genre", "sweep"] and "--address" in entrypoint


def test_every_kuberay_cluster_turns_token_authentication_on():
    specs = kuberay_cluster_specs()
    assert len(specs) == 2
    assert all(spec["authOptions"]["mode"] == "token" for spec in specs)


def test_every_launcher_container_runs_with_token_authentication_and_the_token():
    launcher = yaml.safe_load(LAUNCHER.read_text())
    assert "-e RAY_AUTH_MODE=token" in launcher["docker"]["run_options"]
    # Ray's default token path for the container's user, filled from the same path on the user's machine.
    assert launcher["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


def test_the_local_head_script_turns_token_authentication_on():
    lines = (CLUSTER / "local-head.sh").read_text().splitlines()
    assert "export RAY_AUTH_MODE=token" in lines
    assert any("ray get-auth-token --generate" in line for line in lines)  # `ray start` makes no token


def test_the_efs_mount_is_made_on_the_host_before_the_container_binds_it():
    launcher = yaml.safe_load(LAUNCHER.read_text())
    assert any("mount" in c and "/mnt/genre" in c for c in launcher["initialization_commands"])
    assert not any("mount" in c for c in launcher.get("setup_commands") or [])
    assert "-v /mnt/genre:/mnt/genre" in launcher["docker"]["run_options"]


def test_the_rayjob_file_defines_every_volume_claim_it_mounts():
    docs = documents(RAYJOB)
    claims = {volume["persistentVolumeClaim"]["claimName"] for doc in docs for volumes in walk(doc, "volumes")
              for volume in volumes if "persistentVolumeClaim" in volume}  # fmt: skip
    defined = {doc["metadata"]["name"] for doc in docs if doc["kind"] == "PersistentVolumeClaim"}
    assert claims and claims <= defined


def test_both_kuberay_files_define_the_shared_claim_alike():
    # Applying one after the other must not try to change a claim's (immutable) spec.
    claims = [doc for path in (RAYCLUSTER, RAYJOB) for doc in documents(path)
              if doc["kind"] == "PersistentVolumeClaim"]  # fmt: skip
    assert len(claims) == 2 and claims[0] == claims[1]


def test_gpu_counts_agree_between_ray_and_kubernetes():
    groups = [g for spec in kuberay_cluster_specs() for g in spec["workerGroupSpecs"]]
    assert groups
    for group in groups:
        limits = [c["resources"]["limits"] for c in group["template"]["spec"]["containers"]]
        assert int(group["rayStartParams"]["num-gpus"]) == sum(
            int(limit.get("nvidia.com/gpu", 0)) for limit in limits
        )
        assert any(t["key"] == "nvidia.com/gpu" for t in group["template"]["spec"]["tolerations"])
    launcher = yaml.safe_load(LAUNCHER.read_text())
    for node_type in launcher["available_node_types"].values():
        instance = node_type["node_config"]["InstanceType"]
        assert node_type["resources"].get("GPU", 0) == GPUS_PER_INSTANCE.get(instance, 0)


def test_nothing_listens_on_a_public_address_by_default():
    script = (CLUSTER / "local-head.sh").read_text()
    assert "--dashboard-host=127.0.0.1" in script and "--node-ip-address=127.0.0.1" in script
    launcher = yaml.safe_load(LAUNCHER.read_text())
    assert any("--dashboard-host=127.0.0.1" in c for c in launcher["head_start_ray_commands"])
