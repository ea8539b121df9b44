"""Queries that wait for a result: parked ResultQuery and Watch, and watch sessions.

A query with nothing final to answer yet keeps its slot in its call's
``Answers`` here; it is answered when one of its records becomes final
(``on_final``), at its deadline (``answer_due``), or on stop
(``answer_all``). Plain data, no trio: the store passes the time in and
runs the timer. See docs/results.md.

A Watch is answered with at most what one frame can carry
(``max_reply_bytes``, by ``reply_size``'s estimate of each record): the
rest stays ready in the session for its next Watch, and a parked Watch is
never left waiting while records are ready. A record that could never fit
is delivered as failed (``ResultTooLarge``). Records are taken from a
session only for an answer; if the edge could not send that answer, it
hands them back (``give_back``) and they are delivered again, fewer at a
time. An id whose record the bounds dropped is answered ``unknown`` at
once, not waited for.
"""

from __future__ import annotations

import attrs

from actors.requests import Answers
from actors.timers import DueHeap
from fastworker.messages import Records, RemoteError, ResultQuery, TaskRecord, Watch
from fastworker.results.records import RecordBook

__all__ = ["REPLY_RECORD_OVERHEAD", "Waiters", "reply_size"]

#: Bytes an encoded ``TaskRecord`` may take besides its strings and value
#: (field names, numbers, msgpack headers), with room to spare.
REPLY_RECORD_OVERHEAD = 400
#: The same for each earlier attempt a record carries.
_ATTEMPT_OVERHEAD = 160

#: What the bounds that drop records are called in a ``ResultUnknown``.
_DROPPED_BY = {
    "ttl": "its time to live (ttl) ran out",
    "max_entries": "the store held more than max_entries results",
    "max_bytes": "the store held more than max_bytes bytes of results",
}


def reply_size(record: TaskRecord) -> int:
    """An upper estimate of ``record``'s encoded size in a reply, in bytes:
    its strings and value plus a fixed allowance per record and attempt
    (a few ``len`` calls: cheap enough for every delivered record)."""
    size = (REPLY_RECORD_OVERHEAD + len(record.id) + len(record.task) + len(record.worker)
            + len(record.value or b""))
    for worker in record.workers:
        size += len(worker) + 8
    error = record.error
    if error is not None:
        size += len(error.type) + len(error.message) + len(error.traceback)
    for attempt in record.attempts:
        size += _ATTEMPT_OVERHEAD + len(attempt.worker)
        error = attempt.error
        if error is not None:
            size += len(error.type) + len(error.message) + len(error.traceback)
    return size


