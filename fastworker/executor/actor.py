"""The Executor: where tasks run.

It takes ``Assign`` (and ``Stop``) from the Dispatcher, tells the
ResultStore which jobs are ``Running`` and, as they end, how they
``Finished``, sends failed attempts with retries left back as ``Retry``,
and gives ``Credit`` for every slot that frees: one message of each per
pass of its collector. Jobs run on lanes (async), worker threads (sync) or
in a process pool (``isolation="process"``); see docs/executor.md.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import sys
import time
from typing import Any, Literal, Union

import attrs
import trio

from actors import Actor
from fastworker.executor.isolated import Isolated
from fastworker.executor.lanes import Lanes
from fastworker.executor.reports import Reports
from fastworker.executor.threads import Threads
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
from fastworker.stats import ExecutorStats
from fastworker.submission import time_limit
from fastworker.tasks import Task, TaskRegistry, default_registry

if sys.version_info >= (3, 11):
    from typing import assert_never
else:  # pragma: no cover
    from typing_extensions import assert_never

__all__ = ["Executor", "ExecutorOptions"]

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
    #: A job whose pool process died running it this many times (counted
    #: across its attempts) is poison: it fails as ``PoisonTask`` instead of
    #: being retried. A death before that is a ``WorkerProcessDied`` error,
    #: retried like any error while the job has retries left.
    poison_after: int = attrs.field(default=1, validator=attrs.validators.ge(1))


class Executor(Actor[Accepts]):
    """Runs assigned jobs and reports them in batches.

    It grants ``concurrency`` credit at start; the Dispatcher never assigns
    more than it holds, so ``concurrency`` bounds the jobs running at once.
    """

    Options = ExecutorOptions
    refs_required = ("dispatcher", "results")

    def __init__(
        self, options: ExecutorOptions, context: Any, *, registry: TaskRegistry | None = None
    ) -> None:
        super().__init__(options, context)
        self.worker = options.worker or f"{socket.gethostname()}:{os.getpid()}"
        self._registry = default_registry() if registry is None else registry
        self._reports = Reports(self.worker)
        self._lanes = Lanes(options.concurrency, self._reports)
        self._threads = Threads(options.threads, self._reports)
        self._isolated = Isolated(options.processes, self._reports, options.poison_after)
        self._backlog: collections.deque[Job] = collections.deque()  # assigned past our credit
        self._credit_out = 0  # credit the Dispatcher holds, as far as we told it
        self._flushed = trio.Event()
        self._flushing = False

    async def setup(self, nursery: trio.Nursery) -> str | None:
        options = self.options
        self._lanes.open(nursery)
        await self._threads.open(nursery, self.name)
        self._isolated.open(nursery, f"{self.name} ({self.worker})")
        nursery.start_soon(self._collect)
        self._credit_out = options.concurrency
        await self.refs["dispatcher"].send(Credit(worker=self.worker, n=options.concurrency))
        return f"{options.concurrency} slots, {options.threads} threads"

    async def handle(self, message: Accepts) -> CancelReply | None:
        if isinstance(message, Stop):  # a call: answered with how it stopped
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
        room = max(self.options.concurrency - self._reports.in_flight - len(self._backlog), 0)
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
        """Wait for running jobs and their reports, then stop the threads
        and the pool; the node's shutdown deadline cancels whatever is left."""
        reports = self._reports
        while (reports.in_flight or self._backlog or reports.pending
               or self._threads.uncollected or self._flushing):
            self._flushed = trio.Event()
            await self._flushed.wait()
        self._threads.close()
        await self._isolated.aclose()

    def stats_detail(self) -> ExecutorStats:
        counts = self._reports.counts
        return ExecutorStats(
            worker=self.worker,
            concurrency=self.options.concurrency,
            in_flight=self._reports.in_flight,
            threads=self._threads.started,
            succeeded_total=counts["succeeded"],
            failed_total=counts["failed"],
            timed_out_total=counts["timed_out"],
            late_results_discarded=counts["late"],
            retried_total=counts["retried"],
            cancelled_total=counts["cancelled"],
            processes=self._isolated.processes,
        )

    # -- starting and stopping jobs -----------------------------------------------

    async def _start(self, jobs: list[Job]) -> None:
        """Tell the store which jobs start, then start them (in that order,
        so a job's ``Running`` always precedes its ``Finished``)."""
        reports = self._reports
        started: list[tuple[Job, Task[Any, Any]]] = []
        wall = time.time()
        for job in jobs:
            found = self._registry.get(job.task)
            if found is None:
                reports.report(self._unknown(job))
            elif job.expires_at is not None and job.expires_at <= wall:
                reports.report(Outcome(
                    id=job.id, attempt=job.attempt, worker=self.worker, started_at=wall,
                    finished_at=wall, error=RemoteError(
                        type="TaskExpired", kind="expired",
                        message=f"its deadline (expires) passed {wall - job.expires_at:.3f} s "
                        "before it could start; it was not started")))
            else:
                started.append((job, found))
        if not started:
            return
        reports.in_flight += len(started)
        await self.refs["results"].send(
            Running(ids=tuple(job.id for job, _ in started), worker=self.worker,
                    started_at=time.time(), attempts=tuple(job.attempt for job, _ in started))
        )
        default_limit = self.options.default_timeout
        isolation = self.options.isolation
        on_lane, on_thread = self._lanes.start, self._threads.start
        now = trio.current_time()
        for job, found in started:
            limit = time_limit(job.timeout, found, default_limit)
            if found.is_async:
                on_lane(job, found, limit)
            elif (found.isolation or isolation) == "process":
                self._isolated.start(job, found, limit)
            else:
                on_thread(job, found, limit, now)

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

    def _stop(self, task_id: str) -> CancelOutcome:
        """Stop a job this executor holds; say how (see ``CancelReply``)."""
        how = (self._lanes.stop(task_id) or self._isolated.stop(task_id)
               or self._threads.stop(task_id))
        if how is not None:
            return how
        for job in self._backlog:
            if job.id == task_id:
                self._backlog.remove(job)
                return self._reports.cancel_unstarted(job)
        return "not_queued"

    # -- reporting ---------------------------------------------------------------

    async def _collect(self) -> None:
        """Take every report at once; send one ``Finished``, one ``Retry``
        and one ``Credit`` per pass."""
        try:
            while True:
                await self._reports.wait()
                self._flushing = True
                try:
                    await self._flush()
                finally:
                    self._flushing = False
                self._flushed.set()
        finally:
            self._threads.close()
            self._isolated.abandon()

    async def _flush(self) -> None:
        reports = self._reports
        self._threads.collect()
        free = self.options.concurrency - reports.in_flight
        if self._backlog and free > 0:
            taken = min(free, len(self._backlog))
            await self._start([self._backlog.popleft() for _ in range(taken)])
        outcomes, retries, delays = reports.take()
        credit = (
            self.options.concurrency - reports.in_flight - len(self._backlog) - self._credit_out
        )
        if credit > 0:
            self._credit_out += credit
        if outcomes:
            await self.refs["results"].send(Finished(outcomes=tuple(outcomes)))
        if retries:  # after Finished: the store hears of the failure first
            await self.refs["dispatcher"].send(Retry(jobs=tuple(retries), delays=tuple(delays)))
        if credit > 0:
            await self.refs["dispatcher"].send(Credit(worker=self.worker, n=credit))
