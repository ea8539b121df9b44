"""The PriorityInbox: where accepted tasks wait for a worker.

It takes ``Requests`` of ``Submit`` and ``Cancel`` from the ingress edges
(with ``Ref.call``), answers each message with ``Accepted`` / ``Rejected``
or ``CancelReply``, tells the ResultStore what it queued (``Queued``, one
per request) and cancelled (``Cancelled``), and hands ``JobBatch``es to the
Dispatcher as far as the Dispatcher's ``Demand`` allows.

A Submit is decided in this order:

1. an id that is queued or was seen recently is ``Accepted`` again and not
   queued twice (clients resend);
2. a priority outside 0..3 or a negative ``queue_wait`` is
   ``InvalidSubmission``;
3. a task name that no source knows is ``UnknownTask``, naming the closest
   known name;
4. while ``capacity`` tasks are queued, a Submit with ``queue_wait`` > 0
   waits, first come first admitted, until room frees (``Accepted``) or its
   wait ends (``QueueFull``); with ``queue_wait`` 0 it is ``QueueFull`` at
   once. A request holding a waiting Submit is answered later
   (``Actor.defer``), so the inbox keeps handling messages meanwhile.

Dispatch is credit-based. ``Demand(n)`` adds n to a standing demand; while
demand and jobs remain, jobs leave in priority order, at most one
``JobBatch`` per handled batch of messages. The latest Demand also says
which tasks its workers can run (``only`` these):
jobs of other tasks stay queued, in order, for a worker that can run them.
``Requeue`` puts jobs back at the front of their levels (their worker was
lost before it finished them); they are never refused for lack of room. Priority is strict, with a
starvation guard: each level counts the jobs taken from higher levels while
it had jobs waiting, and once a level's count reaches ``starvation_limit``
the next job comes from the highest such level, whose count restarts. With
critical and low jobs waiting and a limit of 32, that is 32 critical jobs,
1 low, 32 critical, and so on; when several lower levels wait, each of them
gets one job per 32 from the top level, highest first.

A Submit with a ``delay`` (the client's ``countdown`` or ``eta``) is
scheduled instead of queued: held, up to ``scheduled_capacity`` of them,
until its time on trio's clock, then queued at the back of its level
(``Released`` tells the store). One with ``expires_in`` gets a deadline:
still queued or scheduled then, it is dropped and ``Expired`` (a job
already handed out is checked again by the executor before it starts).
Both can be cancelled like any queued task. A ``Requeue`` with ``delays``
holds failed attempts for their retry the same way.

A Submit with a ``key`` whose holder (the task first submitted with it) is
still queued, scheduled or running is answered with the holder's id and
not queued (``fastworker.unique``).

Everything is bounded: ``capacity`` queued tasks, ``scheduled_capacity``
scheduled ones, ``parked_max`` waiting Submits, ``recent_ids`` remembered
ids. The queue lives in memory: a restarted inbox starts empty.
"""

from __future__ import annotations

import difflib
import heapq
import logging
import math
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Collection
from typing import Any, Literal, TypeAlias, Union

import attrs
import trio

from actors import Actor, ActorContext, ActorCrashed, CallTimeout, Reply
from actors.requests import Requests
from fastworker.due import DueHeap
from fastworker.messages import (
    PRIORITIES,
    Accepted,
    Cancel,
    Cancelled,
    CancelReply,
    Demand,
    Expired,
    Job,
    JobBatch,
    Queued,
    QueuedEntry,
    Records,
    Released,
    Rejected,
    StatusQuery,
    Submit,
)
from fastworker.unique import UniqueKeys
from fastworker.internal import KnownTasks, Requeue
from fastworker.stats import InboxStats

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

LEVELS = len(PRIORITIES)
#: Known task names shown in an UnknownTask message.
_NAMES_SHOWN = 10
#: Cancelled jobs a level may hold before its queue is rebuilt without them.
_STALE_MIN = 64


