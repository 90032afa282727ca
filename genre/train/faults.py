"""Faults injected on purpose by the fault-tolerance tests, through a hidden `genre sweep` option.

`--inject-fault MODEL=KIND@EPOCH:STEP[:PATH],...`, for example `cnn4=raise@0:0`; STEP is a batch's
index in the epoch, or `end`: once the epoch is trained and validated, before it is reported.
- `raise`: an exception in the training loop, on every attempt (the trial ends with an error row);
- `oom`: PyTorch's out-of-memory error, on every attempt;
- `pause`: the worker writes its pid to PATH and waits there to be killed, on the first attempt only
  (a restarted worker finds PATH and goes on): a test kills it by pid at a known step of an epoch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from data_pipeline.errors import UserInputError
from genre import reports

KINDS = ("raise", "oom", "pause")
# The step of `end`: after an epoch's validation, before its report and checkpoint.
AFTER_VALIDATION = -1
# A paused worker that nobody kills fails after this long rather than hanging the test suite.
PAUSE_LIMIT_S = 300.0


Item = TypeVar("Item")


class InjectedFailure(RuntimeError):
    """Raised on purpose by fault-injection tests."""


@dataclass(frozen=True)
class Fault:
    """One injected fault: what, and at which epoch and step of the training loop."""

    kind: str
    epoch: int
    step: int
    path: str = ""

    @classmethod
    def parse(cls, text: str) -> Fault:
        """`KIND@EPOCH:STEP[:PATH]`."""
        try:
            kind, where = text.split("@", 1)
            epoch, step, *rest = where.split(":", 2)
            at = AFTER_VALIDATION if step == "end" else int(step)
            fault = cls(kind, int(epoch), at, rest[0] if rest else "")
        except ValueError:
            raise UserInputError(
                f"a fault is KIND@EPOCH:STEP[:PATH] (STEP a number or end), not {text!r}"
            ) from None
        if fault.kind not in KINDS or (fault.kind == "pause") != bool(fault.path):
            raise UserInputError(f"unknown fault {text!r}: one of raise, oom, pause (pause with a PATH)")
        return fault

    def around_batches(
        self, batches: Callable[[int], Iterable[Item]], model: str
    ) -> Callable[[int], Iterator[Item]]:
        """`batches` with the fault injected before the batch of its epoch and step."""

        def faulty(epoch: int) -> Iterator[Item]:
            for step, batch in enumerate(batches(epoch)):
                self.trigger_at(epoch, step, model)
                yield batch

        return faulty

    def before(self, report: Callable[..., None], model: str) -> Callable[..., None]:
        """`report` with the fault injected first at its epoch's end (step `end`), after validation."""

        def faulty(metrics: dict[str, Any], *rest: Any) -> None:
            self.trigger_at(int(metrics[reports.EPOCH]), AFTER_VALIDATION, model)
            report(metrics, *rest)

        return faulty

    def trigger_at(self, epoch: int, step: int, model: str) -> None:
        """Inject the fault if the loop is at its epoch and step."""
        if (epoch, step) != (self.epoch, self.step):
            return
        if self.kind == "raise":
            raise InjectedFailure(f"injected failure in {model} at epoch {epoch}, step {step} (test hook)")
        if self.kind == "oom":
            import torch  # here: the command line parses faults before it needs torch

            raise torch.OutOfMemoryError(f"injected out-of-memory in {model} (test hook)")
        pid_file = Path(self.path)
        if pid_file.exists():
            return
        partial = pid_file.with_name(pid_file.name + ".partial")
        partial.write_text(str(os.getpid()))
        os.replace(partial, pid_file)
        time.sleep(PAUSE_LIMIT_S)
        raise InjectedFailure(f"{model}'s worker paused at epoch {epoch}, step {step} and was never killed")


def parse_faults(text: str) -> dict[str, str]:
    """`MODEL=FAULT,...` -> {model: fault}, each fault checked."""
    faults = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        model, _, fault = item.partition("=")
        Fault.parse(fault)
        faults[model] = fault
    return faults
