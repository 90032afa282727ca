"""The six-model sweep on a GPU: `genre sweep` as a user runs it, next to bare PyTorch loops.

    python bench/gpu_sweep.py DATA WORK [--parts sweep,bare,shared] [--batch-sizes 128,16] [--epochs 15]

- sweep: `genre sweep DATA WORK/sweep-bB --epochs E --batch-size B` for each batch size (with
  `--lr 5e-4` at batch 128, as the GPU issue measured it), from the command to its exit, its output
  time-stamped, and nvidia-smi's memory and utilisation sampled every 0.5 s.
- bare: each model alone in this process, a plain loop (forward, cross-entropy, backward, Adam) over
  the train split held on the GPU with the registry's mixed precision; and the same model through
  genre.train.fit's `train_epoch` (the sweep's loop, Ray-free): warm-up steps, then timed steps.
- shared: the six bare loops at once, one process each, timed over the same window of wall time:
  without NVIDIA MPS, then with it when `nvidia-cuda-mps-control` is on the machine.

Writes gpu_sweep.json (in WORK or --report-dir) after every part (a killed run keeps what it
finished) and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from timed_sweep import timed_sweep

MODELS = ("cnn3", "cnn4", "cnn4_gru", "efficientnet_b0", "efficientnet_b0_gru", "vgg11")
BATCH_128_LR = 5e-4
WARMUP_STEPS = 10


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", type=Path)
    parser.add_argument("work", type=Path)
    parser.add_argument("--parts", default="sweep,bare,shared")
    parser.add_argument("--report-dir", type=Path, help="gpu_sweep.json and the logs (default: WORK)")
    parser.add_argument("--batch-sizes", default="128,16")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--bare-steps", type=int, default=150, help="timed steps per model and loop")
    parser.add_argument("--shared-seconds", type=float, default=20.0)
    parser.add_argument("--shared-warmup", type=float, default=40.0, help="seconds to start and warm up")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a shared-part child: model name
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    models = tuple(args.models.split(","))
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    if args.one:
        print(
            json.dumps(shared_child(args.data, args.one, batch_sizes[0], args.start_at, args.shared_seconds))
        )
        return

    report_dir = args.report_dir or args.work
    for folder in (args.work, report_dir):
        folder.mkdir(parents=True, exist_ok=True)
    report_file = report_dir / "gpu_sweep.json"
    report: dict[str, Any] = json.loads(report_file.read_text()) if report_file.exists() else {}
    report["machine"] = machine()
    for part in args.parts.split(","):
        for batch in batch_sizes:
            key = f"{part}_b{batch}"
            if part == "sweep":
                report[key] = run_sweep(args.data, args.work, report_dir, models, batch, args.epochs)
            elif part == "bare":
                report[key] = bare_loops(args.data, models, batch, args.bare_steps)
            elif part == "shared":
                report[key] = shared(args.data, models, batch, args.shared_seconds, args.shared_warmup)
            else:
                raise SystemExit(f"unknown part {part!r}")
            report_file.write_text(json.dumps(report, indent=2))
            print(json.dumps({key: report[key]}, indent=2), flush=True)


def machine() -> dict[str, Any]:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"gpu": gpu, "cores": os.cpu_count(), "torch": torch.__version__, "python": sys.version.split()[0]}


# --- the sweep, as a user runs it ---------------------------------------------------------------


def run_sweep(
    data: Path, work: Path, logs: Path, models: tuple[str, ...], batch: int, epochs: int
) -> dict[str, Any]:
    import pandas as pd

    out = work / f"sweep-b{batch}"
    shutil.rmtree(out, ignore_errors=True)
    options = [str(data), str(out), "--models", ",".join(models), "--epochs", str(epochs),
               "--batch-size", str(batch), "--pretrained", "no"]  # fmt: skip
    if batch == 128:
        options += ["--lr", str(BATCH_128_LR)]
    with GpuSampler(logs / f"nvidia-smi-b{batch}.csv") as gpu:
        sweep = timed_sweep(options, logs / f"sweep-b{batch}.log")
    result: dict[str, Any] = {
        "command": " ".join(["genre sweep", *options]),
        "exit": sweep.exit_code,
        "wall_s": round(sweep.wall_s, 1),
        **sweep.phases(),
    }
    result["gpu"] = gpu.summary()
    if (out / "results.parquet").exists():
        table = pd.read_parquet(out / "results.parquet")
        result["trials"] = {
            row["model"]: {
                "status": row["status"],
                "train_time_s": round(float(row["train_time_s"] or 0), 1),
                "samples_per_s": round(float(row["samples_per_s"] or 0), 1),
                "test_track_accuracy": round(float(row["test_track_accuracy"] or 0), 3),
                "amp": row["amp"],
            }
            for _, row in table.iterrows()
        }
    return result


class GpuSampler:
    """nvidia-smi's utilisation and memory every 0.5 s while the `with` block runs."""

    def __init__(self, path: Path) -> None:
        self.path, self.process = path, None

    def __enter__(self) -> GpuSampler:
        if shutil.which("nvidia-smi"):
            query = "--query-gpu=timestamp,utilization.gpu,memory.used"
            self.process = subprocess.Popen(
                ["nvidia-smi", query, "--format=csv,noheader,nounits", "-lms", "500"],
                stdout=self.path.open("w"), stderr=subprocess.DEVNULL,
            )  # fmt: skip
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process:
            self.process.terminate()
            self.process.wait()

    def summary(self) -> dict[str, float]:
        if not self.process or not self.path.exists():
            return {}
        rows = [line.split(",") for line in self.path.read_text().splitlines() if line.count(",") == 2]
        utilisation = [float(r[1]) for r in rows if r[1].strip().isdigit()]
        memory = [float(r[2]) for r in rows if r[2].strip().isdigit()]
        if not utilisation:
            return {}
        busy = [u for u in utilisation if u > 0]
        return {
            "samples": len(rows),
            "utilisation_mean_pct": round(sum(utilisation) / len(utilisation), 1),
            "utilisation_mean_while_busy_pct": round(sum(busy) / max(len(busy), 1), 1),
            "memory_peak_mib": max(memory),
        }


