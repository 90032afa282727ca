"""How many trials fit at once, and what each asks for: driver and Train workers, and a CPU to spare;
whether trials that share a GPU take turns on it; whether a worker holds its train share in memory.

A trial is a Tune driver (it only coordinates: a token CPU share) plus its Train workers. One whole
CPU (DATA_CPUS) always stays unreserved. It was kept for Ray Data's read tasks (1 CPU each) of a
streamed train split, which waited for ever without it; a worker now reads its share of a streamed
split itself (genre.train.batches.StreamedSplit), and the CPU stays as headroom for Ray's own processes
and for Ray Data jobs (`genre prepare`) on the same cluster.

The planners are pure: they take Ray's numbers in a ResourceRequest and are tested without Ray.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from data_pipeline.errors import UserInputError

DRIVER_CPUS = 0.01
# Trials that share one GPU when the autoscaler adds GPU nodes for them: about what a GPU holds of
# the launch-bound models at the study's batch 16 (bench/results/gpu.md, the GPU plan).
TRIALS_PER_GPU = 6
DATA_CPUS = 1.0
# Ray schedules fractional resources in steps of 1e-4; two decimals keep the numbers readable.
GRANULARITY = 0.01
# Sums of fractional shares (3 x 0.33) land a hair off what they add up to: every floor and
# comparison of CPUs and GPUs allows for that much.
SLACK = 1e-9


class ClusterTooSmall(UserInputError):
    """What the trials ask for is more than the cluster has now (a cluster that grows may get it)."""


@dataclass(frozen=True)
class NodeType:
    """A kind of node that a cluster's autoscaler can add (genre.sweep.autoscaler reads them)."""

    name: str
    cpus: float
    gpus: float
    max_workers: int

    def describe(self) -> str:
        return f"{self.name!r} nodes ({self.cpus:g} CPU, {self.gpus:g} GPU; up to {self.max_workers})"


@dataclass(frozen=True)
class ClusterGrowth:
    """What a cluster reached by address may add (genre.sweep.autoscaler reads it), and where that was read.

    `node_types`: the worker types its autoscaler adds (`()`: it adds none). None: not known, and then
    `autoscaler` says why: False, none runs (nodes started by `ray start`: what the cluster has is what
    it gets); True, one runs (or may) but what it may add cannot be read.
    """

    node_types: tuple[NodeType, ...] | None
    autoscaler: bool
    source: str = ""


@dataclass(frozen=True)
class ResourceRequest:
    """What Ray has and what the sweep asks for: both planners' input.

    `largest_node_*` None: one node holds everything. `cpus_per_trial`, `gpus_per_trial` None: "auto".
    """

    cluster_cpus: float
    cluster_gpus: float
    num_trials: int
    num_workers: int = 1
    cpus_per_trial: float | None = None
    gpus_per_trial: float | None = None
    max_concurrent: int | None = None
    largest_node_cpus: float | None = None
    largest_node_gpus: float | None = None

    @property
    def together(self) -> int:
        """The trials that would run at once if the resources held them all."""
        return min(self.num_trials, self.max_concurrent or self.num_trials)


@dataclass(frozen=True)
class ResourcePlan:
    """What each trial asks for, and how many run at once."""

    num_workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    max_concurrent: int
    notes: tuple[str, ...] = ()

    @property
    def cpus_per_trial(self) -> float:
        return self.num_workers * self.cpus_per_worker

    @property
    def torch_threads(self) -> int:
        """Intra-op threads per worker: its whole CPUs, at least one."""
        return max(1, _whole(self.cpus_per_worker))

    def describe(self) -> str:
        gpus = f", {self.num_workers * self.gpus_per_worker:g} GPU" if self.gpus_per_worker else ""
        return (
            f"{self.max_concurrent} trial(s) at once, each {self.num_workers} worker(s) x "
            f"{self.cpus_per_worker:g} CPU{gpus} + a {DRIVER_CPUS:g} CPU driver; "
            f"{DATA_CPUS:g} CPU kept free"
        )


