"""Running jobs that a ``Stop`` reaches through a cancel scope (async jobs on
lanes, process-isolated ones), and why a scope ended one: a ``Stop``, or
its time limit.
"""

from __future__ import annotations

from typing import Any

import trio

from fastworker.calls import Called, cancelled_error, timeout_error
from fastworker.messages import CancelOutcome
from fastworker.tasks import Task


class Scopes:
    """The cancel scope of each running job, by job id.

    Args:
        how: what stopping one of these jobs is called (``"interrupted"``
            for an async function, ``"terminated"`` for a killed process).
    """

    def __init__(self, how: CancelOutcome) -> None:
        self._how = how
        self._held: dict[str, trio.CancelScope] = {}
        self._stopped: set[str] = set()  # cancelled by a Stop, not by a time limit

    def hold(self, job_id: str, scope: trio.CancelScope) -> None:
        """The job runs under ``scope`` from now on."""
        self._held[job_id] = scope

    def release(self, job_id: str, scope: trio.CancelScope) -> bool:
        """The job no longer runs under ``scope``: forget it (unless another
        run of the same id holds it now: a job redelivered to the same
        worker may run twice at once). Whether a Stop came for it."""
        if self._held.get(job_id) is scope:
            del self._held[job_id]
        if job_id in self._stopped:
            self._stopped.discard(job_id)
            return True
        return False

    def stop(self, job_id: str) -> CancelOutcome | None:
        """Cancel the job's scope, and say how; ``None`` if none is held."""
        scope = self._held.get(job_id)
        if scope is None:
            return None
        self._stopped.add(job_id)
        scope.cancel()  # its runner reports it cancelled
        return self._how

    def cut_short(self, job_id: str, scope: trio.CancelScope, found: Task[Any, Any],
                  limit: float | None) -> Called:
        """What a job that its scope ended gives: cancelled by a Stop, or
        failed at its time limit (and retried if its task says so)."""
        if self.release(job_id, scope):
            return None, cancelled_error(found, self._how), False
        assert limit is not None
        return None, timeout_error(found, limit), found.retries_on_timeout
