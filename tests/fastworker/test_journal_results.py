"""The ResultStore and the Scheduler with a journal: final results and each
schedule's last run survive a restart of the node on the same file (after
a graceful stop, and after a crash), within the store's TTL and bounds.

Topologies run the real ``Journal`` on a file in ``tmp_path``, started
first (it is a ref of the others); time is virtual (``autojump_clock``) and
the wall clock is injected as ``BASE + trio.current_time()``, so it moves
with virtual time across the restarts.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs
import msgspec
import pytest
import trio
import trio.testing
from trio.testing import MockClock

from actors import Actor, ActorContext, GetStats, Node, NoOptions, Topology, open_node
from actors.testing import crash_after
from actors.topology import NodeOptions
from examples import tasks
from fastworker import TaskError
from fastworker.internal import JournalWrite, Recover, ResultsKept
from fastworker.journal import (
    DropResult,
    JournalFile,
    PutResult,
    PutSchedule,
    PutTask,
    Recovered,
)
from fastworker.journal.faults import WrappedFile
from fastworker.journal.schema import decode_record
from fastworker.journaling import Journal
from fastworker.messages import (
    Cancelled,
    Finished,
    Job,
    Outcome,
    Queued,
    QueuedEntry,
    Records,
    RemoteError,
    ResultQuery,
    StatusQuery,
    TaskRecord,
)
from fastworker.periodic import Scheduler
from fastworker.results import ResultStore
from fastworker.stats import ResultStoreStats, ScheduleInfo, SchedulerStats
from fastworker.tasks import Task, TaskRegistry
from tests.dashboard.harness import open_control
from tests.fastworker.test_periodic import FakeInbox, FakeStore, accept, nothing

#: The injected wall clock at virtual time 0: 12:03:30 local time.
BASE = datetime(2024, 1, 15, 12, 3, 30).timestamp()


def wall() -> float:
    return BASE + trio.current_time()


def nodes() -> Topology:
    """An empty topology whose graceful stop has no deadline: under the
    autojump clock, the journal's closing on its thread would otherwise be
    jumped over to the deadline (and the journal cancelled)."""
    return Topology(node=NodeOptions(shutdown_deadline=math.inf))


class Crash(Exception):
    """Raised in a node's block: the node is cancelled at once, mid-flight."""


@asynccontextmanager
async def run(topology: Topology, how: str = "stop") -> AsyncIterator[Node]:
    """Run ``topology``; on leaving, stop it gracefully (``stop``) or cancel
    it at once (``crash``: no actor drains, the journal gets no last word)."""
    if how == "stop":
        async with open_node(topology) as node:
            yield node
        return
    with pytest.raises(Crash):
        async with open_node(topology) as node:
            yield node
            raise Crash


async def durable(node: Node, clock: MockClock) -> None:
    """Wait until everything sent to the journal so far is committed (a
    called write is answered after every write before it). No virtual time
    passes meanwhile: the autojump clock would jump to the next deadline
    while the journal's thread commits."""
    clock.autojump_threshold = math.inf
    try:
        assert await node.refs["journal"].call(JournalWrite(ops=())) is True
    finally:
        clock.autojump_threshold = 0


def loaded(path: Path) -> Recovered:
    file = JournalFile.open(path, create=False)
    try:
        return file.load()
    finally:
        file.close()


# -- the store -------------------------------------------------------------------


def store(path: Path, **options: Any) -> Topology:
    return (
        nodes()
        .add("journal", Journal, path=str(path))
        .add("results", ResultStore, refs={"journal": "journal"}, params={"clock": wall},
             **options)
    )


def queued(*ids: str) -> Queued:
    return Queued(entries=tuple(
        QueuedEntry(id=id, task="add", priority=2, queued_at=100.0) for id in ids))


def done(id: str, value: bytes = b"v") -> Outcome:
    return Outcome(id=id, attempt=1, worker="w1", value=value, started_at=101.0,
                   finished_at=102.0)


