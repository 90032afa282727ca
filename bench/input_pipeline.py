"""Do batches arrive faster than training consumes them? One Ray Train trial reads, then trains.

    python bench/input_pipeline.py DATA [--models cnn3,cnn4] [--batch-size 16] [--steps 60]

Inside one Ray Train worker set up as `genre sweep` sets up a lone trial on this machine (the same
batches `genre.train.batches.TrainBatches` gives the training loop, the same CPU share and threads), it
times
  streamed   whole epochs read by Ray Data from the shards through the shuffle buffer (the worker's
             share of the shard files in an order new every epoch), each batch taken to the
             model's input (float32, [B, 1, mels, frames]) and discarded;
  in memory  the same after the worker's shard is read once into tensors (the default when it
             fits --train-in-memory-mib): the read itself, then epochs of seeded permutations;
  train      STEPS training steps of each model on in-memory batches: what the model consumes.
DATA should be GTZAN-sized (`bench/scale.py` writes data-1000). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ray
import ray.train
import ray.train.torch
import torch

from data_pipeline.manifest import read_manifest
from genre.config import ModelDefaults, TrainConfig, TrialConfig
from genre.models import create_model
from genre.sweep.plan import ResourceRequest, plan_resources
from genre.train.batches import TRAIN, TrainBatches, read_windows
from genre.train.forward import as_model_input


def read_rate(batches: Iterator[dict[str, torch.Tensor]], device: torch.device) -> float:
    """Samples/s of taking every batch to the model's input and discarding it."""
    started, samples = time.perf_counter(), 0
    for batch in batches:
        samples += len(as_model_input(batch["mel"], device))
    return samples / (time.perf_counter() - started)


@dataclass(frozen=True)
class Measurement:
    """What the one Train worker measures: handed over bound to `measure`, as genre's trials do."""

    trial: TrialConfig
    models: tuple[str, ...]
    classes: int
    read_epochs: int
    steps: int
    report: str
    data: str


def measure(setup: Measurement) -> None:
    config = setup.trial
    torch.set_num_threads(config.torch_threads)
    device = ray.train.torch.get_device()
    report: dict[str, float] = {}
    streamed = TrainBatches(config, device, whole=None, data=setup.data)
    for epoch in range(setup.read_epochs):
        # Each epoch starts a read of its own (Ray Data's planning and read tasks).
        report[f"streamed_epoch{epoch}_samples_per_s"] = read_rate(streamed(epoch), device)
    started = time.perf_counter()
    whole = read_windows(setup.data, TRAIN, device)
    held = TrainBatches(config, device, whole=whole, data=setup.data)
    report["in_memory_read_once_s"] = time.perf_counter() - started
    for epoch in range(setup.read_epochs):
        report[f"in_memory_epoch{epoch}_samples_per_s"] = read_rate(held(epoch), device)
    for model_name in setup.models:
        model = create_model(model_name, num_classes=setup.classes).to(device).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        steps, samples, started = 0, 0, time.perf_counter()
        for batch in held(99):
            if steps == 2:  # two warm-up steps: allocator and kernel selection
                started, samples = time.perf_counter(), 0
            inputs, targets = as_model_input(batch["mel"], device), batch["label"].long()
            loss = torch.nn.functional.cross_entropy(model(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps, samples = steps + 1, samples + len(targets)
            if steps == setup.steps + 2:
                break
        report[f"train_{model_name}_samples_per_s"] = samples / (time.perf_counter() - started)
    Path(setup.report).write_text(json.dumps(report))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", type=Path)
    parser.add_argument("--models", default="cnn3,cnn4")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--read-epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60, help="timed training steps per model")
    args = parser.parse_args()

    ray.init(logging_level="WARNING")
    cpus = ray.cluster_resources()["CPU"]
    plan = plan_resources(ResourceRequest(cluster_cpus=cpus, cluster_gpus=0, num_trials=1))
    manifest = read_manifest(args.data)
    trial = TrialConfig.resolve(
        TrainConfig(batch_size=args.batch_size),
        "cnn3",  # the reading is the same for every model
        ModelDefaults(lr=1e-4, dropout=0.0),
        torch_threads=plan.torch_threads,
    )
    report_file = Path(tempfile.mkdtemp()) / "report.json"  # one machine: the worker writes, we read
    trainer = ray.train.torch.TorchTrainer(
        functools.partial(
            measure,
            Measurement(
                trial=trial,
                models=tuple(args.models.split(",")),
                classes=len(manifest["labels"]),
                read_epochs=args.read_epochs,
                steps=args.steps,
                report=str(report_file),
                data=str(args.data.resolve()),
            ),
        ),
        scaling_config=ray.train.ScalingConfig(
            num_workers=1, resources_per_worker={"CPU": plan.cpus_per_worker}
        ),
    )
    trainer.fit()
    metrics = json.loads(report_file.read_text())
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Ray CPUs {cpus:g}",
        "worker_cpus": plan.cpus_per_worker,
        "torch_threads": plan.torch_threads,
        "train_segments": manifest["counts"]["train"]["segments"],
        "batch_size": args.batch_size,
        **{key: round(value, 1) for key, value in metrics.items()},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
