# PYTHON_ARGCOMPLETE_OK  (argcomplete's marker: `activate-global-python-argcomplete` completes genre)
"""The `genre` command line, run in the `genre` process: parses arguments, builds configs, calls the
library; one module per command, the entry in entry.py. Imports neither torch nor Ray: a command does,
when it runs."""

from genre.cli.entry import build_parser, main
from genre.cli.exit_codes import (
    EXIT_ALL_TRIALS_FAILED,
    EXIT_CLUSTER_LOST,
    EXIT_INTERRUPTED,
    EXIT_SOME_TRIALS_FAILED,
    EXIT_USER_ERROR,
    sweep_exit_code,
)

__all__ = [
    "EXIT_ALL_TRIALS_FAILED",
    "EXIT_CLUSTER_LOST",
    "EXIT_INTERRUPTED",
    "EXIT_SOME_TRIALS_FAILED",
    "EXIT_USER_ERROR",
    "build_parser",
    "main",
    "sweep_exit_code",
]
