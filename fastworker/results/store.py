"""The ResultStore actor: where every task's record lives, and where clients wait.

It takes reports (``Queued``, ``Running``, ``Finished``, ...) from the
inbox, executors and the Dispatcher into its ``RecordBook``, and answers
queries from the Results edge (``Requests``, with ``Ref.call``) at once or
later (``Waiters``), with one timer for their deadlines. How records move
and what waits is told in docs/results.md.

With a ``journal`` ref (a Journal that is on), each record that becomes
final is sent to it as a ``PutResult`` (again when it counts a duplicate
run), each record of a task waiting for
its retry as a ``PutRecord`` (its earlier attempts), and each final record
the bounds drop as a ``DropResult``, in one ``JournalWrite`` per handled
batch; at start the records it held come back (``recovery``), so results
and earlier attempts are kept across a restart. Without one, none of this
costs anything.
"""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Callable
from typing import Any, Union

import attrs
import trio

from actors import Actor, ActorContext, ActorCrashed, GetStats, Ref
from actors.frame import DEFAULT_MAX_FRAME_BYTES
from actors.requests import Answers, Requests, Unsent
from actors.timers import Timer
from fastworker.errors import JournalUnavailable
from fastworker.internal import (
    Dispatched,
    FailedToRetry,
    GetTask,
    JournalWrite,
    Recover,
    Requeued,
    ResultsKept,
)
from fastworker.journal.ops import DropResult, Op, PutRecord, PutResult
from fastworker.limits import check_list, check_query
from fastworker.messages import (
    Cancelled,
    Expired,
    Finished,
    ListTasks,
    Queued,
    Records,
    Rejected,
    Released,
    ResultQuery,
    Running,
    StatusQuery,
    Watch,
)
from fastworker.results.listing import failed_to_retry, summaries, task_detail, task_page
from fastworker.results.records import REPORTS, RecordBook, Report
from fastworker.results.recovery import restore_results
from fastworker.results.task_metrics import DEFAULT_MAX_NAMES
from fastworker.results.waiters import Waiters
from fastworker.stats import ResultStoreStats

if sys.version_info >= (3, 11):
    from typing import assert_never
else:  # pragma: no cover
    from typing_extensions import assert_never

__all__ = ["ResultStore", "ResultStoreOptions"]

Query = Union[ResultQuery, StatusQuery, Watch, ListTasks, GetTask, FailedToRetry]
Accepts = Union[Report, Query, Requests, ResultsKept, Unsent]

#: Room kept in a reply frame for its header, auth tag and the other
#: answers of the same request (at most a quarter of the frame).
REPLY_FRAME_ROOM = 64 * 1024