Accepts: TypeAlias = Union[Requests, Demand, Cancel, KnownTasks, Requeue]


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


_State = Literal["scheduled", "queued", "dispatched", "cancelled", "expired"]
_Answer = Union[Accepted, Rejected, CancelReply]


@attrs.define(eq=False)
class _Request:
    """A Requests being answered: its answers so far, how many are still
    missing, and its reply slot once the answer was deferred."""

    answers: list[_Answer | None]
    remaining: int = 0
    reply: Reply | None = None


@attrs.define(eq=False)
class _Parked:
    """A Submit waiting for room, and where its answer goes."""

    submit: Submit
    request: _Request
    index: int
    since: float
    deadline: float
    done: bool = False


class PriorityInbox(Actor[Accepts]):
    """Queues tasks by priority and hands them out on demand (see the module
    docstring).

    Args:
        task_names: where known task names come from (called again when a
            Submit names a task it does not know); by default the task
            registry, ``fastworker.tasks.registry.names``.
    """

    Options = InboxOptions
    refs_required = ("dispatcher", "results")

    def __init__(
        self,
        options: InboxOptions,
        context: ActorContext,
        *,
        task_names: Callable[[], Collection[str]] | None = None,
    ) -> None:
        super().__init__(options, context)
        self._task_names = task_names
        self._levels: list[deque[Job]] = [deque() for _ in range(LEVELS)]
        self._counts = [0] * LEVELS  # live jobs per level
        self._by_task: list[Counter[str]] = [Counter() for _ in range(LEVELS)]  # live, per task
        self._stale = [0] * LEVELS  # cancelled jobs still in a level's deque
        self._skipped = [0] * LEVELS  # jobs taken from above while this level waited
        self._queued: dict[str, Job] = {}
        self._recent: OrderedDict[str, _State] = OrderedDict()
        self._parked: OrderedDict[int, _Parked] = OrderedDict()  # first come first
        self._deadlines: list[tuple[float, int, _Parked]] = []  # a heap
        self._parked_seq = 0
        self._timer: trio.CancelScope | None = None
        self._demand = 0
        # What the workers with free slots can run: only these, or all but these.
        self._only: frozenset[str] | None = None
        self._known: frozenset[str] = frozenset()
        self._advertised: set[str] = set()
        self._known_fresh = False
        # What the next flush sends, and the deferred requests it answers.
        self._entries: list[QueuedEntry] = []
        self._cancelled: list[str] = []
        self._released: list[str] = []
        self._expired: list[str] = []
        self._answered: list[_Request] = []
        # Held for later (countdown / eta), and deadlines (expires): trio's clock.
        self._scheduled: DueHeap[Job] = DueHeap()
        self._expiring: DueHeap[str] = DueHeap()
        self._due_timer: trio.CancelScope | None = None
        self._expired_total = 0
        self._accepted_total = 0
        self._duplicates_total = 0
        self._rejected_total: dict[str, int] = {}
        self._dispatched_total = 0
        self._cancelled_total = 0
        self._requeued_total = 0
        self._retried_total = 0
        self._keys = UniqueKeys(limit=options.recent_ids)

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await super().run(task_status=task_status)
        finally:
            # Whoever waits on a deferred request gets an answer, never a hang.
            now = trio.current_time()
            for parked in list(self._parked.values()):
                message = f"the inbox stopped after {_seconds(now - parked.since)} s of waiting"
                self._finish_parked(parked, self._queue_full(parked.submit, message), at_once=True)
            for request in self._answered:
                if request.reply is not None:
                    request.reply.fail(
                        ActorCrashed(f"{self.name} stopped before its store heard of these tasks")
                    )

    async def setup(self, nursery: trio.Nursery) -> str | None:
        capacity = self.options.capacity
        nursery.start_soon(self._expire_parked)
        nursery.start_soon(self._release_due)
        if not self.options.check_task_names:
            return f"capacity {capacity}, task names not checked"
        if self._task_names is None:
            self._task_names = _registry_names()
        self._refresh_names()
        return f"capacity {capacity}, {len(self._known)} task names known"

    async def handle(self, message: Accepts) -> Any:
        match message:
            case Requests():
                await self._settle_keys(message)
                request = self._on_requests(message)
                if request.remaining:
                    request.reply = self.defer()
                await self._flush()
                return request.answers
            case Cancel(id=task_id):
                answer = self._cancel(task_id)
                await self._flush()
                return answer
            case _:
                await self.handle_batch([message])
                return None

    async def handle_batch(self, messages: list[Accepts]) -> None:
        for message in messages:
            if isinstance(message, Requests):
                await self._settle_keys(message)
            match message:
                case Demand(n=n, only=only):
                    self._demand += max(n, 0)
                    self._only = only
                case Requeue(jobs=jobs, delays=()):
                    self._requeue(jobs)
                case Requeue(jobs=jobs, delays=delays):
                    self._hold_retries(jobs, delays)
                case KnownTasks(names=names):
                    self._advertised.update(names)
                case Requests():
                    self._on_requests(message)  # sent, not called: nobody reads the answers
                case Cancel(id=task_id):
                    self._cancel(task_id)
                case _:
                    # A wiring mistake; crashing would lose the whole queue.
                    kind = type(message).__name__
                    log.warning("%s: ignored %s (not an inbox message)", self.name, kind)
        await self._flush()

    def stats_detail(self) -> InboxStats:
        counts = self._counts
        return InboxStats(
            queued=(counts[0], counts[1], counts[2], counts[3]),
            capacity=self.options.capacity,
            parked=len(self._parked),
            demand=self._demand,
            accepted_total=self._accepted_total,
            duplicates_total=self._duplicates_total,
            rejected_total=dict(self._rejected_total),
            dispatched_total=self._dispatched_total,
            cancelled_total=self._cancelled_total,
            requeued_total=self._requeued_total,
            scheduled=len(self._scheduled),
            expired_total=self._expired_total,
            retried_total=self._retried_total,
            unique_hits_total=self._keys.hits_total,
            keys=len(self._keys),
        )

    # -- submissions -------------------------------------------------------------

    def _on_requests(self, message: Requests) -> _Request:
        request = _Request(answers=[None] * len(message.messages))
        self._known_fresh = False  # the name source is asked at most once per request
        for index, item in enumerate(message.messages):
            answer: _Answer | None
            match item:
                case Submit():
                    answer = self._on_submit(item, request, index)
                case Cancel(id=task_id):
                    answer = self._cancel(task_id)
                case _:
                    answer = self._reject(
                        str(getattr(item, "id", "")),
                        "InvalidSubmission",
                        f"the inbox takes Submit and Cancel, not {type(item).__name__}",
                    )
            request.answers[index] = answer
            if answer is None:
                request.remaining += 1
        return request

    def _on_submit(self, submit: Submit, request: _Request, index: int) -> _Answer | None:
        """The answer to one Submit, or ``None`` once it is parked."""
        if submit.id in self._queued or submit.id in self._recent:
            self._duplicates_total += 1
            return Accepted(id=submit.id)
        problem = self._check(submit)
        if problem is not None:
            return self._reject(submit.id, *problem)
        if not submit.key:
            return self._decide(submit, request, index)
        holder = self._keys.holder(submit.key)
        if holder is not None:
            return Accepted(id=holder)  # the task already holding the key
        self._keys.claim(submit.key, submit.id)
        answer = self._decide(submit, request, index)
        if isinstance(answer, Rejected):
            self._keys.release(submit.key, submit.id)
        return answer

    def _decide(self, submit: Submit, request: _Request, index: int) -> _Answer | None:
        """Schedule, queue or park a valid Submit, or refuse it for room."""
        if submit.delay > 0:
            return self._schedule(submit)
        self._admit()  # room freed by a Cancel goes to those waiting first
        if len(self._queued) < self.options.capacity:
            return self._enqueue(submit)
        if submit.queue_wait > 0 and len(self._parked) < self.options.parked_max:
            self._park(submit, request, index)
            return None
        if submit.queue_wait > 0:
            return self._queue_full(
                submit, f"{self.options.parked_max} submissions already wait for room"
            )
        return self._queue_full(submit, "pass queue_wait to wait for room")

    async def _settle_keys(self, message: Requests) -> None:
        """Free the keys of the request's Submits whose holder has ended
        (the store knows); see ``fastworker.unique``."""
        asked = self._keys.pending(
            (m for m in message.messages if isinstance(m, Submit)),
            lambda task_id: task_id in self._queued or task_id in self._scheduled,
        )
        if not asked:
            return
        try:
            answer = await self.refs["results"].call(
                StatusQuery(ids=tuple(asked)), timeout=self.options.key_check_timeout)
        except CallTimeout:
            # Keep the keys: a task that may still run is not started twice.
            log.warning("%s: the store did not say in %g s whether %d keyed tasks ended; "
                        "their keys stay held", self.name, self.options.key_check_timeout,
                        len(asked))
            return
        if isinstance(answer, Records):
            self._keys.settle(asked, answer.records)

    def _check(self, submit: Submit) -> tuple[str, str] | None:
        if not 0 <= submit.priority < LEVELS:
            return (
                "InvalidSubmission",
                f"priority {submit.priority!r} is out of range; expected 0 (critical) to 3 (low)",
            )
        if not (submit.queue_wait >= 0 and math.isfinite(submit.queue_wait)):
            return (
                "InvalidSubmission",
                f"queue_wait {submit.queue_wait!r} is not a number of seconds >= 0",
            )
        if not (submit.delay >= 0 and math.isfinite(submit.delay)):
            return "InvalidSubmission", f"delay {submit.delay!r} is not a number of seconds >= 0"
        retries = submit.retries
        if retries is not None and not (isinstance(retries, int) and retries >= 0):
            return "InvalidSubmission", f"retries {retries!r} is not a whole number >= 0"
        expires = submit.expires_in
        if expires is not None and not (expires > 0 and math.isfinite(expires)):
            return ("InvalidSubmission",
                    f"expires_in {expires!r} is not a number of seconds > 0")
        if self.options.check_task_names and not self._knows_task(submit.task):
            return "UnknownTask", self._unknown_task(submit.task)
        return None

    def _knows_task(self, name: str) -> bool:
        if name in self._known or name in self._advertised:
            return True
        if not self._known_fresh:
            self._refresh_names()  # the task may have been registered since
            return name in self._known
        return False

    def _refresh_names(self) -> None:
        if self._task_names is not None:
            self._known = frozenset(self._task_names())
        self._known_fresh = True

    def _unknown_task(self, name: str) -> str:
        known = sorted(self._known | self._advertised)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        shown = ", ".join(known[:_NAMES_SHOWN]) or "none"
        if len(known) > _NAMES_SHOWN:
            shown += f", and {len(known) - _NAMES_SHOWN} more"
        return f"unknown task {name!r}{hint} (known: {shown})"

    def _reject(self, task_id: str, error: str, message: str) -> Rejected:
        self._rejected_total[error] = self._rejected_total.get(error, 0) + 1
        return Rejected(id=task_id, error=error, message=message)

    def _queue_full(self, submit: Submit, why: str) -> Rejected:
        return self._reject(
            submit.id, "QueueFull", f"queue full (capacity {self.options.capacity}); {why}"
        )

    def _job(self, submit: Submit, now: float) -> Job:
        """The job of an accepted Submit; its deadline, if any, starts now."""
        expires_at = None
        if submit.expires_in is not None:
            expires_at = now + submit.expires_in
            self._expiring.push(trio.current_time() + submit.expires_in, submit.id, submit.id)
            self._arm(self._expiring.next_at)
        return Job(id=submit.id, task=submit.task, payload=submit.payload,
                   priority=submit.priority, timeout=submit.timeout, queued_at=now,
                   expires_at=expires_at, retries=submit.retries)

    def _schedule(self, submit: Submit) -> Accepted | Rejected:
        """Hold a Submit with a delay until its time."""
        capacity = self.options.scheduled_capacity
        if len(self._scheduled) >= capacity:
            return self._reject(submit.id, "QueueFull",
                                f"{capacity} scheduled tasks already wait (scheduled_capacity)")
        now = time.time()
        job = self._job(submit, now)
        self._scheduled.push(trio.current_time() + submit.delay, job.id, job)
        self._arm(self._scheduled.next_at)
        self._remember(job.id, "scheduled")
        self._entries.append(
            QueuedEntry(id=job.id, task=job.task, priority=job.priority, queued_at=now,
                        payload=job.payload, retry_of=submit.retry_of,
                        scheduled_for=now + submit.delay))
        self._accepted_total += 1
        return Accepted(id=job.id)

    def _enqueue(self, submit: Submit) -> Accepted:
        now = time.time()
        job = self._job(submit, now)
        self._queued[job.id] = job
        self._levels[job.priority].append(job)
        self._counts[job.priority] += 1
        self._by_task[job.priority][job.task] += 1
        self._remember(job.id, "queued")
        self._entries.append(
            QueuedEntry(id=job.id, task=job.task, priority=job.priority, queued_at=now,
                        payload=job.payload, retry_of=submit.retry_of)
        )
        self._accepted_total += 1
        return Accepted(id=job.id)

    def _remember(self, task_id: str, state: _State) -> None:
        self._recent[task_id] = state  # an id already there keeps its place
        if len(self._recent) > self.options.recent_ids:
            self._recent.popitem(last=False)

    # -- waiting for room --------------------------------------------------------

    def _park(self, submit: Submit, request: _Request, index: int) -> None:
        now = trio.current_time()
        parked = _Parked(submit, request, index, since=now, deadline=now + submit.queue_wait)
        self._parked_seq += 1
        self._parked[self._parked_seq] = parked
        if len(self._deadlines) > 2 * len(self._parked) + 64:
            # Admitted Submits stay in the heap until their deadline; drop them.
            self._deadlines = [entry for entry in self._deadlines if not entry[2].done]
            heapq.heapify(self._deadlines)
        heapq.heappush(self._deadlines, (parked.deadline, self._parked_seq, parked))
        if self._timer is not None and parked.deadline < self._timer.deadline:
            self._timer.deadline = parked.deadline

    def _admit(self) -> None:
        """Queue parked Submits, first come first, while there is room."""
        while self._parked and len(self._queued) < self.options.capacity:
            _, parked = self._parked.popitem(last=False)
            submit = parked.submit
            if submit.id in self._queued or submit.id in self._recent:
                self._duplicates_total += 1  # its twin got in first
                answer: _Answer = Accepted(id=submit.id)
            else:
                answer = self._enqueue(submit)
            self._finish_parked(parked, answer, at_once=False)

    def _finish_parked(self, parked: _Parked, answer: _Answer, *, at_once: bool) -> None:
        """Record a parked Submit's answer; answer its request once complete,
        at once or (when what was queued must reach the store first) at the
        next flush."""
        parked.done = True
        if isinstance(answer, Rejected) and parked.submit.key:
            self._keys.release(parked.submit.key, parked.submit.id)
        request = parked.request
        request.answers[parked.index] = answer
        request.remaining -= 1
        if request.remaining == 0 and request.reply is not None:
            if at_once:
                request.reply.set(list(request.answers))
            else:
                self._answered.append(request)

    async def _expire_parked(self) -> None:
        """Refuse parked Submits whose wait is over; one timer, re-armed by
        ``_park`` when an earlier deadline arrives."""
        while True:
            deadline = self._deadlines[0][0] if self._deadlines else math.inf
            with trio.CancelScope(deadline=deadline) as self._timer:
                await trio.sleep_forever()
            self._timer = None
            now = trio.current_time()
            while self._deadlines and self._deadlines[0][0] <= now:
                _, seq, parked = heapq.heappop(self._deadlines)
                if parked.done:
                    continue
                del self._parked[seq]
                waited = f"waited {_seconds(parked.submit.queue_wait)} s"
                self._finish_parked(parked, self._queue_full(parked.submit, waited), at_once=True)

    # -- cancelling ---------------------------------------------------------------

    def _cancel(self, task_id: str) -> CancelReply:
        if self._drop(task_id):
            self._remember(task_id, "cancelled")
            self._cancelled.append(task_id)
            self._cancelled_total += 1
            return CancelReply(id=task_id, outcome="cancelled")
        state = self._recent.get(task_id)
        if state == "cancelled":
            return CancelReply(id=task_id, outcome="cancelled")  # a resent Cancel
        if state is not None:
            return CancelReply(id=task_id, outcome="not_queued")
        return CancelReply(id=task_id, outcome="unknown")

    def _drop(self, task_id: str) -> bool:
        """Take a queued or scheduled task out; False if it is neither."""
        self._expiring.discard(task_id)
        if self._scheduled.discard(task_id) is not None:
            return True
        job = self._queued.pop(task_id, None)
        if job is None:
            return False
        # The job stays in its deque until it is reached or the deque is rebuilt.
        level = job.priority
        self._counts[level] -= 1
        self._by_task[level][job.task] -= 1
        self._stale[level] += 1
        if self._stale[level] > max(_STALE_MIN, self._counts[level]):
            self._levels[level] = deque(j for j in self._levels[level] if self._is_live(j))
            self._stale[level] = 0
        return True

    # -- scheduled tasks and deadlines ------------------------------------------

    def _arm(self, at: float) -> None:
        """Wake the due timer at ``at`` if that is earlier than it would."""
        if self._due_timer is not None and at < self._due_timer.deadline:
            self._due_timer.deadline = at

    async def _release_due(self) -> None:
        """Queue scheduled tasks whose time came, and drop tasks past their
        deadline; one timer, re-armed by ``_arm``."""
        while True:
            deadline = min(self._scheduled.next_at, self._expiring.next_at)
            with trio.CancelScope(deadline=deadline) as self._due_timer:
                await trio.sleep_forever()
            self._due_timer = None
            now = trio.current_time()
            for job in self._scheduled.pop_due(now):
                self._queued[job.id] = job
                self._levels[job.priority].append(job)
                self._counts[job.priority] += 1
                self._by_task[job.priority][job.task] += 1
                self._remember(job.id, "queued")
                self._released.append(job.id)
            for task_id in self._expiring.pop_due(now):
                if self._drop(task_id):
                    self._remember(task_id, "expired")
                    self._expired.append(task_id)
                    self._expired_total += 1
            if self._released or self._expired:
                await self._flush()

    def _is_live(self, job: Job) -> bool:
        return self._queued.get(job.id) is job

    # -- dispatch ------------------------------------------------------------------

    async def _flush(self) -> None:
        """Take jobs for the standing demand, then send what the handled
        messages produced: Queued and Cancelled to the store first (so an
        accepted task is known there before the client hears of it), then
        one JobBatch, then the answers of completed deferred requests."""
        jobs = self._take_jobs()
        entries, self._entries = self._entries, []
        cancelled, self._cancelled = self._cancelled, []
        if entries:
            await self.refs["results"].send(Queued(entries=tuple(entries)))
        if cancelled:
            await self.refs["results"].send(Cancelled(ids=tuple(cancelled)))
        if self._released or self._expired:
            released, self._released = self._released, []
            expired, self._expired = self._expired, []
            await self.refs["results"].send_batch(
                [Released(ids=tuple(released)), Expired(ids=tuple(expired))])
        if jobs:
            await self.refs["dispatcher"].send(JobBatch(jobs=tuple(jobs)))
        answered, self._answered = self._answered, []
        for request in answered:
            if request.remaining == 0 and request.reply is not None:
                request.reply.set(list(request.answers))

    def _requeue(self, jobs: tuple[Job, ...]) -> None:
        for job in reversed(jobs):
            if job.id in self._queued or not 0 <= job.priority < LEVELS:
                continue
            self._queued[job.id] = job
            self._levels[job.priority].appendleft(job)
            self._counts[job.priority] += 1
            self._by_task[job.priority][job.task] += 1
            self._remember(job.id, "queued")
            self._requeued_total += 1

    def _hold_retries(self, jobs: tuple[Job, ...], delays: tuple[float, ...]) -> None:
        now, wall = trio.current_time(), time.time()
        for job, delay in zip(jobs, delays):
            if job.id in self._queued or job.id in self._scheduled:
                continue
            self._scheduled.push(now + max(delay, 0.0), job.id, job)
            self._arm(self._scheduled.next_at)
            if job.expires_at is not None:
                self._expiring.push(now + job.expires_at - wall, job.id, job.id)
                self._arm(self._expiring.next_at)
            self._remember(job.id, "scheduled")
            self._retried_total += 1

    def _take_jobs(self) -> list[Job]:
        jobs: list[Job] = []
        self._admit()
        only = self._only
        if only is None:
            while self._demand > 0 and self._queued:
                jobs.append(self._take(self._next_level(self._counts)))
                self._demand -= 1
                self._admit()  # each job taken makes room for one waiting Submit
            return jobs
        # Only jobs the free workers can run; others keep their places.
        matching = [sum(self._by_task[level][name] for name in only) for level in range(LEVELS)]
        while self._demand > 0 and any(matching):
            level = self._next_level(matching)
            jobs.append(self._take(level, only))
            matching[level] -= 1
            self._demand -= 1
            self._admit()
        return jobs

    def _take(self, level: int, only: frozenset[str] | None = None) -> Job:
        """Take the first live job of ``level`` that the filter lets through."""
        queue = self._levels[level]
        job = queue.popleft()
        while not self._is_live(job):
            self._stale[level] -= 1
            job = queue.popleft()
        if only is not None and job.task not in only:
            queue.appendleft(job)
            for index, job in enumerate(queue):
                if self._is_live(job) and job.task in only:
                    del queue[index]
                    break
            else:  # pragma: no cover - _matching counted one
                raise AssertionError("no matching job where one was counted")
        del self._queued[job.id]
        if job.expires_at is not None:
            self._expiring.discard(job.id)  # the executor checks it from here
        self._counts[level] -= 1
        self._by_task[level][job.task] -= 1
        self._remember(job.id, "dispatched")
        self._dispatched_total += 1
        for lower in range(level + 1, LEVELS):
            self._skipped[lower] = self._skipped[lower] + 1 if self._counts[lower] else 0
        self._skipped[level] = 0
        return job

    def _next_level(self, counts: list[int]) -> int:
        """The highest level with jobs, unless a level below it has waited
        ``starvation_limit`` jobs: then the highest such level."""
        top = -1
        for level in range(LEVELS):
            if not counts[level]:
                self._skipped[level] = 0
            elif top < 0:
                top = level
            elif self._skipped[level] >= self.options.starvation_limit:
                return level
        return top


def _registry_names() -> Callable[[], Collection[str]]:
    # Imported here, not at the top: the registry is only needed when names
    # are checked and no other source was given.
    from fastworker.tasks import registry

    return registry.names


def _seconds(value: float) -> str:
    """``2.0``, ``0.25``, ``1.333``: seconds for people."""
    text = f"{value:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text