def failed(id: str) -> Outcome:
    error = RemoteError(type="ValueError", message="boom", traceback="Traceback ...")
    return Outcome(id=id, attempt=1, worker="w1", error=error, started_at=101.0,
                   finished_at=102.0)


async def states(node: Node, *ids: str) -> list[str]:
    answer = await node.refs["results"].call(StatusQuery(ids=ids))
    assert isinstance(answer, Records)
    return [record.state for record in answer.records]


async def finals(node: Node, *ids: str) -> dict[str, Any]:
    """The final records among ``ids``, by id, as ``client.result`` gets them."""
    answer = await node.refs["results"].call(ResultQuery(ids=ids, wait=0))
    assert isinstance(answer, Records)
    return {record.id: record for record in answer.records}


def stored_ids(path: Path) -> list[str]:
    return [result.record.id for result in loaded(path).results]


class TestStore:
    @pytest.mark.parametrize("how", ["stop", "crash"])
    async def test_final_results_are_served_after_a_restart(
        self, tmp_path: Path, autojump_clock: MockClock, how: str
    ) -> None:
        """Succeeded, failed and cancelled records come back after a restart,
        each as it was, and are served by ResultQuery and StatusQuery; a task
        still running when the node went down is not the store's to bring back."""
        path = tmp_path / "j.db"
        async with run(store(path), how) as node:
            await node.refs["results"].send(queued("ok", "bad", "gone", "live"))
            await node.refs["results"].send(Finished(outcomes=(done("ok", b"42"), failed("bad"))))
            await node.refs["results"].send(Cancelled(ids=("gone",)))
            before = await finals(node, "ok", "bad", "gone")
            await durable(node, autojump_clock)
        await trio.sleep(30)
        async with run(store(path)) as node:
            after = await finals(node, "ok", "bad", "gone", "live")
            seen = await states(node, "ok", "bad", "gone", "live")
            ready = node.ready["results"]
        assert after == before
        assert seen == ["succeeded", "failed", "cancelled", "unknown"]
        assert after["ok"].value == b"42" and after["bad"].error.message == "boom"
        assert ready is not None and ready.endswith(
            "recovered 3 results from the journal (0 past their TTL dropped, "
            "0 over the bounds evicted)")

    @pytest.mark.parametrize("how", ["stop", "crash"])
    async def test_a_task_waiting_for_its_retry_keeps_its_earlier_attempts(
        self, tmp_path: Path, autojump_clock: MockClock, how: str
    ) -> None:
        """A failed attempt whose task waits for its retry is kept with the
        task's row (``PutRecord``): after a restart the store has it again,
        and the final record lists every attempt, those before the restart
        too. The row, and the record with it, go once the task ends."""
        path = tmp_path / "j.db"
        job = Job(id="r", task="add", payload=b"p", priority=2, timeout=None)
        async with run(store(path), how) as node:
            await node.refs["journal"].call(JournalWrite(ops=(PutTask(job),)))
            await node.refs["results"].send(queued("r"))
            retried = Outcome(id="r", attempt=1, worker="w1", started_at=101.0, finished_at=102.0,
                              error=RemoteError(type="ValueError", message="boom"), retry_in=60.0)
            await node.refs["results"].send(Finished(outcomes=(retried,)))
            await durable(node, autojump_clock)
        (live,) = loaded(path).records
        assert [(a.attempt, a.error.message) for a in live.record.attempts] == [(1, "boom")]
        async with run(store(path)) as node:
            # The inbox tells the store of what it took back, as it does at start.
            await node.refs["results"].send(Queued(entries=(QueuedEntry(
                id="r", task="add", priority=2, queued_at=100.0, scheduled_for=162.0),)))
            waiting = await states(node, "r")
            await node.refs["results"].send(Finished(outcomes=(Outcome(
                id="r", attempt=2, worker="w2", value=b"ok", started_at=170.0,
                finished_at=171.0),)))
            final = (await finals(node, "r"))["r"]
            await durable(node, autojump_clock)
        assert waiting == ["scheduled"]
        assert (final.state, final.attempt, final.value) == ("succeeded", 2, b"ok")
        assert [(a.attempt, a.worker, a.error.message) for a in final.attempts] == [
            (1, "w1", "boom")]
        recovered = loaded(path)
        assert recovered.records == () and recovered.queued == ()
        assert [r.record.attempts for r in recovered.results] == [final.attempts]

    async def test_results_kept_is_answered_once_the_results_are_written(
        self, tmp_path: Path
    ) -> None:
        """``ResultsKept`` (what a subworker's Report ack waits for) is
        answered True only once the results sent before it are committed."""
        path = tmp_path / "j.db"
        entered, release = threading.Event(), threading.Event()

        class Held(WrappedFile):
            def apply(self, ops: Any) -> None:
                if any(isinstance(op, PutResult) for op in ops):
                    entered.set()
                    release.wait(30)
                self.file.apply(ops)

        topology = (
            nodes()
            .add("journal", Journal, path=str(path), params={"wrap": Held})
            .add("results", ResultStore, refs={"journal": "journal"}, params={"clock": wall})
        )
        async with open_node(topology) as node:
            answered: list[Any] = []

            async def kept() -> None:
                answered.append(await node.refs["results"].call(ResultsKept()))

            await node.refs["results"].send(Finished(outcomes=(done("a"),)))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(kept)
                await trio.to_thread.run_sync(entered.wait)
                await trio.testing.wait_all_tasks_blocked()
                assert answered == []
                assert await states(node, "a") == ["succeeded"]  # the store goes on
                release.set()
            assert answered == [True]
        assert stored_ids(path) == ["a"]

    async def test_the_ttl_runs_on_from_when_the_record_became_final(
        self, tmp_path: Path, autojump_clock: MockClock
    ) -> None:
        """ttl=100: a record final at t=0 is served after a restart at t=60,
        and gone at t=100, as if the node had never stopped."""
        path = tmp_path / "j.db"
        async with run(store(path, ttl=100.0)) as node:
            await node.refs["results"].send(Finished(outcomes=(done("a"),)))
            await durable(node, autojump_clock)
        await trio.sleep(60)
        async with run(store(path, ttl=100.0)) as node:
            at_60 = await states(node, "a")
            await trio.sleep(39)
            at_99 = await states(node, "a")
            await trio.sleep(1)
            at_100 = await states(node, "a")
            await durable(node, autojump_clock)
        assert (at_60, at_99, at_100) == (["succeeded"], ["succeeded"], ["unknown"])
        assert stored_ids(path) == []  # the TTL's drop reached the file

    async def test_a_duplicate_run_counted_after_final_is_kept_across_a_restart(
        self, tmp_path: Path, autojump_clock: MockClock
    ) -> None:
        """A final record that counts a duplicate run is written again, with
        the time it became final (its TTL is not renewed): after a restart it
        still says so, and still expires when it would have."""
        path = tmp_path / "j.db"
        async with run(store(path, ttl=100.0)) as node:
            await node.refs["results"].send(Finished(outcomes=(done("a"),)))
            await trio.sleep(30)
            late = attrs.evolve(done("a", b"late"), attempt=2, worker="w2")
            await node.refs["results"].send(Finished(outcomes=(late,)))
            await durable(node, autojump_clock)
        (stored,) = loaded(path).results
        async with run(store(path, ttl=100.0)) as node:
            before = (await finals(node, "a"))["a"]
            await trio.sleep(69)
            at_99 = await states(node, "a")
            await trio.sleep(1)
            at_100 = await states(node, "a")
        assert (stored.record.duplicate_runs, stored.final_at) == (1, BASE)
        assert (before.value, before.duplicate_runs) == (b"v", 1)
        assert (at_99, at_100) == (["succeeded"], ["unknown"])

    def test_a_record_stored_before_duplicate_runs_existed_still_decodes(self) -> None:
        """Records are msgpack maps: one written without ``duplicate_runs``
        (an older version) decodes, with none counted."""
        blob = msgspec.msgpack.encode([["TaskRecord", {
            "id": "a", "state": "succeeded", "task": "add", "attempt": 1, "worker": "w1",
            "value": b"v"}]])
        record = decode_record(blob)
        assert record == TaskRecord(id="a", state="succeeded", task="add", attempt=1,
                                    worker="w1", value=b"v")
        assert record.duplicate_runs == 0

    async def test_results_past_their_ttl_do_not_come_back(
        self, tmp_path: Path, autojump_clock: MockClock
    ) -> None:
        """A record whose TTL passed while the node was down is not served,
        and is dropped from the file."""
        path = tmp_path / "j.db"
        async with run(store(path, ttl=100.0)) as node:
            await node.refs["results"].send(Finished(outcomes=(done("old"),)))
            await trio.sleep(50)
            await node.refs["results"].send(Finished(outcomes=(done("new"),)))
            await durable(node, autojump_clock)
        await trio.sleep(60)  # old: 110 s final; new: 60 s
        async with run(store(path, ttl=100.0)) as node:
            seen = await states(node, "old", "new")
            ready = node.ready["results"]
            await durable(node, autojump_clock)
        assert seen == ["unknown", "succeeded"]
        assert ready is not None and ready.endswith(
            "recovered 1 result from the journal (1 past their TTL dropped, "
            "0 over the bounds evicted)")
        assert stored_ids(path) == ["new"]

    async def test_an_evicted_record_is_dropped_from_the_file(
        self, tmp_path: Path, autojump_clock: MockClock
    ) -> None:
        """max_entries=2: the least recently used final record is evicted, and
        its row leaves the journal with it; it does not come back."""
        path = tmp_path / "j.db"
        async with run(store(path, max_entries=2)) as node:
            for id in ("a", "b", "c"):
                await node.refs["results"].send(Finished(outcomes=(done(id),)))
                await trio.sleep(1)
            await durable(node, autojump_clock)
            evicted = await states(node, "a")
        assert evicted == ["unknown"] and stored_ids(path) == ["b", "c"]
        async with run(store(path, max_entries=2)) as node:
            seen = await states(node, "a", "b", "c")
        assert seen == ["unknown", "succeeded", "succeeded"]

    async def test_the_bounds_apply_to_what_comes_back(
        self, tmp_path: Path, autojump_clock: MockClock
    ) -> None:
        """Restarted with smaller bounds, the store keeps the newest records
        that fit, and drops the others from the file."""
        path = tmp_path / "j.db"
        async with run(store(path)) as node:
            for id in ("a", "b", "c"):
                await node.refs["results"].send(Finished(outcomes=(done(id),)))
                await trio.sleep(1)
            await durable(node, autojump_clock)
        async with run(store(path, max_entries=1)) as node:
            seen = await states(node, "a", "b", "c")
            stats = (await node.refs["results"].call(GetStats())).detail
            await durable(node, autojump_clock)
        assert seen == ["unknown", "unknown", "succeeded"]
        assert isinstance(stats, ResultStoreStats) and stats.evicted_lru == 2
        assert stored_ids(path) == ["c"]

    async def test_a_record_final_again_after_its_eviction_is_kept(
        self, tmp_path: Path, autojump_clock: MockClock
    ) -> None:
        """The journal hears drops and puts in the order they happened: a
        record evicted, then final again (a late duplicate), stays in the file."""
        path = tmp_path / "j.db"
        async with run(store(path, max_entries=1)) as node:
            results = node.refs["results"]
            # Each its own batch (a query between them).
            await results.send(Finished(outcomes=(done("a"),)))
            assert await states(node, "a") == ["succeeded"]
            await results.send(Finished(outcomes=(done("b"),)))  # evicts a
            assert await states(node, "a") == ["unknown"]
            await results.send(Finished(outcomes=(done("a", b"again"),)))  # evicts b
            await durable(node, autojump_clock)
        assert stored_ids(path) == ["a"]
        assert loaded(path).results[0].record.value == b"again"

    async def test_a_restarted_store_takes_its_results_back(
        self, tmp_path: Path, autojump_clock: MockClock
    ) -> None:
        """The store crashes and its supervisor restarts it: the new instance
        takes the final records back from the journal (what the old one sent
        is applied before the new one's Recover is answered)."""
        topology = nodes().add("journal", Journal, path=str(tmp_path / "j.db")).add(
            "results", crash_after(ResultStore, 2), refs={"journal": "journal"},
            params={"clock": wall})
        async with run(topology) as node:
            await node.refs["results"].send(Finished(outcomes=(done("a", b"1"),)))
            assert await states(node, "a") == ["succeeded"]
            await node.refs["results"].send(queued("x"))  # the injected crash
            await trio.testing.wait_all_tasks_blocked()
            stats = await node.refs["results"].call(GetStats())
            after = await finals(node, "a")
        assert stats.restarts == 1
        assert after["a"].value == b"1"

    @pytest.mark.parametrize("path", ["", "off"])
    async def test_a_journal_that_is_off_is_not_written_to(
        self, tmp_path: Path, autojump_clock: MockClock, path: str
    ) -> None:
        """Wired to a journal that is off, the store sends it nothing and
        says nothing of a recovery."""
        topology = Topology().add("journal", Journal, path=path).add(
            "results", ResultStore, refs={"journal": "journal"})
        async with run(topology) as node:
            await node.refs["results"].send(Finished(outcomes=(done("a"),)))
            seen = await states(node, "a")
            journal = await node.refs["journal"].call(GetStats())
            ready = node.ready["results"]
        assert seen == ["succeeded"]
        assert ready is not None and "recovered" not in ready
        # The store's GetStats (is it on?) and ours: no JournalWrite, no Recover.
        assert journal.handled_total == 2


