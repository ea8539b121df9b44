"""The Executor: where tasks run.

It takes ``Assign`` (and ``Stop``) from the Dispatcher, tells the
ResultStore which jobs are ``Running`` and, as they end, how they
``Finished``, sends failed attempts with retries left back as ``Retry``,
and gives ``Credit`` per kind of slot for every slot that frees: one
message of each per pass of its collector. Jobs run on lanes (async),
worker threads (sync) or in a process pool (``isolation="process"``), each
only when a slot of its kind is free; until then it waits here, best
first, and ``Assign(give_back=True)`` hands the waiting ones back as
``Returned``. It never runs more jobs of a kind than it has slots, nor
decides which worker gets what (the Dispatcher's part). See docs/executor.md.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from typing import Any, Union

import trio

from actors import Actor
from fastworker.executor.isolated import Isolated
from fastworker.executor.lanes import Lanes
from fastworker.executor.options import ExecutorOptions
from fastworker.executor.prefetch import Prefetch
from fastworker.executor.reports import Begun, Reports
from fastworker.executor.threads import Threads
from fastworker.executor.waiting import Waiting
from fastworker.messages import (
    ASYNC,
    KINDS,
    PROCESS,
    THREAD,
    Assign,
    CancelOutcome,
    CancelReply,
    Credit,
    Finished,
    Job,
    Retry,
    Returned,
    Running,
    Slots,
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


class Executor(Actor[Accepts]):
    """Runs assigned jobs and reports them in batches.

    It has slots of three kinds (``KINDS``): ``concurrency`` lanes for async
    tasks, ``threads`` worker threads for sync ones and ``processes`` pool
    processes for sync ones isolated in a process. A job starts only when a
    slot of its kind is free; until then it waits here, best first. It
    grants credit per kind, its slots plus ``prefetch``, and gives back each
    one that frees; the Dispatcher never assigns more than it holds.
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
        self._slots: Slots = (options.concurrency, options.threads, self._isolated.size)
        # How many of each kind it hands to their runner at once: a worker
        # thread or a pool runner takes its next job from its own
        # best-first queue, without waiting for a pass of the collector, so
        # their prefetch waits there; lanes take a job only into a free slot.
        self._prefetch = Prefetch(options.prefetch, options.min_prefetch)
        self._prefetch_told: Slots | None = None  # as the Dispatcher was last told
        counts = self._prefetch.counts
        self._handed = [options.concurrency, options.threads + counts[THREAD],
                        self._isolated.size + counts[PROCESS]]
        self._waiting = Waiting()  # assigned, not started: no slot of their kind was free
        # Per kind: credit the Dispatcher holds, as far as we told it; and
        # jobs given back whose Returned is not sent yet (no credit yet).
        self._credit_out = [0, 0, 0]
        self._returning = [0, 0, 0]
        # Each task's kind of slot, as last told the Dispatcher and as the
        # registry says now; and the registry's version of each.
        self._announced: dict[str, int] = {}
        self._announced_version = -1
        self._kinds: dict[str, int] = {}
        self._kinds_version = -1
        self._flushed = trio.Event()
        self._flushing = False

    async def setup(self, nursery: trio.Nursery) -> str | None:
        options = self.options
        self._lanes.open(nursery)
        await self._threads.open(nursery, self.name)
        self._isolated.open(nursery, f"{self.name} ({self.worker})")
        nursery.start_soon(self._collect)
        first = self._credit()  # all of it, and the tasks
        assert first is not None
        await self.refs["dispatcher"].send(first)
        slots = ", ".join(f"{n} {kind}" for n, kind in zip(self._slots, KINDS, strict=True))
        return f"slots: {slots}; prefetch up to {options.prefetch}"

    async def handle(self, message: Accepts) -> CancelReply | None:
        if isinstance(message, Stop):  # a call: answered with how it stopped
            return CancelReply(id=message.id, outcome=self._stop(message.id))
        await self.handle_batch([message])
        return None

    async def handle_batch(self, messages: list[Accepts]) -> None:
        jobs: list[Job] = []
        stops: list[str] = []  # applied once the batch's jobs have started
        give_back = False
        for message in messages:
            match message:
                case Assign():
                    jobs.extend(message.jobs)
                    stops.extend(message.cancel)  # a subworker's, through its link
                    give_back = give_back or message.give_back
                case Stop(id=task_id):
                    stops.append(task_id)
                case _:
                    assert_never(message)
        if jobs:
            now = trio.current_time()
            self._adapt(now)  # after a quiet spell, before the jobs are handed
            adapt, out = self._prefetch, self._credit_out
            if adapt.fixed:
                ready = self._take(jobs)
            else:
                before = out.copy()
                ready = self._take(jobs)
                adapt.took(now, [b - a for b, a in zip(before, out, strict=True)], out)
            await self._start(ready)
        for task_id in stops:
            self._stop(task_id)
        if give_back:
            await self._give_back()
        elif self._registry.version != self._announced_version:
            await self._send_credit()  # the tasks changed: say so now

    async def drain(self) -> None:
        """Wait for running and waiting jobs and their reports, then stop the
        threads and the pool; the node's shutdown deadline cancels whatever
        is left."""
        reports = self._reports
        while (any(reports.running) or any(self._waiting.counts) or reports.pending
               or self._threads.uncollected or self._flushing):
            self._flushed = trio.Event()
            await self._flushed.wait()
        self._threads.close()
        await self._isolated.aclose()

    def stats_detail(self) -> ExecutorStats:
        counts = self._reports.counts
        a, t, p = self._reports.running
        wa, wt, wp = self._waiting.counts
        held, unbegun = self._threads.unbegun()  # handed to the threads, not begun
        t, wt = t - held, wt + unbegun
        pooled = self._isolated.unbegun()  # handed to the pool, not begun
        p, wp = p - pooled, wp + pooled
        return ExecutorStats(
            worker=self.worker,
            concurrency=self.options.concurrency,
            in_flight=a + t + p + wa + wt + wp,
            threads=self._threads.started,
            succeeded_total=counts["succeeded"],
            failed_total=counts["failed"],
            timed_out_total=counts["timed_out"],
            late_results_discarded=counts["late"],
            retried_total=counts["retried"],
            cancelled_total=counts["cancelled"],
            processes=self._isolated.processes,
            slots=self._slots,
            running=(a, t, p),
            waiting=(wa, wt, wp),
            prefetch=(self._prefetch.counts[0], self._prefetch.counts[1],
                      self._prefetch.counts[2]),
        )

    # -- taking, starting and stopping jobs ----------------------------------------

    def _take(self, jobs: list[Job]) -> list[_Ready]:
        """Charge each job to the credit of its kind, and choose those to
        start now: as many of each kind as it has free slots, best first;
        the others wait. A job of a task this worker does not know fails at
        once (its credit comes back)."""
        get, kinds, announced = self._registry.get, self._current_kinds(), self._announced
        credit_out, waiting, reports = self._credit_out, self._waiting, self._reports
        waits = waiting.counts
        running, slots = reports.running, self._handed
        free = [slots[0] - running[0], slots[1] - running[1], slots[2] - running[2]]
        ready: list[_Ready] = []
        for job in jobs:
            found = get(job.task)
            if found is None:
                credit_out[announced.get(job.task, ASYNC)] -= 1
                reports.report(reports.unknown(job, self._registry.close_matches(job.task)), job)
                continue
            kind = kinds[job.task]
            # Charged to the kind the Dispatcher was told (the same, unless
            # the task changed since).
            credit_out[announced.get(job.task, kind)] -= 1
            if free[kind] > 0 and not waits[kind]:
                free[kind] -= 1
                ready.append((job, found, kind))
            else:
                waiting.push(job, found, kind)
        for kind, out in enumerate(credit_out):
            if out < 0:
                # The Dispatcher sent more than our credit: they wait here
                # rather than run past the slots.
                log.warning("%s: assigned %d %s jobs past its credit; they wait for a free slot",
                            self.name, -out, KINDS[kind])
                credit_out[kind] = 0
        if any(waits):
            ready.extend(self._best(free))
        return ready

    def _best(self, free: list[int]) -> list[_Ready]:
        """Take the best waiting jobs of each kind into its ``free`` slots."""
        ready: list[_Ready] = []
        waiting = self._waiting
        for kind in range(len(KINDS)):
            while free[kind] > 0 and (best := waiting.pop(kind)) is not None:
                free[kind] -= 1
                ready.append((best[0], best[1], kind))
        return ready

    async def _start(self, ready: list[_Ready]) -> None:
        """Tell the store which jobs start, then start them (in that order,
        so a job's ``Running`` always precedes its ``Finished``). A job whose
        ``expires`` deadline passed is failed instead."""
        if not ready:
            return
        reports = self._reports
        running, counted = reports.running, self._prefetch.started
        started: list[_Ready] = []
        wall = time.time()
        for item in ready:
            job = item[0]
            if job.expires_at is not None and job.expires_at <= wall:
                reports.report(reports.expired(job, wall), job)
            else:
                started.append(item)
                running[item[2]] += 1  # its slot is taken from here
                counted[item[2]] += 1
        if not started:
            return
        # A thread or pool job is running once its thread or runner begins
        # it (the collector reports it then); async ones start now.
        now_running = [item for item in started if item[2] == ASYNC]
        if now_running:
            await self.refs["results"].send(Running(
                ids=tuple(job.id for job, _, _ in now_running), worker=self.worker,
                started_at=time.time(),
                attempts=tuple(job.attempt for job, _, _ in now_running)))
        default_limit = self.options.default_timeout
        on_lane, on_thread, on_process = (
            self._lanes.start, self._threads.start, self._isolated.start)
        now = trio.current_time()
        for job, found, kind in started:
            limit = time_limit(job.timeout, found, default_limit)
            if kind == ASYNC:
                on_lane(job, found, limit)
            elif kind == PROCESS:
                on_process(job, found, limit)
            else:
                on_thread(job, found, limit, now)

    def _stop(self, task_id: str) -> CancelOutcome:
        """Stop a job this executor holds; say how (see ``CancelReply``)."""
        how = (self._lanes.stop(task_id) or self._isolated.stop(task_id)
               or self._threads.stop(task_id))
        if how is not None:
            return how
        waiting = self._waiting.stop(task_id)
        if waiting is not None:  # its credit comes back in the collector's pass
            return self._reports.cancel_unstarted(waiting)
        return "not_queued"

    async def _give_back(self) -> None:
        """Hand every waiting job back to the Dispatcher in one ``Returned``,
        then the credit they held (never before: it would count them twice)."""
        counts = self._waiting.counts.copy()
        # Those the threads hold unbegun keep their slots until the threads
        # pass them over (then the collector frees them): no credit before.
        # The pool's free theirs at once: returning, like the waiting ones.
        pooled = self._isolated.give_back()
        counts[PROCESS] += len(pooled)
        jobs = sorted(self._threads.give_back() + pooled + self._waiting.take_all(),
                      key=lambda job: job.priority)  # best first, then as they came
        if jobs:
            returning = self._returning
            for kind, n in enumerate(counts):
                returning[kind] += n
            try:
                await self.refs["dispatcher"].send(Returned(jobs=tuple(jobs)))
            finally:
                for kind, n in enumerate(counts):
                    returning[kind] -= n
            log.info("%s: gave back %d jobs that had not started", self.name, len(jobs))
        await self._send_credit()

    # -- reporting ---------------------------------------------------------------

    def _credit(self) -> Credit | None:
        """The credit to grant now, per kind (held by the Dispatcher from
        here on): slots and prefetch, less what runs, waits or it holds;
        with the tasks and their kinds if the registry changed since they
        were last sent. ``None`` if there is neither."""
        adapt = self._prefetch
        now = trio.current_time()
        self._adapt(now)
        prefetch = adapt.counts
        running, waits = self._reports.running, self._waiting.counts
        out, returning = self._credit_out, self._returning
        free = [0, 0, 0]
        # Of each kind's credit, what is prefetch: the target, or more while
        # a smaller target drains (credit granted is not taken back, and
        # what exceeds the free slots is prefetch room, not a free slot).
        held = [0, 0, 0]
        for kind, slots in enumerate(self._slots):
            had = running[kind] + waits[kind] + returning[kind] + out[kind]
            n = slots + prefetch[kind] - had
            if n > 0:
                out[kind] += n
                free[kind] = n
                had += n
            held[kind] = max(prefetch[kind], had - slots)
        tasks = None
        if self._registry.version != self._announced_version:
            self._announced_version = self._registry.version
            self._announced = tasks = self._current_kinds()
        told: Slots | None = (held[0], held[1], held[2])
        holds: Slots | None = None
        if self._prefetch_told is None:  # the first Credit
            most = adapt.most
            holds = (self._slots[0] + most, self._slots[1] + most, self._slots[2] + most)
        elif told == self._prefetch_told:
            told = None
        if tasks is None and told is None and not any(free):
            return None
        if told is not None:
            self._prefetch_told = told
        if any(free) and not adapt.fixed:
            adapt.granted(now, free)
        return Credit(worker=self.worker, slots=(free[0], free[1], free[2]), tasks=tasks,
                      prefetch=told, holds=holds)

    def _adapt(self, now: float) -> None:
        """Let the prefetch follow the start rate; the threads and the pool
        are handed their slots plus their kind's prefetch."""
        adapt = self._prefetch
        if adapt.update(now):
            counts, handed, slots = adapt.counts, self._handed, self._slots
            handed[THREAD] = slots[THREAD] + counts[THREAD]
            handed[PROCESS] = slots[PROCESS] + counts[PROCESS]

    def _current_kinds(self) -> dict[str, int]:
        """Each registered task's kind of slot (``task_kind``), taken again
        when the registry changed: a look-up per job, not a call."""
        if self._registry.version != self._kinds_version:
            self._kinds_version = self._registry.version
            self._kinds = self._registry.kinds(self.options.isolation)
        return self._kinds

    async def _send_credit(self) -> None:
        credit = self._credit()
        if credit is not None:
            await self.refs["dispatcher"].send(credit)

    async def _collect(self) -> None:
        """Take every report at once; start the best waiting jobs into the
        slots that freed; send one ``Finished``, one ``Retry`` and one
        ``Credit`` per pass."""
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
        begun: list[Begun] = [*self._threads.take_begun(), *self._isolated.take_begun()]
        self._threads.collect()
        # Taken with the begun ones, before any await: an outcome reported
        # meanwhile may be of a job begun after them (its Running is in the
        # next pass), so it waits for the next pass too.
        outcomes, retries, delays = reports.take()
        if begun:  # before any Finished of this pass
            await self.refs["results"].send(Running(
                ids=tuple(run.job.id for run in begun), worker=self.worker,
                started_at=min(run.started_at for run in begun),
                attempts=tuple(run.job.attempt for run in begun)))
        if any(self._waiting.counts):
            running, slots = reports.running, self._handed
            await self._start(self._best(
                [slots[0] - running[0], slots[1] - running[1], slots[2] - running[2]]))
        credit = self._credit()
        if outcomes:
            await self.refs["results"].send(Finished(outcomes=tuple(outcomes)))
        if retries:  # after Finished: the store hears of the failure first
            await self.refs["dispatcher"].send(Retry(jobs=tuple(retries), delays=tuple(delays)))
        if credit is not None:
            await self.refs["dispatcher"].send(credit)


#: A job chosen to start: the job, its task and its kind of slot.
_Ready = tuple[Job, Task[Any, Any], int]
