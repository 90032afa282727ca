"""How many model actors batch prediction runs and what each holds, from the cluster's CPUs and GPUs (a pure
planner, fed Ray's numbers); runs in the `genre` process."""

from __future__ import annotations

import math
from dataclasses import dataclass

from data_pipeline.errors import UserInputError
from genre.config import WINDOW_BATCH

# What a file's length is guessed to be when sizing the actors' batches (GTZAN's clips): the windows
# of a file are known only once it is decoded.
TYPICAL_FILE_SECONDS = 30.0
# Files per actor call at least: fewer would spend more on Ray Data's hand-offs than on the model.
MIN_FILES_PER_CALL = 4


@dataclass(frozen=True)
class ScorerPlan:
    """The actor pool that scores windows, and what Ray reserves for each actor and each decoding task."""

    actors: int
    device: str  # what each actor loads the model on: "cpu", or "cuda" (the GPU Ray gave it)
    actor_cpus: float
    actor_gpus: float  # 0 for CPU actors; a fraction shares one GPU between actors
    decode_cpus: float
    window_batch: int  # windows per forward pass

    def files_per_call(self, segment_seconds: float) -> int:
        """Files per actor call: about one forward pass of typical files' windows."""
        typical_windows = max(1, math.floor(TYPICAL_FILE_SECONDS / segment_seconds))
        return max(MIN_FILES_PER_CALL, math.ceil(self.window_batch / typical_windows))


def plan_scorers(
    cpus: float, gpus: float, device: str = "auto", batch_size: int | None = None, actors: int | None = None
) -> ScorerPlan:
    """The pool for a cluster of `cpus` and `gpus`: one actor per GPU where the model runs on GPUs (`actors`
    more than the GPUs share them), else CPU actors on half the CPUs, the rest decoding (never none)."""
    if batch_size is not None and batch_size < 1:
        raise UserInputError(f"the batch size must be at least 1, got {batch_size}")
    if actors is not None and actors < 1:
        raise UserInputError(f"the actors must be at least 1, got {actors}")
    on_gpu = _on_gpu(device, gpus)
    if on_gpu:
        count = actors or max(1, math.floor(gpus))
        # A CPU each for the actors and the decoding, or shares of the few there are.
        cpu_share = min(1.0, cpus / (count + 1))
        gpu_share = min(1.0, gpus / count)
        return ScorerPlan(count, "cuda", cpu_share, gpu_share, cpu_share, batch_size or WINDOW_BATCH["cuda"])
    if cpus < 2:
        # One core: the actor and the decoding tasks share it, half each, or neither could start.
        if actors not in (None, 1):
            raise UserInputError(f"the Ray cluster has {cpus:g} CPU: one model actor at most, not {actors}")
        return ScorerPlan(1, "cpu", cpus / 2, 0.0, cpus / 2, batch_size or WINDOW_BATCH["cpu"])
    most = math.floor(cpus) - 1  # one CPU at least is left to decoding
    if actors is not None and actors > most:
        raise UserInputError(
            f"the Ray cluster has {cpus:g} CPUs: {most} model actor(s) at most, leaving one to decode files"
        )
    count = actors or max(1, math.floor(cpus) // 2)
    return ScorerPlan(count, "cpu", 1.0, 0.0, 1.0, batch_size or WINDOW_BATCH["cpu"])


def _on_gpu(device: str, gpus: float) -> bool:
    """Whether the actors run the model on GPUs; a device Ray cannot give is refused."""
    if device == "auto":
        return gpus > 0
    if device == "cpu":
        return False
    if device == "cuda":
        if gpus <= 0:
            raise UserInputError(
                "--device cuda was asked for, but the Ray cluster has no GPU; use --device cpu, or auto to "
                "take GPUs only where there are some"
            )
        return True
    if device.startswith("cuda:"):
        raise UserInputError(
            f"--device {device}: on Ray, each model actor gets the GPU that Ray gives it; use --device cuda"
        )
    raise UserInputError(f"device must be auto, cpu or cuda on Ray, not {device!r}")
