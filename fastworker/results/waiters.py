"""Queries that wait for a result: parked ResultQuery and Watch, and watch sessions.

A query with nothing final to answer yet keeps its slot in its call's
``Answers`` here; it is answered when one of its records becomes final
(``on_final``), at its deadline (``answer_due``), or on stop
(``answer_all``). Plain data, no trio: the store passes the time in and
runs the timer. See docs/results.md.
"""

from __future__ import annotations

import attrs

from actors.requests import Answers
from actors.timers import DueHeap
from fastworker.messages import Records, ResultQuery, TaskRecord, Watch
from fastworker.results.records import RecordBook

__all__ = ["Waiters"]


class Waiters:
    """Parked queries by the ids they wait on and by deadline, and the
    clients' watch sessions.

    Args:
        records: where final records are read (a read counts as a use).
        max_wait: the longest a query may park, in seconds.
        session_ttl: seconds after which an idle session is forgotten.
        epoch: the store's incarnation, put in every ``Records``.
    """

    def __init__(self, records: RecordBook, *, max_wait: float, session_ttl: float,
                 epoch: str = "") -> None:
        self._records = records
        self.epoch = epoch
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
        records = self._records.final_records(query.ids)
        wait = min(query.wait, self.max_wait)
        if records or wait <= 0 or not query.ids:
            answers.values[index] = Records(records=records, epoch=self.epoch)
            return
        self._park(_ParkedQuery(ids=query.ids, answers=answers, index=index), now + wait)

    def watch(self, query: Watch, answers: Answers, index: int, now: float) -> None:
        """Add the ids of ``query`` to its session and answer with the
        session's ready records, or park it until there are some."""
        session = self._session(query, now)
        wait = min(query.wait, self.max_wait)
        # A Watch that names another epoch comes from before a restart:
        # answered at once, so its client learns of the restart now.
        if session.ready or wait <= 0 or query.epoch not in ("", self.epoch):
            answers.values[index] = Records(records=session.take(), epoch=self.epoch)
            return
        if session.parked is not None:
            # One parked Watch per session: the older one goes home.
            self._answer(session.parked, now)
        parked = _ParkedQuery(ids=(), answers=answers, index=index, session=session)
        session.parked = parked
        self._park(parked, now + wait)

    def _session(self, query: Watch, now: float) -> _WatchSession:
        """The query's session, with its new ids added (or made ready)."""
        session = self._sessions.get(query.session)
        if session is None:
            session = self._sessions[query.session] = _WatchSession(name=query.session)
        session.last_seen = now
        for id in query.ids:
            record = self._records.final(id)
            if record is not None:
                session.ready.append(record)
            elif id not in session.ids:
                session.ids.add(id)
                self._watched.setdefault(id, set()).add(session)
        return session

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
            records = session.take()
        else:
            records = self._records.final_records(parked.ids)
        answers = parked.answers
        if answers.fill(parked.index, Records(records=records, waited_out=waited_out,
                                                   epoch=self.epoch)):
            answers.send()

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

    def take(self) -> tuple[TaskRecord, ...]:
        """The ready records, delivered once."""
        records, self.ready = tuple(self.ready), []
        return records