def plan_resources(request: ResourceRequest) -> ResourcePlan:
    """Fit the trials into the cluster, or say why they cannot fit.

    A worker runs on one node: on a cluster of several nodes its share is capped at the largest
    node's CPUs. `gpus_per_trial` None ("auto"): Ray's GPUs are shared among the trials, or none are
    used when Ray has none.
    """
    cluster_cpus, cluster_gpus = request.cluster_cpus, request.cluster_gpus
    num_trials, num_workers, max_concurrent = request.num_trials, request.num_workers, request.max_concurrent
    cpus_per_trial, gpus_per_trial = request.cpus_per_trial, request.gpus_per_trial
    if num_workers < 1:
        raise UserInputError("--num-workers must be at least 1")
    gpu_notes: list[str] = []
    if gpus_per_trial is None:
        gpus_per_trial, why = _auto_gpus(request)
        gpu_notes.append(why)
    if gpus_per_trial < 0 or (cpus_per_trial is not None and cpus_per_trial <= 0):
        raise UserInputError("--cpus-per-trial must be positive and --gpus-per-trial not negative")
    if num_workers > 1 and 0 < gpus_per_trial / num_workers < 1 - SLACK:
        raise UserInputError(
            f"--num-workers {num_workers} with --gpus-per-trial {gpus_per_trial:g} puts two workers of a "
            "trial on one GPU, which NCCL refuses: give each worker a whole GPU "
            f"(--gpus-per-trial {num_workers}) or use one worker per trial"
        )
    if max_concurrent is not None and max_concurrent < 1:
        raise UserInputError("--max-concurrent must be at least 1")
    usable = cluster_cpus - DATA_CPUS
    if usable < DRIVER_CPUS + GRANULARITY:
        raise ClusterTooSmall(
            f"Ray has {cluster_cpus:g} CPU(s); a sweep needs at least 2: one kept free, one for training"
        )
    if gpus_per_trial > cluster_gpus:
        raise ClusterTooSmall(
            f"--gpus-per-trial {gpus_per_trial:g} asks for more GPUs than Ray has ({cluster_gpus:g}); "
            "pass --gpus-per-trial 0 to train on CPU, or connect to a GPU cluster with --address"
        )
    by_gpu = _whole(cluster_gpus / gpus_per_trial) if gpus_per_trial else num_trials
    wanted = min(request.together, by_gpu)
    explicit_cpus = cpus_per_trial is not None
    if cpus_per_trial is None:
        # Share what is left after the spare CPU evenly among the trials that will run together.
        per_trial = _floor(usable / wanted - DRIVER_CPUS)
        cpus_per_trial = max(per_trial, GRANULARITY * num_workers)
    needed = DRIVER_CPUS + cpus_per_trial
    if needed > usable + SLACK:
        raise ClusterTooSmall(
            f"one trial needs {needed:g} CPUs (a {DRIVER_CPUS:g} driver + {cpus_per_trial:g} for its "
            f"workers) but only {usable:g} of Ray's {cluster_cpus:g} are left after keeping "
            f"{DATA_CPUS:g} free; lower --cpus-per-trial"
        )
    cpus_per_worker = _floor(cpus_per_trial / num_workers) or GRANULARITY
    gpus_per_worker = gpus_per_trial / num_workers
    node_cpus = cluster_cpus if request.largest_node_cpus is None else request.largest_node_cpus
    # On one node, that node also keeps the spare CPU; on several, another node can.
    worker_cap = _floor(node_cpus - DRIVER_CPUS - (DATA_CPUS if node_cpus >= cluster_cpus else 0.0))
    if cpus_per_worker > worker_cap + SLACK:
        if explicit_cpus:
            raise ClusterTooSmall(
                f"each worker would need {cpus_per_worker:g} CPUs but the largest node has {node_cpus:g}; "
                "lower --cpus-per-trial or raise --num-workers"
            )
        cpus_per_worker = max(worker_cap, GRANULARITY)
    node_gpus = cluster_gpus if request.largest_node_gpus is None else request.largest_node_gpus
    if gpus_per_worker > node_gpus + SLACK:
        raise ClusterTooSmall(
            f"each worker would need {gpus_per_worker:g} GPUs but the largest node has {node_gpus:g}; "
            "raise --num-workers to spread a trial over several GPUs"
        )
    fits = min(_whole(usable / needed), by_gpu)
    notes = gpu_notes
    if max_concurrent is not None and max_concurrent > fits:
        notes.append(f"--max-concurrent {max_concurrent} lowered to {fits}: that is what the resources hold")
    concurrent = max(1, min(fits, request.together))
    return ResourcePlan(
        num_workers=num_workers,
        cpus_per_worker=cpus_per_worker,
        gpus_per_worker=gpus_per_worker,
        max_concurrent=concurrent,
        notes=tuple(notes),
    )


