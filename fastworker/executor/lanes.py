"""Async jobs on lanes: tasks of the executor's nursery, started as needed up
to ``concurrency``, that each run one job after another from a channel
under one cancel scope. A ``Stop`` or a time limit cancels that scope,
which ends only the job the lane runs; the lane goes on under a fresh one.
Why lanes and not a task per job: docs/executor.md.
"""

from __future__ import annotations

import math
import time
from typing import Any

import trio

from fastworker.calls import call_async
from fastworker.executor.reports import Reports
from fastworker.executor.scopes import Scopes
from fastworker.messages import ASYNC, CancelOutcome, Job
from fastworker.tasks import Task

#: A job handed to the lanes: the job, its task and its time limit.
_LaneJob = tuple[Job, Task[Any, Any], "float | None"]


class Lanes:
    """The executor's lanes for async jobs; ``open`` before ``start``."""

    def __init__(self, most: int, reports: Reports) -> None:
        self._most = most
        self._reports = reports
        self._nursery: trio.Nursery | None = None
        self._send, self._receive = trio.open_memory_channel[_LaneJob](math.inf)
        self._lanes = 0
        self._idle = 0
        self._unclaimed = 0  # jobs in the channel, not yet taken by a lane
        self._pending: dict[str, Job] = {}  # those jobs by id, for a Stop
        self._scopes = Scopes("interrupted")

    def open(self, nursery: trio.Nursery) -> None:
        """Start lanes in ``nursery`` from now on."""
        self._nursery = nursery

    def start(self, job: Job, found: Task[Any, Any], limit: float | None) -> None:
        """Queue an async job for a lane, and start a lane if none is free."""
        self._send.send_nowait((job, found, limit))
        self._unclaimed += 1
        self._pending[job.id] = job
        if self._unclaimed > self._idle and self._lanes < self._most:
            self._lanes += 1
            assert self._nursery is not None
            self._nursery.start_soon(self._lane)

    def stop(self, task_id: str) -> CancelOutcome | None:
        """Stop a job the lanes hold, running or not yet begun, and say
        how; ``None`` if they hold none of that id."""
        how = self._scopes.stop(task_id)
        if how is not None:
            return how
        pending = self._pending.pop(task_id, None)
        if pending is None:
            return None
        self._reports.running[ASYNC] -= 1  # a lane that takes it skips it
        return self._reports.cancel_unstarted(pending)

    async def _lane(self) -> None:
        """Run jobs one after another, under one cancel scope for as long as
        none is cut short (a scope per job would cost as much as a task per
        job); then go on under a fresh scope."""
        receive = self._receive
        pending = self._pending
        scopes = self._scopes
        reports = self._reports
        while True:
            running: _LaneJob | None = None
            with trio.CancelScope() as scope:
                while True:
                    self._idle += 1
                    try:
                        job, found, limit = await receive.receive()
                    finally:
                        self._idle -= 1
                    self._unclaimed -= 1
                    if pending.pop(job.id, None) is not job:
                        continue  # stopped before it started (and reported)
                    started_at = time.time()
                    running = job, found, limit
                    scopes.hold(job.id, scope)
                    if limit is not None:
                        scope.deadline = trio.current_time() + limit
                    value, error, retryable = await call_async(found, job.payload)
                    if limit is not None:
                        scope.deadline = math.inf
                    scopes.release(job.id, scope)  # a Stop that came as it returned is moot
                    running = None
                    reports.finish(
                        reports.outcome(job, found, value, error, retryable, started_at), job,
                        ASYNC)
            if running is not None:  # the scope ended it: a Stop, or its time limit
                job, found, limit = running
                value, error, retryable = scopes.cut_short(job.id, scope, found, limit)
                reports.finish(reports.outcome(job, found, value, error, retryable, started_at),
                               job, ASYNC)