class Waiters:
    """Parked queries by the ids they wait on and by deadline, and the
    clients' watch sessions.

    Args:
        records: where final records are read (a read counts as a use).
        max_wait: the longest a query may park, in seconds.
        session_ttl: seconds after which an idle session is forgotten.
        epoch: the store's incarnation, put in every ``Records``.
        max_reply_bytes: the most record bytes (by ``reply_size``) one
            Watch answer carries; ``0``: no limit.
    """

    def __init__(self, records: RecordBook, *, max_wait: float, session_ttl: float,
                 epoch: str = "", max_reply_bytes: int = 0) -> None:
        self._records = records
        self.epoch = epoch
        self.max_reply_bytes = max_reply_bytes
        #: Records delivered as ``ResultTooLarge``: no answer could carry them.
        self.too_large_total = 0
        self.max_wait = max_wait
        self.session_ttl = session_ttl
        self._waiting: dict[str, set[_ParkedQuery]] = {}  # id -> ResultQueries parked on it
        self._deadlines: DueHeap[_ParkedQuery, _ParkedQuery] = DueHeap()
        self._sessions: dict[str, _WatchSession] = {}
        self._watched: dict[str, set[_WatchSession]] = {}  # id -> sessions watching it
        self._next_sweep = 0.0

    def __len__(self) -> int:
        """Queries parked now."""
        return len(self._deadlines)

    def next_at(self) -> float:
        """When the earliest parked query is due (``inf``: none is parked)."""
        return self._deadlines.next_at

    # -- asking --------------------------------------------------------------

    def result_query(self, query: ResultQuery, answers: Answers, index: int, now: float) -> None:
        """Answer ``query`` in ``answers.values[index]`` with the final records
        among its ids, or park it there until one is final."""
        records = self._final_or_forgotten(query.ids)
        wait = min(query.wait, self.max_wait)
        if records or wait <= 0 or not query.ids:
            answers.values[index] = Records(records=records, epoch=self.epoch)
            return
        self._park(_ParkedQuery(ids=query.ids, answers=answers, index=index), now + wait)

    def watch(self, query: Watch, answers: Answers, index: int, now: float) -> None:
        """Add the ids of ``query`` to its session and answer with the
        session's ready records, or park it until there are some."""
        session, unknown = self._session(query, now)
        wait = min(query.wait, self.max_wait)
        # A Watch that names another epoch comes from before a restart:
        # answered at once, so its client learns of the restart now. One
        # that names ids never seen here is too: its client decides which
        # were never submitted (it knows those not yet accepted).
        if session.ready or wait <= 0 or query.epoch not in ("", self.epoch) or unknown:
            answers.values[index] = Records(records=self._take(session), epoch=self.epoch,
                                            unknown=tuple(unknown))
            if session.ready and session.parked is not None:
                # More than one answer could carry: the parked Watch takes the next part.
                self._answer(session.parked, now)
            return
        if session.parked is not None:
            # One parked Watch per session: the older one goes home.
            self._answer(session.parked, now)
        parked = _ParkedQuery(ids=(), answers=answers, index=index, session=session)
        session.parked = parked
        self._park(parked, now + wait)

    def _session(self, query: Watch, now: float) -> tuple[_WatchSession, list[str]]:
        """The query's session, with its new ids added (or made ready); and
        the ids among them the store has never had a record of."""
        session = self._sessions.get(query.session)
        if session is None:
            session = self._sessions[query.session] = _WatchSession(name=query.session)
        session.last_seen = now
        records = self._records
        unknown = []
        for id in query.ids:
            record = records.final(id)
            if record is not None:
                session.ready.append(record)
                continue
            held = records.get(id)
            if held is None and id in records.forgotten:
                session.ready.append(self._forgotten_record(id))
                continue
            if held is None:
                unknown.append(id)
            if id not in session.ids:
                session.ids.add(id)
                self._watched.setdefault(id, set()).add(session)
        return session, unknown

    def _park(self, parked: _ParkedQuery, deadline: float) -> None:
        parked.answers.later()
        for id in parked.ids:
            self._waiting.setdefault(id, set()).add(parked)
        self._deadlines.push(deadline, parked, parked)

    # -- answering -----------------------------------------------------------

    def on_final(self, finalized: list[TaskRecord], now: float) -> None:
        """Records became final (as they were then): make them ready in the
        sessions that watch them, and answer the queries they complete."""
        if not (self._waiting or self._watched):
            return
        woken: dict[_ParkedQuery | _WatchSession, None] = {}
        for record in finalized:
            id = record.id
            for parked in self._waiting.pop(id, ()):
                woken[parked] = None
            for session in self._watched.pop(id, ()):
                session.ids.discard(id)
                session.ready.append(record)
                woken[session] = None
        for waiter in woken:
            if isinstance(waiter, _WatchSession):
                if waiter.parked is not None:
                    self._answer(waiter.parked, now)
            elif waiter in self._deadlines:
                self._answer(waiter, now)

    def answer_due(self, now: float) -> None:
        """Answer the queries whose deadline has come (``waited_out``), and
        forget sessions idle for ``session_ttl``."""
        for parked in self._deadlines.pop_due(now):
            self._answer(parked, now, waited_out=True)
        self._sweep_sessions(now)

    def answer_all(self, now: float) -> None:
        """On stop: answer every parked query with what is final now."""
        for parked in self._deadlines.pop_all():
            self._answer(parked, now)

    def _answer(self, parked: _ParkedQuery, now: float, *, waited_out: bool = False) -> None:
        """Answer a parked query with what is final now."""
        self._deadlines.discard(parked)
        for id in parked.ids:
            waiting = self._waiting.get(id)
            if waiting is not None:
                waiting.discard(parked)
                if not waiting:
                    del self._waiting[id]
        session = parked.session
        if session is not None:
            if session.parked is parked:
                session.parked = None
            session.last_seen = now
            records = self._take(session)
        else:
            records = self._final_or_forgotten(parked.ids)
        answers = parked.answers
        if answers.fill(parked.index, Records(records=records, waited_out=waited_out,
                                                   epoch=self.epoch)):
            answers.send()

    def give_back(self, session_name: str, records: tuple[TaskRecord, ...], now: float, *,
                  alone: bool = True) -> None:
        """Records of an answer to a Watch of ``session_name`` that could not
        be sent (too large for a frame after all): ready again, first, and
        from now on at most half as many per answer; a record that could
        not be sent ``alone`` (no other answer of its request carried
        records) is delivered as failed (``ResultTooLarge``)."""
        if not records:
            return
        session = self._sessions.get(session_name)
        if session is None:
            session = self._sessions[session_name] = _WatchSession(name=session_name)
        session.last_seen = now
        if len(records) == 1 and alone:
            records = (self._too_large(records[0], reply_size(records[0])),)
        else:
            session.max_records = max(1, len(records) // 2)
        session.ready[:0] = records
        if session.parked is not None:
            self._answer(session.parked, now)

    def _take(self, session: _WatchSession) -> tuple[TaskRecord, ...]:
        """The session's ready records that fit one answer, oldest first,
        delivered once; the rest stay ready for its next Watch."""
        ready = session.ready
        budget = self.max_reply_bytes
        if not budget:
            records, session.ready = tuple(ready), []
            return records
        limit = min(len(ready), session.max_records)
        taken: list[TaskRecord] = []
        used = 0
        for record in ready[:limit]:
            size = reply_size(record)
            if size > budget:
                if taken:
                    break  # it goes alone, in the next answer
                taken.append(self._too_large(record, size))
                break
            if used + size > budget:
                break
            used += size
            taken.append(record)
        del ready[:len(taken)]
        return tuple(taken)

    def _too_large(self, record: TaskRecord, size: int) -> TaskRecord:
        """What is delivered instead of a record that no answer can carry."""
        self.too_large_total += 1
        return TaskRecord(
            id=record.id, state="failed", task=record.task, priority=record.priority,
            attempt=record.attempt, worker=record.worker, workers=record.workers,
            queued_at=record.queued_at, started_at=record.started_at,
            finished_at=record.finished_at, attempts=record.attempts,
            error=RemoteError(type="ResultTooLarge", message=(
                f"the record of task {record.id} takes about {size} bytes, more than one "
                f"answer can carry ({self.max_reply_bytes} bytes, from the control plane's "
                f"max_frame_bytes): its {record.state} result cannot be delivered; raise "
                f"FASTWORKER_MAX_FRAME_BYTES (and the client's max_frame_bytes), or return "
                f"less (docs/results.md)")))

    def _forgotten_record(self, id: str) -> TaskRecord:
        """The "unknown" record of an id whose record the bounds dropped."""
        reason = self._records.forgotten.get(id, "")
        return TaskRecord(id=id, state="unknown", error=RemoteError(
            type="ResultUnknown",
            message=(f"the result of task {id} is no longer held by the control plane: "
                     f"{_DROPPED_BY.get(reason, 'it was dropped')} (docs/results.md#bounds)")))

    def _final_or_forgotten(self, ids: tuple[str, ...]) -> tuple[TaskRecord, ...]:
        """The final records among ``ids``, and an "unknown" one for each id
        the bounds dropped."""
        records = self._records
        found = records.final_records(ids)
        forgotten = records.forgotten
        if not forgotten:
            return found
        dropped = tuple(self._forgotten_record(id) for id in dict.fromkeys(ids)
                        if id in forgotten and records.get(id) is None)
        return found + dropped if dropped else found

    def _sweep_sessions(self, now: float) -> None:
        """Forget sessions idle for ``session_ttl`` (their client is gone)."""
        if now < self._next_sweep:
            return
        ttl = self.session_ttl
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


@attrs.define(eq=False)
class _ParkedQuery:
    """A parked ResultQuery (the ids it waits on) or Watch (its session),
    and its slot in its call's answers."""

    ids: tuple[str, ...]
    answers: Answers
    index: int
    session: _WatchSession | None = None


@attrs.define(eq=False)
class _WatchSession:
    """One client's watch set: ids not yet final, records ready to deliver,
    and its parked Watch (at most one)."""

    name: str
    ids: set[str] = attrs.field(factory=set)
    ready: list[TaskRecord] = attrs.field(factory=list)
    parked: _ParkedQuery | None = None
    last_seen: float = 0.0
    #: The most records one answer carries (lowered when an answer could
    #: not be sent).
    max_records: int = 1 << 30