class Recording(Actor[Any]):
    """A journal that is on and holds nothing: keeps every JournalWrite's ops."""

    def __init__(self, options: NoOptions, context: ActorContext, *,
                 writes: list[tuple[Any, ...]]) -> None:
        super().__init__(options, context)
        self.writes = writes

    async def handle(self, message: Any) -> Any:
        if isinstance(message, Recover):
            return Recovered()
        assert isinstance(message, JournalWrite)
        self.writes.append(message.ops)
        return True

    def stats_detail(self) -> Any:
        return "on"


async def test_the_store_sends_one_write_per_batch(autojump_clock: MockClock) -> None:
    """Three records final in one batch make one JournalWrite of three
    PutResults (final_at: the wall clock); what the bound evicts follows."""
    writes: list[tuple[Any, ...]] = []
    topology = (
        Topology()
        .add("journal", Recording, params={"writes": writes})
        .add("results", ResultStore, refs={"journal": "journal"}, params={"clock": wall},
             max_entries=2)
    )
    async with run(topology) as node:
        await trio.sleep(5)
        await node.refs["results"].send(Finished(outcomes=(done("a"), done("b"), done("c"))))
        await states(node, "c")
        await trio.testing.wait_all_tasks_blocked()
    [ops] = writes
    assert ops[:3] == tuple(PutResult(record=r, final_at=BASE + 5) for r in ops_records(ops))
    assert [op.record.id for op in ops[:3]] == ["a", "b", "c"]
    assert ops[3:] == (DropResult(id="a"),)


