"""A GPU plan on paper: per model, what a training step costs and how many trials share one GPU.

    python bench/gpu_plan.py [--batch 16] [--train-segments 6000] [--epochs 15]

Measured here, on CPU, for one training step (forward, cross-entropy, backward, Adam) at batch B
on genre's 1x128x130 log-mel:
  flops       forward FLOPs x 3 (backward ~2x forward), torch's FlopCounterMode;
  kernels     the operators one step dispatches (TorchDispatchMode): on a GPU each is about one
              kernel launch, and small models are bound by launches, not by FLOPs; a GRU, which
              the CPU runs step by step, counts as cuDNN runs it (a few fused kernels);
  activations bytes autograd saves for backward (saved-tensor hooks, each storage once), in fp32
              and under bf16 autocast (what `--amp auto` gives EfficientNet and VGG on an H100);
  state       weights, gradients and Adam's two moments: 16 bytes per parameter (fp32 master).
From them, for an H100, an estimate (the constants below say what is assumed):
  step_s      max(flops / (peak x UTILISATION), kernels x LAUNCH_S)
  gpu_mib     CUDA_CONTEXT_MIB + state + activations x ALLOCATOR_SLACK + the train split held on
              the GPU (float16; `--train-in-memory-mib`)
and the sweep: EPOCHS epochs of TRAIN_SEGMENTS each, plus TRIAL_START_S of Ray per trial.
Prints one JSON object; bench/results/gpu.md turns it into the plan.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter

import torch
from models import forward_flops  # bench/models.py, beside this script
from torch.utils._python_dispatch import TorchDispatchMode

from data_pipeline.features import FeatureConfig
from genre.models import create_model, get_spec, model_names
from genre.sweep.plan import shard_mib

SHAPE = (1, *FeatureConfig().shape)  # genre's default log-mel: 1 x 128 x 130
# H100 SXM dense peaks (NVIDIA's datasheet, without sparsity): TF32 for fp32 models, bf16 for AMP.
PEAK_TF32, PEAK_BF16 = 494e12, 989e12
# Small convolutions at batch 16 reach a small part of the peak; 25% is generous for them.
UTILISATION = 0.25
# Eager PyTorch: the host's dispatch + launch per operator, about 8 us on a fast server CPU.
LAUNCH_S = 8e-6
CUDA_CONTEXT_MIB = 600  # a process's CUDA context + cuDNN/cuBLAS handles
ALLOCATOR_SLACK = 1.5  # caching allocator's rounding and cuDNN workspaces
H100_MIB = 80 * 1024
TRIAL_START_S = 20  # measured on CPU: Train controller, worker group, dataset iterators
EPOCH_OVERHEAD_S = 1.0  # per epoch: the validation pass, Ray's report and the checkpoint
# cuDNN runs a whole GRU in one forward and one backward kernel, with a weight repack for each.
CUDNN_GRU_KERNELS = 4


class KernelCounter(TorchDispatchMode):
    """Counts the operators reaching the backends: a stand-in for GPU kernel launches."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def step_loss(model: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(model(inputs), torch.zeros(len(inputs), dtype=torch.long))


def saved_activation_bytes(model: torch.nn.Module, inputs: torch.Tensor, bf16: bool) -> int:
    """Bytes autograd keeps between forward and backward (each storage counted once)."""
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        # Parameters are counted as state, not as activations.
        if not isinstance(tensor, torch.nn.Parameter):
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor)
    with hooks, torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = step_loss(model, inputs)
    loss.backward()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(size for pointer, size in seen.items() if pointer not in params)


