"""`genre serve`: a sweep's best model behind an HTTP endpoint (Ray Serve) until Ctrl-C or SIGTERM; runs in
the `genre` process."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from genre.cli.arguments import add_address

DEFAULT_PORT = 8000
DEFAULT_MAX_BATCH_SIZE = 8
DEFAULT_BATCH_WAIT_S = 0.05
# The main thread only waits for Ctrl-C or SIGTERM meanwhile.
IDLE_S = 3600.0


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "serve",
        help="an HTTP endpoint for a sweep's best model (Ray Serve): POST audio, get its genre",
        description="Serve the features and weights of a sweep's checkpoint with Ray Serve: POST an audio "
        "file (wav, au, flac, mp3, ogg; any rate, any channels) as the request body to / and get the JSON "
        "object `genre predict --json` prints; `?name=NAME` is the answer's path. Requests that arrive "
        "together are predicted together. Runs until Ctrl-C or SIGTERM.",
    )
    parser.add_argument("--run", type=Path, required=True, help="a folder written by `genre sweep`")
    parser.add_argument(
        "--model", help="serve this model's best trial (default: the run's best by val accuracy)"
    )
    listen = parser.add_argument_group("where it listens")
    listen.add_argument(
        "--host",
        default="127.0.0.1",
        help="address of the HTTP proxy (default: 127.0.0.1, this machine only; 0.0.0.0 for every "
        "interface: the endpoint has no authentication)",
    )
    listen.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port of the HTTP proxy (default: {DEFAULT_PORT})"
    )
    replicas = parser.add_argument_group("replicas and batching")
    replicas.add_argument(
        "--replicas", type=int, default=1, metavar="N", help="copies of the model serving (default: 1)"
    )
    replicas.add_argument(
        "--gpus-per-replica",
        type=float,
        default=0.0,
        metavar="F",
        help="GPUs each replica takes, fractions allowed (0.25: four share one); default 0: the CPU",
    )
    replicas.add_argument(
        "--max-batch-size",
        type=int,
        default=DEFAULT_MAX_BATCH_SIZE,
        metavar="N",
        help=f"files a replica predicts together at most (default: {DEFAULT_MAX_BATCH_SIZE})",
    )
    replicas.add_argument(
        "--batch-wait-s",
        type=float,
        default=DEFAULT_BATCH_WAIT_S,
        metavar="S",
        help=f"how long a batch waits for more files before it runs (default: {DEFAULT_BATCH_WAIT_S:g})",
    )
    add_address(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from data_pipeline.loopback import requested_cluster
    from data_pipeline.ray_connect import connect_ray
    from genre.run_folder import RunFolder
    from genre.serve.app import ServeOptions, start_serving, stop_serving
    from genre.train.checkpoints import read_checkpoint

    options = ServeOptions(
        host=args.host,
        port=args.port,
        replicas=args.replicas,
        gpus_per_replica=args.gpus_per_replica,
        max_batch_size=args.max_batch_size,
        batch_wait_s=args.batch_wait_s,
    )
    options.check()  # before Ray starts
    # The bytes travel to the replicas, which may run on nodes without the run folder.
    checkpoint = read_checkpoint(RunFolder(args.run).best_checkpoint(args.model))
    connect_ray(args.address)
    serving = start_serving(checkpoint, options, requested_cluster(args.address))
    try:
        print(serving.ready_line(), flush=True)
        while True:
            time.sleep(IDLE_S)
    finally:
        stop_serving()
