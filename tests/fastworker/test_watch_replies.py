"""Watch answers within one frame, answers the edge could not send, and ids
the store dropped (all timed cases under MockClock).

A Watch answer carries at most what one frame of the queries edge can hold;
the rest waits in the session for its next Watch, nothing is delivered
twice or lost. An id whose record the bounds dropped is answered
``unknown`` at once; one never seen is named at once (``Records.unknown``)
and still watched (its ``Queued`` may be on its way: the client decides).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from actors import FrameError, Framer, Ref, Topology, Unsent, open_node
from fastworker.client.poller import ResultPoller
from fastworker.errors import AnswerTooLarge
from fastworker.messages import (
    CODEC,
    Accepted,
    Finished,
    Outcome,
    Records,
    ResultQuery,
    Submit,
    TaskRecord,
    Watch,
)
from fastworker.results import ResultStore
from tests.fastworker.test_results import queued, snapshot

#: The queries edge's frame limit in these tests: small, so a few records fill it.
FRAME = 64 * 1024


@asynccontextmanager
async def open_store(**options: Any) -> AsyncIterator[Ref[Any]]:
    """A node running only the store; yields the store's ref."""
    async with open_node(Topology().add("results", ResultStore, **options)) as node:
        yield node.refs["results"]


def big(id: str, size: int) -> Outcome:
    """A succeeded outcome whose value takes ``size`` bytes."""
    return Outcome(id=id, attempt=1, worker="w1", value=bytes(size),
                   started_at=101.0, finished_at=102.0)


def frame_of(answer: Records) -> int:
    """The size of the reply frame that carries ``answer`` (it must fit)."""
    return len(Framer(CODEC, max_frame_bytes=FRAME).pack([answer]))


async def watch_until(store: Ref[Any], count: int) -> tuple[list[TaskRecord], list[int]]:
    """Watch (wait 0) until ``count`` records came; the records and the
    size of each answer's frame."""
    records: list[TaskRecord] = []
    frames: list[int] = []
    while len(records) < count:
        answer = await store.call(Watch(session="s", wait=0))
        assert answer.records, f"the session ran dry after {len(records)} of {count}"
        frames.append(frame_of(answer))
        records += answer.records
    return records, frames


