"""Sync jobs with ``isolation="process"``: each runs in the executor's
``ProcessPool`` (made when a job first needs it), whose process is killed
at the job's time limit or by a ``Stop``, so its slot is free at once.

A job whose process died running it is counted (``Job.losses``, across its
attempts): at ``poison_after`` deaths it is poison, failed as
``PoisonTask`` rather than retried. Its crash never reaches the executor's
own process, nor its other jobs.
"""

from __future__ import annotations

import os
import time
from typing import Any

import attrs
import trio

from fastworker.executor.pool import ProcessPool
from fastworker.executor.reports import Reports
from fastworker.executor.scopes import Scopes
from fastworker.messages import PROCESS, CancelOutcome, Job, RemoteError
from fastworker.tasks import Task


class Isolated:
    """Process-isolated jobs, each a task of the nursery given to ``open``.

    Args:
        processes: the pool's size; 0 is one per CPU.
        poison_after: deaths of its process (across its attempts) that make
            a job poison.
    """

    def __init__(self, processes: int, reports: Reports, poison_after: int = 1) -> None:
        self._processes = processes
        self._poison_after = poison_after
        self._reports = reports
        self._nursery: trio.Nursery | None = None
        self._name = ""
        self._pool: ProcessPool | None = None
        self._scopes = Scopes("terminated")

    @property
    def size(self) -> int:
        """The most processes the pool runs at once: its slots."""
        return self._processes or os.cpu_count() or 1

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

    def abandon(self) -> None:
        """The executor is cancelled (a crash, or the shutdown deadline):
        kill the pool's idle processes now, so none outlives it; busy ones
        are killed by their cancelled jobs."""
        if self._pool is not None:
            self._pool.kill_idle()

    def start(self, job: Job, found: Task[Any, Any], limit: float | None) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(self._run, job, found, limit)

    def stop(self, task_id: str) -> CancelOutcome | None:
        """Kill the process running that job (``terminated``); ``None`` if
        none runs it."""
        return self._scopes.stop(task_id)

    async def _run(self, job: Job, found: Task[Any, Any], limit: float | None) -> None:
        if self._pool is None:
            self._pool = ProcessPool(self.size, name=self._name)
        started_at = time.time()
        with trio.CancelScope() as scope:
            self._scopes.hold(job.id, scope)
            called = await self._pool.run(found, job.payload, limit)
        if scope.cancelled_caught:
            called = self._scopes.cut_short(job.id, scope, found, limit)
        else:
            self._scopes.release(job.id, scope)  # a Stop that came as it returned is moot
        value, error, retryable = called
        if retryable and error is not None and error.type == "WorkerProcessDied":
            job, error, retryable = self._died(job, found, error)
        reports = self._reports
        reports.finish(reports.outcome(job, found, value, error, retryable, started_at), job,
                       PROCESS)

    def _died(self, job: Job, found: Task[Any, Any], error: RemoteError
              ) -> tuple[Job, RemoteError, bool]:
        """Its process died running the job: count the death on the job (its
        retry carries the count); a job that would be retried once more
        after ``poison_after`` deaths is poison instead."""
        deaths = job.losses + 1
        job = attrs.evolve(job, losses=deaths)
        retries = found.retries if job.retries is None else job.retries
        if deaths < self._poison_after or job.attempt > retries:
            return job, error, True  # retried, or its last attempt anyway
        return job, RemoteError(
            type="PoisonTask", kind="error",
            message=f"{error.message}; its process died running it {deaths} "
            f"time{'s' if deaths > 1 else ''}: failed as poison (poison_after = "
            f"{self._poison_after}) rather than retried"), False
