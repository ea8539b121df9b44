"""Sync jobs on long-lived worker threads, and their time limits.

Threads take jobs from a best-first ``queue.PriorityQueue`` (the
executor hands them their slots' worth plus its prefetch, so a thread never
waits for the trio side to start its next job) and hand back what they
began (for its ``Running``) and what they finished through deques, waking
the trio side only when no wake-up is pending. A thread cannot be
stopped: a job past its time limit, or stopped, is reported at once and
keeps its slot until its call returns; what it returns then is discarded. See docs/executor.md.
"""

from __future__ import annotations

import collections
import itertools
import math
import queue
import threading
import time
from typing import Any

import trio

from actors.timers import DueHeap, Timer
from fastworker.calls import call_sync, cancelled_error, timeout_error
from fastworker.executor.reports import Reports
from fastworker.messages import THREAD, CancelOutcome, Job, Outcome
from fastworker.tasks import Task


class Threads:
    """``count`` worker threads, started by ``open``, stopped by ``close``."""

    def __init__(self, count: int, reports: Reports) -> None:
        self._count = count
        self._reports = reports
        self._token: trio.lowlevel.TrioToken | None = None
        self._threads: list[threading.Thread] = []
        # (priority, arrival, run): best first; a run of None stops a thread.
        self._queue: queue.PriorityQueue[tuple[float, int, _SyncRun | None]] = (
            queue.PriorityQueue())
        self._arrivals = itertools.count()
        # Held by a thread as it begins a run, and by the trio side as it
        # gives one back or stops it: a run is begun or passed over, never both.
        self._begin = threading.Lock()
        self._closing = False
        # Filled by the worker threads: runs finished (emptied by
        # ``collect``) and runs begun (emptied by ``take_begun``).
        self._completed: collections.deque[_SyncRun] = collections.deque()
        self._begun: collections.deque[_SyncRun] = collections.deque()
        self._wake_pending = False
        # Trio-side state: only ever touched on the trio thread.
        self._runs: dict[str, _SyncRun] = {}  # for a Stop
        self._limits: DueHeap[_SyncRun, _SyncRun] = DueHeap()
        self._timer = Timer(lambda: self._limits.next_at, self._expire)

    @property
    def started(self) -> int:
        """How many threads were started."""
        return len(self._threads)

    @property
    def uncollected(self) -> int:
        """Runs the threads finished that ``collect`` has not taken yet."""
        return len(self._completed)

    async def open(self, nursery: trio.Nursery, name: str) -> None:
        """Start the threads (named ``name-N (worker)``) and, in
        ``nursery``, the timer of the time limits."""
        self._token = trio.lowlevel.current_trio_token()
        for index in range(self._count):
            thread = threading.Thread(
                target=self._work, name=f"{name}-{index} ({self._reports.worker})", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        await nursery.start(self._timer.run)

    def close(self) -> None:
        """Send each thread a sentinel. They are not joined: they are daemon
        threads, and a join would block the trio thread."""
        if not self._closing:
            self._closing = True
            for _ in self._threads:
                self._queue.put((math.inf, next(self._arrivals), None))

    def start(self, job: Job, found: Task[Any, Any], limit: float | None, now: float) -> None:
        """Queue a sync job for a thread; its time limit is first checked at
        ``now + limit`` (trio's clock), and counts from when a thread begins it."""
        run = _SyncRun(job, found, limit)
        self._runs[job.id] = run
        self._queue.put((job.priority, next(self._arrivals), run))
        if limit is not None:
            self._check_at(now + limit, run)

    def stop(self, task_id: str) -> CancelOutcome | None:
        """Stop a job the threads hold and say how: ``cancelled`` if no
        thread began it, ``abandoned`` if one did (it runs on, and what it
        returns is discarded); ``None`` if none of that id runs here."""
        run = self._runs.get(task_id)
        if run is None or run.outcome is not None or run.abandoned:
            return None
        with self._begin:
            run.abandoned = True  # a thread skips it, or discards what it returns
            begun = run.started_mono is not None
        self._limits.discard(run)
        if not begun:
            return self._reports.cancel_unstarted(run.job)
        job = run.job
        self._reports.report(Outcome(id=job.id, attempt=job.attempt, worker=self._reports.worker,
                                     error=cancelled_error(run.task, "abandoned"),
                                     started_at=run.started_at, finished_at=time.time()), job)
        return "abandoned"

    def unbegun(self) -> tuple[int, int]:
        """Runs handed to the threads that none has begun: all of them
        (their slots are taken until a thread passes them), and those of
        them still to run (not stopped or given back)."""
        held = waiting = 0
        for run in self._runs.values():
            if run.started_mono is None:
                held += 1
                waiting += not run.abandoned
        return held, waiting

    def give_back(self) -> list[Job]:
        """Take back every run no thread has begun, best first: the threads
        pass them over (their slots free as the collector takes them)."""
        taken: list[_SyncRun] = []
        with self._begin:
            for run in self._runs.values():
                if run.started_mono is None and not run.abandoned:
                    run.abandoned = True
                    taken.append(run)
        for run in taken:
            self._limits.discard(run)
        taken.sort(key=lambda run: run.job.priority)
        return [run.job for run in taken]

    def take_begun(self) -> list[_SyncRun]:
        """From the collector, first in its pass: the runs threads began
        since the last pass (their ``Running`` goes out before any
        ``Finished`` of this pass)."""
        self._wake_pending = False  # before the deques are drained: see _wake
        begun = self._begun
        return [begun.popleft() for _ in range(len(begun))]

    def collect(self) -> None:
        """From the collector: take every run the threads finished, give its
        slot back, and record its outcome (or count what a run that was
        abandoned returned, discarded)."""
        self._wake_pending = False  # before the deque is drained: see _complete
        completed = self._completed
        reports = self._reports
        while completed:
            run = completed.popleft()
            if self._runs.get(run.job.id) is run:  # not another run of that id
                del self._runs[run.job.id]
            reports.running[THREAD] -= 1
            if run.abandoned:
                if run.started_mono is not None:  # it ran: what it returned is discarded
                    reports.counts["late"] += 1
            else:
                assert run.outcome is not None
                if run.limit is not None:
                    self._limits.discard(run)
                reports.record(run.outcome, run.job)  # this pass sends it: no wake-up needed

    # -- in the worker threads ---------------------------------------------------

    def _work(self) -> None:
        """A worker thread: run jobs until a sentinel arrives."""
        get = self._queue.get
        begin = self._begin
        outcome, expired = self._reports.outcome, self._reports.expired
        while (run := get()[2]) is not None:
            if self._closing:
                continue  # the executor is gone; nobody waits for this one
            wall = time.time()
            expires_at = run.job.expires_at
            with begin:
                skip = run.abandoned  # stopped or given back before a thread took it
                if not skip:
                    if expires_at is not None and expires_at <= wall:
                        # Its deadline passed while it waited for a thread:
                        # not run (a Stop from here on finds it ended).
                        run.outcome = expired(run.job, wall)
                        skip = True
                    else:
                        run.started_mono = time.monotonic()
            if skip:
                if not self._complete(run):
                    return
                continue
            run.started_at = wall
            self._begun.append(run)
            if not self._wake():
                return
            value, error, retryable = call_sync(run.task, run.job.payload)
            run.outcome = outcome(run.job, run.task, value, error, retryable, run.started_at)
            if not self._complete(run):
                return

    def _complete(self, run: _SyncRun) -> bool:
        """Hand a finished run to the trio side; False once the trio run is over."""
        self._completed.append(run)
        return self._wake()

    def _wake(self) -> bool:
        """Wake the trio side's collector; False once the trio run is over."""
        # Only if no wake-up is pending. No lock: the collector clears the
        # flag before it drains, so a run appended while the flag is still
        # set is drained by that pass.
        if not self._wake_pending:
            self._wake_pending = True
            try:
                assert self._token is not None
                self._token.run_sync_soon(self._reports.wake)
            except trio.RunFinishedError:
                return False
        return True

    # -- time limits -------------------------------------------------------------

    def _check_at(self, at: float, run: _SyncRun) -> None:
        self._limits.push(at, run, run)
        self._timer.arm(at)

    def _expire(self, now: float) -> None:
        """Fail each run at its limit, counted from when its thread began it
        (the thread's clock, ``time.monotonic``)."""
        for run in self._limits.pop_due(now):
            if run.outcome is not None or run.abandoned:
                continue  # it returned in time (the collector reports it), or was stopped
            assert run.limit is not None
            if run.started_mono is None:
                # Still waiting for a thread: its limit has not begun.
                self._check_at(now + run.limit, run)
                continue
            remaining = run.started_mono + run.limit - time.monotonic()
            if remaining > 0:
                self._check_at(now + remaining, run)
                continue
            run.abandoned = True
            self._reports.report(self._reports.outcome(
                run.job, run.task, None, timeout_error(run.task, run.limit),
                run.task.retries_on_timeout, run.started_at), run.job)


class _SyncRun:
    """A sync job on its way through a worker thread. The thread writes
    ``started_*`` and then ``outcome``; the trio side writes ``abandoned``
    (the job was failed at its limit, or stopped: what it returns, if it
    runs, is discarded)."""

    __slots__ = ("job", "task", "limit", "started_at", "started_mono", "outcome", "abandoned")

    def __init__(self, job: Job, task: Task[Any, Any], limit: float | None) -> None:
        self.job = job
        self.task = task
        self.limit = limit
        self.started_at = 0.0
        self.started_mono: float | None = None
        self.outcome: Outcome | None = None
        self.abandoned = False
