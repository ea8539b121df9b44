"""The ResultStore: records through a task's life, its bounds, and queries
that park until a result arrives (all timed cases under MockClock)."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from actors import GetStats, Ref, Topology, open_node
from actors.requests import Requests
from actors.testing import crash_after
from fastworker.messages import (
    Cancelled,
    Expired,
    Finished,
    Outcome,
    Queued,
    QueuedEntry,
    Records,
    Rejected,
    Released,
    RemoteError,
    ResultQuery,
    Running,
    StatusQuery,
    TaskRecord,
    Watch,
)
from fastworker.limits import MAX_ID_LENGTH, MAX_OFFSET, MAX_PAGE, MAX_QUERY_IDS
from fastworker.results import RECORD_OVERHEAD_BYTES, ResultStore
from fastworker.internal import Dispatched, FailedToRetry, GetTask, Requeued, TaskDetail
from fastworker.messages import ListTasks, TaskPage
from fastworker.stats import ResultStoreStats


#: Virtual seconds a call in a timed test waits before failing instead of hanging.
PATIENCE = 10_000.0


@asynccontextmanager
async def open_store(**options: Any) -> AsyncIterator[Ref[Any]]:
    """A node running only the store; yields the store's ref."""
    async with open_node(Topology().add("results", ResultStore, **options)) as node:
        yield node.refs["results"]


def queued(*ids: str, at: float = 100.0) -> Queued:
    return Queued(entries=tuple(
        QueuedEntry(id=id, task="add", priority=1, queued_at=at) for id in ids
    ))


def done(id: str, value: bytes = b"v", *, attempt: int = 1, worker: str = "w1") -> Outcome:
    return Outcome(id=id, attempt=attempt, worker=worker, value=value,
                   started_at=101.0, finished_at=102.0)


def failed(id: str, *, message: str = "boom", attempt: int = 1) -> Outcome:
    error = RemoteError(type="ValueError", message=message, traceback="Traceback ...")
    return Outcome(id=id, attempt=attempt, worker="w1", error=error,
                   started_at=101.0, finished_at=102.0)


async def status(store: Ref[Any], *ids: str) -> list[TaskRecord]:
    answer = await store.call(StatusQuery(ids=ids))
    assert isinstance(answer, Records)
    return list(answer.records)


async def states(store: Ref[Any], *ids: str) -> list[str]:
    return [record.state for record in await status(store, *ids)]


async def snapshot(store: Ref[Any]) -> ResultStoreStats:
    detail = (await store.call(GetStats())).detail
    assert isinstance(detail, ResultStoreStats)
    return detail


class Pending:
    """A call running in the background; ``answer`` is set once it returns."""

    def __init__(self) -> None:
        self.answer: Any = None
        self.answered_at: float | None = None

    async def run(self, store: Ref[Any], message: Any) -> None:
        self.answer = await store.call(message, timeout=PATIENCE)
        self.answered_at = trio.current_time()


class TestRecords:
    async def test_a_task_goes_from_queued_to_running_to_succeeded(self) -> None:
        """Each report moves the record on and keeps what earlier ones said."""
        async with open_store() as store:
            await store.send(queued("a"))
            assert await states(store, "a") == ["queued"]
            await store.send(Running(ids=("a",), worker="w1", started_at=101.0))
            [record] = await status(store, "a")
            assert (record.state, record.attempt, record.worker) == ("running", 1, "w1")
            await store.send(Finished(outcomes=(done("a", b"42"),)))
            [record] = await status(store, "a")
        assert record == TaskRecord(
            id="a", state="succeeded", task="add", priority=1, attempt=1, worker="w1",
            workers=("w1",), queued_at=100.0, started_at=101.0, finished_at=102.0, value=b"42",
        )

    async def test_a_task_that_raised_is_failed_with_its_error(self) -> None:
        """A Finished carrying an error makes the record failed, with the error text."""
        async with open_store() as store:
            await store.send(queued("a"))
            await store.send(Finished(outcomes=(failed("a"),)))
            [record] = await status(store, "a")
        assert record.state == "failed"
        assert record.error is not None and record.error.message == "boom"
        assert record.value is None

    async def test_a_cancelled_task_stays_cancelled(self) -> None:
        """Cancelled is final: a later Queued or Running does not revive it."""
        async with open_store() as store:
            await store.send(queued("a"))
            await store.send(Cancelled(ids=("a",)))
            await store.send(queued("a"))
            await store.send(Running(ids=("a",), worker="w1", started_at=1.0))
            assert await states(store, "a") == ["cancelled"]
            assert (await snapshot(store)).stale_total == 1

    async def test_a_queued_again_begins_a_new_record_of_a_final_one(self) -> None:
        """A Queued marked ``again`` (a workflow retried from its failed
        step) lets the final record go and begins a new one, which ends
        again like any task's; an unmarked one leaves a final record alone."""
        async with open_store() as store:
            await store.send(queued("wf"))
            await store.send(Finished(outcomes=(failed("wf"),)))
            await store.send(Queued(entries=(QueuedEntry(
                id="wf", task="add", priority=2, queued_at=200.0, again=True),)))
            [record] = await status(store, "wf")
            assert (record.state, record.queued_at, record.error) == ("queued", 200.0, None)
            await store.send(Finished(outcomes=(done("wf", b"second"),)))
            [record] = await status(store, "wf")
            assert (record.state, record.value) == ("succeeded", b"second")
            await store.send(queued("wf", at=300.0))
            assert await states(store, "wf") == ["succeeded"]

    async def test_a_finished_before_its_queued_stays_final(self) -> None:
        """Reports arriving out of order never move a final record back; the
        late Queued only fills in what it knows."""
        async with open_store() as store:
            await store.send(Finished(outcomes=(done("a"),)))
            await store.send(Running(ids=("a",), worker="w2", started_at=1.0))
            await store.send(queued("a", at=99.0))
            [record] = await status(store, "a")
        assert (record.state, record.worker, record.attempt) == ("succeeded", "w1", 1)
        assert (record.task, record.queued_at) == ("add", 99.0)

    async def test_a_running_before_its_queued_stays_running(self) -> None:
        """A late Queued does not move a running record back to queued."""
        async with open_store() as store:
            await store.send(Running(ids=("a",), worker="w1", started_at=1.0))
            await store.send(queued("a"))
            [record] = await status(store, "a")
        assert (record.state, record.task, record.attempt) == ("running", "add", 1)

    async def test_a_redelivered_task_counts_its_attempts(self) -> None:
        """Each Running of a task still live adds one attempt."""
        async with open_store() as store:
            await store.send(queued("a"))
            await store.send(Running(ids=("a",), worker="w1", started_at=1.0))
            await store.send(Running(ids=("a",), worker="w2", started_at=2.0))
            [record] = await status(store, "a")
        assert (record.attempt, record.worker, record.started_at) == (2, "w2", 2.0)

    async def test_a_second_finished_of_the_same_attempt_is_ignored_and_counted(self) -> None:
        """A duplicate report keeps the first outcome and counts the duplicate."""
        async with open_store() as store:
            await store.send(Finished(outcomes=(done("a", b"first"),)))
            await store.send(Finished(outcomes=(done("a", b"second"),)))
            [record] = await status(store, "a")
            stats = await snapshot(store)
        assert record.value == b"first"
        assert (stats.duplicates_total, stats.duplicate_runs_total) == (1, 0)
        assert stats.finished_total == 1

    async def test_a_finished_of_another_attempt_after_final_is_counted_apart(self) -> None:
        """A duplicate execution (another attempt) keeps the first outcome and
        is counted as a duplicate run."""
        async with open_store() as store:
            await store.send(Finished(outcomes=(done("a", b"first"),)))
            await store.send(Finished(outcomes=(done("a", b"again", attempt=2),)))
            [record] = await status(store, "a")
            stats = await snapshot(store)
        assert (record.value, record.attempt) == (b"first", 1)
        assert (stats.duplicates_total, stats.duplicate_runs_total) == (0, 1)

    async def test_an_id_never_seen_is_unknown(self) -> None:
        """A StatusQuery answers state unknown for ids the store has no record of."""
        async with open_store() as store:
            assert await status(store, "nope") == [TaskRecord(id="nope", state="unknown")]


