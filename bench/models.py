"""Forward+backward throughput of every registered model on this machine's CPU.

    python bench/models.py [--batch 16] [--seconds 3]

For each model and input size (1x128x130, genre's default log-mel; 1x288x432, the size of the 2021
study's images, whose 3 RGB channels only change the first convolution) it reports training samples
per second (forward, cross-entropy, backward, Adam step) and the forward FLOPs per sample.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from genre.models import count_parameters, create_model, model_names

SIZES = {"128x130": (128, 130), "288x432": (288, 432)}


def forward_flops(model: torch.nn.Module, shape: tuple[int, int]) -> float:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 1, *shape))
    return counter.get_total_flops()


def train_samples_per_second(
    model: torch.nn.Module, shape: tuple[int, int], batch: int, seconds: float
) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    inputs = -80 * torch.rand(batch, 1, *shape)
    labels = torch.randint(0, 10, (batch,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(inputs), labels).backward()
        optimizer.step()

    step()  # warm-up: allocator and kernel selection
    steps, started = 0, time.perf_counter()
    while steps < 2 or time.perf_counter() - started < seconds:
        step()
        steps += 1
    return steps * batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=16, help="the study's batch size")
    parser.add_argument("--seconds", type=float, default=3.0, help="time each measurement this long")
    parser.add_argument("--models", default=",".join(model_names()))
    args = parser.parse_args()
    torch.manual_seed(0)
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "batch": args.batch,
        "models": {},
    }
    for name in args.models.split(","):
        model = create_model(name).train()
        row = {"params": count_parameters(model)}
        for label, shape in SIZES.items():
            row[f"gflops_fwd_{label}"] = round(forward_flops(model, shape) / 1e9, 3)
            row[f"train_samples_per_s_{label}"] = round(
                train_samples_per_second(model, shape, args.batch, args.seconds), 1
            )
        report["models"][name] = row
        print(name, row, flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
