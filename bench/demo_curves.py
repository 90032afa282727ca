"""Learning curves on the demo's collection, without Ray: how many epochs each model needs in `genre
demo` (genre.config.DEMO_EPOCHS).

    python bench/demo_curves.py DATA MODEL [--lr 3e-3] [--epochs 10] [--schedule onecycle]
                                [--batch-size 16] [--threads 1]

DATA is a dataset prepared as the demo prepares its own (genre demo OUT leaves it in OUT/data). One
thread per run by default, so two runs side by side on two cores do not disturb each other much. Prints
one JSON line per epoch: the last batch's loss, validation and test accuracy by track (the mean of a
track's window probabilities, as the sweep scores it) and the seconds so far.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from data_pipeline.shards import read_mels, read_split
from genre.models import create_model
from genre.train.forward import segment_probabilities
from genre.train.recipe import make_optimizer, make_scheduler


def split_tensors(data: str, split: str) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    table = read_split(data, split)
    mels = torch.tensor(read_mels(table)).float()
    return (
        mels,
        torch.tensor(table.column("label").to_numpy()),
        np.array(table.column("track_id").to_pylist()),
    )


def track_accuracy(
    model: torch.nn.Module, mels: torch.Tensor, labels: torch.Tensor, tracks: np.ndarray
) -> float:
    probabilities = segment_probabilities(model, torch.split(mels, 64), torch.device("cpu")).numpy()
    ids = np.unique(tracks)
    right = sum(int(probabilities[tracks == t].mean(0).argmax() == labels[tracks == t][0]) for t in ids)
    return right / len(ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data")
    parser.add_argument("model")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--schedule", default="onecycle")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--weight-decay", type=float, default=1e-2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    train, val, test = (split_tensors(args.data, split) for split in ("train", "val", "test"))
    model = create_model(args.model, num_classes=int(train[1].max()) + 1)
    optimizer = make_optimizer(model.parameters(), "adamw", args.lr, args.weight_decay)
    steps = -(-len(train[0]) // args.batch_size)
    scheduler = make_scheduler(optimizer, args.schedule, epochs=args.epochs, steps_per_epoch=steps)
    started = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(train[0]))
        for step in range(steps):
            rows = order[step * args.batch_size : (step + 1) * args.batch_size]
            loss = torch.nn.functional.cross_entropy(model(train[0][rows].unsqueeze(1)), train[1][rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        line = {
            "model": args.model,
            "lr": args.lr,
            "schedule": args.schedule,
            "epoch": epoch + 1,
            "loss": round(loss.item(), 3),
            "val_track": track_accuracy(model, *val),
            "test_track": track_accuracy(model, *test),
            "s": round(time.perf_counter() - started, 1),
        }
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
