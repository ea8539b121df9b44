"""The ResultStore: where every task's record lives, and where clients wait.

It takes ``Queued`` and ``Cancelled`` from the PriorityInbox, ``Running``
and ``Finished`` from executors (a subworker's come through the
Dispatcher), ``Requeued`` from the Dispatcher when a lost worker's jobs go
back to the queue, and keeps one ``TaskRecord`` per task id.
It answers ``StatusQuery`` and ``ResultQuery`` (``Records``) from the
Results edge (port base+4), which sends them wrapped in ``Requests`` with
``Ref.call``; in-process callers may ``call`` it with a bare query.

Reports come from several senders, so they may arrive out of order: a state
only moves forward (queued, running, then final), and a final record stays
as it is. A second ``Finished`` of the same (id, attempt) is a duplicate and
is counted; one of another attempt is a duplicate execution, counted too. A
second ``Running`` of the same attempt on the same worker (a subworker
resends a report whose answer it lost) changes nothing.

Memory is bounded. A final record expires ``ttl`` seconds after it became
final, and the least recently used final records are evicted while the store
holds more than ``max_entries`` records or ``max_bytes`` bytes. Records of
queued and running tasks are live work: counted, never evicted. A forgotten
id answers ``state="unknown"``.

A ``ResultQuery`` that finds nothing final parks without blocking the inbox
(``Actor.defer``): it is answered when one of its ids becomes final, or at
its deadline by one timer task, with whatever is final then. Time is trio's
clock, so tests drive TTLs and deadlines with ``MockClock``.
"""

from __future__ import annotations

import heapq
import itertools
import math
import sys
import time
from collections import OrderedDict, deque
from typing import Any, Literal, Union

import attrs
import trio

from actors import Actor, Reply
from actors.requests import Requests
from fastworker.messages import (
    Attempt,
    Cancelled,
    Expired,
    Finished,
    Outcome,
    Queued,
    QueuedEntry,
    Records,
    Released,
    RemoteError,
    ResultQuery,
    State,
    Running,
    StatusQuery,
    TaskRecord,
    Watch,
)
from fastworker.internal import Dispatched, GetTask, ListTasks, Requeued, TaskDetail, TaskPage
from fastworker.stats import ResultStoreStats

if sys.version_info >= (3, 11):
    from typing import assert_never
else:  # pragma: no cover
    from typing_extensions import assert_never

#: What the store counts per record besides its value and error texts.
RECORD_OVERHEAD_BYTES = 512


Report = Union[Queued, Running, Finished, Cancelled, Requeued, Dispatched, Released, Expired]
_REPORTS = (Queued, Running, Finished, Cancelled, Requeued, Dispatched, Released, Expired)

#: The error of a task dropped at its deadline before it started.
_EXPIRED = RemoteError(
    type="TaskExpired", kind="expired",
    message="its deadline (expires) passed while it was still waiting; it was not started")
#: The final state of a task that ended with an error of this kind.
_FINAL_STATE_OF: dict[str, State] = {"expired": "expired", "cancelled": "cancelled"}
Query = Union[ResultQuery, StatusQuery, Watch, ListTasks, GetTask]
Accepts = Union[Report, Query, Requests]


@attrs.frozen(kw_only=True)
class ResultStoreOptions:
    """The store's bounds.

    Attributes:
        ttl: seconds a final record is kept after it became final.
        max_entries: the most records held (live ones count, but only final
            ones are evicted).
        max_bytes: the most bytes held: values, error texts and
            ``RECORD_OVERHEAD_BYTES`` per record.
        max_wait: the longest a ``ResultQuery`` may park, in seconds.
    """

    ttl: float = attrs.field(default=3600.0, validator=attrs.validators.ge(0))
    max_entries: int = attrs.field(default=100_000, validator=attrs.validators.ge(1))
    max_bytes: int = attrs.field(default=256 * 1024 * 1024, validator=attrs.validators.ge(0))
    max_wait: float = attrs.field(default=300.0, validator=attrs.validators.ge(0))
    #: Seconds after which an idle watch session (its client gone) is forgotten.
    session_ttl: float = attrs.field(default=600.0, validator=attrs.validators.gt(0))


