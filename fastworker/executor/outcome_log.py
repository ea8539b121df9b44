"""One log line per task outcome, where the task ran (no trio).

An operator reads what happened to tasks in the log of the node that ran
them: a failure (its name, id, attempt and the last line of its
traceback) at WARNING, a retry and a cancel at INFO, a success at DEBUG.
Lines at INFO and above are rate-limited: past ``per_second`` in one second
(of the monotonic clock), the rest of that second is counted, not logged, and the
next line says how many were left out. A success costs one level check
unless DEBUG is on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from fastworker.messages import Job, Outcome

__all__ = ["OutcomeLog"]

log = logging.getLogger("fastworker.tasks")

#: Outcome lines at INFO and above per second, before the rest are counted.
DEFAULT_PER_SECOND = 50


class OutcomeLog:
    """Logs each outcome the executor records (``outcome``)."""

    def __init__(self, worker: str, *, per_second: int = DEFAULT_PER_SECOND,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.worker = worker
        self.per_second = per_second
        self._now = now
        self._second = -1.0
        self._in_second = 0
        self._left_out = 0

    def outcome(self, outcome: Outcome, job: Job | None) -> None:
        """Log ``outcome`` (of ``job``, if known) at its level."""
        error = outcome.error
        if error is None:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("task %s succeeded in %.3f s on %s", _name(outcome, job),
                          outcome.finished_at - outcome.started_at, self.worker)
            return
        if outcome.retry_in is not None:
            self._line(logging.INFO, "task %s attempt %d failed on %s: %s; retrying in %.2f s",
                       _name(outcome, job), outcome.attempt, self.worker, _last_line(error),
                       outcome.retry_in)
        elif error.kind == "cancelled":
            self._line(logging.INFO, "task %s cancelled on %s: %s", _name(outcome, job),
                       self.worker, error.message)
        elif error.kind == "expired":
            self._line(logging.WARNING, "task %s expired on %s: %s", _name(outcome, job),
                       self.worker, error.message)
        else:
            attempts = f" after {outcome.attempt} attempts" if outcome.attempt > 1 else ""
            self._line(logging.WARNING, "task %s failed%s on %s: %s", _name(outcome, job),
                       attempts, self.worker, _last_line(error))

    def _line(self, level: int, message: str, *args: object) -> None:
        if not log.isEnabledFor(level):
            return
        second = float(int(self._now()))
        if second != self._second:
            self._second, self._in_second = second, 0
        self._in_second += 1
        if self._in_second > self.per_second:
            self._left_out += 1
            return
        if self._left_out:
            message += " (%d more task outcome lines left out before this one)"
            args = (*args, self._left_out)
            self._left_out = 0
        log.log(level, message, *args)


def _name(outcome: Outcome, job: Job | None) -> str:
    """``examples.tasks.add[3f2a…-17]``, or the id alone if the task is not known."""
    return f"{job.task}[{outcome.id}]" if job is not None else f"[{outcome.id}]"


def _last_line(error: object) -> str:
    """The error as one line: its type and message, first line only."""
    type_ = getattr(error, "type", "Error")
    message = str(getattr(error, "message", "")).strip().splitlines()
    return f"{type_}: {message[0]}" if message else str(type_)
