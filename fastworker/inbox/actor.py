"""The PriorityInbox actor: where accepted tasks wait for a worker.

It answers ``Requests`` of ``Submit`` and ``Cancel`` from the ingress
edges and an operator's ``PurgeQueued``, tells the ResultStore what it
queued, cancelled, released and expired, and hands ``JobBatch``es to
the Dispatcher as its ``Demand`` allows. This module is the message
table and the flush that sends; it decides nothing itself: the parts
beside it do (``admission``, ``names``, ``levels``, ``held``), and
``docs/inbox.md`` has the rules. The queue
lives in memory; with a ``journal`` ref it is also journaled, and taken
back from the journal at start (``writer`` talks to the journal,
``journaled`` decides what is written and recovered).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from typing import Any, TypeAlias, Union

import attrs
import trio

from actors import Actor, ActorContext, ActorCrashed, CallTimeout, GetStats
from actors.mailbox import Call
from actors.requests import Answers, Requests
from fastworker.inbox.admission import Admission, Answer, RecentIds
from fastworker.inbox.cancels import Cancels
from fastworker.inbox.demand import StandingDemand
from fastworker.inbox.held import Held
from fastworker.inbox.journal import InboxJournal
from fastworker.inbox.levels import Levels
from fastworker.inbox.names import TaskNames
from fastworker.internal import Adopted, KnownTasks, PurgeQueued, Requeue, UnknownTasks
from fastworker.journal.ops import DropTask, PutTask, SetState
from fastworker.messages import (
    Cancel,
    Cancelled,
    CancelReply,
    Demand,
    Expired,
    Finished,
    Job,
    JobBatch,
    Queued,
    Records,
    Released,
    StatusQuery,
    Submit,
)
from fastworker.stats import TOP_FAIR_KEYS, InboxStats

__all__ = [
    "DEFAULT_CAPACITY",
    "DEFAULT_PARKED_MAX",
    "DEFAULT_RECENT_IDS",
    "DEFAULT_STARVATION_LIMIT",
    "InboxOptions",
    "PriorityInbox",
]

log = logging.getLogger("fastworker.inbox")

#: Tasks queued across the four levels before Submits wait or are refused.
DEFAULT_CAPACITY = 100_000
#: Jobs taken from higher levels while a lower level waits before it gets one.
DEFAULT_STARVATION_LIMIT = 32
#: Ids remembered after they left the queue, to recognise a resent Submit.
DEFAULT_RECENT_IDS = 100_000
#: Submits that may wait for room at once; more are refused with QueueFull.
DEFAULT_PARKED_MAX = 10_000

#: Seconds an at-most-once job whose dispatch could not be written waits.
_HOLD_BACK = 1.0

#: The answer to ``UnknownTasks``: (name, why) of each unknown name.
Unknown: TypeAlias = tuple[tuple[str, str], ...]
Accepts: TypeAlias = Union[Requests, Demand, Cancel, KnownTasks, Requeue, Adopted, PurgeQueued,
                          UnknownTasks]


@attrs.frozen(kw_only=True)
class InboxOptions:
    """The inbox's options.

    Attributes:
        capacity: tasks queued across the four levels.
        starvation_limit: jobs taken from higher levels while a lower
            level has jobs waiting before that level gets one.
        scheduled_capacity: tasks held for a later time (``countdown``).
        check_task_names: refuse Submits of task names nobody knows.
        recent_ids: ids remembered after they left the queue, so that a
            resent Submit is recognised (and a Cancel answered) for them.
        parked_max: Submits that may wait for room at once.
        key_check_timeout: seconds to wait for the store to say whether
            the holders of submitted keys have ended (past it, the keys
            stay held and the Submits get the holder's id).
        recovery_grace: with a journal, seconds the tasks it brings back as
            dispatched (handed out when the control plane stopped) wait
            before they run again, so that a subworker which finished one
            meanwhile can report it first (its late result cancels the
            copy); 0: they run again at once, at the front of their level.
    """

    capacity: int = attrs.field(default=DEFAULT_CAPACITY, validator=attrs.validators.ge(1))
    starvation_limit: int = attrs.field(
        default=DEFAULT_STARVATION_LIMIT, validator=attrs.validators.ge(1)
    )
    scheduled_capacity: int = attrs.field(
        default=DEFAULT_CAPACITY, validator=attrs.validators.ge(0))
    check_task_names: bool = True
    recent_ids: int = attrs.field(default=DEFAULT_RECENT_IDS, validator=attrs.validators.ge(0))
    parked_max: int = attrs.field(default=DEFAULT_PARKED_MAX, validator=attrs.validators.ge(0))
    key_check_timeout: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))
    recovery_grace: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))


class PriorityInbox(Actor[Accepts]):
    """Queues tasks by priority and hands them out on demand.

    Args:
        task_names: where known task names come from (asked again when a
            Submit names a task it does not know); by default the task
            registry, ``fastworker.tasks.registry.names``.
    """

    Options = InboxOptions
    refs_required = ("dispatcher", "results")
    refs_optional = ("journal",)

    def __init__(
        self,
        options: InboxOptions,
        context: ActorContext,
        *,
        task_names: Callable[[], Collection[str]] | None = None,
    ) -> None:
        super().__init__(options, context)
        self._names = TaskNames(task_names) if options.check_task_names else None
        self._levels = Levels(options.starvation_limit)
        self._held = Held(self._release_due)
        self._recent = RecentIds(options.recent_ids)
        self._admission = Admission(
            self._levels, self._held, self._recent, self._names,
            capacity=options.capacity, scheduled_capacity=options.scheduled_capacity,
            parked_max=options.parked_max, key_limit=options.recent_ids)
        # The dispatcher's free slots (its last Demand, less what was taken).
        self._demand = StandingDemand()
        self._cancels = Cancels(self._levels, self._held, self._recent)
        # What the next flush sends besides what admission produced (and
        # the cancelled tasks, in ``_cancels``).
        self._released: list[str] = []
        self._expired: list[str] = []
        self._dispatched_total = 0
        self._requeued_total = 0
        self._retried_total = 0
        self._expired_total = 0
        # With a journal: what is written to it, and what is not yet.
        self._journal: InboxJournal | None = None
        if "journal" in context.refs:
            self._journal = InboxJournal(
                context, self._admission, flush=self._flush,
                on_cancelled=self._cancelled_written, hold_back=self._hold_back,
                key_limit=options.recent_ids,
                recovery_grace=options.recovery_grace)
            self._admission.unwritten = self._journal.unwritten

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await super().run(task_status=task_status)
        finally:
            # Whoever waits on a deferred request gets an answer, never a hang.
            self._admission.stop(trio.current_time())
            for answers in self._admission.answered:
                answers.fail(
                    ActorCrashed(f"{self.name} stopped before its store heard of these tasks"))
            if self._journal is not None:
                self._journal.fail_waiting()

    async def setup(self, nursery: trio.Nursery) -> str | None:
        await nursery.start(self._admission.timer.run)
        await nursery.start(self._held.timer.run)
        capacity = self.options.capacity
        if self._journal is not None and (
                await self.refs["journal"].call(GetStats())).detail is None:
            # The journal is off (it keeps nothing): accept without it, as
            # the store does, rather than wait for a write of nothing.
            self._journal = None
            self._admission.unwritten = None
        journal = self._cancels.journal = self._journal
        recovered = "" if journal is None else f"; recovered {await journal.setup(nursery)}"
        if self._names is None:
            return f"capacity {capacity}, task names not checked{recovered}"
        self._names.refresh()
        return f"capacity {capacity}, {len(self._names.known)} task names known{recovered}"

    async def drain(self) -> None:
        if self._journal is not None:
            await self._journal.drain()

    async def handle(self, message: Accepts) -> None:
        await self.handle_calls([Call(message, self.defer())])

    async def handle_calls(self, calls: list[Call[Accepts]]) -> None:
        """Calls (requests of one frame or of several at once: many clients
        sending one task each) decided in order, then one flush for them
        all, so each frame costs its decisions, not a flush of its own. A
        call's answers go once known: after the flush, or for a request
        that waits (a Submit waiting for room) by a later flush or timer."""
        answers: list[tuple[Call[Accepts], Any, bool]] = []
        for call in calls:
            message = call.message
            if isinstance(message, Requests):
                await self._settle_keys(message)
            answer = self._on_message(message)
            deferred = isinstance(answer, Answers) and answer.missing > 0
            if deferred:
                assert isinstance(answer, Answers)
                answer.reply = call.reply  # set by a flush or a timer once all are known
            answers.append((call, answer, deferred))
        await self._flush()
        for call, answer, deferred in answers:
            if not deferred:
                call.reply.set(answer.values if isinstance(answer, Answers) else answer)

    async def handle_batch(self, messages: list[Accepts]) -> None:
        for message in messages:
            if isinstance(message, Requests):
                await self._settle_keys(message)
            self._on_message(message)  # sent, not called: nobody reads the answers
        await self._flush()

    def _on_message(self, message: Accepts) -> Answers | CancelReply | int | Unknown | None:
        match message:
            case Requests():
                return self._on_requests(message)
            case Cancel(id=task_id):
                return self._cancels.cancel(task_id)
            case PurgeQueued():
                return self._cancels.purge(message)
            case Demand(pools=pools, received=received):
                self._demand.replace(pools, received)
            case Requeue(jobs=jobs, delays=()):
                self._requeue(jobs)
            case Requeue(jobs=jobs, delays=delays):
                self._hold_retries(jobs, delays)
            case Adopted():
                if self._journal is not None:
                    self._journal.adopt(message)
            case KnownTasks(names=names, at_most_once=once):
                if self._names is not None:
                    self._names.advertise(names)
                if self._journal is not None:
                    self._journal.advertise_once(once)
            case UnknownTasks(names=names):
                known = self._names
                if known is None:
                    return ()
                known.ask_again()
                return tuple((name, known.unknown(name)) for name in names
                             if not known.knows(name))
            case _:
                # A wiring mistake; crashing would lose the whole queue.
                kind = type(message).__name__
                log.warning("%s: ignored %s (not an inbox message)", self.name, kind)
        return None

    def stats_detail(self) -> InboxStats:
        admission = self._admission
        return InboxStats(
            queued=self._levels.counts,
            capacity=self.options.capacity,
            parked=len(admission.parked),
            demand=self._demand.budget.total,
            accepted_total=admission.accepted_total,
            duplicates_total=admission.duplicates_total,
            rejected_total=dict(admission.rejected_total),
            dispatched_total=self._dispatched_total,
            cancelled_total=self._cancels.total,
            requeued_total=self._requeued_total,
            scheduled=len(self._held),
            expired_total=self._expired_total,
            retried_total=self._retried_total,
            unique_hits_total=admission.keys.hits_total,
            keys=len(admission.keys),
            fair_keys=self._levels.fair_keys,
            top_fair_keys=self._levels.top_fair_keys(TOP_FAIR_KEYS),
        )

    def _on_requests(self, message: Requests) -> Answers:
        admission = self._admission
        answers = Answers(len(message.messages))
        if self._names is not None:
            self._names.ask_again()  # the name source is asked at most once per request
        for index, item in enumerate(message.messages):
            answer: Answer | None
            if isinstance(item, Submit):
                answer = admission.decide(item, answers, index)
            elif isinstance(item, Cancel):
                answer = self._cancels.cancel(item.id)
            else:
                answer = admission.reject(
                    str(getattr(item, "id", "")), "InvalidSubmission",
                    f"the inbox takes Submit and Cancel, not {type(item).__name__}")
            answers.values[index] = answer
            if answer is None:
                answers.later()
        return answers

    async def _settle_keys(self, message: Requests) -> None:
        """Free the keys of the request's Submits whose holder has ended
        (the store knows); see ``fastworker.unique``."""
        levels, held, parked = self._levels, self._held, self._admission.parked_holders
        unwritten = {} if self._journal is None else self._journal.unwritten.by_id
        asked = self._admission.keys.pending(
            (m for m in message.messages if isinstance(m, Submit)),
            lambda task_id: (task_id in levels.jobs or task_id in held or task_id in unwritten
                             or task_id in parked),
        )
        if not asked:
            return
        timeout = self.options.key_check_timeout
        try:
            answer = await self.refs["results"].call(StatusQuery(ids=tuple(asked)),
                                                     timeout=timeout)
        except CallTimeout:
            # Keep the keys: a task that may still run is not started twice.
            log.warning("%s: the store did not say in %g s whether %d keyed tasks ended; "
                        "their keys stay held", self.name, timeout, len(asked))
            return
        if isinstance(answer, Records):
            self._admission.keys.settle(asked, answer.records)

    def _requeue(self, jobs: tuple[Job, ...]) -> None:
        journal = self._journal
        for job in reversed(jobs):
            if self._levels.push_front(job):
                self._recent.remember(job.id, "queued")
                self._requeued_total += 1
                if journal is not None:
                    journal.ops.append(PutTask(job, "queued", key=journal.key(job.id)))

    def _hold_retries(self, jobs: tuple[Job, ...], delays: tuple[float, ...]) -> None:
        now, wall = trio.current_time(), time.time()
        for job, delay in zip(jobs, delays, strict=False):
            if job.id in self._levels.jobs or job.id in self._held:
                continue
            self._held.hold(job, now + max(delay, 0.0))
            if job.expires_at is not None:
                self._held.expire(job.id, now + job.expires_at - wall)
            self._recent.remember(job.id, "scheduled")
            self._retried_total += 1
            if self._journal is not None:
                self._journal.ops.append(PutTask(job, "scheduled", wall + max(delay, 0.0),
                                                 self._journal.key(job.id)))

    async def _release_due(self, now: float) -> None:
        """Queue held jobs whose time came, at the back of their levels, and
        drop tasks past their deadline (the held timer's call)."""
        released, expired = self._held.due(now)
        journal = self._journal
        for job in released:
            self._levels.append(job)
            self._recent.remember(job.id, "queued")
            self._released.append(job.id)
        if released and journal is not None:
            journal.ops.append(SetState(tuple([job.id for job in released]), "queued"))
        for task_id in expired:
            if self._cancels.drop(task_id):
                self._recent.remember(task_id, "expired")
                self._expired.append(task_id)
                self._expired_total += 1
                if journal is not None:
                    journal.ops.append(DropTask(task_id))
        if journal is not None:
            await journal.grace_over(now)
        if self._released or self._expired:
            await self._flush()

    async def _flush(self) -> None:
        """Take jobs for the standing demand, then send what the handled
        messages produced: Queued and Cancelled to the store first (so an
        accepted task is known there before the client hears of it), then
        one JobBatch, then the answers of completed deferred requests."""
        admission = self._admission
        admission.admit()
        jobs = self._levels.take(self._demand.budget, self._taken)
        self._dispatched_total += len(jobs)
        entries, admission.entries = admission.entries, []
        cancelled, self._cancels.ids = self._cancels.ids, []
        if entries:
            await self.refs["results"].send(Queued(entries=tuple(entries)))
        if cancelled:
            await self.refs["results"].send(Cancelled(ids=tuple(cancelled)))
        if self._released or self._expired:
            released, self._released = self._released, []
            expired, self._expired = self._expired, []
            await self.refs["results"].send_batch(
                [Released(ids=tuple(released)), Expired(ids=tuple(expired))])
        if self._journal is not None and self._journal.lost:
            lost, self._journal.lost = self._journal.lost, []
            await self.refs["results"].send(Finished(outcomes=tuple(lost)))
        if self._journal is not None:
            jobs = await self._journal.send(jobs)
        if jobs:
            await self.refs["dispatcher"].send(JobBatch(jobs=tuple(jobs)))
        answered, admission.answered = admission.answered, []
        for answers in answered:
            answers.send()

    def _taken(self, job: Job) -> None:
        """A job leaves for the dispatcher: from here the executor checks its
        deadline, and its room goes to a waiting Submit."""
        self._demand.taken(job)
        if job.expires_at is not None:
            self._held.forget_deadline(job.id)
        self._recent.remember(job.id, "dispatched")
        self._admission.admit()

    async def _hold_back(self, jobs: list[Job]) -> None:
        """At-most-once jobs whose dispatch could not be written: they never
        left, so the dispatcher's demand for them stands; held a second
        before they are tried again (the journal may be failing)."""
        now, wall = trio.current_time(), time.time()
        self._dispatched_total -= len(jobs)
        self._demand.held_back(jobs)
        for job in jobs:
            self._held.hold(job, now + _HOLD_BACK)
            if job.expires_at is not None:
                self._held.expire(job.id, now + job.expires_at - wall)
            self._recent.remember(job.id, "scheduled")
        await self._flush()

    def _cancelled_written(self, task_id: str) -> None:
        """A task cancelled while it was written is placed: the next flush
        tells the store (after its Queued)."""
        self._cancels.ids.append(task_id)