class ResultStore(Actor[Accepts]):
    """Keeps one record per task and answers queries about them.

    Reports are plain messages (``send``); queries must come with
    ``Ref.call``, bare or inside ``Requests``. A query that has to wait is
    parked with ``defer()``, so the inbox keeps flowing while it waits.
    """

    Options = ResultStoreOptions

    def __init__(self, options: ResultStoreOptions, context: Any) -> None:
        super().__init__(options, context)
        self._records: dict[str, _Entry] = {}
        self._final: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._expiry: deque[_Entry] = deque()  # in the order records became final
        self._bytes = 0
        self._waiting: dict[str, set[_Waiter]] = {}  # id -> queries parked on it
        self._deadlines: list[tuple[float, int, _Waiter]] = []  # a heap
        self._parked = 0
        self._sequence = itertools.count()
        self._timer: trio.CancelScope | None = None
        self._counts = _Counts()
        self._sessions: dict[str, _Session] = {}
        self._watched: dict[str, set[_Session]] = {}  # id -> sessions watching it
        self._next_sweep = 0.0

    async def setup(self, nursery: trio.Nursery) -> str | None:
        await nursery.start(self._answer_at_deadlines)
        options = self.options
        return (
            f"keeps results {options.ttl:g} s, at most {options.max_entries} records "
            f"and {options.max_bytes} bytes"
        )

    async def drain(self) -> None:
        self._answer_all()

    async def handle(self, message: Accepts) -> Any:
        match message:
            case (Queued() | Running() | Finished() | Cancelled() | Requeued() | Dispatched()
                  | Released() | Expired()):
                self._take_reports([message])
                return None
            case ListTasks():
                return self._list(message)
            case GetTask():
                return self._detail(message.id)
            case ResultQuery() | StatusQuery() | Watch():
                return self._on_queries((message,), single=True)
            case Requests():
                return self._on_queries(message.messages, single=False)
            case _:
                assert_never(message)

    async def handle_batch(self, messages: list[Accepts]) -> None:
        # Plain messages: the reports of a drained run are taken in one pass.
        # A query sent without Ref.call has nobody to answer.
        reports = [m for m in messages if isinstance(m, _REPORTS)]
        self._counts.ignored_total += len(messages) - len(reports)
        self._take_reports(reports)

    def stats_detail(self) -> ResultStoreStats:
        self._expire(trio.current_time())  # so that expired records are not counted
        return ResultStoreStats(
            entries=len(self._records),
            live_entries=len(self._records) - len(self._final),
            bytes=self._bytes,
            waiting_queries=self._parked,
            **attrs.asdict(self._counts),
        )

    # -- reports -------------------------------------------------------------

    def _take_reports(self, reports: list[Report]) -> None:
        """Apply reports in order, answer the queries they complete, then
        enforce the bounds (after answering: a waiter sees its record even
        if the bounds drop it at once)."""
        now = trio.current_time()
        woken: dict[_Waiter | _Session, None] = {}
        for report in reports:
            match report:
                case Queued():
                    for queued in report.entries:
                        self._on_queued(queued)
                case Dispatched(worker=worker, at=at):
                    records = self._records
                    for id in report.ids:
                        entry = records.get(id)
                        if entry is not None:
                            entry.dispatched_at, entry.dispatched_to = at, worker
                case Running(attempts=attempts):
                    for index, id in enumerate(report.ids):
                        attempt = attempts[index] if index < len(attempts) else None
                        self._on_running(id, report.worker, report.started_at, attempt)
                case Requeued():
                    for id, attempt in zip(report.ids, report.attempts):
                        self._on_requeued(id, attempt)
                case Finished():
                    for outcome in report.outcomes:
                        self._on_outcome(outcome, now, woken)
                case Cancelled():
                    for id in report.ids:
                        self._on_cancelled(id, now, woken)
                case Released():
                    for id in report.ids:
                        entry = self._records.get(id)
                        if entry is not None and entry.record.state == "scheduled":
                            entry.record = attrs.evolve(entry.record, state="queued")
                case Expired():
                    for id in report.ids:
                        self._on_cancelled(id, now, woken, state="expired")
                case _:
                    assert_never(report)
        for waiter in woken:
            if isinstance(waiter, _Session):
                if waiter.parked is not None:
                    self._answer_waiter(waiter.parked)
            elif not waiter.done:
                self._answer_waiter(waiter)
        self._expire(now)

    def _on_queued(self, queued: QueuedEntry) -> None:
        """Record a queued task; a late ``Queued`` fills in what it knows
        without moving the state."""
        id = queued.id
        entry = self._records.get(id)
        if entry is None:
            entry = _Entry(TaskRecord(
                id=id, state="scheduled" if queued.scheduled_for else "queued", task=queued.task,
                priority=queued.priority, queued_at=queued.queued_at,
                scheduled_for=queued.scheduled_for))
            entry.payload = queued.payload
            entry.size += len(queued.payload)
            self._add(id, entry)
        else:
            entry.record = attrs.evolve(entry.record, task=queued.task, priority=queued.priority,
                                        queued_at=queued.queued_at,
                                        scheduled_for=queued.scheduled_for)
            entry.payload = queued.payload
            self._resize(entry)
        if queued.retry_of:
            entry.retry_of = queued.retry_of
            retried = self._records.get(queued.retry_of)
            if retried is not None:
                retried.retried_as = (*retried.retried_as, id)

    def _on_running(self, id: str, worker: str, started_at: float, attempt: int | None) -> None:
        entry = self._records.get(id)
        if entry is None:
            record = TaskRecord(id=id, state="running", attempt=attempt or 1, worker=worker,
                                workers=(worker,), started_at=started_at)
            self._add(id, _Entry(record))
        elif entry.final_at is not None:
            self._counts.stale_total += 1
        else:
            old = entry.record
            if attempt is not None and attempt < old.attempt:
                self._counts.stale_total += 1  # a lost worker's late start
                return
            if attempt is not None and attempt == old.attempt and old.workers[-1:] == (worker,):
                return  # a resent Report's Running: the same start again
            entry.record = attrs.evolve(
                old, state="running", worker=worker, workers=(*old.workers, worker),
                started_at=started_at,
                attempt=old.attempt + 1 if attempt is None else attempt,
            )

    def _on_requeued(self, id: str, attempt: int) -> None:
        entry = self._records.get(id)
        if entry is None or entry.final_at is not None:
            return  # forgotten, or a lost worker's late result arrived first
        entry.record = attrs.evolve(entry.record, state="queued", attempt=attempt)

    def _on_outcome(
        self, outcome: Outcome, now: float, woken: dict[_Waiter | _Session, None]
    ) -> None:
        entry = self._records.get(outcome.id)
        if entry is not None and entry.final_at is not None:
            if entry.record.attempt == outcome.attempt:
                self._counts.duplicates_total += 1
            else:
                self._counts.extra_attempts_total += 1
            return
        old = entry.record if entry is not None else TaskRecord(id=outcome.id, state="unknown")
        error = outcome.error
        if outcome.retry_in is not None and error is not None:
            self._on_retry(outcome, entry, old, error)
            return
        self._counts.finished_total += 1
        record = TaskRecord(
            id=outcome.id,
            state="succeeded" if error is None else _FINAL_STATE_OF.get(error.kind, "failed"),
            task=old.task,
            priority=old.priority,
            attempt=outcome.attempt,
            worker=outcome.worker,
            workers=old.workers if outcome.worker in old.workers else (*old.workers, outcome.worker),
            queued_at=old.queued_at,
            started_at=outcome.started_at or old.started_at,
            finished_at=outcome.finished_at,
            value=outcome.value,
            error=outcome.error,
            scheduled_for=old.scheduled_for,
            attempts=old.attempts,
        )
        self._finalize(outcome.id, entry, record, now, woken)

    def _on_retry(self, outcome: Outcome, entry: _Entry | None, old: TaskRecord,
                  error: RemoteError) -> None:
        """A failed attempt that runs again after its backoff: kept among the
        record's ``attempts``; the task waits, ``scheduled``, for the retry."""
        if old.attempts and old.attempts[-1].attempt >= outcome.attempt:
            self._counts.duplicates_total += 1  # a resent report
            return
        self._counts.retried_total += 1
        tried = Attempt(attempt=outcome.attempt, worker=outcome.worker,
                        started_at=outcome.started_at or old.started_at,
                        finished_at=outcome.finished_at, error=error)
        assert outcome.retry_in is not None
        record = attrs.evolve(
            old, state="scheduled", attempt=outcome.attempt, worker=outcome.worker,
            workers=old.workers if outcome.worker in old.workers else (
                *old.workers, outcome.worker),
            scheduled_for=outcome.finished_at + outcome.retry_in,
            attempts=(*old.attempts, tried))
        if entry is None:
            self._add(outcome.id, _Entry(record))
        else:
            entry.record = record
            self._resize(entry)

    def _on_cancelled(
        self, id: str, now: float, woken: dict[_Waiter | _Session, None],
        state: Literal["cancelled", "expired"] = "cancelled",
    ) -> None:
        """A task that will not run: cancelled, or expired at its deadline."""
        entry = self._records.get(id)
        if entry is not None and entry.final_at is not None:
            self._counts.stale_total += 1
            return
        error = _EXPIRED if state == "expired" else None
        if entry is None:
            record = TaskRecord(id=id, state=state, error=error)
        else:
            record = attrs.evolve(entry.record, state=state, error=error,
                                  finished_at=time.time())
        self._finalize(id, entry, record, now, woken)

    def _finalize(self, id: str, entry: _Entry | None, record: TaskRecord, now: float,
                  woken: dict[_Waiter | _Session, None]) -> None:
        if entry is None:
            entry = _Entry(record)
            self._add(id, entry)
        entry.record = record
        entry.final_at = now
        if record.state == "succeeded":
            self._counts.succeeded_total += 1
        elif record.state == "failed":
            self._counts.failed_total += 1
        elif record.state == "expired":
            self._counts.expired_total += 1
        else:
            self._counts.cancelled_total += 1
        self._resize(entry)
        self._final[id] = entry
        self._expiry.append(entry)
        for waiter in self._waiting.pop(id, ()):
            woken[waiter] = None
        for session in self._watched.pop(id, ()):
            session.ids.discard(id)
            session.ready.append(record)
            woken[session] = None

    def _add(self, id: str, entry: _Entry) -> None:
        self._records[id] = entry
        self._bytes += entry.size

    def _resize(self, entry: _Entry) -> None:
        size = _size(entry.record) + len(entry.payload)
        self._bytes += size - entry.size
        entry.size = size

    # -- bounds --------------------------------------------------------------

    def _expire(self, now: float) -> None:
        """Drop final records past their TTL, then the least recently used
        ones while over a bound."""
        expiry, ttl = self._expiry, self.options.ttl
        while expiry and expiry[0].final_at is not None and expiry[0].final_at + ttl <= now:
            entry = expiry.popleft()
            if self._final.get(entry.record.id) is entry:
                self._forget(entry)
                self._counts.evicted_ttl += 1
        while len(self._records) > self.options.max_entries and self._final:
            self._forget(next(iter(self._final.values())))
            self._counts.evicted_lru += 1
        while self._bytes > self.options.max_bytes and self._final:
            self._forget(next(iter(self._final.values())))
            self._counts.evicted_bytes += 1
        if len(expiry) > 2 * len(self._final) + 64:
            # Entries evicted by the bounds linger here; drop them now and then.
            self._expiry = deque(e for e in expiry if self._final.get(e.record.id) is e)

    def _forget(self, entry: _Entry) -> None:
        id = entry.record.id
        del self._final[id]
        del self._records[id]
        self._bytes -= entry.size

    # -- queries -------------------------------------------------------------

    def _on_queries(self, messages: tuple[Any, ...], *, single: bool) -> Any:
        """Answer each query now, or park it; defer the call if any parked.
        The answer is a list with one reply per message (``single``: the
        one reply); a message that is not a query is answered ``None``."""
        now = trio.current_time()
        self._expire(now)
        answers: list[Any] = []
        call: _Call | None = None
        for index, message in enumerate(messages):
            match message:
                case StatusQuery():
                    self._counts.queries_total += 1
                    records = tuple(self._status(id) for id in dict.fromkeys(message.ids))
                    answers.append(Records(records=records))
                case ResultQuery():
                    self._counts.queries_total += 1
                    records = self._final_records(message.ids)
                    wait = min(message.wait, self.options.max_wait)
                    if records or wait <= 0 or not message.ids:
                        answers.append(Records(records=records))
                        continue
                    if call is None:
                        call = _Call(reply=self.defer(), answers=answers, single=single)
                    answers.append(None)
                    self._park(_Waiter(ids=message.ids, call=call, index=index), now + wait)
                case Watch():
                    self._counts.queries_total += 1
                    session = self._watch(message, now)
                    wait = min(message.wait, self.options.max_wait)
                    if session.ready or wait <= 0:
                        answers.append(Records(records=session.take()))
                        continue
                    if session.parked is not None:
                        # One parked Watch per session: the older one goes home.
                        self._answer_waiter(session.parked)
                    if call is None:
                        call = _Call(reply=self.defer(), answers=answers, single=single)
                    answers.append(None)
                    waiter = _Waiter(ids=(), call=call, index=index, session=session)
                    session.parked = waiter
                    self._park(waiter, now + wait)
                case _:
                    self._counts.ignored_total += 1
                    answers.append(None)
        if call is not None:
            return None  # deferred: the reply is set when the last query is answered
        return answers[0] if single else answers

    def _watch(self, message: Watch, now: float) -> _Session:
        """The message's session, with its new ids added (or made ready)."""
        session = self._sessions.get(message.session)
        if session is None:
            session = self._sessions[message.session] = _Session(name=message.session)
        session.last_seen = now
        for id in message.ids:
            entry = self._records.get(id)
            if entry is not None and entry.final_at is not None:
                self._final.move_to_end(id)
                session.ready.append(entry.record)
            elif id not in session.ids:
                session.ids.add(id)
                self._watched.setdefault(id, set()).add(session)
        return session

    def _sweep_sessions(self, now: float) -> None:
        """Forget sessions idle for ``session_ttl`` (their client is gone)."""
        if now < self._next_sweep:
            return
        ttl = self.options.session_ttl
        self._next_sweep = now + ttl / 4
        for name, session in list(self._sessions.items()):
            if session.parked is None and session.last_seen + ttl <= now:
                for id in session.ids:
                    watchers = self._watched.get(id)
                    if watchers is not None:
                        watchers.discard(session)
                        if not watchers:
                            del self._watched[id]
                del self._sessions[name]

    def _list(self, query: ListTasks) -> TaskPage:
        """A page of the records held, newest first (a scan: for people, not
        for the hot path; the store's bounds bound it)."""
        self._expire(trio.current_time())
        state, task, part = query.state, query.task, query.id
        offset, limit = max(query.offset, 0), max(query.limit, 0)
        records: list[TaskRecord] = []
        if state is None and task is None and not part:
            total = len(self._records)
            for entry in itertools.islice(reversed(self._records.values()), offset, offset + limit):
                records.append(entry.record)
            return TaskPage(records=tuple(records), total=total)
        total = 0
        for entry in reversed(self._records.values()):
            record = entry.record
            if ((state is None or record.state == state) and (task is None or record.task == task)
                    and (not part or part in record.id)):
                if offset <= total < offset + limit:
                    records.append(record)
                total += 1
        return TaskPage(records=tuple(records), total=total)

    def _detail(self, id: str) -> TaskDetail | None:
        entry = self._records.get(id)
        if entry is None:
            return None
        return TaskDetail(record=entry.record, payload=entry.payload,
                          dispatched_at=entry.dispatched_at, dispatched_to=entry.dispatched_to,
                          retry_of=entry.retry_of, retried_as=entry.retried_as)

    def _status(self, id: str) -> TaskRecord:
        entry = self._records.get(id)
        if entry is None:
            return TaskRecord(id=id, state="unknown")
        if entry.final_at is not None:
            self._final.move_to_end(id)
        return entry.record

    def _final_records(self, ids: tuple[str, ...]) -> tuple[TaskRecord, ...]:
        records = []
        for id in dict.fromkeys(ids):
            entry = self._records.get(id)
            if entry is not None and entry.final_at is not None:
                self._final.move_to_end(id)
                records.append(entry.record)
        return tuple(records)

    def _park(self, waiter: _Waiter, deadline: float) -> None:
        waiter.call.pending += 1
        for id in waiter.ids:
            self._waiting.setdefault(id, set()).add(waiter)
        heapq.heappush(self._deadlines, (deadline, next(self._sequence), waiter))
        self._parked += 1
        if self._timer is not None and deadline < self._timer.deadline:
            self._timer.deadline = deadline

    def _answer_waiter(self, waiter: _Waiter) -> None:
        """Answer a parked query with what is final now."""
        waiter.done = True
        self._parked -= 1
        for id in waiter.ids:
            waiters = self._waiting.get(id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiting[id]
        call = waiter.call
        session = waiter.session
        if session is not None:
            if session.parked is waiter:
                session.parked = None
            session.last_seen = trio.current_time()
            records = session.take()
        else:
            records = self._final_records(waiter.ids)
        call.answers[waiter.index] = Records(records=records, waited_out=waiter.due)
        call.pending -= 1
        if call.pending == 0:
            call.reply.set(call.answers[0] if call.single else call.answers)
        if len(self._deadlines) > 2 * self._parked + 64:
            # Answered queries linger in the heap until their deadline; drop them.
            self._deadlines = [item for item in self._deadlines if not item[2].done]
            heapq.heapify(self._deadlines)

    def _answer_all(self) -> None:
        """On stop: answer every parked query with what is final now."""
        for _, _, waiter in sorted(self._deadlines):
            if not waiter.done:
                self._answer_waiter(waiter)
        self._deadlines.clear()

    async def _answer_at_deadlines(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Sleep until the earliest deadline (``_park`` moves it earlier),
        answer the queries that are due, repeat. When the actor stops or
        crashes, the parked queries are answered rather than left hanging."""
        try:
            task_status.started()
            while True:
                while self._deadlines and self._deadlines[0][2].done:
                    heapq.heappop(self._deadlines)
                earliest = self._deadlines[0][0] if self._deadlines else math.inf
                with trio.CancelScope(deadline=earliest) as scope:
                    self._timer = scope
                    await trio.sleep_forever()
                self._timer = None
                now = trio.current_time()
                self._expire(now)
                # _answer_waiter may compact the heap, so look it up afresh each time.
                while self._deadlines and self._deadlines[0][0] <= now:
                    _, _, waiter = heapq.heappop(self._deadlines)
                    if not waiter.done:
                        waiter.due = True
                        self._answer_waiter(waiter)
                self._sweep_sessions(now)
        finally:
            self._timer = None
            self._answer_all()


class _Entry:
    """One task's record, with when it became final and its counted size,
    and what a task's page shows besides the record."""

    __slots__ = ("record", "final_at", "size", "payload", "dispatched_at", "dispatched_to",
                 "retry_of", "retried_as")

    def __init__(self, record: TaskRecord) -> None:
        self.record = record
        self.final_at: float | None = None
        self.size = _size(record)
        self.payload = b""
        self.dispatched_at = 0.0
        self.dispatched_to = ""
        self.retry_of = ""
        self.retried_as: tuple[str, ...] = ()


@attrs.define
class _Counts:
    """The store's running totals, named as in ``ResultStoreStats``."""

    finished_total: int = 0
    succeeded_total: int = 0
    failed_total: int = 0
    cancelled_total: int = 0
    expired_total: int = 0
    duplicates_total: int = 0
    extra_attempts_total: int = 0
    stale_total: int = 0
    evicted_ttl: int = 0
    evicted_lru: int = 0
    evicted_bytes: int = 0
    queries_total: int = 0
    ignored_total: int = 0
    retried_total: int = 0


@attrs.define(eq=False)
class _Call:
    """One deferred call: its reply, the answers so far, how many are parked."""

    reply: Reply
    answers: list[Any]
    single: bool
    pending: int = 0


@attrs.define(eq=False)
class _Waiter:
    """A parked ResultQuery: the ids it waits on, and its slot in its call."""

    ids: tuple[str, ...]
    call: _Call
    index: int
    session: _Session | None = None
    done: bool = False
    due: bool = False  # answered because its deadline came


@attrs.define(eq=False)
class _Session:
    """One client's watch set: ids not yet final, records ready to deliver,
    and its parked Watch (at most one)."""

    name: str
    ids: set[str] = attrs.field(factory=set)
    ready: list[TaskRecord] = attrs.field(factory=list)
    parked: _Waiter | None = None
    last_seen: float = 0.0

    def take(self) -> tuple[TaskRecord, ...]:
        """The ready records, delivered once."""
        records, self.ready = tuple(self.ready), []
        return records


def _size(record: TaskRecord) -> int:
    size = RECORD_OVERHEAD_BYTES + len(record.value or b"")
    errors = [attempt.error for attempt in record.attempts]
    if record.error is not None:
        errors.append(record.error)
    for error in errors:
        size += len(error.type) + len(error.message) + len(error.traceback)
    return size

