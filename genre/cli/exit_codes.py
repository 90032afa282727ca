"""The `genre` command's exit codes and what decides a sweep's; runs in the `genre` process."""

from __future__ import annotations

import sys
from collections.abc import Sequence

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


def sweep_exit_code(statuses: Sequence[str]) -> int:
    """0 when no trial failed, EXIT_SOME_TRIALS_FAILED when some did, EXIT_ALL_TRIALS_FAILED when all did."""
    failed = sum(status == "error" for status in statuses)
    if failed == 0:
        return 0
    return EXIT_ALL_TRIALS_FAILED if failed == len(statuses) else EXIT_SOME_TRIALS_FAILED


def report_failed_trials(command: str, statuses: Sequence[str]) -> int:
    """The sweep's exit code, with a line on stderr for a job's log when some trial failed."""
    code = sweep_exit_code(statuses)
    if code:
        failed = sum(status == "error" for status in statuses)
        print(
            f"genre {command}: {failed} of {len(statuses)} trial(s) failed (exit code {code}); their errors "
            "are in the results table's error column",
            file=sys.stderr,
        )
    return code
