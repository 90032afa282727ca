"""The cluster files as written: one image built from cluster/Dockerfile with constraints.txt's exact
versions and one CUDA (Ray's base image and PyTorch's build agree, and every file states the driver it
needs), a launcher that boots a GPU AMI with room for the image, token authentication on everywhere,
shared storage that each manifest brings or mounts.

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
# The oldest Linux NVIDIA driver (major) each CUDA runs on, from NVIDIA's CUDA release notes.
DRIVER_FLOOR = {"12.1": 530, "12.4": 550, "12.6": 560, "12.8": 570, "12.9": 575, "13.0": 580}
# Every file that names the image, each of which states the driver its GPU nodes need.
DRIVER_STATED_IN = (DOCKERFILE, RAYCLUSTER, RAYJOB, LAUNCHER, CLUSTER / "README.md")
# The launcher's root disk: the Deep Learning Base AMI's own root snapshot, plus the image twice over
# (a new tag is pulled while the old one is still on disk): Ray's CUDA devel image and PyTorch's CUDA
# libraries, about 25 GB unpacked.
AMI_ROOT_SNAPSHOT_GB = 75
IMAGE_GB = 25
# The CUDA 13 libraries of PyPI's torch, which constraints.txt pins and the image must not install.
CUDA_LIBRARY = re.compile(r"^(cuda|nvidia)-")


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
    """(instruction, arguments) of each instruction of cluster/Dockerfile (continued lines joined, as
    Docker reads them), comments left out."""
    text = DOCKERFILE.read_text().replace("\\\n", "")
    lines = [line.split(maxsplit=1) for line in text.splitlines()]
    return [(words[0].upper(), words[1]) for words in lines if words and not words[0].startswith("#")]


def shell_commands(script: str) -> list[str]:
    """The commands of a shell script's one line, split at each `;` outside quotes, blanks squeezed."""
    commands, current, quote = [], "", None
    for char in script:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == ";":
            commands.append(current.strip())
            current = ""
            continue
        current += char
    return [" ".join(command.split()) for command in [*commands, current] if command.strip()]


def install_commands() -> list[str]:
    """The shell commands of the Dockerfile's one RUN that installs packages, in order."""
    installs = [args for name, args in dockerfile_instructions() if name == "RUN" and "pip install" in args]
    assert len(installs) == 1
    return shell_commands(installs[0])


def image_cuda() -> str:
    """The CUDA of the Dockerfile's base image, from Ray's -cuXYZ tag: cu128 -> "12.8"."""
    base = dict(dockerfile_instructions())["FROM"]
    match = re.fullmatch(r"rayproject/ray:[0-9.]+-py311-cu(\d+)(\d)", base)
    assert match, f"{base}: not a -cuXYZ tag (Ray's -gpu alias hides which CUDA it is)"
    return f"{match[1]}.{match[2]}"


def torch_cuda() -> str:
    """The PyTorch CUDA variant the Dockerfile installs, from its TORCH_CUDA argument: cu128 -> "12.8"."""
    instructions = dockerfile_instructions()
    args = [args for name, args in instructions if name == "ARG" and args.startswith("TORCH_CUDA=")]
    assert len(args) == 1, "no ARG TORCH_CUDA=cuXYZ: which CUDA build of torch the image installs"
    match = re.fullmatch(r"TORCH_CUDA=cu(\d+)(\d)", args[0])
    assert match, args[0]
    return f"{match[1]}.{match[2]}"


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


def test_the_dockerfile_starts_from_a_ray_cuda_image_of_the_constraints():
    instructions = dockerfile_instructions()
    name, base = instructions[0]
    ray = constrained_versions()["ray"]
    assert name == "FROM" and re.fullmatch(rf"rayproject/ray:{ray}-py311-cu\d+", base)
    assert [name for name, _ in instructions].count("FROM") == 1