class TestAnswersWithinAFrame:
    async def test_many_large_records_come_in_answers_that_each_fit_a_frame(self) -> None:
        """40 records of 10 KiB (400 KiB) for one session come in answers of
        at most one frame each, every record once, in the order they ended."""
        ids = [f"t{n}" for n in range(40)]
        async with open_store(max_frame_bytes=FRAME) as store:
            await store.send(queued(*ids))
            assert await store.call(Watch(session="s", ids=tuple(ids), wait=0)) == Records(
                records=())
            await store.send(Finished(outcomes=tuple(big(id, 10 * 1024) for id in ids)))
            records, frames = await watch_until(store, len(ids))
            assert (await store.call(Watch(session="s", wait=0))).records == ()
        assert [r.id for r in records] == ids
        assert all(r.state == "succeeded" and r.value == bytes(10 * 1024) for r in records)
        assert len(frames) >= 7 and max(frames) <= FRAME

    async def test_a_parked_watch_is_answered_with_a_part_and_the_next_watch_gets_the_rest(
        self, autojump_clock: object
    ) -> None:
        """A parked Watch woken by many large records takes what fits; the
        next Watch is answered at once with more, not after its wait."""
        ids = tuple(f"t{n}" for n in range(20))
        async with open_store(max_frame_bytes=FRAME) as store, trio.open_nursery() as nursery:
            await store.send(queued(*ids))
            parked: list[Records] = []

            async def park() -> None:
                parked.append(await store.call(Watch(session="s", ids=ids, wait=60)))

            nursery.start_soon(park)
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
            await store.send(Finished(outcomes=tuple(big(id, 20 * 1024) for id in ids)))
            await trio.testing.wait_all_tasks_blocked()
            (first,) = parked
            assert 0 < len(first.records) < len(ids) and frame_of(first) <= FRAME
            rest, frames = await watch_until(store, len(ids) - len(first.records))
            assert trio.current_time() == start  # nothing waited for its deadline
        assert [r.id for r in (*first.records, *rest)] == list(ids)
        assert max(frames) <= FRAME

    async def test_what_one_answer_leaves_goes_to_the_parked_watch_at_once(
        self, autojump_clock: object
    ) -> None:
        """A Watch answered at once with part of many ready records sends the
        next part to the session's parked Watch (another poll of the same
        client) instead of leaving it parked with records ready."""
        ids = tuple(f"t{n}" for n in range(10))
        async with open_store(max_frame_bytes=FRAME) as store, trio.open_nursery() as nursery:
            await store.send(Finished(outcomes=tuple(big(id, 20 * 1024) for id in ids)))
            await store.send(queued("later"))
            parked: list[Records] = []

            async def park() -> None:
                parked.append(await store.call(Watch(session="s", ids=("later",), wait=60)))

            nursery.start_soon(park)
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
            first = await store.call(Watch(session="s", ids=ids, wait=60))
            await trio.testing.wait_all_tasks_blocked()
            assert trio.current_time() == start
            assert parked and parked[0].records and not parked[0].waited_out
            rest, _ = await watch_until(
                store, len(ids) - len(first.records) - len(parked[0].records))
        assert [r.id for r in (*first.records, *parked[0].records, *rest)] == list(ids)

    async def test_a_record_no_answer_can_carry_fails_with_result_too_large(self) -> None:
        """A record larger than a whole answer is delivered as failed with
        ``ResultTooLarge`` naming its size and the limit; the records around
        it are delivered as they are."""
        async with open_store(max_frame_bytes=FRAME) as store:
            await store.call(Watch(session="s", ids=("a", "huge", "b"), wait=0))
            await store.send(Finished(outcomes=(
                big("a", 100), big("huge", 2 * FRAME), big("b", 100))))
            records, frames = await watch_until(store, 3)
            stats = await snapshot(store)
        assert [(r.id, r.state) for r in records] == [
            ("a", "succeeded"), ("huge", "failed"), ("b", "succeeded")]
        error = records[1].error
        assert error is not None and error.type == "ResultTooLarge"
        assert error.message.startswith(
            f"the record of task huge takes about {2 * FRAME + 400 + 4 + 2 + 10} bytes, "
            f"more than one answer can carry ({FRAME - FRAME // 4} bytes, from the control "
            f"plane's max_frame_bytes): its succeeded result cannot be delivered; raise "
            f"FASTWORKER_MAX_FRAME_BYTES")
        assert records[1].value is None and max(frames) <= FRAME
        assert stats.too_large_total == 1


class TestUnsentAnswers:
    async def test_records_of_an_answer_the_edge_could_not_send_are_delivered_again(
        self
    ) -> None:
        """An ``Unsent`` from the edge puts its records back in the session,
        first; they come again, at most half as many per answer."""
        ids = tuple(f"t{n}" for n in range(6))
        async with open_store(max_frame_bytes=FRAME) as store:
            watch = Watch(session="s", ids=ids, wait=0)
            assert (await store.call(watch)).records == ()
            await store.send(Finished(outcomes=tuple(big(id, 100) for id in ids)))
            poll = Watch(session="s", wait=0)
            lost = await store.call(poll)
            assert [r.id for r in lost.records] == list(ids)
            await store.send(Unsent(messages=(poll,), answers=(lost,), peer="p", reason="big"))
            again = [await store.call(poll) for _ in range(3)]
            stats = await snapshot(store)
        assert [[r.id for r in a.records] for a in again] == [
            ["t0", "t1", "t2"], ["t3", "t4", "t5"], []]
        assert again[0].records[0] == lost.records[0]
        assert stats.unsent_total == 1

    async def test_a_lone_record_the_edge_could_not_send_fails_with_result_too_large(
        self
    ) -> None:
        """A record that could not be sent even alone is delivered as failed
        (``ResultTooLarge``), so its client hears of it instead of waiting."""
        async with open_store(max_frame_bytes=FRAME) as store:
            await store.send(Finished(outcomes=(big("a", 100),)))
            poll = Watch(session="s", ids=("a",), wait=0)
            lost = await store.call(poll)
            await store.send(Unsent(messages=(poll,), answers=(lost,)))
            (again,) = (await store.call(Watch(session="s", wait=0))).records
        assert (again.id, again.state) == ("a", "failed")
        assert again.error is not None and again.error.type == "ResultTooLarge"


    async def test_a_record_sent_with_other_answers_is_not_called_too_large(self) -> None:
        """Two sessions' answers of one record each in one unsent request:
        neither record was too large alone, so both are delivered again as
        they were."""
        async with open_store(max_frame_bytes=FRAME) as store:
            await store.send(Finished(outcomes=(big("a", 100), big("b", 100))))
            polls = (Watch(session="s1", ids=("a",), wait=0), Watch(session="s2", ids=("b",),
                                                                     wait=0))
            lost = tuple([await store.call(poll) for poll in polls])
            await store.send(Unsent(messages=polls, answers=lost))
            again = [await store.call(Watch(session=s, wait=0)) for s in ("s1", "s2")]
        assert [a.records for a in again] == [a.records for a in lost]
        assert [r.state for a in again for r in a.records] == ["succeeded", "succeeded"]