def running(id: str, worker: str, attempt: int, at: float = 1.0) -> Running:
    """A subworker's Running, as the dispatcher passes it on: with its attempt."""
    return Running(ids=(id,), worker=worker, started_at=at, attempts=(attempt,))


class TestRedelivery:
    """Records of jobs requeued after their worker was lost (``Requeued``)."""

    async def test_running_with_attempts_sets_the_attempt_and_lists_the_worker(self) -> None:
        """A Running carrying attempts sets each record's attempt, per id, and
        adds the worker to ``workers``."""
        async with open_store() as store:
            await store.send(queued("a", "b"))
            await store.send(Running(ids=("a", "b"), worker="w1", started_at=1.0,
                                     attempts=(1, 3)))
            a, b = await status(store, "a", "b")
        assert (a.state, a.attempt, a.worker, a.workers) == ("running", 1, "w1", ("w1",))
        assert (b.attempt, b.workers) == (3, ("w1",))

    async def test_requeued_makes_the_record_queued_as_its_next_attempt(self) -> None:
        """Requeued moves a running record back to queued with the attempt it
        will run as; the next Running lists the second worker after the first."""
        async with open_store() as store:
            await store.send(queued("a"))
            await store.send(running("a", "w1", 1))
            await store.send(Requeued(ids=("a",), attempts=(2,)))
            [requeued] = await status(store, "a")
            await store.send(running("a", "w2", 2, at=5.0))
            [record] = await status(store, "a")
        assert (requeued.state, requeued.attempt, requeued.workers) == ("queued", 2, ("w1",))
        assert (record.state, record.attempt, record.worker) == ("running", 2, "w2")
        assert (record.workers, record.started_at) == (("w1", "w2"), 5.0)

    async def test_a_resent_running_does_not_list_its_worker_twice(self) -> None:
        """A subworker resends a Report whose answer it lost: the repeated
        Running of the same attempt on the same worker is not a second start."""
        async with open_store() as store:
            await store.send(queued("a"))
            await store.send(running("a", "w1", 1))
            await store.send(running("a", "w1", 1, at=3.0))
            [record] = await status(store, "a")
        assert (record.attempt, record.workers, record.started_at) == (1, ("w1",), 1.0)

    async def test_a_late_running_of_an_older_attempt_is_stale(self) -> None:
        """A lost worker's Running arriving after the redelivery started is
        counted stale and changes nothing."""
        async with open_store() as store:
            await store.send(queued("a"))
            await store.send(Requeued(ids=("a",), attempts=(2,)))
            await store.send(running("a", "w2", 2))
            await store.send(running("a", "w1", 1, at=9.0))
            [record] = await status(store, "a")
            stats = await snapshot(store)
        assert (record.state, record.attempt, record.worker) == ("running", 2, "w2")
        assert (record.workers, record.started_at) == (("w2",), 1.0)
        assert stats.stale_total == 1

    async def test_a_late_finished_of_the_lost_attempt_is_the_result(self) -> None:
        """The lost worker's result arriving after Requeued(attempt 2) makes
        the record final, once; the redelivered attempt's own result later is
        a duplicate run, counted (in the record too) and not stored; a late
        Requeued changes nothing."""
        async with open_store() as store:
            await store.send(queued("a"))
            await store.send(running("a", "w1", 1))
            await store.send(Requeued(ids=("a",), attempts=(2,)))
            await store.send(Finished(outcomes=(done("a", b"first", attempt=1),)))
            [record] = await status(store, "a")
            await store.send(running("a", "w2", 2))
            await store.send(Finished(outcomes=(done("a", b"second", attempt=2, worker="w2"),)))
            await store.send(Requeued(ids=("a",), attempts=(3,)))
            [after] = await status(store, "a")
            stats = await snapshot(store)
        assert (record.state, record.attempt, record.value) == ("succeeded", 1, b"first")
        assert (record.worker, record.workers) == ("w1", ("w1",))
        assert after == attrs.evolve(record, duplicate_runs=1)
        assert (stats.finished_total, stats.duplicate_runs_total) == (1, 1)
        assert (stats.duplicates_total, stats.stale_total) == (0, 1)