def test_the_image_and_its_torch_are_built_for_one_cuda():
    # Ray's -cuXYZ image is built on nvidia/cuda X.Y, PyTorch's +cuXYZ wheels on CUDA X.Y: the two agree
    # when their major.minor does (one CUDA runtime in the image, and one driver floor for the nodes).
    assert image_cuda() == torch_cuda() in DRIVER_FLOOR
    commands = install_commands()
    torch_install = next(c for c in commands if "download.pytorch.org" in c)
    words = torch_install.split()
    assert words[:2] == ["pip", "install"] and "--no-deps" in words  # nothing else from PyTorch's index
    assert words[words.index("--index-url") + 1] == "https://download.pytorch.org/whl/${TORCH_CUDA}"
    # Its packages: constraints.txt's torch, torchvision and torchaudio, each as the +${TORCH_CUDA} build.
    assert "for name in torch torchvision torchaudio" in commands
    assert 'do version=$(sed -n "s/^$name==//p" constraints.txt)' in commands
    assert 'torch_builds="$torch_builds $name==$version+${TORCH_CUDA}"' in commands
    assert all(canonical(name) in constrained_versions() for name in ("torch", "torchvision", "torchaudio"))
    # The build itself checks that torch is that CUDA's build and that no other CUDA's library came in.
    check = next(c for c in commands if c.startswith("python -c"))
    assert "torch.version.cuda" in check and check.endswith('"${TORCH_CUDA}"')


def test_the_dockerfile_installs_genre_with_the_exact_versions_of_constraints_txt():
    instructions = dockerfile_instructions()
    copied = {word for name, args in instructions if name == "COPY" for word in args.split()}
    assert set(IMAGE_SOURCES) <= copied
    commands = install_commands()
    genre = [c for c in commands if c.startswith("pip install") and c.endswith(" .")]
    assert len(genre) == 1
    words = genre[0].split()
    constraints = words[words.index("-c") + 1]
    # constraints.txt less the CUDA 13 libraries of PyPI's torch, made by the filter just before.
    made = [c for c in commands if c.endswith(f"> {constraints}")]
    assert len(made) == 1 and commands.index(made[0]) < commands.index(genre[0])
    pattern, source = re.fullmatch(r"grep -vE '([^']+)' (\S+) > \S+", made[0]).groups()
    assert source == "constraints.txt"
    pins = constrained_versions()
    kept = {name for name in pins if not re.search(pattern, name)}
    assert {name for name in pins if CUDA_LIBRARY.search(name)}, "constraints.txt pins no CUDA library"
    assert kept == {name for name in pins if not CUDA_LIBRARY.search(name)}  # every other pin stays
    assert {"torch", "torchvision", "torchaudio", "triton", "ray"} <= kept
    assert not any(name.endswith("-cu13") for name in kept)


def test_every_cluster_file_states_the_driver_the_image_needs():
    floor = DRIVER_FLOOR[image_cuda()]
    for path in DRIVER_STATED_IN:
        assert re.search(rf"driver (of )?(\*\*)?(>= )?{floor}\b", path.read_text()), path


def test_the_launcher_boots_a_gpu_ami_with_a_root_disk_for_the_image():
    # Without an ImageId Ray boots its default AMI, whose driver is older than the image's CUDA needs.
    launcher = yaml.safe_load(LAUNCHER.read_text())
    for node_type in launcher["available_node_types"].values():
        config = node_type["node_config"]
        assert re.fullmatch(r"ami-[0-9a-f]{8,17}", config.get("ImageId", "")), config
        root = [m for m in config.get("BlockDeviceMappings", []) if m["DeviceName"] == "/dev/sda1"]
        assert len(root) == 1, config
        assert root[0]["Ebs"]["VolumeSize"] >= AMI_ROOT_SNAPSHOT_GB + 2 * IMAGE_GB
        assert root[0]["Ebs"]["VolumeType"] == "gp3"
    # The file says how to find the current AMI of a region: AWS's public SSM parameter for it.
    ssm = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-24.04/latest/ami-id"
    assert ssm in LAUNCHER.read_text()


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


def test_the_job_entrypoint_hands_on_the_sweeps_exit_code(tmp_path):
    """A job runner reads the entrypoint's code: jobs/sweep.sh must not turn a failed sweep into 0."""
    import os
    import stat
    import subprocess

    from genre.cli import EXIT_SOME_TRIALS_FAILED

    # A `python` that records its arguments and exits as a sweep with failed trials does.
    stub = tmp_path / "python"
    stub.write_text(f'#!/bin/sh\necho "$@" > "{tmp_path}/args"\nexit {EXIT_SOME_TRIALS_FAILED}\n')
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    run = subprocess.run(["bash", str(REPO / "jobs" / "sweep.sh"), "data", "out", "--epochs", "3"], env=env)
    assert run.returncode == EXIT_SOME_TRIALS_FAILED
    assert (tmp_path / "args").read_text().split() == [
        "-m", "genre", "sweep", "data", "out", "--address", "auto", "--epochs", "3"
    ]  # fmt: skip
