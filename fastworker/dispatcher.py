"""The Dispatcher: matches queued jobs with free worker slots.

Workers say how many more jobs they can take: the control plane's own
executor with ``Credit``, a subworker with the ``credit`` of its
``Report``s (through the workers edge, port base+5). The Dispatcher keeps
that credit per worker and asks the PriorityInbox for as many jobs as there
is free credit (``Demand``), naming the tasks its free workers can run. The
``JobBatch``es the inbox sends back, best first, are placed job by job on
the live worker with the most free slots that can run the job's task; each
worker gets its jobs of a handled batch at once: the local executor as an
``Assign``, a subworker as the answer to its parked ``Pull``.

The local executor runs jobs only of tasks it has, and with ``local =
"fallback"`` (the default) only of tasks no live subworker can run: once
subworkers are there, the control plane keeps to queueing and dispatch.
With ``local = "always"`` it is one more worker among them.

The Dispatcher knows which subworker holds which job. A subworker's
``Report`` says which jobs ended (they are passed on to the ResultStore).
When the Registry says a subworker was lost (``WorkerLeft``), the jobs it
held go back to the front of their priority level as their next attempt
(at-least-once), except a task marked ``at_most_once``, which fails with
``WorkerLost``, and a job that ``poison_after`` lost workers held, which
fails with ``PoisonTask``. A late result from a lost worker is accepted
(the store keeps the first result of a task), and the requeued copy is
cancelled if it is still queued.

The demand is self-correcting: the Dispatcher remembers how many jobs it
asked for and has not yet received, and asks only for the difference
between that and its free credit. A job that no worker with free credit can
run is held, never dropped, and placed as soon as such credit arrives.
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Collection, Iterable
from typing import Any, Literal, TypeAlias, Union

import attrs
import trio

from actors import Actor, ActorContext, CallTimeout, Reply
from actors.requests import Requests
from actors.log import RateLimitedLog
from fastworker.internal import Requeue
from fastworker.messages import (
    Ack,
    Assign,
    Cancel,
    Cancelled,
    CancelReply,
    Credit,
    Demand,
    Drain,
    Finished,
    Job,
    JobBatch,
    Outcome,
    Pull,
    RemoteError,
    Report,
    Retry,
    Stop,
    UnknownWorker,
)
from fastworker.internal import Dispatched, Requeued
from fastworker.internal import DrainWorker, WorkerHealth, WorkerJoined, WorkerLeft
from fastworker.stats import DispatcherStats, WorkerLoad

__all__ = [
    "Dispatcher",
    "DispatcherOptions",
]

log = logging.getLogger("fastworker.dispatcher")

#: Ids of redelivered jobs remembered, to cancel a queued copy when a lost
#: worker's late result arrives.
_REDELIVERED_REMEMBERED = 100_000


Accepts: TypeAlias = Union[
    Credit, JobBatch, WorkerJoined, WorkerHealth, WorkerLeft, Requests, DrainWorker, Retry,
    Stop]


@attrs.frozen(kw_only=True)
class DispatcherOptions:
    """Where jobs may go.

    Attributes:
        local: ``fallback``: the control plane's own executor runs only
            tasks no live subworker can run; ``always``: it runs its share.
        poison_after: a job held by this many workers that were lost is
            failed as poison instead of being redelivered again.
        pull_wait_max: the longest a subworker's Pull is held, in seconds.
        stop_timeout: seconds to wait for the local executor to stop a
            running task (``Stop``) before answering ``requested``.
    """

    local: Literal["fallback", "always"] = "fallback"
    poison_after: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    pull_wait_max: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    stop_timeout: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))


class _Worker:
    """A worker's place in the Dispatcher: its credit and what it holds."""

    __slots__ = ("name", "local", "tasks", "at_most_once", "credit", "health", "held", "outbox",
                 "pull", "assigned_total", "pull_seq", "last_assign", "report_seq", "drained",
                 "cancel")

    def __init__(self, name: str, *, local: bool, tasks: frozenset[str],
                 at_most_once: frozenset[str] = frozenset()) -> None:
        self.name = name
        self.local = local
        self.tasks = tasks
        self.at_most_once = at_most_once
        self.credit = 0
        self.health: str = "alive"  # alive, suspect or draining
        self.held: dict[str, Job] = {}  # delivered and not yet reported finished
        self.outbox: list[Job] = []  # placed, waiting for the worker's next Pull
        self.pull: _ParkedPull | None = None
        self.assigned_total = 0
        self.pull_seq = 0  # the last Pull answered, and its answer
        self.last_assign = Assign(jobs=())
        self.report_seq = 0  # the last Report taken
        self.drained = False  # by an operator: nothing new until resumed
        self.cancel: list[str] = []  # held jobs to stop, sent with the next Assign

    @property
    def offers(self) -> bool:
        """Whether it counts as a subworker that can run its tasks."""
        return not self.local and self.health != "draining" and not self.drained