def ops_records(ops: tuple[Any, ...]) -> list[Any]:
    return [op.record for op in ops if isinstance(op, PutResult)]


# -- the scheduler ---------------------------------------------------------------


def periodic(name: str, **schedule: Any) -> Task[Any, Any]:
    return Task(name=name, fn=nothing, **schedule)


class Schedules:
    """A scheduler's world across restarts: its inbox's and store's
    stand-ins, and the journal on ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.got: list[tuple[float, Any]] = []
        self.states: dict[str, str] = {}
        self.asked: list[str] = []

    def topology(self, *tasks: Task[Any, Any], clock: Any = wall) -> Topology:
        registry = TaskRegistry()
        for task in tasks:
            registry.register(task)
        return (
            nodes()
            .add("inbox", FakeInbox, params={"got": self.got, "answer": accept})
            .add("results", FakeStore, params={"states": self.states, "asked": self.asked})
            .add("scheduler", Scheduler,
                 refs={"inbox": "inbox", "results": "results", "journal": "journal"},
                 params={"registry": registry, "clock": clock})
            # Written last, started first: it is a ref of the scheduler.
            .add("journal", Journal, path=str(self.path))
        )

    def times(self) -> list[float]:
        return [at for at, _ in self.got]

    def ids(self) -> list[str]:
        return [submit.id for _, submit in self.got]


async def schedule_info(node: Node, name: str) -> ScheduleInfo:
    stats = (await node.refs["scheduler"].call(GetStats())).detail
    assert isinstance(stats, SchedulerStats)
    [info] = [s for s in stats.schedules if s.task == name]
    return info


class TestScheduler:
    def test_the_journal_starts_before_the_actors_that_recover_from_it(
        self, tmp_path: Path
    ) -> None:
        """Start order follows the refs: the journal, written last, starts first."""
        order = [item.spec.name for item in Schedules(tmp_path / "j.db").topology().resolve()]
        assert order.index("journal") < order.index("scheduler")

    @pytest.mark.parametrize("how", ["stop", "crash"])
    async def test_the_last_run_survives_and_the_beat_goes_on(
        self, tmp_path: Path, autojump_clock: MockClock, how: str
    ) -> None:
        """every=10, runs at 10 and 20, the node goes down at 25 and is back
        at 29: the schedule shows its last run, the first run after the
        restart is at 30 (its beat, not 10 s after the start), and it first
        asks the store about the run recovered."""
        world = Schedules(tmp_path / "j.db")
        beat = periodic("beat", every=10.0)
        async with run(world.topology(beat), how) as node:
            await trio.sleep_until(25)
            await durable(node, autojump_clock)
        [first, second] = world.ids()
        await trio.sleep_until(29)
        async with run(world.topology(beat)) as node:
            recovered = await schedule_info(node, "beat")
            ready = node.ready["scheduler"]
            await trio.sleep_until(35)
            info = await schedule_info(node, "beat")
        assert world.times() == [10.0, 20.0, 30.0]
        assert (recovered.last_run, recovered.last_id) == (BASE + 20, second)
        assert recovered.next_run == pytest.approx(BASE + 30)
        assert ready == ("1 schedule: beat every 10 s, last 2024-01-15 12:03:50, "
                         "next 2024-01-15 12:04:00")
        assert world.asked == [first, second]  # the second asked about after the restart
        assert (info.last_id, info.runs_total) == (world.ids()[2], 1)
        assert loaded(world.path).schedules == (
            PutSchedule(name="beat", last_run=BASE + 30, last_id=world.ids()[2]),)

    async def test_the_overlap_check_uses_the_recovered_last_run(
        self, tmp_path: Path, autojump_clock: MockClock
    ) -> None:
        """The run before the restart is still running: the first run after
        it is skipped, not doubled."""
        world = Schedules(tmp_path / "j.db")
        beat = periodic("beat", every=10.0)
        async with run(world.topology(beat)) as node:
            await trio.sleep_until(15)
        [first] = world.ids()
        world.states[first] = "running"
        async with run(world.topology(beat)) as node:
            await trio.sleep_until(25)
            info = await schedule_info(node, "beat")
        assert world.times() == [10.0]
        assert (info.skipped_overlap, info.last_id) == (1, first)
        assert world.asked == [first]

    async def test_missed_runs_are_not_made_up(
        self, tmp_path: Path, autojump_clock: MockClock
    ) -> None:
        """Down from 12 to 47 (the runs due at 20, 30 and 40 missed): after
        the restart it runs once at 50, on its beat, never a burst."""
        world = Schedules(tmp_path / "j.db")
        beat = periodic("beat", every=10.0)
        async with run(world.topology(beat)):
            await trio.sleep_until(12)
        await trio.sleep_until(47)
        async with run(world.topology(beat)):
            await trio.sleep_until(55)
        assert world.times() == [10.0, 50.0]

    async def test_a_cron_slot_that_ran_does_not_run_again(
        self, tmp_path: Path, autojump_clock: MockClock
    ) -> None:
        """*/5: the 12:05 run happens, then the node restarts with its wall
        clock set back a minute (12:04:30 again): 12:05 does not run twice,
        the next run is 12:10."""
        world = Schedules(tmp_path / "j.db")
        tick = periodic("tick", cron="*/5 * * * *")
        async with run(world.topology(tick)) as node:
            await trio.sleep_until(100)  # 12:05:10
        assert world.times() == [pytest.approx(90.0, abs=1e-3)]

        def set_back() -> float:
            return BASE + trio.current_time() - 100  # 12:04:30 at t=120

        await trio.sleep_until(120)
        async with run(world.topology(tick, clock=set_back)) as node:
            info = await schedule_info(node, "tick")
            await trio.sleep_until(200)  # 12:06:10 on the set-back clock
        assert info.next_run == datetime(2024, 1, 15, 12, 10).timestamp()
        assert len(world.got) == 1

    async def test_schedules_no_longer_defined_are_dropped(
        self, tmp_path: Path, autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A schedule the journal holds whose task is gone is dropped from it, and said so."""
        caplog.set_level(logging.INFO, "fastworker.periodic")
        world = Schedules(tmp_path / "j.db")
        async with run(world.topology(periodic("old", every=10.0),
                                      periodic("kept", every=10.0))) as node:
            await trio.sleep_until(15)
        assert [s.name for s in loaded(world.path).schedules] == ["kept", "old"]
        async with run(world.topology(periodic("kept", every=10.0))) as node:
            await durable(node, autojump_clock)
        assert [s.name for s in loaded(world.path).schedules] == ["kept"]
        assert "dropped from the journal 1 schedule no longer defined: old" in caplog.text


