# PYTHON_ARGCOMPLETE_OK  (argcomplete's marker: `activate-global-python-argcomplete` completes genre)
"""The `genre` command line: parses arguments, builds configs, calls the library."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import argcomplete

from data_pipeline.errors import UserInputError
from data_pipeline.features import FeatureConfig
from data_pipeline.loopback import is_loopback_address, keep_local_ray_on_loopback, requested_cluster
from data_pipeline.split import GTZAN_FILTERED, PROTOCOLS

if TYPE_CHECKING:
    import pandas as pd

# `genre sweep`'s exit codes, for a job runner (Ray Jobs, a KubeRay RayJob, CI, a shell's `&&`):
# 0 when every trial completed (one stopped early by ASHA counts as completed); else one of these,
# apart from 1, Python's own for a crash. The table, history and summary are written either way.
EXIT_ALL_TRIALS_FAILED = 4
EXIT_USER_ERROR = 2
EXIT_SOME_TRIALS_FAILED = 3
# Ctrl-C and SIGTERM (what Kubernetes, systemd and job runners send) alike: the command stops cleanly,
# as one interruption. 130 is the shell's code for a command ended by SIGINT; a SIGTERM handled to the
# end is given the same, rather than 143 (128 + 15, the shell's for a process killed by it): one code
# for "interrupted; run it again (a sweep: with --resume)", whichever signal a runner sends.
EXIT_INTERRUPTED = 130
# A joined cluster's head stopped answering mid-command (data_pipeline.ray_connect watches it): what ran
# there was lost; a sweep resumes with --resume once the cluster is back.
EXIT_CLUSTER_LOST = 5
ADDRESS_HELP = (
    "Ray cluster to join: host:port, ray://host:port, or auto (inside a cluster); default: RAY_ADDRESS "
    "if set, else a Ray of genre's own on 127.0.0.1"
)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt, so that both stop the command alike."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `genre` console script."""
    with _sigterm_as_interrupt():
        return _main(argv)


