"""Sync jobs with ``isolation="process"``: each runs in the executor's
``ProcessPool`` (made when a job first needs it), whose process is killed
at the job's time limit or by a ``Stop``, so its slot is free at once.

The executor hands the pool its slots' worth of jobs plus its prefetch;
they wait here best first (priority, then arrival), and ``size`` runners,
long-lived tasks of the executor's nursery, each take the best one, run it
in a pool process and take the next: a process that frees starts its next
job without waiting for the executor's collector, and without a new trio
task. What the runners began is taken by the collector for one batched
``Running``; what no runner began can be stopped or given back.

A job whose process died running it is counted (``Job.losses``, across its
attempts): at ``poison_after`` deaths it is poison, failed as
``PoisonTask`` rather than retried. Its crash never reaches the executor's
own process, nor its other jobs. This module never decides which jobs the
pool gets, nor how many: the executor does.
"""

from __future__ import annotations

import heapq
import itertools
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
    """Process-isolated jobs, handed by the executor and run by runners in
    the nursery given to ``open``.

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
        # Handed, not begun: (priority, arrival, run), best first; a run
        # stopped before a runner took it stays in the heap, dropped.
        self._heap: list[tuple[float, int, _PoolRun]] = []
        self._arrivals = itertools.count()
        self._unbegun: dict[str, _PoolRun] = {}  # for a Stop; the same id twice: the later
        self._queued = 0  # runs in the heap not dropped
        self._begun: list[_PoolRun] = []  # since the collector's last pass
        self._runners = 0
        self._parked = trio.lowlevel.ParkingLot()  # runners with nothing to run

    @property
    def size(self) -> int:
        """The most processes the pool runs at once: its slots."""
        return self._processes or os.cpu_count() or 1

    @property
    def processes(self) -> int:
        """The pool's processes alive now."""
        return 0 if self._pool is None else self._pool.stats().processes

    def open(self, nursery: trio.Nursery, name: str) -> None:
        """Start runners in ``nursery`` from now on, for a pool named ``name``."""
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
        """Hand a job to the runners (its slot is taken from here); its time
        limit counts from when a runner begins it."""
        run = _PoolRun(job, found, limit)
        heapq.heappush(self._heap, (job.priority, next(self._arrivals), run))
        self._unbegun[job.id] = run
        self._queued += 1
        if self._parked:
            self._parked.unpark()
        elif self._runners < self.size:
            self._runners += 1
            assert self._nursery is not None
            self._nursery.start_soon(self._runner)

    def stop(self, task_id: str) -> CancelOutcome | None:
        """Stop a job the pool holds and say how: ``terminated`` if it runs
        (its process is killed), ``cancelled`` if no runner began it (it
        never will); ``None`` if none of that id is here."""
        how = self._scopes.stop(task_id)
        if how is not None:
            return how
        run = self._unbegun.pop(task_id, None)
        if run is None:
            return None
        run.dropped = True
        self._queued -= 1
        self._reports.running[PROCESS] -= 1
        return self._reports.cancel_unstarted(run.job)

    def unbegun(self) -> int:
        """Jobs handed to the pool that no runner has begun."""
        return self._queued

    def give_back(self) -> list[Job]:
        """Take back every job no runner has begun, best first (then as they
        came); their slots are free from now on."""
        taken = sorted(entry for entry in self._heap if not entry[2].dropped)
        self._heap.clear()
        self._unbegun.clear()
        self._queued = 0
        self._reports.running[PROCESS] -= len(taken)
        return [entry[2].job for entry in taken]

    def take_begun(self) -> list[_PoolRun]:
        """From the collector: the runs begun since its last pass (their
        ``Running`` goes out before any ``Finished`` of that pass)."""
        begun = self._begun
        if begun:
            self._begun = []
        return begun

    async def _runner(self) -> None:
        """Run the best handed job, then the next, for as long as the
        executor runs."""
        heap, parked, reports = self._heap, self._parked, self._reports
        while True:
            if not heap:
                await parked.park()
                continue
            run = heapq.heappop(heap)[2]
            if run.dropped:
                continue
            job = run.job
            if self._unbegun.get(job.id) is run:
                del self._unbegun[job.id]
            self._queued -= 1
            wall = time.time()
            if job.expires_at is not None and job.expires_at <= wall:
                reports.finish(reports.expired(job, wall), job, PROCESS)
                continue
            run.started_at = wall
            self._begun.append(run)
            reports.wake()  # for its Running
            await self._run(run)

    async def _run(self, run: _PoolRun) -> None:
        job, found, limit = run.job, run.task, run.limit
        if self._pool is None:
            self._pool = ProcessPool(self.size, name=self._name)
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
        reports.finish(reports.outcome(job, found, value, error, retryable, run.started_at),
                       job, PROCESS)

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


class _PoolRun:
    """A job handed to the pool: ``dropped`` once stopped before a runner
    took it; ``started_at`` (wall clock) once a runner began it."""

    __slots__ = ("job", "task", "limit", "started_at", "dropped")

    def __init__(self, job: Job, task: Task[Any, Any], limit: float | None) -> None:
        self.job = job
        self.task = task
        self.limit = limit
        self.started_at = 0.0
        self.dropped = False
