"""The `genre` command's entry: builds the parser from the command modules and dispatches to one; runs in
the `genre` process."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import argcomplete

from data_pipeline.errors import UserInputError
from genre.cli import demo, evaluate, export, lost_cluster, models, predict, prepare, serve, sweep, synth
from genre.cli.exit_codes import EXIT_CLUSTER_LOST, EXIT_INTERRUPTED, EXIT_USER_ERROR
from genre.cli.ray_session import ray_session
from genre.cli.signals import sigterm_as_interrupt, sigterm_received
from genre.cli.versions import PrintVersions

# One module per command, in --help's order: add_parser(commands) -> its parser, run(args) -> its exit
# code, and, where a lost cluster leaves something to say, how_to_continue(args) -> the line.
COMMANDS = (prepare, models, sweep, synth, demo, predict, evaluate, export, serve)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `genre` console script."""
    with sigterm_as_interrupt():
        parser = build_parser()
        # Shell completion: answers and exits when the shell's completion hook calls the command
        # (`eval "$(register-python-argcomplete genre)"`); otherwise a no-op.
        argcomplete.autocomplete(parser)
        return _dispatch(parser.parse_args(argv))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genre", description="Train, tune and compare music-genre classifiers on Ray."
    )
    parser.add_argument(
        "--version", action=PrintVersions, help="show the versions of genre, Python and its libraries"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands).set_defaults(command_module=command)
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    """The command's exit code; a user's mistake, an interruption and a lost cluster each one line."""
    command = args.command_module
    # Should a joined cluster be lost while the command is stuck, how to go on (a sweep: --resume).
    hint = getattr(command, "how_to_continue", None)
    with ray_session(args, hint and (lambda: hint(args))):
        try:
            return command.run(args)
        except UserInputError as error:
            print(f"genre {args.command}: error: {error}", file=sys.stderr)
            return EXIT_USER_ERROR
        except KeyboardInterrupt:
            if (lost := lost_cluster.lost_cluster()) is not None:
                lost_cluster.report(args.command, lost)  # a sweep's hint is printed already
                return EXIT_CLUSTER_LOST
            signal_name = " (SIGTERM)" if sigterm_received() else ""
            print(f"genre {args.command}: interrupted{signal_name}", file=sys.stderr)
            return EXIT_INTERRUPTED