# -- the shipped control plane ---------------------------------------------------


@pytest.mark.parametrize("how", ["stop", "crash"])
async def test_a_client_gets_its_result_from_a_restarted_control_plane(
    tmp_path: Path, how: str
) -> None:
    """config/control.toml with a journal, real sockets and a real client:
    results (a value, an error) are served by the next control plane on
    the same file, by ``client.result`` and ``client.status``."""
    path = str(tmp_path / "fastworker.journal")
    off = {"FASTWORKER_DASHBOARD": "off"}
    with pytest.raises(Crash) if how == "crash" else nullcontext():
        async with open_control(journal=path, environ=off) as control:
            ok = await control.client.delay(tasks.add, 2, 3)
            bad = await control.client.delay(tasks.fail, "boom")
            assert await control.client.result(ok, timeout=15) == 5
            with pytest.raises(TaskError):
                await control.client.result(bad, timeout=15)
            assert await control.node.refs["journal"].call(JournalWrite(ops=())) is True
            if how == "crash":
                raise Crash
    async with open_control(journal=path, environ=off) as control:
        value = await control.client.result(ok, timeout=15)
        with pytest.raises(TaskError, match="boom"):
            await control.client.result(bad, timeout=15)
        statuses = [await control.client.status(id) for id in (ok, bad)]
    assert value == 5
    assert [status.state for status in statuses] == ["succeeded", "failed"]
