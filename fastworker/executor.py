"""The Executor: where tasks run.

It takes ``Assign`` from the Dispatcher, tells the ResultStore which jobs
are ``Running`` and, as they end, how they ``Finished``, and gives the
Dispatcher ``Credit`` back for every slot that frees. It starts by granting
``concurrency`` credit; the Dispatcher never assigns more than it holds, so
``concurrency`` bounds the jobs running at once.

Async task functions run on lanes: tasks of the actor's nursery, started
as needed up to ``concurrency``, that each run one job after another from
a channel under one cancel scope. A time limit sets that scope's deadline
for the job's run; a ``Stop`` cancels it. Either ends only the job the lane
runs, and the lane goes on under a fresh scope. (A task plus a cancel scope
per job cost twice what a lane's channel hand-over does.) Sync task functions run on ``threads`` long-lived
worker threads fed through a ``queue.SimpleQueue`` (no thread start and no
``trio.to_thread`` per task: DESIGN.md measured those far dearer). A thread
appends what it finished to a deque and wakes the trio side with the trio
token's ``run_sync_soon`` only when no wake-up is already pending; the
collector task then takes every completed job at once and reports them in
one ``Finished`` and one ``Credit``. With more slots than threads, sync
jobs beyond ``threads`` wait in the queue for a thread.

Time limits: a job's own ``timeout``, else its task's, else
``default_timeout``. An async task is cancelled at its limit. A sync task
cannot be stopped: Python has no way to kill a thread. It is reported
failed (kind ``timeout``) at its limit, counted from when its thread began
it, but it keeps its thread and its slot until it really returns, so the
credit stays honest; what it returns then is discarded and counted
(``late_results_discarded``). Tasks that never return keep their thread
for good: give blocking calls their own timeouts, or declare the task
``isolation="process"``: it then runs in a process of the executor's pool
(``fastworker.procpool``, ``processes`` of them, started when first
needed), which is killed at the limit, and its slot is free at once.

Retries: a failed attempt whose task (or submission) has retries left, and
whose exception its ``retry_on`` accepts, is reported with ``retry_in``
(its backoff), and its next attempt goes to the Dispatcher as ``Retry``
after the ``Finished`` that reports the failure.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import math
import os
import queue
import socket
import sys
import threading
import time
from typing import Any, Literal, Union

import attrs
import trio

from actors import Actor
from fastworker.messages import (
    Assign,
    CancelOutcome,
    CancelReply,
    Credit,
    Finished,
    Job,
    Outcome,
    RemoteError,
    Retry,
    Running,
    Stop,
)
from fastworker.calls import call_async, call_sync, cancelled_error, timeout_error
from fastworker.procpool import ProcessPool
from fastworker.tasks import Task, TaskRegistry
from fastworker.tasks import registry as default_registry
from fastworker.stats import ExecutorStats

if sys.version_info >= (3, 11):
    from typing import assert_never
else:  # pragma: no cover
    from typing_extensions import assert_never

log = logging.getLogger("fastworker.executor")

Accepts = Union[Assign, Stop]


def _positive_or_none(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not value > 0:
        raise ValueError(
            f"{attribute.name} must be a positive number of seconds or unset, got {value!r}"
        )


@attrs.frozen(kw_only=True)
class ExecutorOptions:
    """How much an executor runs at once, and how it names itself."""

    #: Jobs running at once; also the credit it grants the Dispatcher.
    concurrency: int = attrs.field(default=64, validator=attrs.validators.ge(1))
    #: Long-lived worker threads that run sync tasks.
    threads: int = attrs.field(default=8, validator=attrs.validators.ge(1))
    #: The name in records and credit; empty means "<hostname>:<pid>".
    worker: str = ""
    #: The time limit of jobs whose submission and task set none (seconds).
    default_timeout: float | None = attrs.field(default=None, validator=_positive_or_none)
    #: Processes for ``isolation="process"`` tasks, started when first
    #: needed (0: one per CPU).
    processes: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    #: Where sync tasks that do not choose (``@task(isolation=...)``) run.
    isolation: Literal["thread", "process"] = "thread"


class Executor(Actor[Accepts]):
    """Runs assigned jobs and reports them in batches; see the module."""

    Options = ExecutorOptions
    refs_required = ("dispatcher", "results")

    def __init__(
        self, options: ExecutorOptions, context: Any, *, registry: TaskRegistry | None = None
    ) -> None:
        super().__init__(options, context)
        self.worker = options.worker or f"{socket.gethostname()}:{os.getpid()}"
        self._registry = default_registry if registry is None else registry
        self._nursery: trio.Nursery | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._jobs: queue.SimpleQueue[_SyncRun | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._closing = False
        # Filled by the worker threads, emptied by the collector.
        self._completed: collections.deque[_SyncRun] = collections.deque()
        self._wake_pending = False
        self._wakeup = trio.Event()
        self._flushed = trio.Event()
        self._flushing = False
        # Trio-side state: only ever touched on the trio thread.
        self._outbox: list[Outcome] = []
        self._backlog: collections.deque[Job] = collections.deque()
        self._in_flight = 0
        self._credit_out = 0  # credit the Dispatcher holds, as far as we told it
        self._deadlines: list[tuple[float, int, _SyncRun]] = []  # a heap
        self._sequence = itertools.count()
        self._timer: trio.CancelScope | None = None
        self._pool: ProcessPool | None = None  # for isolation="process", made when needed
        # Running jobs that a Stop can reach: async and process ones by their
        # cancel scope (and what stopping them is called), sync ones by run.
        self._scopes: dict[str, tuple[trio.CancelScope, CancelOutcome]] = {}
        self._runs: dict[str, _SyncRun] = {}
        self._stopped: set[str] = set()  # cancelled by a Stop, not by a time limit
        # Async jobs go to lanes: tasks that run one job after another.
        self._lane_jobs, self._lane_receive = trio.open_memory_channel[
            tuple[Job, Task[Any, Any], "float | None"]](math.inf)
        self._lanes = 0
        self._idle_lanes = 0
        self._unclaimed = 0  # jobs in the lanes' channel, not yet taken
        self._lane_pending: dict[str, Job] = {}  # those jobs by id, for a Stop
        self._counts = dict.fromkeys(
            ("succeeded", "failed", "timed_out", "late", "retried", "cancelled"), 0)
        # Failed attempts to run again, and after how long: sent at the next flush.
        self._retries: list[Job] = []
        self._retry_delays: list[float] = []

    async def setup(self, nursery: trio.Nursery) -> str | None:
        options = self.options
        self._nursery = nursery
        self._token = trio.lowlevel.current_trio_token()
        for index in range(options.threads):
            thread = threading.Thread(
                target=self._work, name=f"{self.name}-{index} ({self.worker})", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        nursery.start_soon(self._collect)
        nursery.start_soon(self._expire_sync_runs)
        self._credit_out = options.concurrency
        await self.refs["dispatcher"].send(Credit(worker=self.worker, n=options.concurrency))
        return f"{options.concurrency} slots, {options.threads} threads"

    async def handle(self, message: Accepts) -> CancelReply | None:
        if isinstance(message, Stop):
            return CancelReply(id=message.id, outcome=self._stop(message.id))
        await self.handle_batch([message])
        return None

    async def handle_batch(self, messages: list[Accepts]) -> None:
        jobs: list[Job] = []
        stops: list[str] = []  # applied once the batch's jobs have started
        for message in messages:
            match message:
                case Assign():
                    jobs.extend(message.jobs)
                    stops.extend(message.cancel)  # a subworker's, through its link
                case Stop(id=task_id):
                    stops.append(task_id)
                case _:
                    assert_never(message)
        self._credit_out -= len(jobs)
        room = max(self.options.concurrency - self._in_flight - len(self._backlog), 0)
        if len(jobs) > room:
            # The Dispatcher sent more than our credit: hold the rest here
            # rather than run past the bound.
            log.warning(
                "%s: assigned %d jobs with room for %d; %d wait for a free slot",
                self.name, len(jobs), room, len(jobs) - room,
            )
            self._backlog.extend(jobs[room:])
            jobs = jobs[:room]
        await self._start(jobs)
        for task_id in stops:
            self._stop(task_id)

    async def drain(self) -> None:
        """Wait for running jobs and their reports, then stop the threads.

        The node's shutdown deadline cancels whatever is left. The idle
        threads are sent a sentinel each and not joined: they are daemon
        threads, and a join here would block (or, from ``trio.to_thread``,
        race a ``MockClock`` that jumps while every task waits).
        """
        while (
            self._in_flight or self._backlog or self._outbox or self._completed or self._flushing
        ):
            self._flushed = trio.Event()
            await self._flushed.wait()
        self._stop_threads()
        if self._pool is not None:
            await self._pool.aclose()

    def stats_detail(self) -> ExecutorStats:
        return ExecutorStats(
            worker=self.worker,
            concurrency=self.options.concurrency,
            in_flight=self._in_flight,
            threads=len(self._threads),
            succeeded_total=self._counts["succeeded"],
            failed_total=self._counts["failed"],
            timed_out_total=self._counts["timed_out"],
            late_results_discarded=self._counts["late"],
            retried_total=self._counts["retried"],
            cancelled_total=self._counts["cancelled"],
            processes=0 if self._pool is None else self._pool.stats().processes,
        )

    # -- starting jobs ---------------------------------------------------------

    async def _start(self, jobs: list[Job]) -> None:
        """Tell the store which jobs start, then start them (in that order,
        so a job's ``Running`` always precedes its ``Finished``)."""
        started: list[tuple[Job, Task[Any, Any]]] = []
        wall = time.time()
        for job in jobs:
            found = self._registry.get(job.task)
            if found is None:
                self._report(self._unknown(job))
            elif job.expires_at is not None and job.expires_at <= wall:
                self._report(Outcome(
                    id=job.id, attempt=job.attempt, worker=self.worker, started_at=wall,
                    finished_at=wall, error=RemoteError(
                        type="TaskExpired", kind="expired",
                        message=f"its deadline (expires) passed {wall - job.expires_at:.3f} s "
                        "before it could start; it was not started")))
            else:
                started.append((job, found))
        if not started:
            return
        self._in_flight += len(started)
        await self.refs["results"].send(
            Running(ids=tuple(job.id for job, _ in started), worker=self.worker,
                    started_at=time.time(), attempts=tuple(job.attempt for job, _ in started))
        )
        assert self._nursery is not None
        now = trio.current_time()
        for job, found in started:
            limit = self._limit(job, found)
            if found.is_async:
                self._to_lane(job, found, limit)
                continue
            if (found.isolation or self.options.isolation) == "process":
                self._nursery.start_soon(self._run_isolated, job, found, limit)
                continue
            run = _SyncRun(job, found, limit, self.worker)
            self._runs[job.id] = run
            self._jobs.put(run)
            if limit is not None:
                self._push_deadline(now + limit, run)

    def _limit(self, job: Job, found: Task[Any, Any]) -> float | None:
        if job.timeout is not None:
            return job.timeout
        if found.timeout is not None:
            return found.timeout
        return self.options.default_timeout  # type: ignore[no-any-return]

    def _unknown(self, job: Job) -> Outcome:
        matches = self._registry.close_matches(job.task)
        hint = f" (did you mean {', '.join(repr(m) for m in matches)}?)" if matches else ""
        now = time.time()
        return Outcome(
            id=job.id, attempt=job.attempt, worker=self.worker, started_at=now, finished_at=now,
            error=RemoteError(
                type="UnknownTask",
                message=f"no task named {job.task!r} on worker {self.worker}{hint}; import the "
                "module that defines it on this worker ([node] imports or FASTWORKER_TASKS)",
            ),
        )

    # -- async tasks -------------------------------------------------------------

    def _to_lane(self, job: Job, found: Task[Any, Any], limit: float | None) -> None:
        """Queue an async job for a lane, and start a lane if none is free."""
        self._lane_jobs.send_nowait((job, found, limit))
        self._unclaimed += 1
        self._lane_pending[job.id] = job
        if self._unclaimed > self._idle_lanes and self._lanes < self.options.concurrency:
            self._lanes += 1
            assert self._nursery is not None
            self._nursery.start_soon(self._lane)

    async def _lane(self) -> None:
        """Run async jobs one after another, under one cancel scope for as
        long as none is cut short: a scope per job would cost as much as
        the job's task (see the module). A Stop or a time limit cancels the
        lane's scope, which ends just the job it is running; the lane then
        goes on under a fresh scope."""
        receive = self._lane_receive
        while True:
            running: tuple[Job, Task[Any, Any], float | None] | None = None
            with trio.CancelScope() as scope:
                while True:
                    self._idle_lanes += 1
                    try:
                        job, found, limit = await receive.receive()
                    finally:
                        self._idle_lanes -= 1
                    self._unclaimed -= 1
                    if self._lane_pending.pop(job.id, None) is not job:
                        continue  # stopped before it started (and reported)
                    started_at = time.time()
                    running = job, found, limit
                    self._scopes[job.id] = held = (scope, "interrupted")
                    if limit is not None:
                        scope.deadline = trio.current_time() + limit
                    value, error, retryable = await call_async(found, job.payload)
                    if limit is not None:
                        scope.deadline = math.inf
                    self._forget(self._scopes, job.id, held)
                    self._stopped.discard(job.id)  # a Stop that came as it returned
                    running = None
                    self._in_flight -= 1
                    self._report(
                        self._outcome(job, found, value, error, retryable, started_at), job)
            if running is not None:  # the scope ended it: a Stop, or its time limit
                job, found, limit = running
                self._forget(self._scopes, job.id, held)
                value, error, retryable = self._cut_short(job, found, limit, "interrupted")
                self._in_flight -= 1
                self._report(self._outcome(job, found, value, error, retryable, started_at), job)

    # -- stopping running jobs -----------------------------------------------------

    def _stop(self, task_id: str) -> CancelOutcome:
        """Stop a job this executor holds; say how (see ``CancelReply``)."""
        held = self._scopes.get(task_id)
        if held is not None:
            scope, how = held
            self._stopped.add(task_id)
            scope.cancel()  # its runner reports it cancelled
            return how
        run = self._runs.get(task_id)
        if run is not None and run.outcome is None and not run.timed_out:
            run.timed_out = True  # a thread skips it, or discards what it returns
            if run.started_mono is None:
                return self._cancel_unstarted(run.job)
            job = run.job
            self._report(Outcome(id=job.id, attempt=job.attempt, worker=self.worker,
                                 error=cancelled_error(run.task, "abandoned"),
                                 started_at=run.started_at, finished_at=time.time()))
            return "abandoned"
        pending = self._lane_pending.pop(task_id, None)
        if pending is not None:  # handed to the lanes, not yet begun
            self._in_flight -= 1
            return self._cancel_unstarted(pending)
        for job in self._backlog:
            if job.id == task_id:
                self._backlog.remove(job)
                return self._cancel_unstarted(job)
        return "not_queued"

    def _cancel_unstarted(self, job: Job) -> CancelOutcome:
        now = time.time()
        self._report(Outcome(
            id=job.id, attempt=job.attempt, worker=self.worker, started_at=now, finished_at=now,
            error=cancelled_error(self._registry.get(job.task), "cancelled", job.task)))
        return "cancelled"

    @staticmethod
    def _forget(held: dict[str, Any], task_id: str, mine: Any) -> None:
        """Drop ``task_id`` from ``held`` if it is still this run's (a job
        redelivered to the same worker may run twice at once)."""
        if held.get(task_id) is mine:
            del held[task_id]

    def _cut_short(self, job: Job, found: Task[Any, Any], limit: float | None,
                   how: str) -> tuple[None, RemoteError, bool]:
        """Why a job's cancel scope ended it: a Stop, or its time limit."""
        if job.id in self._stopped:
            self._stopped.discard(job.id)
            return None, cancelled_error(found, how), False
        assert limit is not None
        return None, timeout_error(found, limit), found.retries_on_timeout

    # -- sync tasks: a process each ----------------------------------------------

    async def _run_isolated(self, job: Job, found: Task[Any, Any], limit: float | None) -> None:
        """A sync task with ``isolation="process"``: run in the pool, whose
        process is killed at the time limit (or if this is cancelled)."""
        if self._pool is None:
            size = self.options.processes or os.cpu_count() or 1
            self._pool = ProcessPool(size, name=f"{self.name} ({self.worker})")
        started_at = time.time()
        with trio.CancelScope() as scope:
            self._scopes[job.id] = held = (scope, "terminated")
            value, error, retryable = await self._pool.run(found, job.payload, limit)
        self._forget(self._scopes, job.id, held)
        if scope.cancelled_caught:
            value, error, retryable = self._cut_short(job, found, limit, "terminated")
        else:
            self._stopped.discard(job.id)  # a Stop that came as it returned
        self._in_flight -= 1
        self._report(self._outcome(job, found, value, error, retryable, started_at), job)

    # -- sync tasks: worker threads ----------------------------------------------

    def _work(self) -> None:
        """A worker thread: run jobs until a sentinel arrives."""
        get = self._jobs.get
        while (run := get()) is not None:
            if self._closing:
                continue  # the executor is gone; nobody waits for this one
            if run.timed_out:  # stopped before a thread took it: never started
                self._complete(run)
                continue
            run.started_at = time.time()
            run.started_mono = time.monotonic()
            value, error, retryable = call_sync(run.task, run.job.payload)
            run.outcome = self._outcome(run.job, run.task, value, error, retryable,
                                        run.started_at)
            if not self._complete(run):
                return

    def _complete(self, run: _SyncRun) -> bool:
        """Hand a finished run to the trio side (from a worker thread);
        False once the trio run is over."""
        self._completed.append(run)
        # Wake the trio side only if no wake-up is pending. No lock: the
        # collector clears the flag before it drains, so a run appended
        # while the flag is still set is drained by that pass.
        if not self._wake_pending:
            self._wake_pending = True
            try:
                assert self._token is not None
                self._token.run_sync_soon(self._wake)
            except trio.RunFinishedError:
                return False
        return True

    def _wake(self) -> None:
        self._wakeup.set()

    def _stop_threads(self) -> None:
        if not self._closing:
            self._closing = True
            for _ in self._threads:
                self._jobs.put(None)

    # -- sync tasks: time limits -------------------------------------------------

    def _push_deadline(self, at: float, run: _SyncRun) -> None:
        heapq.heappush(self._deadlines, (at, next(self._sequence), run))
        if self._timer is not None and at < self._timer.deadline:
            self._timer.deadline = at

    async def _expire_sync_runs(self) -> None:
        """One timer for every sync job with a time limit: fail each at its
        limit, counted from when its thread began it."""
        heap = self._deadlines
        while True:
            self._timer = trio.CancelScope(deadline=heap[0][0] if heap else math.inf)
            with self._timer:
                await trio.sleep_forever()
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                _, _, run = heapq.heappop(heap)
                if run.outcome is not None or run.timed_out:
                    continue  # it returned in time (the collector reports it), or was stopped
                assert run.limit is not None
                if run.started_mono is None:
                    # Still waiting for a thread: its limit has not begun.
                    self._push_deadline(now + run.limit, run)
                    continue
                remaining = run.started_mono + run.limit - time.monotonic()
                if remaining > 0:
                    self._push_deadline(now + remaining, run)
                    continue
                run.timed_out = True
                self._report(self._outcome(
                    run.job, run.task, None, timeout_error(run.task, run.limit),
                    run.task.retries_on_timeout, run.started_at), run.job)

    # -- reporting ---------------------------------------------------------------

    def _outcome(self, job: Job, found: Task[Any, Any], value: bytes | None,
                 error: RemoteError | None, retryable: bool, started_at: float) -> Outcome:
        """A job's outcome; a failed attempt with retries left says when to
        retry it (called from worker threads too: it touches no shared state)."""
        retry_in = None
        if error is not None and retryable:
            retries = found.retries if job.retries is None else job.retries
            if job.attempt <= retries:
                retry_in = found.backoff.delay(job.attempt)
        return Outcome(id=job.id, attempt=job.attempt, worker=self.worker, value=value,
                       error=error, started_at=started_at, finished_at=time.time(),
                       retry_in=retry_in)

    def _report(self, outcome: Outcome, job: Job | None = None) -> None:
        """Queue an outcome for the collector's next pass, and wake it."""
        self._record(outcome, job)
        self._wakeup.set()

    def _record(self, outcome: Outcome, job: Job | None) -> None:
        if outcome.retry_in is not None and job is not None:
            self._counts["retried"] += 1
            self._retries.append(attrs.evolve(job, attempt=job.attempt + 1))
            self._retry_delays.append(outcome.retry_in)
        if outcome.error is None:
            self._counts["succeeded"] += 1
        elif outcome.error.kind == "timeout":
            self._counts["timed_out"] += 1
        elif outcome.error.kind == "cancelled":
            self._counts["cancelled"] += 1
        else:
            self._counts["failed"] += 1
        self._outbox.append(outcome)

    async def _collect(self) -> None:
        """Take every completion at once; send one ``Finished`` and one
        ``Credit`` per pass."""
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup = trio.Event()
                self._wake_pending = False
                self._flushing = True
                try:
                    await self._flush()
                finally:
                    self._flushing = False
                self._flushed.set()
        finally:
            self._stop_threads()

    async def _flush(self) -> None:
        completed = self._completed
        while completed:
            run = completed.popleft()
            self._forget(self._runs, run.job.id, run)
            self._in_flight -= 1
            if run.timed_out:
                if run.started_mono is not None:  # it ran: what it returned is discarded
                    self._counts["late"] += 1
            else:
                assert run.outcome is not None
                self._record(run.outcome, run.job)  # this pass sends it: no wake-up needed
        free = self.options.concurrency - self._in_flight
        if self._backlog and free > 0:
            taken = min(free, len(self._backlog))
            await self._start([self._backlog.popleft() for _ in range(taken)])
        outcomes, self._outbox = self._outbox, []
        credit = (
            self.options.concurrency - self._in_flight - len(self._backlog) - self._credit_out
        )
        if credit > 0:
            self._credit_out += credit
        if outcomes:
            await self.refs["results"].send(Finished(outcomes=tuple(outcomes)))
        if self._retries:  # after Finished: the store hears of the failure first
            retries, self._retries = self._retries, []
            delays, self._retry_delays = self._retry_delays, []
            await self.refs["dispatcher"].send(Retry(jobs=tuple(retries), delays=tuple(delays)))
        if credit > 0:
            await self.refs["dispatcher"].send(Credit(worker=self.worker, n=credit))


class _SyncRun:
    """A sync job on its way through a worker thread. The thread writes
    ``started_*`` and then ``outcome``; the trio side writes ``timed_out``."""

    __slots__ = ("job", "task", "limit", "worker", "started_at", "started_mono", "outcome",
                 "timed_out")

    def __init__(self, job: Job, task: Task[Any, Any], limit: float | None, worker: str) -> None:
        self.job = job
        self.task = task
        self.limit = limit
        self.worker = worker
        self.started_at = 0.0
        self.started_mono: float | None = None
        self.outcome: Outcome | None = None
        self.timed_out = False