def _auto_gpus(request: ResourceRequest) -> tuple[float, str]:
    """GPUs per trial when none were asked for, and why, in words for the sweep's first lines."""
    cluster_gpus, num_workers = request.cluster_gpus, request.num_workers
    if cluster_gpus <= 0:
        return 0.0, "GPUs: Ray has none, so the trials train on CPU"
    if num_workers > 1:
        # NCCL refuses two ranks on one GPU: each worker takes a whole one.
        if cluster_gpus < num_workers:
            raise ClusterTooSmall(
                f"--num-workers {num_workers} needs a whole GPU per worker, and Ray has {cluster_gpus:g} "
                "GPU(s): lower --num-workers, or pass --gpus-per-trial 0 to train on CPU"
            )
        return float(num_workers), f"GPUs: one whole GPU per worker ({num_workers} per trial)"
    together = request.together
    share = min(1.0, _floor(cluster_gpus / together)) or GRANULARITY
    return share, (
        f"GPUs: {share:g} per trial, so that {together} trial(s) share {cluster_gpus:g} GPU(s) "
        "(--gpus-per-trial 0 trains on CPU)"
    )


def _whole(value: float) -> int:
    """`value` rounded down, where a hair short of a whole number counts as that number."""
    return math.floor(value + SLACK)


def _floor(value: float) -> float:
    return _whole(value / GRANULARITY) * GRANULARITY


def plan_cluster(request: ResourceRequest, growth: ClusterGrowth) -> ResourcePlan:
    """Plan for a cluster that may grow (one reached by address), as `plan_resources` takes it.

    What it has now, when that holds the trials (and holds a GPU, if the trials want one and a node
    type has one). Else one node of the type its autoscaler can add, the trials waiting in Tune's
    queue while the autoscaler starts it: only what no node type could hold is refused. Else, the
    nodes it may add unknown, each trial's own request, waiting for a node that holds it.
    `gpus_per_trial` None ("auto") never turns into CPU training on a cluster that may add GPU nodes
    that genre cannot see: without a GPU now, an autoscaler whose node types are unknown is refused.
    """
    node_types = growth.node_types
    cpu_note = None
    if request.gpus_per_trial is None and request.cluster_gpus <= 0:
        if any(t.gpus > 0 for t in node_types or ()):
            return _node_type_plan(request, node_types or (), growth.source)
        if node_types is None and growth.autoscaler:
            raise UserInputError(
                f"--gpus-per-trial auto: Ray has no GPU now, and the cluster's autoscaler may add GPU nodes "
                f"that genre cannot see ({growth.source}): pass --gpus-per-trial 0 to train on CPU, or "
                "--gpus-per-trial N (N GPUs per trial) to wait for GPU nodes"
            )
        # Nothing can add a GPU: the trials train on CPU, and the first line says why.
        request = replace(request, gpus_per_trial=0.0)
        cpu_note = _cpu_note(growth)
    try:
        plan = plan_resources(request)
    except ClusterTooSmall as refusal:
        if node_types is None:
            plan = _waiting_plan(request, refusal, growth)
        elif node_types:
            plan = _node_type_plan(request, node_types, growth.source)
        else:
            raise
    return replace(plan, notes=(cpu_note, *plan.notes)) if cpu_note else plan


