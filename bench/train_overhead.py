"""What Ray Train costs: one model's training samples/s in a sweep trial against a bare PyTorch loop.

    python bench/train_overhead.py DATA [--model cnn4] [--epochs 3] [--batch-size 16]

Both train the same model on the same prepared train split with the same number of threads (the
trial's, which genre sets from its CPU share) and count only the time spent in the training loop
(batches in, forward, backward, step). The trial's figure is the `samples_per_s` of the results table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import ray
import torch

from data_pipeline.shards import read_mels, read_split
from genre.config import TrainConfig
from genre.models import create_model
from genre.sweep.driver import SweepConfig, run_sweep
from genre.train.forward import as_model_input


def bare_loop(data: Path, model_name: str, epochs: int, batch_size: int, threads: int, seed: int) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    table = read_split(data, "train", columns=["mel", "label"])
    mels = torch.from_numpy(read_mels(table).copy())
    labels = torch.tensor(table.column("label").to_pylist())
    model = create_model(model_name, num_classes=int(labels.max()) + 1).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    device = torch.device("cpu")
    seconds, samples = 0.0, 0
    for _ in range(epochs):
        order = torch.randperm(len(labels))
        started = time.perf_counter()
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            loss = torch.nn.functional.cross_entropy(
                model(as_model_input(mels[index], device)), labels[index]
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            samples += len(index)
        seconds += time.perf_counter() - started
    return samples / seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", type=Path)
    parser.add_argument("--model", default="cnn4")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, pretrained="no", amp="off")
        result = run_sweep(
            SweepConfig(data=args.data, out=Path(out), models=(args.model,), train=train), print
        )
        threads = result.plan.torch_threads
        in_ray = float(result.table.loc[0, "samples_per_s"])
        cpus = ray.cluster_resources().get("CPU")
        ray.shutdown()
    bare = bare_loop(args.data, args.model, args.epochs, args.batch_size, threads, seed=0)
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Ray CPUs {cpus:g}",
        "model": args.model,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "threads": threads,
        "ray_train_samples_per_s": round(in_ray, 1),
        "bare_pytorch_samples_per_s": round(bare, 1),
        "ratio": round(in_ray / bare, 3),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