@attrs.frozen(kw_only=True)
class ResultStoreOptions:
    """The store's bounds.

    Attributes:
        ttl: seconds a final record is kept after it became final.
        max_entries: the most final records held (live ones do not count:
            the inbox's capacity bounds them, and they are never evicted).
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
    #: The frame limit of the edge that carries the store's answers (its
    #: ``max_frame_bytes``): a Watch answer is kept within it.
    max_frame_bytes: int = attrs.field(default=DEFAULT_MAX_FRAME_BYTES,
                                       validator=attrs.validators.ge(1024))
    #: How many dropped ids the store remembers, so that a query for one is
    #: answered "unknown" at once; an older one waits like an id never seen.
    remember_dropped: int = attrs.field(default=100_000, validator=attrs.validators.ge(0))
    #: Task names with series of their own in ``/metrics`` (final states,
    #: run time, queue wait); past it, all others share one, ``(other)``.
    max_task_names: int = attrs.field(default=DEFAULT_MAX_NAMES, validator=attrs.validators.ge(1))

    @property
    def max_reply_bytes(self) -> int:
        """The most record bytes one Watch answer carries."""
        return self.max_frame_bytes - min(REPLY_FRAME_ROOM, self.max_frame_bytes // 4)


class ResultStore(Actor[Accepts]):
    """Keeps one record per task and answers queries about them.

    Reports are plain messages (``send``); queries must come with
    ``Ref.call``, bare or inside ``Requests``. A query that has to wait is
    parked with ``defer()``, so the inbox keeps flowing while it waits.
    """

    Options = ResultStoreOptions
    refs_optional = ("journal",)

    def __init__(self, options: ResultStoreOptions, context: ActorContext, *,
                 clock: Callable[[], float] = time.time) -> None:
        """``clock`` is the wall clock (for the journal's ``final_at``)."""
        super().__init__(options, context)
        self._clock = clock
        self._nursery: trio.Nursery | None = None
        #: The journal, once ``setup`` found it on; ``None``: nothing is journaled.
        self._journal: Ref[Any] | None = None
        #: Ops for the journal not yet sent, in the order they happened.
        self._unjournaled: list[Op] = []
        self._records = RecordBook(ttl=options.ttl, max_entries=options.max_entries,
                                   max_bytes=options.max_bytes,
                                   remember_dropped=options.remember_dropped,
                                   max_task_names=options.max_task_names)
        #: This incarnation of the store: a restart (of the process, or of
        #: the actor by its supervisor) makes a new one; clients compare it.
        self.epoch = secrets.token_hex(8)
        self._waiters = Waiters(self._records, max_wait=options.max_wait,
                                session_ttl=options.session_ttl, epoch=self.epoch,
                                max_reply_bytes=options.max_reply_bytes)
        self._timer = Timer(self._waiters.next_at, self._on_timer)
        self._queries_total = 0
        self._ignored_total = 0
        self._unsent_total = 0
        self._rejected_total = 0

    async def setup(self, nursery: trio.Nursery) -> str | None:
        self._nursery = nursery
        options = self.options
        ready = (
            f"keeps results {options.ttl:g} s, at most {options.max_entries} records "
            f"and {options.max_bytes} bytes"
        )
        if "journal" in self.refs:
            recovered = await self._recover(self.refs["journal"])
            if recovered is not None:
                ready += f"; {recovered}"
        await nursery.start(self._answer_at_deadlines)
        return ready

    async def _recover(self, journal: Ref[Any]) -> str | None:
        """Take back the final records the journal kept (those still within
        the TTL), and journal from here on; ``None`` if the journal is off."""
        if (await journal.call(GetStats())).detail is None:
            return None  # off: it keeps nothing, so nothing is sent to it
        self._journal = journal
        self._records.dropped = []
        self._records.retried = []
        self._records.recounted = []
        recovered = await journal.call(Recover())
        now = trio.current_time()
        restored, dropped = restore_results(self._records, recovered.results,
                                            wall=self._clock(), now=now)
        for live in recovered.records:
            self._records.restore_live(live.record)
        self._unjournaled.extend(DropResult(id=id) for id in dropped)
        for id in dropped:
            self._records.remember_forgotten(id, "ttl")
        self._records.expire(now)  # the bounds apply to what came back too
        evicted = len(self._records.dropped)
        await self._journal_send()
        # Said once, at INFO, in the supervisor's "started results" line.
        return (f"recovered {restored} result{'' if restored == 1 else 's'} from the journal "
                f"({len(dropped)} past their TTL dropped, {evicted} over the bounds evicted)")

    async def drain(self) -> None:
        self._waiters.answer_all(trio.current_time())
        if self._journal is not None:
            await self._journal_send()

    async def handle(self, message: Accepts) -> Any:
        if isinstance(message, ResultsKept):
            return await self._kept()
        answer = self._handle(message)
        if self._journal is not None:
            await self._journal_send()
        return answer

    async def _kept(self) -> bool | None:
        """Answer ``ResultsKept`` once what the journal was sent is written
        (at once without a journal); the store goes on meanwhile."""
        journal = self._journal
        if journal is None:
            return True
        await self._journal_send()
        reply = self.defer()
        assert self._nursery is not None

        async def answer() -> None:
            try:
                # An empty write is done once every earlier write is.
                await journal.call(JournalWrite(ops=()))
            except JournalUnavailable:
                reply.set(False)
            except (ActorCrashed, trio.BrokenResourceError, trio.ClosedResourceError) as error:
                reply.fail(error)
            else:
                reply.set(True)

        self._nursery.start_soon(answer)
        return None

    def _handle(self, message: Accepts) -> Any:
        match message:
            case (Queued() | Running() | Finished() | Cancelled() | Requeued() | Dispatched()
                  | Released() | Expired()):
                self._take_reports([message])
                return None
            case ListTasks():
                self._records.expire(trio.current_time())
                return task_page(self._records, message)
            case GetTask():
                return task_detail(self._records, message.id)
            case FailedToRetry():
                self._records.expire(trio.current_time())
                return failed_to_retry(self._records, message)
            case ResultQuery() | StatusQuery() | Watch():
                return self._on_queries((message,), single=True)
            case Requests():
                return self._on_queries(message.messages, single=False)
            case ResultsKept():
                return True  # not called: nobody waits
            case Unsent():
                self._on_unsent(message)
                return None
            case _:
                assert_never(message)

    async def handle_batch(self, messages: list[Accepts]) -> None:
        # Plain messages: the reports of a drained run are taken in one pass.
        # A query sent without Ref.call has nobody to answer.
        reports = [m for m in messages if isinstance(m, REPORTS)]
        if len(reports) < len(messages):
            for message in messages:
                if isinstance(message, Unsent):
                    self._on_unsent(message)
                elif not isinstance(message, REPORTS):
                    self._ignored_total += 1
        self._take_reports(reports)
        if self._journal is not None:
            await self._journal_send()

    def stats_detail(self) -> ResultStoreStats:
        records = self._records
        records.expire(trio.current_time())  # so that expired records are not counted
        if self._journal is not None:
            self._journal_send_nowait()
        return ResultStoreStats(
            entries=len(records),
            live_entries=records.live,
            bytes=records.bytes,
            waiting_queries=len(self._waiters),
            queries_total=self._queries_total,
            ignored_total=self._ignored_total,
            unsent_total=self._unsent_total,
            too_large_total=self._waiters.too_large_total,
            rejected_total=self._rejected_total,
            tasks=records.task_metrics.snapshot(),
            **attrs.asdict(records.counts),
        )

    def _take_reports(self, reports: list[Report]) -> None:
        """Apply reports in order, answer the queries they complete, then
        enforce the bounds (after answering: a waiter sees its record even
        if the bounds drop it at once)."""
        now = trio.current_time()
        records = self._records
        finalized = records.apply(reports, now)
        if finalized:
            self._waiters.on_final(finalized, now)
        if self._journal is not None and (finalized or records.recounted):
            self._take_dropped()  # dropped before these became final: first
            wall = self._clock()
            self._unjournaled.extend(
                PutResult(record=record, final_at=wall) for record in finalized)
            if records.recounted:
                # A final record that counted a duplicate run is kept again,
                # with the time it became final (its TTL is not renewed).
                self._unjournaled.extend(
                    PutResult(record=record, final_at=wall - (now - final_at))
                    for record, final_at in records.recounted)
                records.recounted.clear()
        records.expire(now)

    def _on_queries(self, messages: tuple[Any, ...], *, single: bool) -> Any:
        """Answer each query now, or park it; defer the call if any parked.
        The answer is a list with one reply per message (``single``: the
        one reply); a message that is not a query is answered ``None``."""
        now = trio.current_time()
        records, waiters = self._records, self._waiters
        records.expire(now)
        answers = Answers(len(messages), single=single)
        listed = False  # one ListTasks per request frame: each may read every record
        for index, message in enumerate(messages):
            if isinstance(message, (StatusQuery, ResultQuery, Watch)):
                problem = check_query(message, internal=single)
                if problem is not None:
                    # Refused whole, before it is parked or read: the sizes a
                    # client controls are bounded (fastworker.limits).
                    self._rejected_total += 1
                    answers.values[index] = Rejected(id="", error="InvalidSubmission",
                                                     message=problem)
                    continue
            if isinstance(message, ListTasks):  # a client's (fastworker tasks)
                problem = check_list(message) or (
                    "one ListTasks per request: each may read every record" if listed else None)
                listed = True
                if problem is not None:
                    self._rejected_total += 1
                    answers.values[index] = Rejected(id="", error="InvalidSubmission",
                                                     message=problem)
                else:
                    self._queries_total += 1
                    answers.values[index] = summaries(task_page(records, message))
                continue
            match message:
                case StatusQuery():
                    self._queries_total += 1
                    answers.values[index] = Records(
                        records=tuple(records.status(id) for id in dict.fromkeys(message.ids)),
                        epoch=self.epoch)
                case ResultQuery():
                    self._queries_total += 1
                    waiters.result_query(message, answers, index, now)
                case Watch():
                    self._queries_total += 1
                    waiters.watch(message, answers, index, now)
                case _:
                    self._ignored_total += 1
        if answers.missing:
            # Deferred: the reply is set when the last parked query is answered.
            answers.reply = self.defer()
            self._timer.arm(waiters.next_at())
            return None
        return answers.result

    def _on_unsent(self, unsent: Unsent) -> None:
        """The edge could not send answers (too large for its frame): the
        records they took from watch sessions are ready there again."""
        self._unsent_total += 1
        now = trio.current_time()
        taken = [(message.session, answer.records)
                 for message, answer in zip(unsent.messages, unsent.answers, strict=False)
                 if isinstance(message, Watch) and isinstance(answer, Records) and answer.records]
        for session, records in taken:
            # A record alone in the request's answers was too large by itself.
            self._waiters.give_back(session, records, now, alone=len(taken) == 1)

    async def _on_timer(self, now: float) -> None:
        """The earliest deadline came (or an earlier one was armed)."""
        self._records.expire(now)
        self._waiters.answer_due(now)
        if self._journal is not None:
            await self._journal_send()

    # -- the journal -----------------------------------------------------------

    def _take_dropped(self) -> None:
        """Queue a ``PutRecord`` for each task that failed an attempt and
        waits for its retry, and a ``DropResult`` for each record the bounds
        dropped, since the last time."""
        records = self._records
        if records.retried:
            self._unjournaled.extend(PutRecord(record=record) for record in records.retried)
            records.retried.clear()
        dropped = records.dropped
        if dropped:
            self._unjournaled.extend(DropResult(id=id) for id in dropped)
            dropped.clear()

    def _journal_ops(self) -> tuple[Op, ...]:
        self._take_dropped()
        ops, self._unjournaled = tuple(self._unjournaled), []
        return ops

    async def _journal_send(self) -> None:
        """Send what the journal has not heard yet, as one ``JournalWrite``
        (sent, not called: nobody waits for it to be durable)."""
        assert self._journal is not None
        ops = self._journal_ops()
        if ops:
            await self._journal.send_batch((JournalWrite(ops=ops),))

    def _journal_send_nowait(self) -> None:
        """The same from where nothing may wait (a snapshot): if the
        journal's mailbox is full, the ops wait for the next send."""
        assert self._journal is not None
        ops = self._journal_ops()
        if ops:
            try:
                self._journal.send_nowait(JournalWrite(ops=ops))
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                self._unjournaled[:0] = ops

    async def _answer_at_deadlines(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Answer parked queries at their deadlines. When the actor stops or
        crashes, the parked queries are answered rather than left hanging."""
        try:
            await self._timer.run(task_status=task_status)
        finally:
            self._waiters.answer_all(trio.current_time())
