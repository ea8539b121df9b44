"""The records the store holds: one per task, moved on by reports, bounded.

``RecordBook.apply`` takes the reports of a batch in order and returns the
records that became final; ``expire`` enforces the TTL, entry and byte
bounds. Plain data, no trio and no waiting: the store passes the time in,
and parked queries live in ``waiters``. See docs/results.md.
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict, deque
from collections.abc import Iterator
from typing import Literal, Union

import attrs

from fastworker.internal import Dispatched, Requeued
from fastworker.messages import (
    Attempt,
    Cancelled,
    Expired,
    Finished,
    Outcome,
    Queued,
    QueuedEntry,
    Released,
    RemoteError,
    Running,
    State,
    TaskRecord,
)
from fastworker.results.stored import RecordCounts, StoredTask, record_size
from fastworker.results.task_metrics import DEFAULT_MAX_NAMES, TaskMetrics

if sys.version_info >= (3, 11):
    from typing import assert_never
else:  # pragma: no cover
    from typing_extensions import assert_never

__all__ = ["REPORTS", "RecordBook", "Report"]

#: The reports that move a record: plain messages (``send``), taken in batches.
Report = Union[Queued, Running, Finished, Cancelled, Requeued, Dispatched, Released, Expired]
REPORTS = (Queued, Running, Finished, Cancelled, Requeued, Dispatched, Released, Expired)

#: The error of a task dropped at its deadline before it started.
_EXPIRED = RemoteError(
    type="TaskExpired", kind="expired",
    message="its deadline (expires) passed while it was still waiting; it was not started")
#: The final state of a task that ended with an error of this kind.
_FINAL_STATE_OF: dict[str, State] = {"expired": "expired", "cancelled": "cancelled"}


class RecordBook:
    """One ``StoredTask`` per task id; final ones expire after ``ttl`` and
    are evicted, least recently used first, past ``max_entries`` final
    records or ``max_bytes`` bytes (all records count). Live ones (queued,
    running) are never evicted, and are bounded by the inbox's capacity."""

    def __init__(self, *, ttl: float, max_entries: int, max_bytes: int,
                 remember_dropped: int = 0, max_task_names: int = DEFAULT_MAX_NAMES) -> None:
        self.ttl = ttl
        #: Final states, run times and queue waits per task name (``/metrics``).
        self.task_metrics = TaskMetrics(max_task_names)
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.counts = RecordCounts()
        #: Bytes counted for every record held.
        self.bytes = 0
        self._tasks: dict[str, StoredTask] = {}
        self._final: OrderedDict[str, StoredTask] = OrderedDict()  # least recently used first
        self._expiry: deque[StoredTask] = deque()  # in the order records became final
        #: Ids of final records dropped by ``expire``, kept only when a
        #: journal must hear of them (``None``: nobody listens).
        self.dropped: list[str] | None = None
        #: Records of live tasks that failed an attempt and wait for their
        #: retry, kept only when a journal must hear of them.
        self.retried: list[TaskRecord] | None = None
        #: The most recently dropped ids and why (``ttl``, ``max_entries``,
        #: ``max_bytes``), at most ``remember_dropped``: a query for one is
        #: answered "unknown" at once instead of waiting for it.
        self.forgotten: OrderedDict[str, str] = OrderedDict()
        self.remember_dropped = remember_dropped
        #: Final records that counted one more duplicate run, with when they
        #: became final (trio's clock), kept only when a journal must hear
        #: of them.
        self.recounted: list[tuple[TaskRecord, float]] | None = None

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def live(self) -> int:
        """Records of tasks not yet final."""
        return len(self._tasks) - len(self._final)

    # -- reports -------------------------------------------------------------

    def apply(self, reports: list[Report], now: float) -> list[TaskRecord]:
        """Apply reports in order; the records that became final, as they
        were then. Bounds are not enforced here (``expire``), so whoever
        waits on a record sees it even if the bounds drop it at once."""
        finalized: list[TaskRecord] = []
        tasks = self._tasks
        for report in reports:
            match report:
                case Queued():
                    for queued in report.entries:
                        self._on_queued(queued)
                case Dispatched(worker=worker, at=at):
                    for id in report.ids:
                        stored = tasks.get(id)
                        if stored is not None:
                            stored.dispatched_at, stored.dispatched_to = at, worker
                case Running(attempts=attempts):
                    for index, id in enumerate(report.ids):
                        attempt = attempts[index] if index < len(attempts) else None
                        self._on_running(id, report.worker, report.started_at, attempt)
                case Requeued():
                    for id, attempt in zip(report.ids, report.attempts):
                        self._on_requeued(id, attempt)
                case Finished():
                    for outcome in report.outcomes:
                        self._on_outcome(outcome, now, finalized)
                case Cancelled():
                    for id in report.ids:
                        self._on_cancelled(id, now, finalized)
                case Released():
                    for id in report.ids:
                        stored = tasks.get(id)
                        if stored is not None and stored.record.state == "scheduled":
                            stored.record = attrs.evolve(stored.record, state="queued")
                case Expired():
                    for id in report.ids:
                        self._on_cancelled(id, now, finalized, state="expired")
                case _:
                    assert_never(report)
        return finalized

    def _on_queued(self, queued: QueuedEntry) -> None:
        """Record a queued task; a late ``Queued`` fills in what it knows
        without moving the state."""
        id = queued.id
        stored = self._tasks.get(id)
        if stored is not None and queued.again and stored.final_at is not None:
            self._let_go(stored)  # its journaled result goes too: the new record replaces it
            stored = None
        if stored is None:
            stored = StoredTask(TaskRecord(
                id=id, state="scheduled" if queued.scheduled_for else "queued", task=queued.task,
                priority=queued.priority, queued_at=queued.queued_at,
                scheduled_for=queued.scheduled_for))
            stored.payload = queued.payload
            stored.size += len(queued.payload)
            self._add(id, stored)
        else:
            old = stored.record
            state = old.state
            if state in ("queued", "scheduled"):  # not yet moved on by the workers
                state = "scheduled" if queued.scheduled_for else "queued"
            stored.record = attrs.evolve(old, state=state, task=queued.task,
                                         priority=queued.priority, queued_at=queued.queued_at,
                                         scheduled_for=queued.scheduled_for)
            stored.payload = queued.payload
            self._resize(stored)
        if queued.retry_of:
            stored.retry_of = queued.retry_of
            retried = self._tasks.get(queued.retry_of)
            if retried is not None:
                retried.retried_as = (*retried.retried_as, id)

    def _on_running(self, id: str, worker: str, started_at: float, attempt: int | None) -> None:
        stored = self._tasks.get(id)
        if stored is None:
            record = TaskRecord(id=id, state="running", attempt=attempt or 1, worker=worker,
                                workers=(worker,), started_at=started_at)
            self._add(id, StoredTask(record))
        elif stored.final_at is not None:
            self.counts.stale_total += 1
        else:
            old = stored.record
            if attempt is not None and attempt < old.attempt:
                self.counts.stale_total += 1  # a lost worker's late start
                return
            if (attempt is not None and attempt == old.attempt and old.workers[-1:] == (worker,)
                    and old.state == "running"):
                return  # a resent Report's Running: the same start again
            stored.record = attrs.evolve(
                old, state="running", worker=worker, workers=(*old.workers, worker),
                started_at=started_at,
                attempt=old.attempt + 1 if attempt is None else attempt,
            )

    def _on_requeued(self, id: str, attempt: int) -> None:
        stored = self._tasks.get(id)
        if stored is None or stored.final_at is not None:
            return  # forgotten, or a lost worker's late result arrived first
        stored.record = attrs.evolve(stored.record, state="queued", attempt=attempt)

    def _on_outcome(self, outcome: Outcome, now: float, finalized: list[TaskRecord]) -> None:
        stored = self._tasks.get(outcome.id)
        if stored is not None and stored.final_at is not None:
            final = stored.record
            if final.attempt == outcome.attempt and final.worker == outcome.worker:
                self.counts.duplicates_total += 1  # a resent report
            else:
                self._count_duplicate_run(stored, outcome, stored.final_at)
            return
        old = stored.record if stored is not None else TaskRecord(id=outcome.id, state="unknown")
        error = outcome.error
        if outcome.retry_in is not None and error is not None:
            self._on_retry(outcome, stored, old, error)
            return
        self.counts.finished_total += 1
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
            duplicate_runs=old.duplicate_runs,
        )
        self._finalize(outcome.id, stored, record, now, finalized)

    def _count_duplicate_run(self, stored: StoredTask, outcome: Outcome,
                             final_at: float | None) -> None:
        """The outcome of a run of the task other than the one its record
        follows: counted in the record and in the totals, once per (attempt,
        worker) (``final_at``: the record is final since, if it is)."""
        run = (outcome.attempt, outcome.worker)
        if run in stored.duplicate_runs:
            self.counts.duplicates_total += 1  # a resent report of that run
            return
        stored.duplicate_runs = (*stored.duplicate_runs, run)
        self.counts.duplicate_runs_total += 1
        record = attrs.evolve(stored.record, duplicate_runs=stored.record.duplicate_runs + 1)
        stored.record = record
        if final_at is not None and self.recounted is not None:
            self.recounted.append((record, final_at))

    def _on_retry(self, outcome: Outcome, stored: StoredTask | None, old: TaskRecord,
                  error: RemoteError) -> None:
        """A failed attempt that runs again after its backoff: kept among the
        record's ``attempts``; the task waits, ``scheduled``, for the retry."""
        if old.attempts and old.attempts[-1].attempt >= outcome.attempt:
            if any(tried.attempt == outcome.attempt and tried.worker == outcome.worker
                   for tried in old.attempts):
                self.counts.duplicates_total += 1  # a resent report
            else:
                # An attempt the record had moved past ran (again) elsewhere.
                assert stored is not None  # old.attempts came from it
                self._count_duplicate_run(stored, outcome, None)
            return
        self.counts.retried_total += 1
        tried = Attempt(attempt=outcome.attempt, worker=outcome.worker,
                        started_at=outcome.started_at or old.started_at,
                        finished_at=outcome.finished_at, error=error)
        assert outcome.retry_in is not None
        record = attrs.evolve(
            old, state="scheduled", attempt=outcome.attempt, worker=outcome.worker,
            workers=old.workers if outcome.worker in old.workers else (
                *old.workers, outcome.worker),
            # Due on this (the control plane's) clock, which holds the retry;
            # finished_at is on the clock of the worker that ran it.
            scheduled_for=time.time() + outcome.retry_in,
            attempts=(*old.attempts, tried))
        if stored is None:
            self._add(outcome.id, StoredTask(record))
        else:
            stored.record = record
            self._resize(stored)
        if self.retried is not None:
            self.retried.append(record)

    def _on_cancelled(
        self, id: str, now: float, finalized: list[TaskRecord],
        state: Literal["cancelled", "expired"] = "cancelled",
    ) -> None:
        """A task that will not run: cancelled, or expired at its deadline."""
        stored = self._tasks.get(id)
        if stored is not None and stored.final_at is not None:
            self.counts.stale_total += 1
            return
        error = _EXPIRED if state == "expired" else None
        if stored is None:
            record = TaskRecord(id=id, state=state, error=error)
        else:
            record = attrs.evolve(stored.record, state=state, error=error,
                                  finished_at=time.time())
        self._finalize(id, stored, record, now, finalized)

    def _finalize(self, id: str, stored: StoredTask | None, record: TaskRecord, now: float,
                  finalized: list[TaskRecord]) -> None:
        if stored is None:
            stored = StoredTask(record)
            self._add(id, stored)
        stored.record = record
        stored.final_at = now
        counts = self.counts
        if record.state == "succeeded":
            counts.succeeded_total += 1
        elif record.state == "failed":
            counts.failed_total += 1
        elif record.state == "expired":
            counts.expired_total += 1
        else:
            counts.cancelled_total += 1
        self.task_metrics.observe(record)
        self._resize(stored)
        self._final[id] = stored
        self._expiry.append(stored)
        finalized.append(record)

    def restore(self, record: TaskRecord, final_at: float) -> bool:
        """Hold ``record``, final since ``final_at`` (trio's clock), as it was
        before a restart; not counted among the totals. Restore the oldest
        first (the TTL takes records in the order given). False if a record
        of that id is held already."""
        id = record.id
        if id in self._tasks:
            return False
        stored = StoredTask(record)
        stored.final_at = final_at
        self._add(id, stored)
        self._final[id] = stored
        self._expiry.append(stored)
        return True

    def restore_live(self, record: TaskRecord) -> bool:
        """Hold the record of a live task as it was before a restart, for
        its earlier ``attempts`` (the inbox's ``Queued`` fills in the rest).
        False if a record of that id is held already."""
        if record.id in self._tasks:
            return False
        self._add(record.id, StoredTask(record))
        return True

    def _add(self, id: str, stored: StoredTask) -> None:
        self._tasks[id] = stored
        self.bytes += stored.size

    def _resize(self, stored: StoredTask) -> None:
        size = record_size(stored.record) + len(stored.payload)
        self.bytes += size - stored.size
        stored.size = size

    # -- bounds --------------------------------------------------------------

    def expire(self, now: float) -> None:
        """Drop final records past their TTL, then the least recently used
        ones while over a bound."""
        expiry, ttl, counts = self._expiry, self.ttl, self.counts
        while expiry and expiry[0].final_at is not None and expiry[0].final_at + ttl <= now:
            stored = expiry.popleft()
            if self._final.get(stored.record.id) is stored:
                self._forget(stored, "ttl")
                counts.evicted_ttl += 1
        while len(self._final) > self.max_entries:
            self._forget(next(iter(self._final.values())), "max_entries")
            counts.evicted_lru += 1
        while self.bytes > self.max_bytes and self._final:
            self._forget(next(iter(self._final.values())), "max_bytes")
            counts.evicted_bytes += 1
        if len(expiry) > 2 * len(self._final) + 64:
            # Records evicted by the bounds linger here; drop them now and then.
            self._expiry = deque(s for s in expiry if self._final.get(s.record.id) is s)

    def _forget(self, stored: StoredTask, reason: str) -> None:
        self._let_go(stored)
        self.remember_forgotten(stored.record.id, reason)

    def _let_go(self, stored: StoredTask) -> None:
        """Drop a final record (the journal hears of it)."""
        id = stored.record.id
        del self._final[id]
        del self._tasks[id]
        self.bytes -= stored.size
        if self.dropped is not None:
            self.dropped.append(id)

    def remember_forgotten(self, id: str, reason: str) -> None:
        """Note that the final record of ``id`` was dropped, for ``reason``
        (the bound that dropped it); the oldest such note goes past
        ``remember_dropped``."""
        forgotten = self.forgotten
        if self.remember_dropped:
            forgotten[id] = reason
            if len(forgotten) > self.remember_dropped:
                forgotten.popitem(last=False)

    # -- reading -------------------------------------------------------------

    def status(self, id: str) -> TaskRecord:
        """The record of ``id`` (``unknown`` if none); a final one counts as used."""
        stored = self._tasks.get(id)
        if stored is None:
            return TaskRecord(id=id, state="unknown")
        if stored.final_at is not None:
            self._final.move_to_end(id)
        return stored.record

    def final(self, id: str) -> TaskRecord | None:
        """The record of ``id`` if it is final (then counted as used), else ``None``."""
        stored = self._tasks.get(id)
        if stored is None or stored.final_at is None:
            return None
        self._final.move_to_end(id)
        return stored.record

    def final_records(self, ids: tuple[str, ...]) -> tuple[TaskRecord, ...]:
        """The final records among ``ids``, each once, counted as used."""
        records = []
        for id in dict.fromkeys(ids):
            stored = self._tasks.get(id)
            if stored is not None and stored.final_at is not None:
                self._final.move_to_end(id)
                records.append(stored.record)
        return tuple(records)

    def get(self, id: str) -> StoredTask | None:
        """What is held about ``id`` (not counted as a use)."""
        return self._tasks.get(id)

    def newest(self) -> Iterator[StoredTask]:
        """Everything held, newest first (not counted as a use)."""
        return reversed(self._tasks.values())

    def oldest(self) -> Iterator[StoredTask]:
        """Everything held, oldest first (not counted as a use)."""
        return iter(self._tasks.values())