class TestDroppedIds:
    async def test_an_id_dropped_by_the_ttl_is_answered_unknown_at_once(
        self, autojump_clock: object
    ) -> None:
        """A Watch or ResultQuery for an id whose record expired is answered
        at once with an ``unknown`` record saying why, not after its wait."""
        async with open_store(ttl=10.0) as store:
            await store.send(Finished(outcomes=(big("a", 10),)))
            await trio.sleep(11)
            start = trio.current_time()
            watched = await store.call(Watch(session="s", ids=("a",), wait=60))
            queried = await store.call(ResultQuery(ids=("a",), wait=60))
            assert trio.current_time() == start
        for answer in (watched, queried):
            (record,) = answer.records
            assert (record.id, record.state, answer.waited_out) == ("a", "unknown", False)
            assert record.error is not None and record.error.message == (
                "the result of task a is no longer held by the control plane: its time to "
                "live (ttl) ran out (docs/results.md#bounds)")

    @pytest.mark.parametrize(("options", "reason"), [
        ({"max_entries": 1}, "the store held more than max_entries results"),
        ({"max_bytes": 1000}, "the store held more than max_bytes bytes of results"),
    ], ids=["max_entries", "max_bytes"])
    async def test_an_id_evicted_by_a_bound_is_answered_unknown_at_once(
        self, autojump_clock: object, options: dict[str, int], reason: str
    ) -> None:
        """The same for a record evicted by the entry or byte bound; the
        message names the bound."""
        async with open_store(**options) as store:
            await store.send(Finished(outcomes=(big("a", 10),)))
            await store.send(Finished(outcomes=(big("b", 10),)))
            start = trio.current_time()
            answer = await store.call(Watch(session="s", ids=("a",), wait=60))
            assert trio.current_time() == start
        (record,) = answer.records
        assert record.state == "unknown" and record.error is not None
        assert reason in record.error.message

    async def test_an_id_never_seen_is_named_at_once_and_still_watched(
        self, autojump_clock: object
    ) -> None:
        """An id the store never heard of may be a task whose Queued is on its
        way: the Watch is answered at once naming it, it stays watched, and
        its result is delivered when it comes."""
        async with open_store() as store:
            start = trio.current_time()
            first = await store.call(Watch(session="s", ids=("new",), wait=60))
            assert trio.current_time() == start
            assert first == Records(records=(), unknown=("new",))
            await store.send(Finished(outcomes=(big("new", 10),)))
            later = await store.call(Watch(session="s", wait=60))
        assert [(r.id, r.state) for r in later.records] == [("new", "succeeded")]

    async def test_only_the_latest_dropped_ids_are_remembered(
        self, autojump_clock: object
    ) -> None:
        """Past ``remember_dropped`` ids, the oldest is forgotten: a Watch for
        it is answered like one for an id never seen."""
        async with open_store(ttl=1.0, remember_dropped=1) as store:
            await store.send(Finished(outcomes=(big("a", 10), big("b", 10))))
            await trio.sleep(2)
            assert (await store.call(Watch(session="s", ids=("b",), wait=5))).records[0].state \
                == "unknown"
            start = trio.current_time()
            answer = await store.call(Watch(session="s", ids=("a",), wait=5))
            assert trio.current_time() == start
        assert answer == Records(records=(), unknown=("a",))