class TestBounds:
    async def test_a_final_record_expires_ttl_seconds_after_it_became_final(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """TTL counts from the Finished, not the Queued: known until then, unknown after."""
        async with open_store(ttl=100.0) as store:
            await store.send(queued("a"))
            await trio.sleep(50)
            await store.send(Finished(outcomes=(done("a"),)))
            await trio.sleep(99.5)
            assert await states(store, "a") == ["succeeded"]
            await trio.sleep(0.5)
            assert await states(store, "a") == ["unknown"]
            stats = await snapshot(store)
        assert (stats.evicted_ttl, stats.entries, stats.bytes) == (1, 0, 0)

    async def test_reading_a_record_does_not_extend_its_ttl(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Queries count as use for LRU, but the TTL still runs from the Finished."""
        async with open_store(ttl=10.0) as store:
            await store.send(Finished(outcomes=(done("a"),)))
            for _ in range(9):
                await trio.sleep(1)
                assert await states(store, "a") == ["succeeded"]
            await trio.sleep(1)
            assert await states(store, "a") == ["unknown"]

    async def test_the_least_recently_used_final_record_goes_past_max_entries(self) -> None:
        """Over the entry bound, the final record read least recently is evicted."""
        async with open_store(max_entries=3) as store:
            await store.send(Finished(outcomes=(done("a"), done("b"), done("c"))))
            await status(store, "a")  # a is now used more recently than b
            await store.send(Finished(outcomes=(done("d"),)))
            assert await states(store, "a", "b", "c", "d") == [
                "succeeded", "unknown", "succeeded", "succeeded"
            ]
            stats = await snapshot(store)
        assert (stats.evicted_lru, stats.entries) == (1, 3)

    async def test_final_records_are_evicted_past_max_bytes(self) -> None:
        """Values, error texts and a constant per record count; the oldest
        used go first when the total passes max_bytes."""
        value_record = RECORD_OVERHEAD_BYTES + 1000
        error_record = RECORD_OVERHEAD_BYTES + len("ValueError") + 4000 + len("Traceback ...")
        async with open_store(max_bytes=2 * value_record + error_record) as store:
            await store.send(Finished(outcomes=(done("a", b"x" * 1000), done("b", b"x" * 1000))))
            await store.send(Finished(outcomes=(failed("c", message="m" * 4000),)))
            assert (await snapshot(store)).bytes == 2 * value_record + error_record
            await store.send(Finished(outcomes=(done("d", b""),)))
            assert await states(store, "a", "b", "c", "d") == [
                "unknown", "succeeded", "failed", "succeeded"
            ]
            stats = await snapshot(store)
        assert stats.evicted_bytes == 1
        assert stats.bytes == value_record + error_record + RECORD_OVERHEAD_BYTES

    async def test_live_records_are_never_evicted(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Queued and running records outlive the TTL and the entry bound,
        and do not count towards it: more live tasks than ``max_entries``
        (a full queue) do not push out the results of those that end; final
        records make room among themselves."""
        async with open_store(max_entries=2, ttl=10_000.0) as store:
            await store.send(queued("a", "b", "c"))
            await store.send(Running(ids=("b",), worker="w1", started_at=1.0))
            await store.send(Finished(outcomes=(done("d"), done("e"))))
            assert await states(store, "d", "e") == ["succeeded", "succeeded"]
            await store.send(Finished(outcomes=(done("f"),)))
            await trio.sleep(1000)
            assert await states(store, "a", "b", "c", "d", "e", "f") == [
                "queued", "running", "queued", "unknown", "succeeded", "succeeded"
            ]
            stats = await snapshot(store)
        assert (stats.entries, stats.live_entries, stats.evicted_lru) == (5, 3, 1)


class TestQueries:
    async def test_a_result_query_is_answered_at_once_when_already_final(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A ResultQuery for a final task answers without waiting."""
        async with open_store() as store:
            await store.send(Finished(outcomes=(done("a", b"42"),)))
            answer = await store.call(ResultQuery(ids=("a",), wait=60))
            assert trio.current_time() == 0
        assert [record.value for record in answer.records] == [b"42"]

    async def test_a_result_query_without_wait_answers_empty_at_once(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """wait=0 (the default) answers with what is final now, maybe nothing."""
        async with open_store() as store:
            await store.send(queued("a"))
            assert await store.call(ResultQuery(ids=("a",))) == Records(records=())
            assert trio.current_time() == 0

    async def test_a_parked_query_wakes_only_when_one_of_its_ids_finishes(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A Finished for another id leaves the query parked; its own answers it."""
        pending = Pending()
        async with open_store() as store, trio.open_nursery() as nursery:
            await store.send(queued("a", "b"))
            nursery.start_soon(pending.run, store, ResultQuery(ids=("a",), wait=60))
            await trio.testing.wait_all_tasks_blocked()
            assert (await snapshot(store)).waiting_queries == 1
            await store.send(Finished(outcomes=(done("b"),)))
            await trio.testing.wait_all_tasks_blocked()
            assert pending.answered_at is None
            await store.send(Finished(outcomes=(done("a", b"42"),)))
            await trio.testing.wait_all_tasks_blocked()
            assert pending.answered_at == 0
            assert (await snapshot(store)).waiting_queries == 0
        assert [(r.id, r.value) for r in pending.answer.records] == [("a", b"42")]

    async def test_a_parked_query_gets_its_record_even_if_the_bounds_drop_it_at_once(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Waiters are answered before the bounds are enforced, so a record
        evicted by the same batch that made it final still reaches them."""
        pending = Pending()
        async with open_store(max_bytes=RECORD_OVERHEAD_BYTES) as store, \
                trio.open_nursery() as nursery:
            nursery.start_soon(pending.run, store, ResultQuery(ids=("b",), wait=60))
            await trio.testing.wait_all_tasks_blocked()
            await store.send(Finished(outcomes=(done("b", b"42"),)))
            await trio.testing.wait_all_tasks_blocked()
            assert await states(store, "b") == ["unknown"]
        assert [record.value for record in pending.answer.records] == [b"42"]

    async def test_a_query_for_an_id_not_yet_known_waits_for_its_finished(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An id the store has not heard of is waited for, not answered unknown."""
        pending = Pending()
        async with open_store() as store, trio.open_nursery() as nursery:
            nursery.start_soon(pending.run, store, ResultQuery(ids=("a",), wait=60))
            await trio.sleep(5)
            await store.send(Finished(outcomes=(done("a"),)))
        assert pending.answered_at == 5
        assert [record.state for record in pending.answer.records] == ["succeeded"]

    async def test_a_parked_query_answers_empty_at_exactly_its_wait(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """With nothing final by the deadline, the answer holds no records,
        sent at exactly wait seconds."""
        async with open_store() as store:
            await store.send(queued("a"))
            answer = await store.call(ResultQuery(ids=("a",), wait=7.5), timeout=PATIENCE)
            assert trio.current_time() == 7.5
            assert (await snapshot(store)).waiting_queries == 0
        assert answer == Records(records=(), waited_out=True)

    async def test_a_later_query_with_an_earlier_deadline_is_answered_first(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The deadline timer moves earlier when a sooner deadline is parked."""
        slow, fast = Pending(), Pending()
        async with open_store() as store, trio.open_nursery() as nursery:
            nursery.start_soon(slow.run, store, ResultQuery(ids=("a",), wait=100))
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(fast.run, store, ResultQuery(ids=("b",), wait=3))
        assert (fast.answered_at, slow.answered_at) == (3, 100)

    async def test_max_wait_caps_how_long_a_query_parks(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A query asking to wait longer than max_wait is answered at max_wait."""
        async with open_store(max_wait=10.0) as store:
            answer = await store.call(ResultQuery(ids=("a",), wait=1000), timeout=PATIENCE)
            assert trio.current_time() == 10
        assert answer == Records(records=(), waited_out=True)

    async def test_a_query_for_many_ids_returns_every_one_final_by_then(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The answer holds all the final ones among its ids, none of the others."""
        async with open_store() as store:
            await store.send(queued("a", "b", "c"))
            await store.send(Finished(outcomes=(done("a"), failed("b"))))
            answer = await store.call(ResultQuery(ids=("a", "b", "c", "d"), wait=60))
            assert trio.current_time() == 0
        assert [(r.id, r.state) for r in answer.records] == [("a", "succeeded"), ("b", "failed")]

    async def test_a_parked_query_for_many_ids_gets_all_of_one_finished_batch(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """One Finished of a thousand outcomes answers a query parked on several
        of them with every one that it made final."""
        ids = tuple(f"t{n}" for n in range(1000))
        pending = Pending()
        async with open_store() as store, trio.open_nursery() as nursery:
            nursery.start_soon(pending.run, store, ResultQuery(ids=("t5", "t999", "x"), wait=60))
            await trio.testing.wait_all_tasks_blocked()
            await store.send(Finished(outcomes=tuple(done(id) for id in ids)))
        assert [record.id for record in pending.answer.records] == ["t5", "t999"]
        assert pending.answered_at == 0

    async def test_a_requests_call_is_answered_once_all_its_queries_are(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Requests from an edge get one reply per message, in order, set when
        the last parked query among them is answered."""
        pending = Pending()
        requests = Requests(messages=(
            StatusQuery(ids=("a", "zz")),
            ResultQuery(ids=("a",), wait=60),
            ResultQuery(ids=("b",), wait=60),
            ResultQuery(ids=("c",), wait=5),
        ), peer="tcp://127.0.0.1:5000")
        async with open_store() as store, trio.open_nursery() as nursery:
            await store.send(queued("b", "c"))
            await store.send(Finished(outcomes=(done("a"),)))
            nursery.start_soon(pending.run, store, requests)
            await trio.testing.wait_all_tasks_blocked()
            await store.send(Finished(outcomes=(done("b"),)))
            await trio.testing.wait_all_tasks_blocked()
            assert pending.answered_at is None  # c is still parked
        assert pending.answered_at == 5
        status_reply, a_reply, b_reply, c_reply = pending.answer
        assert [r.state for r in status_reply.records] == ["succeeded", "unknown"]
        assert [r.id for r in a_reply.records] == ["a"]
        assert [r.id for r in b_reply.records] == ["b"]
        assert c_reply == Records(records=(), waited_out=True)

    async def test_a_requests_call_with_nothing_to_wait_for_is_answered_at_once(self) -> None:
        """Without parked queries the reply list comes straight back; a message
        that is not a query gets None and is counted."""
        async with open_store() as store:
            answer = await store.call(Requests(messages=(
                StatusQuery(ids=("a",)), ResultQuery(ids=("a",)), Cancelled(ids=("a",)),
            )))
            stats = await snapshot(store)
            assert await states(store, "a") == ["unknown"]
        assert answer == [
            Records(records=(TaskRecord(id="a", state="unknown"),)), Records(records=()), None,
        ]
        assert (stats.queries_total, stats.ignored_total) == (2, 1)

    async def test_stopping_answers_parked_queries_with_what_is_final(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A graceful stop answers every parked query instead of leaving it hanging."""
        pending = Pending()
        async with trio.open_nursery() as nursery:
            async with open_store() as store:
                nursery.start_soon(pending.run, store, ResultQuery(ids=("a",), wait=60))
                await trio.testing.wait_all_tasks_blocked()
        assert pending.answer == Records(records=())
        assert pending.answered_at == 0

    async def test_a_crash_answers_parked_queries_instead_of_leaving_them_hanging(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """When the store crashes, its parked queries are answered with what
        was final; the restarted store answers new queries."""
        pending = Pending()
        topology = Topology().add("results", crash_after(ResultStore, 2))
        async with open_node(topology) as node, trio.open_nursery() as nursery:
            store = node.refs["results"]
            await store.send(queued("a"))
            nursery.start_soon(pending.run, store, ResultQuery(ids=("a",), wait=60))
            await trio.testing.wait_all_tasks_blocked()
            await store.send(queued("b"))  # the injected crash
            await trio.testing.wait_all_tasks_blocked()
            assert (pending.answer, pending.answered_at) == (Records(records=()), 0)
            stats = await store.call(GetStats(), timeout=PATIENCE)
        assert stats.restarts == 1
        assert stats.detail.waiting_queries == 0


async def test_the_snapshot_counts_records_waiters_and_traffic(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """stats_detail reports entries, live ones, bytes, parked queries and totals."""
    async with open_store() as store, trio.open_nursery() as nursery:
        await store.send(queued("a", "b", "c"))
        await store.send(Running(ids=("b",), worker="w1", started_at=1.0))
        await store.send(Finished(outcomes=(done("c", b"12345"),)))
        await store.send(Finished(outcomes=(done("c", b"12345"),)))
        await status(store, "a")
        nursery.start_soon(store.call, ResultQuery(ids=("a",), wait=30))
        await trio.testing.wait_all_tasks_blocked()
        stats = await snapshot(store)
        await store.send(Finished(outcomes=(done("a"),)))
    (add,) = stats.tasks  # the task "add" of queued(): its one final record
    assert (add.task, add.states, add.run.count, add.wait.count) == (
        "add", (("succeeded", 1),), 1, 1)
    assert stats == ResultStoreStats(
        entries=3, live_entries=2, bytes=3 * RECORD_OVERHEAD_BYTES + 5, waiting_queries=1,
        finished_total=1, succeeded_total=1, failed_total=0, cancelled_total=0, expired_total=0,
        duplicates_total=1, duplicate_runs_total=0, stale_total=0,
        evicted_ttl=0, evicted_lru=0, evicted_bytes=0, queries_total=2, ignored_total=0,
        tasks=stats.tasks,
    )


@pytest.mark.parametrize("field", ["ttl", "max_entries", "max_bytes", "max_wait"])
def test_negative_bounds_are_refused(field: str) -> None:
    """Options are checked when built: a negative bound is an error."""
    from fastworker.results import ResultStoreOptions

    with pytest.raises(ValueError, match=field):
        ResultStoreOptions(**{field: -1})


class TestWatchSessions:
    """A client's watch session: new ids in, every final record out once."""

    async def test_a_watch_delivers_every_final_record_of_its_session_once(
        self, autojump_clock: object
    ) -> None:
        """Records become ready as tasks finish; one Watch takes them all, and
        they are not delivered again."""
        async with open_store() as store:
            await store.send(queued("a", "b", "c"))
            assert await store.call(Watch(session="s", ids=("a", "b", "c"), wait=0)) == Records(
                records=()
            )
            await store.send(Finished(outcomes=(done("a"), done("b"))))
            answer = await store.call(Watch(session="s", wait=5))
            assert sorted(r.id for r in answer.records) == ["a", "b"]
            await store.send(Finished(outcomes=(done("c"),)))
            again = await store.call(Watch(session="s", wait=5))
            assert [r.id for r in again.records] == ["c"]

    async def test_a_parked_watch_wakes_on_any_session_id(self, autojump_clock: object) -> None:
        """A parked Watch is answered as soon as any id of its session is final."""
        async with open_store() as store, trio.open_nursery() as nursery:
            answers: list[Any] = []
            await store.send(queued("a", "b"))

            async def watch() -> None:
                answers.append(await store.call(Watch(session="s", ids=("a", "b"), wait=60)))

            nursery.start_soon(watch)
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
            await store.send(Finished(outcomes=(done("b"),)))
            await trio.testing.wait_all_tasks_blocked()
            assert [r.id for r in answers[0].records] == ["b"]
            assert not answers[0].waited_out
            assert trio.current_time() == start

    async def test_a_new_watch_sends_the_parked_one_home(self, autojump_clock: object) -> None:
        """A session keeps one parked Watch: a newer one answers the older at once
        (empty, not waited out), so new ids are never held up."""
        async with open_store() as store, trio.open_nursery() as nursery:
            answers: dict[str, Any] = {}
            await store.send(queued("a", "b"))

            async def watch(name: str, ids: tuple[str, ...]) -> None:
                answers[name] = await store.call(Watch(session="s", ids=ids, wait=60))

            nursery.start_soon(watch, "first", ("a",))
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(watch, "second", ("b",))
            await trio.testing.wait_all_tasks_blocked()
            assert answers == {"first": Records(records=())}
            await store.send(Finished(outcomes=(done("a"),)))
            await trio.testing.wait_all_tasks_blocked()
            assert [r.id for r in answers["second"].records] == ["a"]

    async def test_a_watch_past_its_wait_says_so(self, autojump_clock: object) -> None:
        """A Watch with nothing final by its deadline answers waited_out=True."""
        async with open_store() as store:
            await store.send(queued("x"))
            answer = await store.call(Watch(session="s", ids=("x",), wait=3))
        assert answer == Records(records=(), waited_out=True)

    async def test_ids_never_seen_are_named_at_once_and_still_watched(
        self, autojump_clock: object
    ) -> None:
        """A Watch naming ids the store never had a record of is answered at
        once, naming them (its client knows which it has not heard
        accepted); they stay watched, and a record that comes later is
        delivered. A dropped one is not "never seen": its record says why."""
        async with open_store(max_entries=1) as store:
            await store.send(queued("known"))
            await store.send(queued("old"))
            await store.send(Finished(outcomes=(done("old"),)))
            await store.send(queued("newer"))
            await store.send(Finished(outcomes=(done("newer"),)))  # "old" is dropped
            start = trio.current_time()
            answer = await store.call(
                Watch(session="s", ids=("known", "late", "never", "old"), wait=60))
            assert trio.current_time() == start
            assert answer.unknown == ("late", "never")
            assert [(r.id, r.state) for r in answer.records] == [("old", "unknown")]
            assert "max_entries" in answer.records[0].error.message
            await store.send(queued("late"))
            await store.send(Finished(outcomes=(done("late"),)))
            later = await store.call(Watch(session="s", wait=60))
        assert [r.id for r in later.records] == ["late"] and later.unknown == ()

    async def test_idle_sessions_are_forgotten(self, autojump_clock: object) -> None:
        """A session idle for session_ttl is dropped with its watch set."""
        async with open_store(session_ttl=10) as store:
            await store.send(queued("a", "z"))
            await store.call(Watch(session="gone", ids=("a",), wait=0))
            await store.call(Watch(session="other", ids=("z",), wait=30))  # drives the timer
            await store.send(Finished(outcomes=(done("a"),)))
            answer = await store.call(Watch(session="gone", wait=0))
        assert answer.records == ()


class TestHistory:
    """What the dashboard reads: pages of records and one task's details."""

    async def test_pages_list_the_newest_tasks_first_with_the_total(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        async with open_store() as store:
            await store.send(queued(*(f"t{i}" for i in range(7))))
            first = await store.call(ListTasks(limit=3))
            third = await store.call(ListTasks(offset=6, limit=3))
            beyond = await store.call(ListTasks(offset=10, limit=3))
        assert isinstance(first, TaskPage)
        assert ([r.id for r in first.records], first.total) == (["t6", "t5", "t4"], 7)
        assert ([r.id for r in third.records], third.total) == (["t0"], 7)
        assert (beyond.records, beyond.total) == ((), 7)

    async def test_filters_by_state_task_and_part_of_the_id_combine(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        async with open_store() as store:
            await store.send(Queued(entries=(
                QueuedEntry(id="abc-1", task="add", priority=2, queued_at=1.0),
                QueuedEntry(id="abc-2", task="mul", priority=2, queued_at=1.0),
                QueuedEntry(id="xyz-3", task="add", priority=2, queued_at=1.0),
                QueuedEntry(id="abc-4", task="add", priority=2, queued_at=1.0),
            )))
            await store.send(Finished(outcomes=(failed("abc-1"), failed("xyz-3"), done("abc-4"))))
            failed_add = await store.call(ListTasks(state="failed", task="add"))
            abc_failed = await store.call(ListTasks(state="failed", id="abc"))
            mul = await store.call(ListTasks(task="mul"))
            second = await store.call(ListTasks(task="add", offset=1, limit=1))
        assert ([r.id for r in failed_add.records], failed_add.total) == (["xyz-3", "abc-1"], 2)
        assert [r.id for r in abc_failed.records] == ["abc-1"]
        assert [r.id for r in mul.records] == ["abc-2"]
        assert ([r.id for r in second.records], second.total) == (["xyz-3"], 3)

    async def test_the_failed_tasks_to_retry_are_those_not_yet_retried_before_a_time(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """``FailedToRetry``: failed tasks with their arguments held, not
        retried yet, queued before ``before``, of ``task``; oldest first, at
        most ``limit``, and how many more."""
        async with open_store() as store:
            await store.send(Queued(entries=tuple(
                QueuedEntry(id=id, task=task, priority=2, queued_at=at, payload=payload)
                for id, task, at, payload in (
                    ("f1", "add", 1.0, b"a"), ("f2", "add", 2.0, b"a"), ("f3", "mul", 3.0, b"a"),
                    ("gone", "add", 4.0, b""), ("ok", "add", 5.0, b"a"), ("f4", "add", 6.0, b"a"),
                    ("late", "add", 50.0, b"a")))))
            await store.send(Finished(outcomes=tuple(
                failed(id) for id in ("f1", "f2", "f3", "gone", "f4", "late"))))
            await store.send(Finished(outcomes=(done("ok"),)))
            await store.send(Queued(entries=(QueuedEntry(
                id="f2-retry1", task="add", priority=2, queued_at=7.0, payload=b"a",
                retry_of="f2"),)))
            found, more = await store.call(FailedToRetry(task="add", limit=1, before=10.0))
            assert [d.record.id for d in found] == ["f1"] and more == 1  # f4 is the other
            found, more = await store.call(FailedToRetry(limit=10, before=10.0))
            assert [d.record.id for d in found] == ["f1", "f3", "f4"] and more == 0
            found, more = await store.call(FailedToRetry(limit=10))
            assert [d.record.id for d in found] == ["f1", "f3", "f4", "late"]

    async def test_a_tasks_detail_has_its_payload_dispatch_and_retry_links(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The payload queued with it, the last dispatch, and the links
        between a task and the task that retries it."""
        async with open_store() as store:
            await store.send(Queued(entries=(
                QueuedEntry(id="a", task="add", priority=2, queued_at=1.0, payload=b"args"),)))
            await store.send(Dispatched(ids=("a",), worker="w1", at=5.0))
            await store.send(Finished(outcomes=(failed("a"),)))
            await store.send(Queued(entries=(
                QueuedEntry(id="b", task="add", priority=2, queued_at=9.0, payload=b"args",
                            retry_of="a"),)))
            old = await store.call(GetTask(id="a"))
            new = await store.call(GetTask(id="b"))
            missing = await store.call(GetTask(id="nope"))
            stats = await snapshot(store)
        assert isinstance(old, TaskDetail)
        assert (old.record.state, old.payload, old.dispatched_at, old.dispatched_to) == (
            "failed", b"args", 5.0, "w1")
        assert (old.retry_of, old.retried_as) == ("", ("b",))
        assert (new.record.state, new.retry_of, new.dispatched_at) == ("queued", "a", 0.0)
        assert missing is None
        # Payloads are counted against max_bytes.
        error_bytes = len("ValueError") + len("boom") + len("Traceback ...")
        assert stats.bytes == 2 * RECORD_OVERHEAD_BYTES + 2 * len(b"args") + error_bytes
        assert (stats.failed_total, stats.succeeded_total) == (1, 0)


class TestScheduledAndExpired:
    async def test_a_scheduled_task_reads_scheduled_then_queued(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        async with open_store() as store:
            await store.send(Queued(entries=(QueuedEntry(
                id="s", task="add", priority=2, queued_at=1.0, scheduled_for=61.0),)))
            [scheduled] = await status(store, "s")
            await store.send(Released(ids=("s",)))
            released = await states(store, "s")
        assert (scheduled.state, scheduled.scheduled_for) == ("scheduled", 61.0)
        assert released == ["queued"]

    async def test_an_expired_task_is_final_with_a_task_expired_error(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Dropped by the inbox, or refused by an executor past its
        deadline: either way the record is final, ``expired``, and a
        waiting query is answered."""
        async with open_store() as store, trio.open_nursery() as nursery:
            await store.send(queued("a", "b"))
            pending = Pending()
            nursery.start_soon(pending.run, store, ResultQuery(ids=("a",), wait=60))
            await trio.testing.wait_all_tasks_blocked()
            await store.send(Expired(ids=("a",)))
            late = RemoteError(type="TaskExpired", message="too late", kind="expired")
            await store.send(Finished(outcomes=(Outcome(id="b", attempt=1, worker="w1",
                                                        error=late),)))
            records = await status(store, "a", "b")
            stats = await snapshot(store)
        assert [r.state for r in records] == ["expired", "expired"]
        assert records[0].error is not None and records[0].error.type == "TaskExpired"
        assert [r.id for r in pending.answer.records] == ["a"]
        assert (stats.expired_total, stats.failed_total) == (2, 0)


class TestRetries:
    async def test_a_retried_attempt_is_kept_and_the_task_waits_scheduled(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Each failed attempt that runs again is kept in ``attempts``; the
        task is not final meanwhile (a waiting query keeps waiting), and its
        final record keeps them all. The retry is due ``retry_in`` after the
        store heard of it, on the store's clock (the worker's ``finished_at``
        is on the worker's, which may be far off)."""
        first = attrs.evolve(failed("a", message="one"), retry_in=2.0, started_at=10.0,
                             finished_at=11.0)
        second = attrs.evolve(failed("a", message="two", attempt=2), retry_in=4.0,
                              worker="w2", finished_at=20.0)
        async with open_store() as store, trio.open_nursery() as nursery:
            await store.send(queued("a"))
            pending = Pending()
            nursery.start_soon(pending.run, store, ResultQuery(ids=("a",), wait=60))
            await store.send(running("a", "w1", 1))
            before = time.time()
            await store.send(Finished(outcomes=(first,)))
            await store.send(Finished(outcomes=(first,)))  # resent: changes nothing
            [waiting] = await status(store, "a")
            after = time.time()
            await store.send(Released(ids=("a",)))
            await store.send(running("a", "w2", 2))
            await store.send(Finished(outcomes=(second,)))
            await store.send(Released(ids=("a",)))
            await store.send(running("a", "w1", 3))
            await trio.testing.wait_all_tasks_blocked()
            assert pending.answer is None
            await store.send(Finished(outcomes=(done("a", attempt=3),)))
            [final] = await status(store, "a")
            stats = await snapshot(store)
        assert (waiting.state, waiting.attempt) == ("scheduled", 1)
        assert before + 2.0 <= waiting.scheduled_for <= after + 2.0
        assert [(a.attempt, a.worker, a.error.message) for a in waiting.attempts] == [
            (1, "w1", "one")]
        assert (final.state, final.attempt, final.workers) == ("succeeded", 3, ("w1", "w2", "w1"))
        assert [(a.attempt, a.error.message) for a in final.attempts] == [(1, "one"), (2, "two")]
        assert pending.answer is not None
        assert (stats.retried_total, stats.duplicates_total, stats.finished_total) == (2, 1, 1)


class TestDuplicateRuns:
    """Runs of a task beyond the one its record follows (at-least-once
    delivery allows them): counted in the record and in the totals."""

    async def test_a_frozen_worker_that_wakes_up_is_counted_in_the_record(self) -> None:
        """A worker thought lost finishes its attempt after the redelivered
        attempt made the record final: the first outcome stays, the record's
        ``duplicate_runs`` and the store's ``duplicate_runs_total`` count the
        second run, and a resent report of that run counts nothing more."""
        late = done("a", b"late", attempt=1, worker="w1")
        async with open_store() as store:
            await store.send(queued("a"))
            await store.send(running("a", "w1", 1))
            await store.send(Requeued(ids=("a",), attempts=(2,)))
            await store.send(running("a", "w2", 2))
            await store.send(Finished(outcomes=(done("a", b"kept", attempt=2, worker="w2"),)))
            [final] = await status(store, "a")
            await store.send(Finished(outcomes=(late,)))
            [counted] = await status(store, "a")
            await store.send(Finished(outcomes=(late,)))  # resent after a lost answer
            [again] = await status(store, "a")
            stats = await snapshot(store)
        assert (final.value, final.duplicate_runs) == (b"kept", 0)
        assert counted == attrs.evolve(final, duplicate_runs=1)
        assert again == counted
        assert (stats.duplicate_runs_total, stats.duplicates_total) == (1, 1)
        assert stats.finished_total == 1

    async def test_the_same_attempt_on_another_worker_is_a_duplicate_run(self) -> None:
        """One attempt run by two workers (it reached both): the second
        outcome is a duplicate run, not a resent report."""
        async with open_store() as store:
            await store.send(queued("a"))
            await store.send(Finished(outcomes=(done("a", b"one", worker="w1"),)))
            await store.send(Finished(outcomes=(done("a", b"two", worker="w2"),)))
            [record] = await status(store, "a")
            stats = await snapshot(store)
        assert (record.value, record.worker, record.duplicate_runs) == (b"one", "w1", 1)
        assert (stats.duplicate_runs_total, stats.duplicates_total) == (1, 0)

    async def test_a_failed_attempt_run_twice_is_counted_while_the_task_waits(self) -> None:
        """A failed attempt reported by a worker other than the one the record
        kept it from is a duplicate run; the task still waits for its retry
        and the count stays with it to its final record."""
        first = attrs.evolve(failed("a"), retry_in=5.0)
        elsewhere = attrs.evolve(first, worker="w9")
        async with open_store() as store:
            await store.send(queued("a"))
            await store.send(Finished(outcomes=(first,)))
            await store.send(Finished(outcomes=(elsewhere,)))
            [waiting] = await status(store, "a")
            await store.send(Finished(outcomes=(done("a", attempt=2),)))
            [final] = await status(store, "a")
            stats = await snapshot(store)
        assert (waiting.state, waiting.duplicate_runs, len(waiting.attempts)) == (
            "scheduled", 1, 1)
        assert (final.state, final.duplicate_runs) == ("succeeded", 1)
        assert (stats.duplicate_runs_total, stats.retried_total) == (1, 1)


class TestQueryLimits:
    """Queries a client sent are checked against ``fastworker.limits``: one
    over a limit is answered ``Rejected`` naming it, and nothing is kept."""

    @pytest.mark.parametrize(("query", "message"), [
        (StatusQuery(ids=("a",) * (MAX_QUERY_IDS + 1)),
         f"StatusQuery names {MAX_QUERY_IDS + 1} ids; the limit is {MAX_QUERY_IDS}"),
        (ResultQuery(ids=("x" * 1_000_000,), wait=5.0),
         f"ResultQuery id is 1000000 characters; the limit is {MAX_ID_LENGTH}"),
        (ResultQuery(ids=("a",), wait=math.nan), "ResultQuery wait nan is not a number of "
         "seconds >= 0"),
        (Watch(session="s", ids=("a",), wait=math.inf), "Watch wait inf is not a number of "
         "seconds >= 0"),
        (Watch(session="s", ids=("a",), wait=-1.0), "Watch wait -1.0 is not a number of "
         "seconds >= 0"),
        (Watch(session="s" * 300), f"Watch session is 300 characters; the limit is "
         f"{MAX_ID_LENGTH}"),
        (ListTasks(limit=MAX_PAGE + 1), f"ListTasks limit {MAX_PAGE + 1} is not within "
         f"1..{MAX_PAGE}"),
        (ListTasks(limit=0), f"ListTasks limit 0 is not within 1..{MAX_PAGE}"),
        (ListTasks(offset=-1), f"ListTasks offset -1 is not within 0..{MAX_OFFSET}"),
        (ListTasks(offset=2**63), f"ListTasks offset {2**63} is not within 0..{MAX_OFFSET}"),
        (ListTasks(state="sleeping"), "ListTasks state 'sleeping' is not one of scheduled, "
         "queued, running, succeeded, failed, cancelled, expired, unknown"),
        (ListTasks(task="t" * 600), "ListTasks task is 600 characters; the limit is 512"),
    ], ids=["too_many_ids", "id_too_long", "nan_wait", "inf_wait", "negative_wait",
            "session_too_long", "page_too_large", "empty_page", "negative_offset",
            "huge_offset", "no_such_state", "name_too_long"])
    async def test_a_query_over_a_limit_is_rejected_naming_it(
        self, query: Any, message: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        async with open_store() as store:
            with trio.fail_after(PATIENCE):  # a NaN wait once parked the query for good
                answer = await store.call(Requests(messages=(query, StatusQuery(ids=("b",)))))
            stats = await snapshot(store)
        assert answer == [
            Rejected(id="", error="InvalidSubmission", message=message),
            Records(records=(TaskRecord(id="b", state="unknown"),)),
        ]
        assert (stats.rejected_total, stats.queries_total, stats.waiting_queries) == (1, 1, 0)

    async def test_a_clients_page_is_one_per_request_and_carries_no_values(self) -> None:
        """A ListTasks from a client's frame (it may read every record) is
        answered once per request, with records stripped of values and
        tracebacks (one StatusQuery away); a second in the frame is refused."""
        async with open_store() as store:
            await store.send(queued("a", "b"))
            await store.send(Finished(outcomes=(done("a", b"x" * 1000), failed("b"))))
            answer = await store.call(Requests(messages=(ListTasks(), ListTasks(limit=1))))
        page, second = answer
        assert isinstance(page, TaskPage) and page.total == 2
        assert {r.id: (r.state, r.value) for r in page.records} == {
            "a": ("succeeded", None), "b": ("failed", None)}
        assert [r.error.traceback for r in page.records if r.error] == [""]
        assert second == Rejected(id="", error="InvalidSubmission",
                                  message="one ListTasks per request: each may read every record")

    async def test_a_query_at_the_limits_is_answered(self) -> None:
        """The limits themselves are allowed."""
        ids = tuple(f"{n:0{MAX_ID_LENGTH}d}" for n in range(MAX_QUERY_IDS))
        async with open_store() as store:
            answer = await store.call(StatusQuery(ids=ids))
        assert isinstance(answer, Records) and len(answer.records) == MAX_QUERY_IDS
