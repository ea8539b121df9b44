"""Sync jobs with ``isolation="process"``: each runs in the executor's
``ProcessPool`` (made when a job first needs it), whose process is killed
at the job's time limit or by a ``Stop``, so its slot is free at once.
"""

from __future__ import annotations

import os
import time
from typing import Any

import trio

from fastworker.executor.pool import ProcessPool
from fastworker.executor.reports import Reports
from fastworker.executor.scopes import Scopes
from fastworker.messages import CancelOutcome, Job
from fastworker.tasks import Task


class Isolated:
    """Process-isolated jobs, each a task of the nursery given to ``open``.

    Args:
        processes: the pool's size; 0 is one per CPU.
    """

    def __init__(self, processes: int, reports: Reports) -> None:
        self._processes = processes
        self._reports = reports
        self._nursery: trio.Nursery | None = None
        self._name = ""
        self._pool: ProcessPool | None = None
        self._scopes = Scopes("terminated")

    @property
    def processes(self) -> int:
        """The pool's processes alive now."""
        return 0 if self._pool is None else self._pool.stats().processes

    def open(self, nursery: trio.Nursery, name: str) -> None:
        """Run jobs in ``nursery`` from now on, in a pool named ``name``."""
        self._nursery = nursery
        self._name = name

    async def aclose(self) -> None:
        """Stop the pool's processes (see ``ProcessPool.aclose``)."""
        if self._pool is not None:
            await self._pool.aclose()

    def start(self, job: Job, found: Task[Any, Any], limit: float | None) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(self._run, job, found, limit)

    def stop(self, task_id: str) -> CancelOutcome | None:
        """Kill the process running that job (``terminated``); ``None`` if
        none runs it."""
        return self._scopes.stop(task_id)

    async def _run(self, job: Job, found: Task[Any, Any], limit: float | None) -> None:
        if self._pool is None:
            size = self._processes or os.cpu_count() or 1
            self._pool = ProcessPool(size, name=self._name)
        started_at = time.time()
        with trio.CancelScope() as scope:
            self._scopes.hold(job.id, scope)
            called = await self._pool.run(found, job.payload, limit)
        if scope.cancelled_caught:
            called = self._scopes.cut_short(job.id, scope, found, limit)
        else:
            self._scopes.release(job.id, scope)  # a Stop that came as it returned is moot
        value, error, retryable = called
        reports = self._reports
        reports.finish(reports.outcome(job, found, value, error, retryable, started_at), job)