class FramedPort:
    """The queries port in memory, with the edge's frame check: an answer
    over ``limit`` bytes is not delivered; the store gets it back as
    ``Unsent`` and the caller an ``AnswerTooLarge``, as from a ServeEdge."""

    name = "dialing tcp://127.0.0.1:5559"

    def __init__(self, store: Ref[Any], limit: int) -> None:
        self._store = store
        self._framer = Framer(CODEC, max_frame_bytes=limit)
        self.refused = 0
        self.asked: list[tuple[Any, ...]] = []

    async def ask(self, messages: Sequence[Any], timeout: float) -> list[Any]:
        self.asked.append(tuple(messages))
        answers = [Accepted(id=message.id) if isinstance(message, Submit)
                   else await self._store.call(message) for message in messages]
        try:
            self._framer.pack(answers)
        except FrameError as error:
            self.refused += 1
            await self._store.send(Unsent(tuple(messages), tuple(answers), reason=str(error)))
            raise AnswerTooLarge(str(error)) from None
        return answers


async def test_a_poller_told_an_answer_was_too_large_gets_every_record_after_all(
    autojump_clock: object,
) -> None:
    """When the edge refuses answers the store thought would fit (its
    estimate above the real frame limit), the poller polls again and the
    store sends fewer records at a time: every waiter gets its record,
    none fails, nothing waits for a poll's deadline."""
    ids = [f"t{n}" for n in range(16)]
    async with open_store(max_frame_bytes=8 * FRAME) as store:
        port = FramedPort(store, limit=FRAME)
        poller = ResultPoller(port, session="s", max_batch=64,  # type: ignore[arg-type]
                              poll_wait=10.0, request_timeout=30.0)
        await store.send(queued(*ids))
        records: dict[str, TaskRecord] = {}
        all_in = trio.Event()
        async with trio.open_nursery() as nursery:
            for _ in range(2):
                nursery.start_soon(poller.poll_forever)

            async def wait(task_id: str) -> None:
                records[task_id] = await poller.wait(task_id, None)
                if len(records) == len(ids):
                    all_in.set()

            for task_id in ids:
                nursery.start_soon(wait, task_id)
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
            await store.send(Finished(outcomes=tuple(big(id, 20 * 1024) for id in ids)))
            with trio.fail_after(1):
                await all_in.wait()
            assert trio.current_time() == start
            nursery.cancel_scope.cancel()
        poller.close()
        stats = await snapshot(store)
    assert sorted(records) == sorted(ids)
    assert all(r.state == "succeeded" and r.value == bytes(20 * 1024) for r in records.values())
    assert port.refused >= 1 and stats.unsent_total == port.refused


async def test_a_submit_whose_watch_brings_too_much_is_asked_again(
    autojump_clock: object,
) -> None:
    """``submit`` sends its Submit with a Watch; when the Watch's answer is
    refused as too large, the pair is sent again (the Watch without the id,
    which the session has) until it fits: the caller gets its id, and the
    waiters their records."""
    ids = [f"t{n}" for n in range(8)]
    async with open_store(max_frame_bytes=8 * FRAME) as store:
        port = FramedPort(store, limit=FRAME)
        poller = ResultPoller(port, session="s", max_batch=64,  # type: ignore[arg-type]
                              poll_wait=10.0, request_timeout=30.0)
        slots = {task_id: poller.expect(task_id) for task_id in ids}
        await store.call(Watch(session="s", ids=tuple(ids), wait=0))
        await store.send(Finished(outcomes=tuple(big(id, 20 * 1024) for id in ids)))
        new = Submit(id="new", task="add", payload=b"")
        poller.expect("new", sent=True)
        with trio.fail_after(1):
            assert await poller.send_watched(new) == Accepted(id="new")
            while any(task_id in poller.waiters for task_id in ids):
                (answer,) = await port.ask([Watch(session="s", wait=0)], 1)
                poller.deliver(answer.records)
        poller.close()
    assert port.refused >= 1
    assert [m[1].ids for m in port.asked[:2]] == [("new",), ()]
    assert all(slot.get().state == "succeeded" for slot in slots.values())
