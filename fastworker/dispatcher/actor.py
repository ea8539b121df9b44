"""The Dispatcher actor: its options, its message table, and each dispatch.

Every message only changes state (``placement.py``, ``remote.py``) and
queues what is to be sent (``Outgoing``); once per handled batch or call,
``_dispatch`` places the held jobs, sends what was queued, and asks the
inbox for as many jobs as there is free credit. The whole story is in
docs/dispatcher.md.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter, deque
from typing import Any, Literal, TypeAlias, Union

import attrs
import trio

from actors import Actor, ActorContext, ActorCrashed, CallTimeout
from actors.frame import DEFAULT_MAX_FRAME_BYTES
from actors.log import RateLimitedLog
from actors.requests import Answers, Requests
from fastworker.dispatcher.outgoing import Outgoing
from fastworker.dispatcher.placement import Placement, assign_budget, job_limit
from fastworker.dispatcher.remote import Subworkers
from fastworker.internal import (
    Dispatched,
    DrainWorker,
    RecoveredDispatched,
    Requeue,
    Requeued,
    ResultsKept,
    WorkerHealth,
    WorkerJoined,
    WorkerLeft,
)
from fastworker.limits import MAX_ID_LENGTH
from fastworker.messages import (
    Assign,
    Cancel,
    Cancelled,
    CancelReply,
    Credit,
    Demand,
    Job,
    JobBatch,
    Retry,
    Returned,
    Stop,
)
from fastworker.stats import DispatcherStats, WorkerLoad

__all__ = ["Dispatcher", "DispatcherOptions", "RecoveredDispatched"]

log = logging.getLogger("fastworker.dispatcher")

#: Seconds a subworker has to acknowledge an Assign's jobs. Its next Pull,
#: sent as soon as the jobs are with its executor, usually does so within
#: milliseconds; an answer lost on the way is asked for again after the
#: link's ``pull_wait + request_timeout`` (15 s), by when its jobs run
#: elsewhere.
DEFAULT_ACK_TIMEOUT = 5.0





@attrs.frozen
class _TakeBack:
    """Dispatcher -> itself (from its ack timer): a subworker's Assign went
    unacknowledged past ``ack_timeout``; the dispatch takes its jobs back."""


Accepts: TypeAlias = Union[
    Credit, JobBatch, WorkerJoined, WorkerHealth, WorkerLeft, Requests, DrainWorker, Retry,
    Returned, Stop, RecoveredDispatched, _TakeBack]


@attrs.frozen(kw_only=True)
class DispatcherOptions:
    """Where jobs may go.

    Attributes:
        local: ``fallback``: the control plane's own executor takes a job
            when no subworker that can run it has a free slot (subworkers
            first); ``always``: it is one more worker (most free credit
            first); ``never``: it runs only tasks no live subworker can run.
        poison_after: a job held by this many workers that were lost is
            failed as poison instead of being redelivered again.
        pull_wait_max: the longest a subworker's Pull is held, in seconds.
        stop_timeout: seconds to wait for the local executor to stop a
            running task (``Stop``) before answering ``requested``.
        max_frame_bytes: the frame limit of the edge subworkers pull from:
            an answer to a Pull carries no more jobs than fit in one frame.
        ack_timeout: seconds a subworker has to acknowledge the jobs of an
            Assign (by its next Pull, or a Report) before they are taken
            back and queued again, though it stays healthy.
    """

    local: Literal["fallback", "always", "never"] = "fallback"
    poison_after: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    pull_wait_max: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    stop_timeout: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))
    max_frame_bytes: int = attrs.field(default=DEFAULT_MAX_FRAME_BYTES,
                                       validator=attrs.validators.ge(4096))
    ack_timeout: float = attrs.field(default=DEFAULT_ACK_TIMEOUT,
                                     validator=attrs.validators.gt(0))

    @property
    def max_assign_bytes(self) -> int:
        """About the most bytes of jobs one Assign carries (room left for the rest)."""
        return assign_budget(self.max_frame_bytes)

    @property
    def max_job_bytes(self) -> int:
        """The most bytes one job may take (it goes alone in a frame)."""
        return job_limit(self.max_frame_bytes)


class Dispatcher(Actor[Accepts]):
    """Places jobs on workers as far as their credit allows (docs/dispatcher.md).
    The local executor says which tasks it runs in its ``Credit``."""

    Options = DispatcherOptions
    refs_required = ("inbox", "results")
    refs_optional = ("executor",)

    def __init__(
        self,
        options: DispatcherOptions,
        context: ActorContext,
    ) -> None:
        super().__init__(options, context)
        self._placement = Placement(local=options.local)
        self._out = Outgoing()
        self._counts = Counter[str]()
        self._remote = Subworkers(self.name, self._placement, self._out, self._counts,
                                  poison_after=options.poison_after,
                                  pull_wait_max=options.pull_wait_max,
                                  ack_timeout=options.ack_timeout,
                                  on_overdue=self._ack_overdue,
                                  max_assign_bytes=options.max_assign_bytes,
                                  max_job_bytes=options.max_job_bytes)
        self._held: deque[Job] = deque()  # received, waiting for a worker with credit
        self._received_total = 0  # jobs received from the inbox, ever
        self._demanded: dict[frozenset[str], int] = {}  # the pools of the last Demand
        self._demanded_at = 0  # and the jobs received when it was sent (none,
        # nothing free: what the inbox assumes before the first Demand)
        self._received = False
        # Normal when the fleet changes (a subworker joins while jobs asked
        # for the local executor are on their way): INFO, not WARNING.
        self._held_log = RateLimitedLog(log, what="such batches", period=60.0,
                                        level=logging.INFO)
        self._kept_off_log = RateLimitedLog(log, what="such batches", period=60.0,
                                            level=logging.INFO)
        self._nursery: trio.Nursery | None = None

    async def setup(self, nursery: trio.Nursery) -> str | None:
        self._nursery = nursery
        await nursery.start(self._remote.pulls.timer.run)
        await nursery.start(self._remote.pulls.ack_timer.run)
        local = "no local executor" if "executor" not in self.refs else (
            f"local executor: {self.options.local}")
        return f"{local}, poison after {self.options.poison_after} lost workers"

    async def _ack_overdue(self) -> None:
        """Unacknowledged Assigns past their bound: a message to itself has
        the next dispatch take them back (with no ref to itself, the next
        message it handles does)."""
        ref = self.context.peers.get(self.name)
        if ref is not None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await ref.send(_TakeBack())

    async def handle(self, message: Accepts) -> Any:
        answer = await self._handle_one(message, call=True)
        await self._dispatch()
        if self._remote.unkept_acks:
            acks, self._remote.unkept_acks = self._remote.unkept_acks, []
            assert self._nursery is not None
            self._nursery.start_soon(self._ack_once_kept, acks)
        if not isinstance(answer, Answers):
            return answer
        if answer.missing:  # a Pull waits, or an Ack waits for the store
            answer.reply = self.defer()
            return None
        return answer.values

    async def _ack_once_kept(self, acks: list[tuple[Answers, int, Any]]) -> None:
        """Answer Reports of results once the store keeps them (the results
        were sent to it by the dispatch before this)."""
        try:
            await self.refs["results"].call(ResultsKept())
        except (ActorCrashed, trio.BrokenResourceError, trio.ClosedResourceError):
            return  # the control plane stops: the subworker sends them again
        for answers, index, value in acks:
            if answers.fill(index, value):
                answers.send()

    async def handle_batch(self, messages: list[Accepts]) -> None:
        for message in messages:
            await self._handle_one(message, call=False)
        await self._dispatch()

    async def _handle_one(self, message: Accepts, *, call: bool) -> Any:
        """The message table: what ``message`` changes, and its answer if it
        is a ``call`` (what is to be sent waits for ``_dispatch``)."""
        match message:
            case Credit(worker=name, slots=slots, tasks=tasks, prefetch=prefetch):
                self._placement.add_local_credit(name, slots, tasks, prefetch)
            case JobBatch(jobs=jobs):
                self._counts["batches"] += 1
                self._held.extend(self._remote.admit(jobs))
                self._received_total += len(jobs)
                self._received = True
            case Returned(jobs=jobs):  # from the local executor
                self._remote.returned_locally(_local_name(self._placement), jobs)
            case WorkerJoined():
                self._remote.join(message)
            case WorkerHealth(worker=name, health=health):
                worker = self._placement.workers.get(name)
                if worker is not None and worker.health != "draining":
                    self._placement.update(worker, health=health)
            case WorkerLeft():
                self._remote.leave(message)
            case RecoveredDispatched(ids=ids):
                self._remote.recovered(ids)
            case _TakeBack():
                pass  # _dispatch takes back what is overdue
            case Retry(jobs=jobs, delays=delays):
                self._out.retries.extend(jobs)
                self._out.retry_delays.extend(delays)
            case Requests() if call:
                return await self._on_requests(message)
            case Stop(id=task_id) if call:
                return await self._stop(task_id)
            case DrainWorker() if call:
                drained = self._remote.drain_by_operator(message)
                local = self._placement.workers.get(message.worker)
                if drained and local is not None and local.local and local.drained:
                    # What it holds and has not started comes back (Returned).
                    await self.refs["executor"].send(Assign(jobs=(), give_back=True))
                return drained
            case _:
                # A wiring mistake; crashing would lose the jobs held.
                kind = type(message).__name__
                log.warning("%s: ignored %s (not a dispatcher message)", self.name, kind)
        return None

    def stats_detail(self) -> DispatcherStats:
        counts = self._counts
        return DispatcherStats(
            workers=tuple(
                WorkerLoad(worker=w.name, local=w.local, health=w.health, credit=w.useful_credit,
                           held=len(w.held), assigned_total=w.assigned_total, drained=w.drained,
                           running=len(w.started),
                           credit_by_kind=(w.credit[0], w.credit[1], w.credit[2]),
                           prefetch=(w.prefetch[0], w.prefetch[1], w.prefetch[2]))
                for w in self._placement.workers.values()
            ),
            held=len(self._held),
            asked=sum(self._demanded.values()),
            assigned_total=counts["assigned"],
            batches_total=counts["batches"],
            redelivered_total=counts["redelivered"],
            failed_lost_total=counts["failed_lost"],
            late_results_total=counts["late"],
            retried_total=counts["retried"],
            resent_results_total=counts["resent_results"],
            stale_pulls_total=counts["stale_pulls"],
            taken_back_total=counts["taken_back"],
            too_large_total=counts["too_large"],
        )

    async def _on_requests(self, request: Requests) -> Answers:
        """The messages of one request frame, from the workers edge (Pull,
        Report, Drain) or the queries edge (Stop), answered in order; a Pull
        that is the frame's last message may wait for jobs."""
        messages = request.messages
        answers = Answers(len(messages))
        last = len(messages) - 1
        for index, item in enumerate(messages):
            if isinstance(item, Stop):
                answers.values[index] = await self._stop(item.id)
            else:
                self._remote.answer(item, answers, index, may_wait=index == last)
        return answers

    async def _stop(self, task_id: str) -> CancelReply:
        """Stop a task that left the inbox: one not yet handed to a worker
        is cancelled here; a subworker is told with its next Assign; the
        local executor is asked (it never waits on the Dispatcher, so the
        call cannot deadlock)."""
        if len(task_id) > MAX_ID_LENGTH:  # a Submit with such an id is refused
            return CancelReply(id=task_id, outcome="unknown")
        for job in self._held:
            if job.id == task_id:
                self._held.remove(job)
                self._out.results.append(Cancelled(ids=(task_id,)))
                return CancelReply(id=task_id, outcome="cancelled")
        held_remotely = self._remote.stop(task_id)
        if held_remotely is not None:
            return held_remotely
        if "executor" not in self.refs:
            return CancelReply(id=task_id, outcome="not_queued")
        try:
            reply: CancelReply = await self.refs["executor"].call(
                Stop(id=task_id), timeout=self.options.stop_timeout)
        except CallTimeout:
            return CancelReply(id=task_id, outcome="requested")  # it will be, when it is read
        return reply

    # -- each dispatch --------------------------------------------------------------

    async def _dispatch(self) -> None:
        """Take back the jobs of overdue Assigns, place what is held, send
        what the handled messages produced, and ask the inbox for as many
        jobs as there is free credit."""
        if self._remote.pulls.overdue:
            self._remote.take_back()
        placed, self._held = self._placement.place(self._held)
        if self._held and self._received:
            idle = self._placement.free_slots()
            if idle:
                self._kept_off_log.event(
                    "%s: holding %d jobs while %d free slots may not run them (slots of "
                    "another kind, workers without their tasks, or the local executor with "
                    "local = \"never\")",
                    self.name, len(self._held), idle)
            else:
                self._held_log.event(
                    "%s: holding %d jobs that no worker with free slots can run until one "
                    "has room", self.name, len(self._held))
        self._received = False
        out = self._out
        now = time.time()
        for worker, jobs in placed.items():
            worker.assigned_total += len(jobs)
            self._counts["assigned"] += len(jobs)
            out.results.append(
                Dispatched(ids=tuple([job.id for job in jobs]), worker=worker.name, at=now))
            if worker.local:
                await self.refs["executor"].send(Assign(jobs=tuple(jobs)))
            else:
                self._remote.hand(worker, jobs)
        await self._send_outgoing()
        await self._demand()

    async def _send_outgoing(self) -> None:
        out = self._out
        if out.results:
            reports, out.results = out.results, []
            await self.refs["results"].send_batch(reports)
        if out.requeue:
            jobs, out.requeue = out.requeue, []
            await self.refs["results"].send(
                Requeued(ids=tuple(j.id for j in jobs), attempts=tuple(j.attempt for j in jobs)))
            await self.refs["inbox"].send(Requeue(jobs=tuple(jobs)))
        if out.retries:
            jobs, out.retries = out.retries, []
            delays, out.retry_delays = out.retry_delays, []
            self._counts["retried"] += len(jobs)
            await self.refs["inbox"].send(Requeue(jobs=tuple(jobs), delays=tuple(delays)))
        if out.adopted:
            adopted, out.adopted = out.adopted, []
            await self.refs["inbox"].send_batch(adopted)
        if out.cancel_queued:
            ids, out.cancel_queued = out.cancel_queued, []
            stale = set(ids)
            if any(job.id in stale for job in self._held):  # a copy here already
                self._held = deque(job for job in self._held if job.id not in stale)
            await self.refs["inbox"].send_batch([Cancel(id=id) for id in ids])

    async def _demand(self) -> None:
        """Tell the inbox the free credit, as pools of the tasks each can
        run, when it changed. The inbox takes off what it sent that had not
        arrived when this was written (``received``)."""
        pools = self._placement.pools()
        if pools != self._demanded or self._received_total != self._demanded_at:
            self._demanded = pools
            self._demanded_at = self._received_total
            await self.refs["inbox"].send(Demand(
                pools=tuple((free, tasks) for tasks, free in pools.items()),
                received=self._received_total))


def _local_name(placement: Placement) -> str:
    """The local executor's name ("" before its first Credit)."""
    return next((w.name for w in placement.workers.values() if w.local), "")