_sigterm_received = threading.Event()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises Terminated in the main thread while the command runs; a second one ends the
    process at once (a stop taking too long), as it would without genre. The caller's handler after."""
    if threading.current_thread() is not threading.main_thread():
        yield  # a command run from a thread (a notebook's): Python handles signals in the main one only
        return

    def terminated(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _sigterm_received.set()  # Ray and Tune may re-raise it as a plain KeyboardInterrupt
        raise Terminated

    _sigterm_received.clear()
    callers = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, callers if callers is not None else signal.SIG_DFL)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    # Shell completion: answers and exits when the shell's completion hook calls the command
    # (`eval "$(register-python-argcomplete genre)"`); otherwise a no-op.
    argcomplete.autocomplete(parser)
    args = parser.parse_args(argv)
    cluster = requested_cluster(getattr(args, "address", None))
    if cluster is None or is_loopback_address(cluster):
        # Before anything imports Ray: a Ray that genre starts listens on 127.0.0.1 only, and a
        # driver joining one on 127.0.0.1 must stay there too (data_pipeline.loopback).
        keep_local_ray_on_loopback()
    joins_cluster = cluster is not None and "address" in vars(args)
    if joins_cluster:
        _exit_when_cluster_lost(args)
    # A caller's own Ray (a notebook, the tests' session) is left running; the command's is stopped.
    ray_was_running = _ray_running()
    try:
        return args.handler(args)
    except UserInputError as error:
        print(f"genre {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        if (lost := _lost_cluster()) is not None:
            _report_lost_cluster(args, lost, hint=False)  # a sweep's hint is printed already
            return EXIT_CLUSTER_LOST
        signal_name = " (SIGTERM)" if _sigterm_received.is_set() else ""
        print(f"genre {args.command}: interrupted{signal_name}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if not ray_was_running:
            _stop_ray()
        if joins_cluster:
            sys.modules["data_pipeline.ray_connect"].when_cluster_lost(None)  # for a caller that goes on


def _exit_when_cluster_lost(args: argparse.Namespace) -> None:
    """Should the joined cluster's head go, and the interrupted command not end in time (stuck in a
    call into Ray that waits on the lost head), report it and exit here, before Ray's driver exits 1."""
    from data_pipeline import ray_connect

    def exit_now(lost: str) -> None:
        _report_lost_cluster(args, lost, hint=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_CLUSTER_LOST)  # from the watching thread: sys.exit would end that thread alone

    _lost_cluster_reported.clear()
    ray_connect.when_cluster_lost(exit_now)


_lost_cluster_reported = threading.Event()


def _report_lost_cluster(args: argparse.Namespace, lost: str, *, hint: bool) -> None:
    """The line naming the lost cluster (once: the main thread and the last resort may both get here)."""
    if _lost_cluster_reported.is_set():
        return
    _lost_cluster_reported.set()
    if hint and args.command == "sweep":
        print(f"genre sweep: {_how_to_continue(args.out)}", file=sys.stderr)
    print(f"genre {args.command}: error: {lost}", file=sys.stderr)


def _lost_cluster() -> str | None:
    """Why the joined cluster was lost, if it was (never imports Ray for the question)."""
    ray_connect = sys.modules.get("data_pipeline.ray_connect")
    return ray_connect.lost_cluster() if ray_connect is not None else None


def _ray_running() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def _stop_ray() -> None:
    """Stop the Ray this process started or joined, now rather than at interpreter exit.

    Left to its exit hook, Ray's teardown can race the interpreter's own and crash (seen: a
    segmentation fault after Ctrl-C while Ray was starting), and first sleeps half a second.
    """
    if not _ray_running():
        return
    with contextlib.suppress(KeyboardInterrupt):
        sys.modules["ray"].shutdown()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genre", description="Train, tune and compare music-genre classifiers on Ray."
    )
    parser.add_argument(
        "--version", action=_PrintVersions, help="show the versions of genre, Python and its libraries"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_prepare(commands)
    _add_models(commands)
    _add_sweep(commands)
    _add_synth(commands)
    _add_demo(commands)
    _add_predict(commands)
    _add_evaluate(commands)
    return parser


class _PrintVersions(argparse.Action):
    """Like argparse's `version` action, without re-wrapping the line to the terminal's width."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        print(_versions())
        parser.exit()


def _versions() -> str:
    """genre's version and those of the libraries a bug report needs, read without importing them."""
    from importlib.metadata import PackageNotFoundError, version

    def of(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "not installed"

    libraries = ", ".join(f"{name} {of(name)}" for name in ("ray", "torch", "torchaudio", "timm"))
    return f"genre {of('genre')} (Python {sys.version.split()[0]}; {libraries})"


def _add_prepare(commands: argparse._SubParsersAction) -> None:
    defaults = FeatureConfig()
    parser = commands.add_parser(
        "prepare",
        help="audio folder or CSV -> log-mel Parquet shards (Ray Data)",
        description="Turn SRC (a folder <genre>/<file>, or a CSV of path,label) into log-mel "
        "Parquet shards and a manifest in OUT, in parallel with Ray Data. SRC (a folder) and OUT may "
        "be s3:// or gs:// URIs.",
    )
    parser.add_argument("src", metavar="SRC", help="a folder (path or s3://, gs:// URI) or a local CSV")
    parser.add_argument("out", metavar="OUT", help="a folder (path or s3://, gs:// URI)")
    parser.add_argument(
        "--split",
        choices=PROTOCOLS,
        default="track",
        help="track: whole tracks per split (default); segment: the 2021 study's "
        "random segment split, which leaks tracks across splits",
    )
    parser.add_argument(
        "--split-lists",
        metavar="DIR",
        help=f"folder with train.txt, valid.txt, test.txt, or {GTZAN_FILTERED!r} "
        "for the shipped fault-filtered GTZAN split",
    )
    parser.add_argument("--ratios", default="0.6,0.2,0.2", help="train,val,test shares (default 0.6,0.2,0.2)")
    parser.add_argument(
        "--folds",
        type=int,
        default=0,
        metavar="K",
        help="K folds of whole tracks, stratified by genre, for `genre sweep --cv`, not train/val/test",
    )
    parser.add_argument(
        "--train-hop",
        type=float,
        metavar="SECONDS",
        help="also keep train windows starting every SECONDS between the grid's, for `genre sweep "
        "--random-offsets` (e.g. 0.5: six per 3 s slot); val and test keep the grid",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    parser.add_argument("--segment-seconds", type=float, default=defaults.segment_seconds)
    parser.add_argument("--sample-rate", type=int, default=defaults.sample_rate)
    parser.add_argument("--n-mels", type=int, default=defaults.n_mels)
    parser.add_argument(
        "--tracks-per-shard",
        type=int,
        help="tracks per parallel task and Parquet file (default: about 4 tasks per CPU, 8 to 64 tracks)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a dataset already in OUT")
    parser.add_argument("--address", help=ADDRESS_HELP)
    parser.set_defaults(handler=_run_prepare)


def _run_prepare(args: argparse.Namespace) -> int:
    if args.tracks_per_shard is not None and args.tracks_per_shard < 1:
        raise UserInputError("--tracks-per-shard must be at least 1")
    try:
        features = FeatureConfig(
            sample_rate=args.sample_rate, segment_seconds=args.segment_seconds, n_mels=args.n_mels
        )
    except ValueError as error:
        raise UserInputError(str(error)) from None
    from data_pipeline.prepare import PrepareConfig, prepare

    config = PrepareConfig(
        source=args.src,
        out=args.out,
        features=features,
        split=args.split,
        split_lists=args.split_lists,
        ratios=args.ratios,
        seed=args.seed,
        overwrite=args.overwrite,
        tracks_per_shard=args.tracks_per_shard,
        ray_address=args.address,
        folds=args.folds,
        train_hop=args.train_hop,
    )
    result = prepare(config)
    print(result.summary())
    return 0


def _add_models(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "models",
        help="list the architectures, their parameter counts and defaults",
        description="List the registered architectures with their parameters (10 genres) and "
        "defaults; with --weights, also whether their ImageNet weights are found there.",
    )
    parser.add_argument("--weights", metavar="DIR", help="folder of ImageNet weight files to check")
    parser.set_defaults(handler=_run_models)


def _run_models(args: argparse.Namespace) -> int:
    from genre.models.listing import models_table

    print(models_table(args.weights))
    return 0


def _add_sweep(commands: argparse._SubParsersAction) -> None:
    # Only light modules here: building the parser must not import torch or Ray Tune (seconds).
    from genre.config import AMP_MODES, PRETRAINED_MODES, TrainConfig
    from genre.sweep.options import SCHEDULERS
    from genre.sweep.record import SWEEP_FILE
    from genre.train.augment import BUNDLES as AUGMENT_BUNDLES

    # No option has a default here: an option left out is the sweep's own on --resume (from OUT's
    # sweep.yaml), else TrainConfig's or SweepConfig's default, which the help texts quote.
    defaults = TrainConfig()
    parser = commands.add_parser(
        "sweep",
        help="train the architectures as concurrent Ray Tune trials; write the results table",
        description="Train the architectures on a prepared DATA folder as concurrent Ray Tune trials "
        "(each a Ray Train run) and write results.{parquet,csv,md}, history.parquet, plots/ and the "
        "best checkpoint of each trial into OUT.",
    )
    # Optional here only so that --config may name them; one of the two must.
    parser.add_argument(
        "data", nargs="?", metavar="DATA", help="a folder written by `genre prepare` (a path or s3://, gs://)"
    )
    parser.add_argument("out", type=Path, nargs="?", metavar="OUT")
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help=f"a YAML file of these options (`epochs: 30`, `models: [cnn4, vgg11]`, `data:`, `out:`); "
        f"the command line overrides it. Every sweep writes its own as OUT/{SWEEP_FILE}",
    )
    parser.add_argument("--models", help="comma-separated names (default: all six; see `genre models`)")
    parser.add_argument("--epochs", type=int, help=f"training epochs (default {defaults.epochs})")
    parser.add_argument("--batch-size", type=int, help=f"batch size (default {defaults.batch_size})")
    parser.add_argument("--lr", type=float, help="learning rate (default: each model's, 1e-4)")
    parser.add_argument("--dropout", type=float, help="dropout (default: each model's)")
    parser.add_argument(
        "--seed", type=int, help=f"seeds weights, shuffling and sampling (default {defaults.seed})"
    )
    parser.add_argument(
        "--augment",
        choices=AUGMENT_BUNDLES,
        help="augment the training batches: study (none, the default), light (SpecAugment masks), strong "
        "(masks, mixup, gain); the options below change single values of the bundle",
    )
    parser.add_argument(
        "--random-offsets",
        action="store_const",
        const=True,
        help="each epoch, one train window per 3 s slot drawn at a random offset within the track (a dataset "
        "prepared with --train-hop)",
    )
    parser.add_argument("--freq-mask", type=int, metavar="BANDS", help="widest frequency mask, mel bands")
    parser.add_argument("--time-mask", type=int, metavar="FRAMES", help="widest time mask, frames")
    parser.add_argument(
        "--mixup", type=float, metavar="ALPHA", help="mixup with weights from Beta(ALPHA, ALPHA)"
    )
    parser.add_argument(
        "--gain-db", type=float, metavar="DB", help="random gain: a window's floor rises by up to DB dB"
    )
    parser.add_argument(
        "--amp",
        choices=AMP_MODES,
        help="mixed precision: auto (on for EfficientNet and VGG; the default), off, bf16, fp16",
    )
    parser.add_argument(
        "--pretrained",
        choices=PRETRAINED_MODES,
        help="ImageNet weights for EfficientNet and VGG: auto (when they can be had; the default), yes, no",
    )
    parser.add_argument("--weights", metavar="DIR", help="folder holding ImageNet weight files")
    parser.add_argument(
        "--num-samples",
        type=int,
        help="configurations sampled per model (lr, batch size, dropout; default 1)",
    )
    parser.add_argument(
        "--scheduler",
        choices=SCHEDULERS,
        help="asha stops trials whose validation accuracy trails early (default fifo)",
    )
    parser.add_argument(
        "--train-in-memory-mib",
        type=int,
        metavar="MIB",
        help="hold a worker's share of the train split in memory (GPU memory on a GPU) when it is at "
        "most this size; larger ones stream from Ray Data every epoch; 0 always streams "
        f"(default {defaults.train_in_memory_mib})",
    )
    parser.add_argument(
        "--cv",
        action="store_const",
        const=True,
        help="cross-validation on a dataset prepared with --folds K: K trials per model, trial k testing "
        "on fold k, validating on the next, training on the rest",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        metavar="N",
        help="run every trial with N seeds (--seed, --seed+1, ...), for a spread of each score (default 1)",
    )
    parser.add_argument(
        "--shuffle-buffer",
        type=int,
        metavar="ROWS",
        help=f"rows held for shuffling a streamed train split (default {defaults.shuffle_buffer})",
    )
    parser.add_argument("--num-workers", type=int, help="Ray Train workers per trial (default 1)")
    parser.add_argument(
        "--cpus-per-trial", type=float, help="CPUs for each trial's workers (default: shared out)"
    )
    parser.add_argument(
        "--gpus-per-trial",
        type=_gpus,
        metavar="N|auto",
        help="GPUs per trial; 0.5 packs two per GPU; 0 trains on CPU (default auto: the trials share "
        "Ray's GPUs, or the CPU when Ray has none)",
    )
    parser.add_argument("--max-concurrent", type=int, help="trials at once (default: as many as fit)")
    parser.add_argument(
        "--max-failures",
        type=int,
        help="restarts of a trial's workers from its last checkpoint after a failure (default 1)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help=f"continue the sweep in OUT with the options recorded in its {SWEEP_FILE}",
    )
    parser.add_argument(
        "--storage",
        metavar="PATH_OR_URI",
        help="run state and checkpoints: a path (NFS on a cluster) or s3://, gs:// (default: OUT)",
    )
    parser.add_argument("--address", help=ADDRESS_HELP)
    parser.add_argument(
        "--mlflow",
        metavar="URI",
        help="log every trial's metrics to this MLflow tracking URI (a server, or sqlite:///mlflow.db); "
        "needs pip install 'genre[mlflow]'",
    )
    parser.add_argument(
        "--wandb",
        metavar="PROJECT",
        help="log every trial's metrics to this Weights & Biases project; needs pip install 'genre[wandb]'",
    )
    parser.add_argument("--inject-fault", default="", help=argparse.SUPPRESS)
    parser.set_defaults(handler=_run_sweep, sweep_parser=parser)


def _run_sweep(args: argparse.Namespace) -> int:
    from data_pipeline.loopback import requested_cluster
    from data_pipeline.ray_connect import check_answers
    from genre.train.faults import parse_faults

    if args.config is not None:
        args = _with_config_file(args)
    if args.data is None or args.out is None:
        raise UserInputError("give DATA and OUT, on the command line or as data: and out: in --config")
    # A cluster that does not answer is told before the sweep's modules load (seconds of torch and Tune).
    if (cluster := requested_cluster(args.address)) is not None:
        check_answers(cluster)
    from genre.sweep.driver import SweepConfig, run_sweep
    from genre.sweep.record import read_sweep_record

    options = _sweep_options_given(args)
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
        print(f"genre sweep: {_how_to_continue(args.out)}", file=sys.stderr)
        raise
    print()
    print(result.summary())
    print(f"TensorBoard: tensorboard --logdir {result.storage.experiment}")
    return _report_failed_trials("sweep", result.table["status"])


def _how_to_continue(out: Path | None) -> str:
    """After an interruption: --resume once the sweep has its record in OUT (from then on every moment
    resumes), else the same command again (nothing was started). OUT None: not known yet (--config)."""
    from genre.sweep.record import SWEEP_FILE

    if out is not None and not (out / SWEEP_FILE).is_file():
        return "the sweep had not started: run the same command again"
    if _lost_cluster() is not None:
        return "once the cluster answers again, run the same command with --resume (finished trials are kept)"
    return "to continue, run the same command with --resume"


def _report_failed_trials(command: str, statuses: pd.Series) -> int:
    """The sweep's exit code, with a line on stderr for a job's log when some trial failed."""
    code = sweep_exit_code(statuses)
    if code:
        failed = int((statuses == "error").sum())
        print(
            f"genre {command}: {failed} of {len(statuses)} trial(s) failed (exit code {code}); their errors "
            "are in the results table's error column",
            file=sys.stderr,
        )
    return code


def sweep_exit_code(statuses: Sequence[str]) -> int:
    """0 when no trial failed, EXIT_SOME_TRIALS_FAILED when some did, EXIT_ALL_TRIALS_FAILED when all did."""
    failed = sum(status == "error" for status in statuses)
    if failed == 0:
        return 0
    return EXIT_ALL_TRIALS_FAILED if failed == len(statuses) else EXIT_SOME_TRIALS_FAILED


def _with_config_file(args: argparse.Namespace) -> argparse.Namespace:
    """The command line's arguments over those of its --config file.

    The file's options are turned into arguments for the same parser, so that a value is checked
    (its type, its choices) exactly as on the command line.
    """
    from genre.sweep.options_file import as_arguments, read_options_file
    from genre.sweep.record import flag

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


def _sweep_options_given(args: argparse.Namespace) -> dict[str, Any]:
    """The sweep options written on the command line, by their names in the sweep's record."""
    from genre.sweep.options import SWEEP_LEVEL, TRAIN_OPTIONS

    given = {name: getattr(args, name) for name in (*TRAIN_OPTIONS, *SWEEP_LEVEL) if hasattr(args, name)}
    if args.models is not None:
        given["models"] = list(_model_list(args.models))
    if args.weights is not None:
        given["weights_dir"] = str(Path(args.weights).expanduser().resolve())
    return {name: value for name, value in given.items() if value is not None}


def _add_synth(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "synth",
        help="write generated music-like clips for the ten GTZAN genres, in GTZAN's layout",
        description="Generate labelled music-like audio (OUT/<genre>/<genre>.000NN.wav) from a seed: "
        "the same seed gives the same bytes. Feed it to `genre prepare`.",
    )
    parser.add_argument("out", type=Path, metavar="OUT")
    parser.add_argument("--tracks-per-genre", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--sample-rate", type=int, default=22050)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0, help="processes at once (default: one per core)")
    parser.set_defaults(handler=_run_synth)


def _run_synth(args: argparse.Namespace) -> int:
    from genre.synth import SynthConfig, synthesize_collection

    config = SynthConfig(
        out=args.out,
        tracks_per_genre=args.tracks_per_genre,
        seconds=args.seconds,
        sample_rate=args.sample_rate,
        seed=args.seed,
        workers=args.workers,
    )
    paths = synthesize_collection(config)
    print(f"wrote {len(paths)} clips to {args.out}")
    return 0


def _add_demo(commands: argparse._SubParsersAction) -> None:
    from genre.config import DemoConfig

    defaults = DemoConfig()
    parser = commands.add_parser(
        "demo",
        help="the whole job on generated music: synth -> prepare -> sweep of all six models, on CPU",
        description="Generate a small labelled collection, prepare it with Ray Data and sweep all six "
        "models with Ray Tune on this machine's CPU; prints the results table. About 4 minutes on "
        "2 cores.",
    )
    parser.add_argument(
        "out",
        type=Path,
        nargs="?",
        default=defaults.out,
        metavar="OUT",
        help=f"a new folder (default: ./{defaults.out})",
    )
    parser.add_argument("--tracks-per-genre", type=int, default=defaults.tracks_per_genre)
    parser.add_argument("--seconds", type=float, default=defaults.seconds, help="length of each clip")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--models", help="comma-separated names (default: all six)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--address", help=ADDRESS_HELP)
    parser.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from genre.config import DemoConfig
    from genre.demo import run_demo

    config = DemoConfig(
        out=args.out,
        tracks_per_genre=args.tracks_per_genre,
        seconds=args.seconds,
        epochs=args.epochs,
        models=_model_list(args.models),
        seed=args.seed,
        address=args.address,
    )
    result = run_demo(config)
    print()
    print(result.sweep.summary())
    print("stages: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in result.stage_seconds.items()))
    return _report_failed_trials("demo", result.sweep.table["status"])


def _add_predict(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "predict",
        help="the genre of audio files, with a sweep's best model",
        description="Predict the genre of each AUDIO file (wav, au, flac, mp3, ogg; any rate, any "
        "channels, at least one window long) with the features and weights of a sweep's checkpoint.",
    )
    parser.add_argument("audio", nargs="+", type=Path, metavar="AUDIO")
    parser.add_argument("--run", type=Path, required=True, help="a folder written by `genre sweep`")
    parser.add_argument(
        "--model", help="use this model's best trial (default: the run's best by val accuracy)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per file")
    parser.add_argument(
        "--device", default="auto", help="auto (a GPU if torch sees one, else the CPU), cpu, cuda or cuda:N"
    )
    parser.add_argument(
        "--batch-size", type=int, help="windows per forward pass (default: 256 on a GPU, 32 on a CPU)"
    )
    parser.set_defaults(handler=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    import json

    from genre.predict import Predictor
    from genre.run_folder import RunFolder

    predictor = Predictor(RunFolder(args.run).best_checkpoint(args.model), args.device, args.batch_size)
    if not args.json:
        print(f"model: {predictor.model_name} ({predictor.checkpoint}) on {predictor.loaded.device}")
    predicted = 0
    for prediction in predictor.predict_files(args.audio):
        predicted += not prediction.error
        if args.json:
            print(json.dumps({**prediction.to_dict(), "model": predictor.model_name}))
        elif prediction.error:
            print(f"{prediction.path}: error: {prediction.error}", file=sys.stderr)
        else:
            top = ", ".join(f"{genre} {probability:.2f}" for genre, probability in prediction.top)
            print(f"{prediction.path}: {top}")
            if prediction.note:
                print(f"{prediction.path}: note: {prediction.note}", file=sys.stderr)
    if predicted == 0:
        print("genre predict: error: no file could be predicted", file=sys.stderr)
        return 1
    return 0


def _add_evaluate(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "evaluate",
        help="test-split scores, per-genre scores and a confusion matrix for a sweep's model",
        description="Score a sweep's best model (or --model's best trial) on DATA's test split at "
        "segment and track level; write metrics.json, per_genre.csv and confusion matrices (CSV, PNG).",
    )
    parser.add_argument(
        "data", metavar="DATA", help="a folder written by `genre prepare` (a path or s3://, gs://)"
    )
    parser.add_argument("--run", type=Path, required=True, help="a folder written by `genre sweep`")
    parser.add_argument("--model", help="evaluate this model's best trial")
    parser.add_argument(
        "--split", default="test", help="train, val, test (default), or fold-K of a --folds dataset"
    )
    parser.add_argument("--out", type=Path, help="report folder (default: RUN/evaluation/<model>)")
    parser.add_argument(
        "--device", default="auto", help="auto (a GPU if torch sees one, else the CPU), cpu, cuda or cuda:N"
    )
    parser.add_argument(
        "--batch-size", type=int, help="windows per forward pass (default: 256 on a GPU, 32 on a CPU)"
    )
    parser.set_defaults(handler=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from genre.evaluate import evaluate, render_evaluation
    from genre.run_folder import RunFolder, checkpoint_folder_name

    checkpoint = RunFolder(args.run).best_checkpoint(args.model)
    out = args.out or args.run / "evaluation" / checkpoint_folder_name(checkpoint)
    result = evaluate(args.data, checkpoint, out, args.split, args.device, args.batch_size)
    print(render_evaluation(result))
    print(f"\nwritten: {', '.join(str(p) for p in result.files.values())}")
    return 0


def _gpus(text: str) -> float | None:
    """`--gpus-per-trial`: a number, or auto (None)."""
    if text == "auto":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number or auto, not {text!r}") from None


def _model_list(text: str | None) -> tuple[str, ...]:
    from genre.sweep.options import check_distinct_models

    models = tuple(name.strip() for name in (text or "").split(",") if name.strip())
    check_distinct_models(models)
    return models


if __name__ == "__main__":
    sys.exit(main())
