"""Ray Train's reports to Ray Tune, handed over by the trial's own thread.

Ray's `TuneReportCallback` does the same job, but the Tune trial's main thread forwards each report
into a one-slot queue that the trial's function thread also writes to when it returns: when a run's
last report and its end come close together, the main thread waits on a slot that nobody will
empty, and the trial hangs forever (seen with Ray 2.58 once the controller polls every 0.1 s: a
six-model sweep of the test suite hung so). Here the controller puts each report on a Ray queue, and the
trial's function thread, the only writer Tune expects, passes them to `tune.report` one by one
while the run goes on in a thread of its own, then every one left once it has ended.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from ray import tune
from ray.train import Checkpoint, UserCallback
from ray.util.queue import Empty, Queue

from genre.reports import CHECKPOINT_PATH

# A wait returns as soon as a report arrives: this only bounds how late the run's end is noticed.
WAIT_S = 0.5


class QueueReports(UserCallback):
    """In Ray Train's controller: rank 0's metrics of every report (and its checkpoint's path)."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    def after_report(
        self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Checkpoint | None
    ) -> None:
        # run_context: Ray's TrainRunContext, a class of its internals (ray.train.v2._internal), unused.
        item = dict(metrics[0])
        if checkpoint:
            item[CHECKPOINT_PATH] = checkpoint.path
        self.queue.put(item)


def relay_reports(run: Callable[[QueueReports], None]) -> None:
    """Call `run(callback)` in a thread; pass what the callback queues to Tune, in order, from this
    thread (the trial's function thread); raise what `run` raised."""
    # One slot, as Ray's own callback has: the controller waits while Tune takes the last report.
    queue = Queue(maxsize=1, actor_options={"num_cpus": 0})
    failure: list[BaseException] = []

    def run_and_keep_failure() -> None:
        try:
            run(QueueReports(queue))
        except BaseException as error:  # re-raised in the trial's thread, where Tune sees it
            failure.append(error)

    runner = threading.Thread(target=run_and_keep_failure, name="genre-train-run", daemon=True)
    runner.start()
    # If Tune ends this trial (ASHA stops it), tune.report raises here and Tune ends the actor, and
    # with it the run's thread and Ray Train's controller.
    while runner.is_alive():
        with contextlib.suppress(Empty):
            tune.report(queue.get(timeout=WAIT_S))
    while not queue.empty():  # what the run reported just before it ended
        tune.report(queue.get())
    if failure:
        raise failure[0]
