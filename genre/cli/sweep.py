"""`genre sweep`: its flags, in sections, and the hand-over to the sweep driver; runs in the `genre`
process."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from data_pipeline.errors import UserInputError
from genre.cli.arguments import add_address, model_list
from genre.cli.exit_codes import report_failed_trials
from genre.cli.lost_cluster import lost_cluster
from genre.cli.option_flags import add_option_flags
from genre.config import TrainConfig
from genre.sweep.options import SWEEP_LEVEL, TRAIN_OPTIONS, SweepConfig
from genre.sweep.record import SWEEP_FILE, flag

# `genre sweep --help`'s sections, in order, with a line under each title where the title alone does not
# say enough. A generated flag names its section in its field's metadata ("group").
SECTIONS = {
    "data and output": None,
    "models and search": "the trials: each model, times --num-samples, folds (--cv) and --seeds",
    "training": None,
    "augmentation": "a bundle (--augment), and single values over it",
    "data loading": None,
    "resources": "each trial's, and how many trials at once",
    "cluster and storage": None,
    "tracking": None,
    "config and resume": "an option left out is the --config file's, else (--resume) the sweep's own, "
    "else its default",
}


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "sweep",
        help="train the architectures as concurrent Ray Tune trials; write the results table",
        description="Train the architectures on a prepared DATA folder as concurrent Ray Tune trials "
        "(each a Ray Train run) and write results.{parquet,csv,md}, history.parquet, plots/ and the "
        "best checkpoint of each trial into OUT.",
    )
    sections = {title: parser.add_argument_group(title, line) for title, line in SECTIONS.items()}
    # Hand-written where no option stands behind the flag, or its value is not the option's:
    # DATA and OUT are positional, and optional only so that --config may name them.
    places = sections["data and output"]
    places.add_argument(
        "data", nargs="?", metavar="DATA", help="a folder written by `genre prepare` (a path or s3://, gs://)"
    )
    places.add_argument("out", type=Path, nargs="?", metavar="OUT")
    # --models is text here (a tuple in SweepConfig, every registered model by default, which only the
    # registry knows), and a name given twice is refused by name after parsing, not as an invalid value.
    sections["models and search"].add_argument(
        "--models", help="comma-separated names (default: all six; see `genre models`)"
    )
    add_option_flags(sections, TrainConfig, TRAIN_OPTIONS, flag)
    add_option_flags(sections, SweepConfig, SWEEP_LEVEL, flag)
    # Where the sweep runs, not what it computes: not options (sweep.yaml records them apart, if at all).
    # --address is every Ray command's.
    cluster = sections["cluster and storage"]
    add_address(cluster)
    cluster.add_argument(
        "--storage",
        metavar="PATH_OR_URI",
        help="run state and checkpoints: a path (NFS on a cluster) or s3://, gs:// (default: OUT)",
    )
    # How the command comes by its options, not options.
    config = sections["config and resume"]
    config.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help=f"a YAML file of these options (`epochs: 30`, `models: [cnn4, vgg11]`, `data:`, `out:`); "
        f"the command line overrides it. Every sweep writes its own as OUT/{SWEEP_FILE}",
    )
    config.add_argument(
        "--resume",
        action="store_true",
        help=f"continue the sweep in OUT with the options recorded in its {SWEEP_FILE}",
    )
    # Hidden, for fault-injection tests: a genre.train.faults spec, which becomes SweepConfig.faults.
    parser.add_argument("--inject-fault", default="", help=argparse.SUPPRESS)
    parser.set_defaults(sweep_parser=parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from data_pipeline.loopback import requested_cluster
    from data_pipeline.ray_connect import check_answers
    from genre.train.faults import parse_faults

    if args.config is not None:
        args = with_config_file(args)
    if args.data is None or args.out is None:
        raise UserInputError("give DATA and OUT, on the command line or as data: and out: in --config")
    # A cluster that does not answer is told before the sweep's modules load (seconds of torch and Tune).
    if (cluster := requested_cluster(args.address)) is not None:
        check_answers(cluster)
    from genre.sweep.driver import run_sweep
    from genre.sweep.record import read_sweep_record

    options = options_given(args)
    if args.resume:
        # The sweep's own options, unless given again (a different value is refused by run_sweep).
        record = read_sweep_record(args.out)
        options = {**(record.options if record else {}), **options}
    try:
        config = SweepConfig.from_options(
            options,
            data=args.data,
            out=args.out,
            resume=args.resume,
            address=args.address,
            storage=args.storage,
            faults=parse_faults(args.inject_fault),
        )
    except ValueError as error:
        raise UserInputError(str(error)) from None
    try:
        result = run_sweep(config)
    except KeyboardInterrupt:
        print(f"genre sweep: {how_to_continue(args)}", file=sys.stderr)
        raise
    print()
    print(result.summary())
    print(f"TensorBoard: tensorboard --logdir {result.storage.experiment}")
    return report_failed_trials("sweep", result.table["status"])


def how_to_continue(args: argparse.Namespace) -> str:
    """After an interruption: --resume once the sweep has its record in OUT (from then on every moment
    resumes), else the same command again (nothing was started). OUT None: not known yet (--config)."""
    if args.out is not None and not (args.out / SWEEP_FILE).is_file():
        return "the sweep had not started: run the same command again"
    if lost_cluster() is not None:
        return "once the cluster answers again, run the same command with --resume (finished trials are kept)"
    return "to continue, run the same command with --resume"


def with_config_file(args: argparse.Namespace) -> argparse.Namespace:
    """The command line's arguments over those of its --config file.

    The file's options are turned into arguments for the same parser, so that a value is checked
    (its type, its choices) exactly as on the command line.
    """
    from genre.sweep.options_file import as_arguments, read_options_file

    options = read_options_file(args.config)
    parser = args.sweep_parser

    def refuse(message: str) -> None:
        raise UserInputError(f"--config {str(args.config)!r}: {message}")

    parser.error = refuse  # an instance attribute, shadowing argparse's print-and-exit for this parse
    try:
        switches = frozenset(action.dest for action in parser._actions if action.nargs == 0)
        from_file = parser.parse_args(as_arguments(options, {name: flag(name) for name in options}, switches))
    finally:
        del parser.error
    if args.out is None and args.data is not None and "data" in options:
        args.data, args.out = None, Path(args.data)  # `genre sweep --config FILE OUT`: the file names DATA
    given = {name: value for name, value in vars(args).items() if value is not None}
    return argparse.Namespace(**{**vars(from_file), **given})


def options_given(args: argparse.Namespace) -> dict[str, Any]:
    """The sweep options written on the command line, by their names in the sweep's record."""
    given = {name: getattr(args, name) for name in (*TRAIN_OPTIONS, *SWEEP_LEVEL)}
    if args.models is not None:
        given["models"] = list(model_list(args.models))
    if given["weights_dir"] is not None:
        # Absolute: the trials' workers do not run in this command's working folder.
        given["weights_dir"] = str(Path(given["weights_dir"]).expanduser().resolve())
    return {name: value for name, value in given.items() if value is not None}
