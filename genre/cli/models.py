"""`genre models`: the registered architectures, their sizes and defaults; runs in the `genre` process."""

from __future__ import annotations

import argparse


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "models",
        help="list the architectures, their parameter counts and defaults",
        description="List the registered architectures with their parameters (10 genres) and "
        "defaults; with --weights, also whether their ImageNet weights are found there.",
    )
    parser.add_argument("--weights", metavar="DIR", help="folder of ImageNet weight files to check")
    return parser


def run(args: argparse.Namespace) -> int:
    from genre.models.listing import models_table

    print(models_table(args.weights))
    return 0
