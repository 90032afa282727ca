"""Arguments that more than one command takes (--address, --models, the inference commands' --device and
--batch-size); runs in the `genre` process."""

from __future__ import annotations

import argparse

from genre.config import WINDOW_BATCH

ADDRESS_HELP = (
    "Ray cluster to join: host:port, ray://host:port, or auto (inside a cluster); default: RAY_ADDRESS "
    "if set, else a Ray of genre's own on 127.0.0.1"
)


def add_address(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--address, for a command that runs on Ray."""
    parser.add_argument("--address", help=ADDRESS_HELP)


def add_inference_device(parser: argparse.ArgumentParser) -> None:
    """--device and --batch-size, for a command that runs a trained model here (predict, evaluate)."""
    parser.add_argument(
        "--device", default="auto", help="auto (a GPU if torch sees one, else the CPU), cpu, cuda or cuda:N"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        help=f"windows per forward pass (default: {WINDOW_BATCH['cuda']} on a GPU, "
        f"{WINDOW_BATCH['cpu']} on a CPU)",
    )


def model_list(text: str | None) -> tuple[str, ...]:
    """--models' comma-separated names; a name given twice is refused."""
    from genre.sweep.options import check_distinct_models

    models = tuple(name.strip() for name in (text or "").split(",") if name.strip())
    check_distinct_models(models)
    return models