@attrs.define(eq=False)
class _ParkedPull:
    """A Requests call holding a Pull, answered once jobs are placed."""

    reply: Reply
    answers: list[Any]
    index: int
    deadline: float
    seq: int


class Dispatcher(Actor[Accepts]):
    """Places jobs on workers as far as their credit allows (see the module
    docstring).

    Args:
        local_tasks: the task names the local executor has (called again
            when a job names one it does not list); by default the task
            registry's.
    """

    Options = DispatcherOptions
    refs_required = ("inbox", "results")
    refs_optional = ("executor",)

    def __init__(
        self,
        options: DispatcherOptions,
        context: ActorContext,
        *,
        local_tasks: Callable[[], Collection[str]] | None = None,
    ) -> None:
        super().__init__(options, context)
        self._local_tasks = local_tasks or _registry_names
        self._workers: dict[str, _Worker] = {}
        self._remote_tasks: Counter[str] = Counter()  # live subworkers per task
        self._held: deque[Job] = deque()
        self._asked = 0
        self._filter: frozenset[str] = frozenset()  # the inbox takes nothing before a Demand
        self._to_results: list[Any] = []
        self._requeue: list[Job] = []
        # Failed attempts to run again (their next attempt), and after how long.
        self._retries: list[Job] = []
        self._retry_delays: list[float] = []
        self._requeue_cancel: list[str] = []
        self._received = False
        self._local_checked = -math.inf
        self._redelivered: OrderedDict[str, None] = OrderedDict()
        self._counts = Counter[str]()
        # Normal when the fleet changes (a subworker joins while jobs asked
        # for the local executor are on their way): INFO, not WARNING.
        self._held_log = RateLimitedLog(log, what="such batches", period=60.0,
                                        level=logging.INFO)

    async def setup(self, nursery: trio.Nursery) -> str | None:
        nursery.start_soon(self._expire_pulls)
        local = "no local executor" if "executor" not in self.refs else (
            f"local executor: {self.options.local}")
        return f"{local}, poison after {self.options.poison_after} lost workers"

    async def handle(self, message: Accepts) -> Any:
        if isinstance(message, Stop):
            reply = await self._stop(message.id)
            await self._dispatch()
            return reply
        if isinstance(message, DrainWorker):
            known = self._operator_drain(message)
            await self._dispatch()
            return known
        if not isinstance(message, Requests):
            await self.handle_batch([message])
            return None
        answers: list[Any] = []
        parked: _ParkedPull | None = None
        last = len(message.messages) - 1
        for index, item in enumerate(message.messages):
            if isinstance(item, Stop):  # from a client, through the queries edge
                answers.append(await self._stop(item.id))
                continue
            answer = self._on_request(item)
            if answer is _PARK:
                assert isinstance(item, Pull)
                if index == last:  # only a request's last message can wait
                    parked = self._park(item, answers, index)
                    answer = None
                else:
                    answer = self._take_outbox(self._workers[item.worker], item.seq)
            answers.append(answer)
        await self._dispatch()
        if parked is not None and not parked.reply.done:
            return None  # deferred: answered when jobs are placed for it
        return answers

    async def handle_batch(self, messages: list[Accepts]) -> None:
        for message in messages:
            match message:
                case Credit(worker=name, n=n):
                    worker = self._workers.get(name)
                    if worker is None:
                        worker = self._workers[name] = _Worker(
                            name, local=True, tasks=frozenset(self._local_tasks()))
                    worker.credit += max(n, 0)
                case JobBatch(jobs=jobs):
                    self._counts["batches"] += 1
                    self._held.extend(jobs)
                    self._asked = max(self._asked - len(jobs), 0)
                    self._received = True
                case WorkerJoined():
                    self._join(message)
                case WorkerHealth(worker=name, health=health):
                    worker = self._workers.get(name)
                    if worker is not None and worker.health != "draining":
                        worker.health = health
                case WorkerLeft():
                    self._leave(message)
                case Retry(jobs=jobs, delays=delays):
                    self._retries.extend(jobs)
                    self._retry_delays.extend(delays)
                case _:
                    # A wiring mistake; crashing would lose the jobs held.
                    kind = type(message).__name__
                    log.warning("%s: ignored %s (not a dispatcher message)", self.name, kind)
        await self._dispatch()

    def stats_detail(self) -> DispatcherStats:
        counts = self._counts
        return DispatcherStats(
            workers=tuple(
                WorkerLoad(worker=w.name, local=w.local, health=w.health, credit=w.credit,
                           held=len(w.held), assigned_total=w.assigned_total, drained=w.drained)
                for w in self._workers.values()
            ),
            held=len(self._held),
            asked=self._asked,
            assigned_total=counts["assigned"],
            batches_total=counts["batches"],
            redelivered_total=counts["redelivered"],
            failed_lost_total=counts["failed_lost"],
            late_results_total=counts["late"],
            retried_total=counts["retried"],
        )

    # -- subworker requests --------------------------------------------------------

    def _on_request(self, item: Any) -> Any:
        match item:
            case Report():
                return self._report(item)
            case Pull(worker=name, seq=seq):
                worker = self._workers.get(name)
                if worker is None or worker.local:
                    return UnknownWorker(worker=name)
                if seq and seq == worker.pull_seq:
                    return worker.last_assign  # its answer was lost on the way: again
                if worker.outbox or worker.cancel or worker.health == "draining":
                    return self._take_outbox(worker, seq)
                return _PARK
            case Drain(worker=name):
                worker = self._workers.get(name)
                if worker is None or worker.local:
                    return UnknownWorker(worker=name)
                self._drain(worker)
                return Ack()
            case _:
                log.warning("%s: ignored %s in a request", self.name, type(item).__name__)
                return None

    def _report(self, report: Report) -> Ack | UnknownWorker:
        worker = self._workers.get(report.worker)
        self._to_results.extend(report.running)
        if report.finished:
            self._to_results.append(Finished(outcomes=report.finished))
        held = worker.held if worker is not None else {}
        for outcome in report.finished:
            job = held.pop(outcome.id, None)
            if job is None:
                self._late(outcome)
            elif outcome.retry_in is not None:
                self._retries.append(attrs.evolve(job, attempt=job.attempt + 1))
                self._retry_delays.append(outcome.retry_in)
        if worker is None or worker.local:
            return UnknownWorker(worker=report.worker)
        if report.seq and report.seq <= worker.report_seq:
            return Ack()  # a resend: its credit was counted (its results are the store's to dedupe)
        worker.report_seq = report.seq
        worker.credit += max(report.credit, 0)
        return Ack()

    def _late(self, outcome: Outcome) -> None:
        """A result from a worker that no longer holds the job: accepted (the
        store keeps one result per task); a queued redelivery is cancelled."""
        self._counts["late"] += 1
        if outcome.id in self._redelivered:
            del self._redelivered[outcome.id]
            self._requeue_cancel.append(outcome.id)

    def _park(self, pull: Pull, answers: list[Any], index: int) -> _ParkedPull:
        worker = self._workers[pull.worker]
        if worker.pull is not None:  # a resent Pull replaces the older one
            self._answer_pull(worker)
        wait = min(max(pull.wait, 0.0), self.options.pull_wait_max)
        parked = _ParkedPull(self.defer(), answers, index, trio.current_time() + wait, pull.seq)
        worker.pull = parked
        return parked

    def _answer_pull(self, worker: _Worker, answer: Any = None) -> None:
        parked, worker.pull = worker.pull, None
        if parked is None:
            return
        answers = list(parked.answers)
        value = self._take_outbox(worker, parked.seq) if answer is None else answer
        if parked.index < len(answers):
            answers[parked.index] = value
        else:
            answers.append(value)
        parked.reply.set(answers)

    def _take_outbox(self, worker: _Worker, seq: int) -> Assign:
        jobs, worker.outbox = worker.outbox, []
        cancel, worker.cancel = worker.cancel, []
        worker.pull_seq = seq
        worker.last_assign = Assign(jobs=tuple(jobs), cancel=tuple(cancel))
        return worker.last_assign

    # -- stopping a task ---------------------------------------------------------------

    async def _stop(self, task_id: str) -> CancelReply:
        """Stop a task that left the inbox: one not yet handed to a worker
        is cancelled here; a subworker is told with its next Assign; the
        local executor is asked (it never waits on the Dispatcher, so the
        call cannot deadlock)."""
        for job in self._held:
            if job.id == task_id:
                self._held.remove(job)
                self._to_results.append(Cancelled(ids=(task_id,)))
                return CancelReply(id=task_id, outcome="cancelled")
        for worker in self._workers.values():
            if task_id not in worker.held:
                continue
            for job in worker.outbox:
                if job.id == task_id:  # placed, not yet pulled
                    worker.outbox.remove(job)
                    del worker.held[task_id]
                    worker.credit += 1
                    self._to_results.append(Cancelled(ids=(task_id,)))
                    return CancelReply(id=task_id, outcome="cancelled")
            worker.cancel.append(task_id)
            if worker.pull is not None:
                self._answer_pull(worker)
            return CancelReply(id=task_id, outcome="requested")
        if "executor" not in self.refs:
            return CancelReply(id=task_id, outcome="not_queued")
        try:
            reply: CancelReply = await self.refs["executor"].call(
                Stop(id=task_id), timeout=self.options.stop_timeout)
        except CallTimeout:
            return CancelReply(id=task_id, outcome="requested")  # it will be, when it is read
        return reply

    async def _expire_pulls(self) -> None:
        """Answer parked Pulls whose wait is over with no jobs, once a second."""
        while True:
            await trio.sleep(1.0)
            now = trio.current_time()
            for worker in self._workers.values():
                if worker.pull is not None and worker.pull.deadline <= now:
                    self._answer_pull(worker)

    # -- the fleet ------------------------------------------------------------------

    def _join(self, joined: WorkerJoined) -> None:
        old = self._workers.get(joined.worker)
        if old is not None:
            self._leave(WorkerLeft(worker=joined.worker, reason="registered again", lost=False))
        self._workers[joined.worker] = _Worker(
            joined.worker, local=False, tasks=joined.tasks, at_most_once=joined.at_most_once)
        self._remote_tasks.update(joined.tasks)

    def _operator_drain(self, message: DrainWorker) -> bool:
        worker = self._workers.get(message.worker)
        if worker is None:
            return False
        offered = worker.offers
        worker.drained = not message.resume
        if offered and not worker.offers:
            self._remote_tasks.subtract(worker.tasks)
        elif worker.offers and not offered:
            self._remote_tasks.update(worker.tasks)
        if worker.drained and not worker.local:
            # What it was given but has not pulled goes back to the queue.
            self._redeliver(worker, worker.outbox, lost=False, delivered=False)
            worker.outbox = []
        log.info("%s: worker %s %s by request", self.name, worker.name,
                 "drained" if worker.drained else "resumed")
        return True

    def _drain(self, worker: _Worker) -> None:
        """Give a stopping worker nothing more; what it was given but has
        not pulled goes with its last Pull, or back to the queue."""
        if worker.health != "draining":
            if worker.offers:
                self._remote_tasks.subtract(worker.tasks)
            worker.health = "draining"
        worker.credit = 0
        if worker.pull is not None:
            self._answer_pull(worker)
        else:
            self._redeliver(worker, worker.outbox, lost=False, delivered=False)
            worker.outbox = []

    def _leave(self, left: WorkerLeft) -> None:
        worker = self._workers.pop(left.worker, None)
        if worker is None or worker.local:
            return
        if worker.offers:
            self._remote_tasks.subtract(worker.tasks)
        if worker.pull is not None:
            self._answer_pull(worker, UnknownWorker(worker=worker.name))
        undelivered = {job.id for job in worker.outbox}
        delivered = [job for job in worker.held.values() if job.id not in undelivered]
        # Oldest first: what it held was placed before what it had yet to pull.
        self._redeliver(worker, delivered, lost=left.lost, delivered=True, reason=left.reason)
        self._redeliver(worker, worker.outbox, lost=left.lost, delivered=False)

    def _redeliver(self, worker: _Worker, jobs: Iterable[Job], *, lost: bool, delivered: bool,
                   reason: str = "") -> None:
        """Requeue a gone worker's jobs as their next attempt, or fail them."""
        failed: list[Outcome] = []
        for job in jobs:
            worker.held.pop(job.id, None)
            if not delivered:  # never reached the worker: the same attempt again
                self._requeue.append(job)
                continue
            error = self._lost_error(worker, job, lost=lost, reason=reason)
            if error is not None:
                now = time.time()
                failed.append(Outcome(id=job.id, attempt=job.attempt, worker=worker.name,
                                      error=error, started_at=now, finished_at=now))
                continue
            self._requeue.append(
                attrs.evolve(job, attempt=job.attempt + 1, losses=job.losses + int(lost)))
            self._counts["redelivered"] += 1
            self._redelivered[job.id] = None
            if len(self._redelivered) > _REDELIVERED_REMEMBERED:
                self._redelivered.popitem(last=False)
        if failed:
            self._counts["failed_lost"] += len(failed)
            self._to_results.append(Finished(outcomes=tuple(failed)))

    def _lost_error(self, worker: _Worker, job: Job, *, lost: bool,
                    reason: str) -> RemoteError | None:
        how = f"worker {worker.name} was lost ({reason})" if lost else (
            f"worker {worker.name} left ({reason}) before finishing it")
        if job.task in worker.at_most_once:
            return RemoteError(
                type="WorkerLost", kind="error",
                message=f"{how} while running at-most-once task {job.task}; "
                "it may or may not have run, and is not run again",
            )
        if lost and job.losses + 1 >= self.options.poison_after:
            return RemoteError(
                type="PoisonTask", kind="error",
                message=f"task {job.task} was held by {job.losses + 1} workers that were lost "
                f"(the last: {how}); failed as poison (poison_after = "
                f"{self.options.poison_after}) rather than risk more workers",
            )
        return None

    # -- placing jobs ------------------------------------------------------------------

    async def _dispatch(self) -> None:
        """Place what is held, send what the handled messages produced, and
        ask the inbox for as many jobs as there is free credit."""
        placed = self._place()
        if self._held and self._received:
            self._held_log.event(
                "%s: holding %d jobs that no worker with free slots can run until one has "
                "room", self.name, len(self._held))
        self._received = False
        now = time.time()
        for worker, jobs in placed.items():
            worker.assigned_total += len(jobs)
            self._counts["assigned"] += len(jobs)
            self._to_results.append(
                Dispatched(ids=tuple([job.id for job in jobs]), worker=worker.name, at=now))
            if worker.local:
                await self.refs["executor"].send(Assign(jobs=tuple(jobs)))
                continue
            for job in jobs:
                worker.held[job.id] = job
            worker.outbox.extend(jobs)
            if worker.pull is not None:
                self._answer_pull(worker)
        if self._to_results:
            reports, self._to_results = self._to_results, []
            await self.refs["results"].send_batch(reports)
        if self._requeue:
            jobs, self._requeue = self._requeue, []
            await self.refs["results"].send(
                Requeued(ids=tuple(j.id for j in jobs), attempts=tuple(j.attempt for j in jobs)))
            await self.refs["inbox"].send(Requeue(jobs=tuple(jobs)))
        if self._retries:
            jobs, self._retries = self._retries, []
            delays, self._retry_delays = self._retry_delays, []
            self._counts["retried"] += len(jobs)
            await self.refs["inbox"].send(Requeue(jobs=tuple(jobs), delays=tuple(delays)))
        if self._requeue_cancel:
            ids, self._requeue_cancel = self._requeue_cancel, []
            await self.refs["inbox"].send_batch([Cancel(id=id) for id in ids])
        await self._demand()

    def _place(self) -> dict[_Worker, list[Job]]:
        """Give held jobs, in order, each to the eligible worker with the
        most free credit."""
        placed: dict[_Worker, list[Job]] = {}
        heaps: dict[str, list[tuple[int, int, _Worker]]] = {}
        kept: deque[Job] = deque()
        held = self._held
        while held:
            job = held.popleft()
            heap = heaps.get(job.task)
            if heap is None:
                heap = heaps[job.task] = [
                    (-w.credit, index, w) for index, w in enumerate(self._eligible(job.task))
                ]
                heapq.heapify(heap)
            while heap and -heap[0][0] != heap[0][2].credit:
                # Stale: another task's jobs took some of this worker's credit.
                _, index, stale = heap[0]
                if stale.credit > 0:
                    heapq.heapreplace(heap, (-stale.credit, index, stale))
                else:
                    heapq.heappop(heap)
            if not heap:
                kept.append(job)
                continue
            _, index, worker = heap[0]
            worker.credit -= 1
            if worker.credit:
                heapq.heapreplace(heap, (-worker.credit, index, worker))
            else:
                heapq.heappop(heap)
            placed.setdefault(worker, []).append(job)
        self._held = kept
        return placed

    def _eligible(self, task: str) -> list[_Worker]:
        """Live workers with free credit that may run ``task`` now."""
        fallback = self.options.local == "fallback" and self._remote_tasks[task] > 0
        return [
            w for w in self._workers.values()
            if w.credit > 0 and w.health == "alive" and not w.drained and (
                task in w.tasks if not w.local else not fallback and self._local_has(w, task))
        ]

    def _local_has(self, worker: _Worker, task: str) -> bool:
        if task not in worker.tasks:
            worker.tasks = frozenset(self._local_tasks())  # registered since
        return task in worker.tasks

    async def _demand(self) -> None:
        now = trio.current_time()
        if now >= self._local_checked + 1.0:  # tasks registered since, once a second at most
            self._local_checked = now
            for worker in self._workers.values():
                if worker.local:
                    worker.tasks = frozenset(self._local_tasks())
        free = [w for w in self._workers.values()
                if w.credit > 0 and w.health == "alive" and not w.drained]
        wanted = sum(w.credit for w in free) - self._asked
        # Jobs of other tasks stay queued for a worker that has them.
        only = frozenset().union(*(self._runnable(w) for w in free))
        if wanted > 0 or only != self._filter:
            self._filter = only
            wanted = max(wanted, 0)
            self._asked += wanted
            await self.refs["inbox"].send(Demand(n=wanted, only=only))

    def _runnable(self, worker: _Worker) -> frozenset[str]:
        if not worker.local:
            return worker.tasks
        if self.options.local == "always":
            return worker.tasks
        return frozenset(t for t in worker.tasks if self._remote_tasks[t] <= 0)


class _Park:
    """The answer of a Pull that must wait."""


_PARK = _Park()


def _registry_names() -> Collection[str]:
    from fastworker.tasks import registry

    return registry.names()
