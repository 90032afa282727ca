"""Windows scored per second on this machine's CPU at each forward batch size: what the default
window batch (genre.config.WINDOW_BATCH) should be.

    python bench/window_batch.py [--windows 640] [--batches 8,16,32,64,128] [--repeats 3] [--threads N]

For each model and input size (64x130, the demo's log-mels; 128x130, the study's) it times
genre.train.forward.segment_probabilities over `--windows` float16 windows split into batches of each
size, as a validation pass and `genre predict`/`evaluate` run it, and prints a Markdown table of
windows per second (the best of `--repeats` runs, which is the least disturbed by other processes).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from genre.config import WINDOW_BATCH
from genre.models import create_model
from genre.train.forward import segment_probabilities

SIZES = {"64x130": (64, 130), "128x130": (128, 130)}
CPU = torch.device("cpu")


def calibrated(name: str, shape: tuple[int, int]) -> torch.nn.Module:
    """A fresh model whose batch-norm statistics come from a batch, as after training."""
    model = create_model(name).train()
    with torch.no_grad():
        model(-80 * torch.rand(8, 1, *shape))
    return model.eval()


def windows_per_second(model: torch.nn.Module, mels: torch.Tensor, batch: int, repeats: int) -> float:
    segment_probabilities(model, torch.split(mels[:batch], batch), CPU)  # warm-up: allocator, kernels
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        segment_probabilities(model, torch.split(mels, batch), CPU)
        best = min(best, time.perf_counter() - started)
    return len(mels) / best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="cnn3,cnn4,efficientnet_b0")
    parser.add_argument("--windows", type=int, default=640)
    parser.add_argument("--batches", default="8,16,32,64,128")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batches = [int(b) for b in args.batches.split(",")]
    print(
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; {args.windows} windows, best of {args.repeats}; "
        f"default now {WINDOW_BATCH['cpu']}\n"
    )
    print(f"| model | input | {' | '.join(f'batch {b}' for b in batches)} | best |")
    print(f"|---|---|{'---:|' * len(batches)}---:|")
    for name in args.models.split(","):
        for label, shape in SIZES.items():
            model = calibrated(name, shape)
            mels = (-80 * torch.rand(args.windows, *shape)).half()  # as the shards hold them
            rates = {b: windows_per_second(model, mels, b, args.repeats) for b in batches}
            best = max(rates, key=rates.get)
            cells = " | ".join(f"{rates[b]:.0f}" for b in batches)
            print(f"| {name} | {label} | {cells} | {best} |", flush=True)
    print("\nwindows per second; best: the batch size with the most")


if __name__ == "__main__":
    main()