# --- bare loops ----------------------------------------------------------------------------------


def train_windows(data: Path, device):
    from genre.train.batches import read_windows

    return read_windows(data, "train", device)


def bare_loops(data: Path, models: tuple[str, ...], batch: int, steps: int) -> dict[str, Any]:
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    windows = train_windows(data, device)
    results = {}
    for name in models:
        results[name] = {
            "bare_samples_per_s": round(timed_steps(name, windows, device, batch, steps, plain=True), 1),
            "genre_loop_samples_per_s": round(
                timed_steps(name, windows, device, batch, steps, plain=False), 1
            ),
        }
        if device.type == "cuda":
            results[name]["peak_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
            torch.cuda.reset_peak_memory_stats()
        print(name, results[name], flush=True)
    return {"train_windows": len(windows), "models": results}


def build(name: str, classes: int, device, batch: int):
    import torch

    from genre.models import create_model, get_spec
    from genre.train.amp import grad_scaler, resolve_amp
    from genre.train.fit import Training

    spec = get_spec(name)
    amp = resolve_amp("auto", spec.amp, device)
    model = create_model(name, num_classes=classes).to(device).train()
    lr = BATCH_128_LR if batch == 128 else spec.lr
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    return Training(model, optimizer, grad_scaler(amp, device), device, amp, classes)


def plain_step(training, batch) -> None:
    import torch

    from genre.train.amp import autocast
    from genre.train.forward import as_model_input

    inputs, targets = as_model_input(batch["mel"], training.device), batch["label"]
    with autocast(training.amp, training.device):
        loss = torch.nn.functional.cross_entropy(training.model(inputs).float(), targets)
    training.optimizer.zero_grad(set_to_none=True)
    training.scaler.scale(loss).backward()
    training.scaler.step(training.optimizer)
    training.scaler.update()


def batches_forever(windows, batch: int):
    epoch = 0
    while True:
        yield from windows.shuffled(batch, seed=0, epoch=epoch)
        epoch += 1


def timed_steps(name: str, windows, device, batch: int, steps: int, plain: bool) -> float:
    """Samples/s over `steps` steps after WARMUP_STEPS (cuDNN's choices, the allocator, AMP caches)."""
    import itertools

    import torch

    from genre.train.fit import train_epoch

    training = build(name, int(windows.labels.max()) + 1, device, batch)
    source = batches_forever(windows, batch)
    for step_batch in itertools.islice(source, WARMUP_STEPS):
        plain_step(training, step_batch)
    synchronize(device)
    started = time.perf_counter()
    timed = list(itertools.islice(source, steps))
    if plain:
        for step_batch in timed:
            plain_step(training, step_batch)
    else:
        train_epoch(training, timed)  # the sweep's loop: metrics and all
    synchronize(device)
    samples = sum(len(b["label"]) for b in timed)
    del training
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return samples / (time.perf_counter() - started)


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


# --- the six bare loops at once ------------------------------------------------------------------


def shared(data: Path, models: tuple[str, ...], batch: int, seconds: float, warmup: float) -> dict[str, Any]:
    modes: dict[str, Any] = {"time_sliced": run_six(data, models, batch, seconds, warmup, dict(os.environ))}
    control = shutil.which("nvidia-cuda-mps-control")
    if control is None:
        modes["mps"] = "nvidia-cuda-mps-control is not on this machine"
        return modes
    folder = Path("/tmp/genre-mps")
    env = {
        **os.environ,
        "CUDA_MPS_PIPE_DIRECTORY": str(folder / "pipe"),
        "CUDA_MPS_LOG_DIRECTORY": str(folder / "log"),
    }
    for sub in ("pipe", "log"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    started = subprocess.run([control, "-d"], env=env, capture_output=True, text=True)
    if started.returncode != 0:
        modes["mps"] = f"MPS did not start: {started.stderr.strip() or started.returncode}"
        return modes
    try:
        modes["mps"] = run_six(data, models, batch, seconds, warmup, env)
    finally:
        subprocess.run([control], input="quit\n", env=env, text=True, capture_output=True)
    return modes


def run_six(
    data: Path, models: tuple[str, ...], batch: int, seconds: float, warmup: float, env: dict[str, str]
) -> dict:
    start_at = time.time() + warmup  # every child has imported, read the split and warmed up by then
    children = {}
    for name in models:
        command = [sys.executable, __file__, str(data), "/tmp", "--one", name, "--batch-sizes", str(batch),
                   "--start-at", str(start_at), "--shared-seconds", str(seconds)]  # fmt: skip
        children[name] = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
    results = {}
    for name, child in children.items():
        stdout, stderr = child.communicate()
        lines = stdout.strip().splitlines()
        results[name] = json.loads(lines[-1]) if child.returncode == 0 and lines else stderr[-500:]
    return results


def shared_child(data: Path, name: str, batch: int, start_at: float, seconds: float) -> dict[str, Any]:
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    windows = train_windows(data, device)
    training = build(name, int(windows.labels.max()) + 1, device, batch)
    source = batches_forever(windows, batch)
    ready_in_time = time.time() < start_at
    while time.time() < start_at:  # warm up until every process is ready
        plain_step(training, next(source))
    synchronize(device)
    samples, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step_batch = next(source)
        plain_step(training, step_batch)
        samples += len(step_batch["label"])
    synchronize(device)
    return {
        "samples_per_s": round(samples / (time.perf_counter() - started), 1),
        "ready_in_time": ready_in_time,
    }


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