def step_kernels(model: torch.nn.Module, inputs: torch.Tensor) -> int:
    """Operators in one training step, with each GRU counted as the fused cuDNN kernels it is on a GPU."""
    gru_inputs: list[tuple[torch.nn.GRU, torch.Size]] = []
    hooks = [
        module.register_forward_pre_hook(lambda gru, args: gru_inputs.append((gru, args[0].shape)))
        for module in model.modules()
        if isinstance(module, torch.nn.GRU)
    ]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, foreach=True)
    counter = KernelCounter()
    with counter:
        step_loss(model, inputs).backward()
        optimizer.step()
    for hook in hooks:
        hook.remove()
    kernels = sum(counter.ops.values())
    for gru, shape in gru_inputs:
        alone = KernelCounter()
        sequence = torch.zeros(shape, requires_grad=True)
        with alone:
            gru(sequence)[0].sum().backward()
        # The sum and its backward are not the GRU's: two operators of the count are not replaced.
        kernels += CUDNN_GRU_KERNELS - (sum(alone.ops.values()) - 2)
    return kernels


def plan_model(name: str, batch: int, train_segments: int, epochs: int) -> dict:
    torch.manual_seed(0)
    model = create_model(name).train()
    inputs = -80 * torch.rand(batch, *SHAPE)
    params = sum(p.numel() for p in model.parameters())
    amp = get_spec(name).amp
    flops = 3 * batch * forward_flops(model, SHAPE[1:])
    kernels = step_kernels(model, inputs)
    activations = saved_activation_bytes(model, inputs, bf16=amp)
    state = 16 * params
    peak = PEAK_BF16 if amp else PEAK_TF32
    compute_s, launch_s = flops / (peak * UTILISATION), kernels * LAUNCH_S
    step_s = max(compute_s, launch_s)
    steps = math.ceil(train_segments / batch)
    epoch_s = steps * step_s + EPOCH_OVERHEAD_S
    held_mib = shard_mib(FeatureConfig().to_dict(), train_segments, world_size=1)
    gpu_mib = CUDA_CONTEXT_MIB + (state + activations * ALLOCATOR_SLACK) / 2**20 + held_mib
    return {
        "params": params,
        "amp": amp,
        "gflops_per_step": round(flops / 1e9, 2),
        "kernels_per_step": kernels,
        "activations_mib": round(activations / 2**20, 1),
        "state_mib": round(state / 2**20, 1),
        "train_split_mib": round(held_mib),
        "gpu_mib": round(gpu_mib),
        "trials_per_h100_by_memory": int(H100_MIB // gpu_mib),
        "bound_by": "launches" if launch_s >= compute_s else "compute",
        "step_ms": round(step_s * 1e3, 2),
        "gpu_busy_fraction": round(compute_s / step_s, 2),
        "train_samples_per_s": round(batch / step_s),
        "trial_s": round(TRIAL_START_S + epochs * epoch_s),
        "gpu_busy_s": round(epochs * steps * compute_s),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=16, help="the study's batch size")
    parser.add_argument("--train-segments", type=int, default=6000, help="GTZAN: 600 tracks x 10")
    parser.add_argument("--epochs", type=int, default=15, help="the study's")
    parser.add_argument("--models", default=",".join(model_names()))
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = {
        name: plan_model(name, args.batch, args.train_segments, args.epochs)
        for name in args.models.split(",")
    }
    trials = list(models.values())
    # One H100 with every trial at once (fractional GPUs): launch-bound trials overlap, so the
    # sweep takes the longest trial or the GPU's summed busy time, whichever is more.
    one_gpu_s = max(max(t["trial_s"] for t in trials), TRIAL_START_S + sum(t["gpu_busy_s"] for t in trials))
    report = {
        "assumed": {
            "utilisation": UTILISATION,
            "launch_us": LAUNCH_S * 1e6,
            "cuda_context_mib": CUDA_CONTEXT_MIB,
            "allocator_slack": ALLOCATOR_SLACK,
            "trial_start_s": TRIAL_START_S,
            "epoch_overhead_s": EPOCH_OVERHEAD_S,
        },
        "batch": args.batch,
        "train_segments": args.train_segments,
        "epochs": args.epochs,
        "models": models,
        "sweep_one_gpu_sequential_s": sum(t["trial_s"] for t in trials),
        "sweep_one_gpu_concurrent_s": one_gpu_s,
        "sweep_eight_gpus_s": max(t["trial_s"] for t in trials),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