def _cpu_note(growth: ClusterGrowth) -> str:
    """Why `auto` trains on CPU on a cluster reached by address (it has no GPU, nor can get one)."""
    if growth.node_types is None:
        return (
            f"GPUs: Ray has none, and no autoscaler runs to add one ({growth.source}; a cluster of "
            "`ray start` nodes has what it has): the trials train on CPU; --gpus-per-trial N waits for GPUs"
        )
    adds = "adds no node" if not growth.node_types else "adds no node type with one"
    return f"GPUs: Ray has none, and the cluster {adds} ({growth.source}): the trials train on CPU"


def _node_type_plan(request: ResourceRequest, node_types: tuple[NodeType, ...], source: str) -> ResourcePlan:
    """Trials planned as on the nodes of the type they need, as many nodes as the trials fill at
    TRIALS_PER_GPU per GPU (or a trial of several GPU workers needs), the autoscaler's most at most."""
    gpus = request.gpus_per_trial
    gpu_types = [t for t in node_types if t.gpus > 0]
    wants_gpu = bool(gpu_types) if gpus is None else gpus > 0
    notes: tuple[str, ...] = ()
    if wants_gpu and not gpu_types:
        kinds = ", ".join(t.describe() for t in node_types)
        raise UserInputError(
            f"--gpus-per-trial {gpus:g} asks for GPUs, and Ray has none now and adds only {kinds}; "
            "pass --gpus-per-trial 0 to train on CPU"
        )
    on_nodes = request
    if gpus is None and not wants_gpu:  # auto, with GPUs now that cannot hold a trial, none to add
        on_nodes = replace(request, gpus_per_trial=0.0)
        notes = ("GPUs: none of the node types the cluster adds has one: the trials train on CPU",)
    # GPU trials on the nodes with the most GPUs; CPU trials on those with the most CPUs.
    node = max(
        gpu_types if wants_gpu else node_types,
        key=lambda t: (t.gpus, t.cpus) if wants_gpu else (t.cpus, -t.gpus),
    )
    trials, workers = request.num_trials, request.num_workers
    per_trial = math.ceil(workers / node.gpus - SLACK) if wants_gpu and workers > 1 else 1
    if per_trial > node.max_workers:
        raise UserInputError(
            f"a trial of {workers} workers with a whole GPU each needs {per_trial} of the "
            f"{node.describe()}: more than the cluster adds; lower --num-workers"
        )
    nodes = per_trial
    if wants_gpu and gpus is None and workers == 1:
        nodes = min(node.max_workers, max(1, math.ceil(trials / (TRIALS_PER_GPU * node.gpus))))
    on_nodes = replace(
        on_nodes,
        cluster_cpus=node.cpus * nodes,
        cluster_gpus=node.gpus * nodes,
        largest_node_cpus=node.cpus,
        largest_node_gpus=node.gpus,
    )
    try:
        plan = plan_resources(on_nodes)
    except UserInputError as error:
        where = f"on the {node.describe()}, the largest this cluster adds"
        raise UserInputError(f"{error} ({where})") from None
    concurrent = max(1, min(request.together, plan.max_concurrent * max(node.max_workers // nodes, 1)))
    why = (
        f"the cluster has {request.cluster_cpus:g} CPU(s) and {request.cluster_gpus:g} GPU(s) now; "
        f"planned for {nodes} of its {node.describe()}, from {source}: the trials wait while its "
        "autoscaler adds them"
    )
    return replace(plan, max_concurrent=concurrent, notes=(why, *notes, *plan.notes))


def _waiting_plan(request: ResourceRequest, refusal: ClusterTooSmall, growth: ClusterGrowth) -> ResourcePlan:
    """Each trial's own request (a CPU per worker; the GPUs asked for, or with "auto" the share of
    the GPUs Ray has now), planned on a node that holds one trial; every trial waits in Tune's queue
    for a node that holds it."""
    workers = request.num_workers
    cpus = request.cpus_per_trial or float(workers)
    gpus = request.gpus_per_trial
    if gpus is None:  # auto with GPUs now (plan_cluster turned auto without GPUs into 0 or a refusal)
        try:
            gpus, _ = _auto_gpus(request)
        except ClusterTooSmall:  # fewer GPUs now than one trial's workers: a whole one each, waited for
            gpus = float(workers)
    one_trial = ResourceRequest(
        cluster_cpus=DATA_CPUS + DRIVER_CPUS + cpus,
        cluster_gpus=gpus,
        num_trials=1,
        num_workers=workers,
        cpus_per_trial=cpus,
        gpus_per_trial=gpus,
    )
    plan = plan_resources(one_trial)
    unseen = (
        "no autoscaler runs to add nodes, only `ray start` can"
        if not growth.autoscaler
        else "genre cannot see which nodes it may add"
    )
    why = (
        f"the cluster cannot hold a trial now ({refusal}), and {unseen} ({growth.source}): each trial "
        f"asks for {cpus:g} CPU(s) and {gpus:g} GPU(s) (--cpus-per-trial, --gpus-per-trial) and waits "
        "for a node that holds it"
    )
    return replace(plan, max_concurrent=request.together, notes=(why,))


# Without NVIDIA MPS the processes on one GPU are time-sliced, one process's kernels at a time: small
# models at small batches leave the GPU idle most of each step, so trials sharing it still gain
# together, each at a fraction of its speed alone. MPS, a daemon of the GPU's node (cluster/README.md
# says how to run it), runs their kernels side by side.
MPS_PIPE_VARIABLE = "CUDA_MPS_PIPE_DIRECTORY"
# Where the MPS control daemon opens its pipes unless told otherwise.
DEFAULT_MPS_PIPE = "/tmp/nvidia-mps"


def mps_running(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether an MPS control daemon serves this machine (its control pipe exists)."""
    return (Path(environ.get(MPS_PIPE_VARIABLE) or DEFAULT_MPS_PIPE) / "control").exists()


def sharing_note(plan: ResourcePlan, local: bool, environ: Mapping[str, str] = os.environ) -> str | None:
    """A line for the sweep's start when trials share GPUs: with MPS or by taking turns."""
    if not 0 < plan.gpus_per_worker < 1:
        return None
    per_gpu = _whole(1 / plan.gpus_per_worker)
    if local and mps_running(environ):
        return f"GPU sharing: up to {per_gpu} trials per GPU, side by side through NVIDIA MPS"
    where = "on this machine" if local else "on the GPU nodes, unless it was started there"
    return (
        f"GPU sharing: up to {per_gpu} trials per GPU take turns on it (time-slicing): NVIDIA MPS, "
        f"which would run their kernels side by side, is not running {where} (cluster/README.md)"
    )


# Bytes per float16 value on the wire and in memory; a label is an int64.
MEL_BYTES, LABEL_BYTES = 2, 8


def shard_mib(features: dict[str, Any], train_segments: int, world_size: int) -> float:
    """The size of one worker's share of the train split, from the manifest's counts and shapes."""
    per_segment = features["n_mels"] * features["frames"] * MEL_BYTES + LABEL_BYTES
    return train_segments * per_segment / world_size / 2**20


def held_in_memory(shard_size_mib: float, budget_mib: int) -> bool:
    """Whether a worker's share of this size is read once into memory rather than streamed."""
    return shard_size_mib <= budget_mib
