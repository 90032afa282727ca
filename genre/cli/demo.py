"""`genre demo`: synth -> prepare -> sweep on generated music, on this machine; runs in the `genre`
process."""

from __future__ import annotations

import argparse
from pathlib import Path

from genre.cli.arguments import add_address, model_list
from genre.cli.exit_codes import report_failed_trials
from genre.config import DemoConfig


# Hand-written, not generated from DemoConfig as the sweep's flags are from their configs: five flags,
# each with DemoConfig's default as argparse's, where the sweep's have none (an option left out there is
# --config's or the resumed sweep's).
def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    defaults = DemoConfig()
    parser = commands.add_parser(
        "demo",
        help="the whole job on generated music: synth -> prepare -> sweep of all six models, on CPU",
        description="Generate a small labelled collection, prepare it with Ray Data and sweep all six "
        "models with Ray Tune on this machine's CPU; prints the results table. About 3 minutes on "
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
    parser.add_argument(
        "--epochs", type=int, default=defaults.epochs, help="every model's (default: each model's own)"
    )
    parser.add_argument("--models", help="comma-separated names (default: all six)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    add_address(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from genre.demo import run_demo, slow_learners_note

    config = DemoConfig(
        out=args.out,
        tracks_per_genre=args.tracks_per_genre,
        seconds=args.seconds,
        epochs=args.epochs,
        models=model_list(args.models),
        seed=args.seed,
        address=args.address,
    )
    result = run_demo(config)
    print()
    summary = result.sweep.summary()
    note = slow_learners_note(result.sweep.table)
    if note:
        # Right under the table, before the lines that say where the results are.
        table, _, rest = summary.partition("\n\n")
        summary = f"{table}\n{note}\n\n{rest}"
    print(summary)
    print("stages: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in result.stage_seconds.items()))
    return report_failed_trials("demo", result.sweep.table["status"])
