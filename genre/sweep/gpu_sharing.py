"""Whether trials that share a GPU take turns on it or run side by side (NVIDIA MPS), in words.

Without MPS, the processes on one GPU are time-sliced: one process's kernels at a time. Small
models at small batches leave the GPU idle most of each step, so several trials still gain
together, but each runs at a fraction of its speed alone. MPS lets their kernels run concurrently;
it is a daemon of the GPU's node (cluster/README.md says how to run it).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

from genre.sweep.plan import ResourcePlan

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
    per_gpu = math.floor(1 / plan.gpus_per_worker + 1e-9)
    if local and mps_running(environ):
        return f"GPU sharing: up to {per_gpu} trials per GPU, side by side through NVIDIA MPS"
    where = "on this machine" if local else "on the GPU nodes, unless it was started there"
    return (
        f"GPU sharing: up to {per_gpu} trials per GPU take turns on it (time-slicing): NVIDIA MPS, "
        f"which would run their kernels side by side, is not running {where} (cluster/README.md)"
    )
