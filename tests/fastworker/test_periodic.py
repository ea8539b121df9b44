"""The Scheduler: ``every`` and ``cron`` schedules on trio's clock, the
missed-run and no-overlap rules, rejected runs, turning it off, and that
only the control plane has one.

Time is virtual (``autojump_clock``); the wall clock is injected as
``BASE + trio.current_time()``. The inbox and the store are stand-ins,
except in the test that uses the real PriorityInbox and ResultStore.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import attrs
import pytest
import trio

from actors import Actor, ActorContext, GetStats, NoOptions, Node, Topology, open_node
from actors.requests import Requests
from actors.topology import resolve_kind
from fastworker.inbox import PriorityInbox
from fastworker.messages import PRIORITIES, Accepted, Rejected, Submit, TaskRecord
from fastworker.payload import unpack_call
from fastworker.periodic import Scheduler
from fastworker.stats import ScheduleInfo, SchedulerStats
from fastworker.results import ResultStore
from fastworker.internal import GetTask, TaskDetail
from fastworker.tasks import Task, TaskRegistry
from tests.fastworker.helpers import Recorder

#: The injected wall clock at virtual time 0: 12:03:30 local time.
BASE = datetime(2024, 1, 15, 12, 3, 30).timestamp()


def wall() -> float:
    return BASE + trio.current_time()


async def nothing() -> None:
    """The periodic tasks' function (never run here)."""


def periodic(name: str, **schedule: Any) -> Task[Any, Any]:
    return Task(name=name, fn=nothing, **schedule)


Answer = Callable[[Submit], Awaitable[Any]]


async def accept(submit: Submit) -> Any:
    return Accepted(id=submit.id)


class FakeInbox(Actor[Any]):
    """Keeps each Submit with the virtual time it came, and answers it
    with ``answer(submit)`` (which may take its time)."""

    def __init__(self, options: NoOptions, context: ActorContext, *,
                 got: list[tuple[float, Submit]], answer: Answer) -> None:
        super().__init__(options, context)
        self.got = got
        self.answer = answer

    async def handle(self, message: Any) -> Any:
        assert isinstance(message, Requests) and message.peer == "scheduler"
        answers = []
        for submit in message.messages:
            self.got.append((trio.current_time(), submit))
            answers.append(await self.answer(submit))
        return answers


class FakeStore(Actor[Any]):
    """Answers ``GetTask`` with a record in ``states[id]`` (``None`` if
    the id is not there), and keeps the ids asked about."""

    def __init__(self, options: NoOptions, context: ActorContext, *,
                 states: dict[str, str], asked: list[str]) -> None:
        super().__init__(options, context)
        self.states = states
        self.asked = asked

    async def handle(self, message: Any) -> Any:
        assert isinstance(message, GetTask)
        self.asked.append(message.id)
        state = self.states.get(message.id)
        if state is None:
            return None
        return TaskDetail(record=TaskRecord(id=message.id, state=state),  # type: ignore[arg-type]
                          payload=b"", dispatched_at=0.0, dispatched_to="", retry_of="",
                          retried_as=())


@attrs.define
class Harness:
    node: Node
    start: float
    got: list[tuple[float, Submit]]
    states: dict[str, str]
    asked: list[str]

    def times(self) -> list[float]:
        """When each run reached the inbox, in seconds since the start."""
        return [at - self.start for at, _ in self.got]

    def ids(self) -> list[str]:
        return [submit.id for _, submit in self.got]

    async def stats(self) -> SchedulerStats:
        stats = await self.node.refs["scheduler"].call(GetStats())
        assert isinstance(stats.detail, SchedulerStats)
        return stats.detail

    async def schedule(self, name: str) -> ScheduleInfo:
        [info] = [s for s in (await self.stats()).schedules if s.task == name]
        return info

    async def until(self, t: float) -> None:
        """Let virtual time run to ``t`` seconds after the start."""
        await trio.sleep_until(self.start + t)


@asynccontextmanager
async def open_scheduler(*tasks: Task[Any, Any], answer: Answer = accept,
                         **options: Any) -> AsyncIterator[Harness]:
    registry = TaskRegistry()
    for task in tasks:
        registry.register(task)
    got: list[tuple[float, Submit]] = []
    states: dict[str, str] = {}
    asked: list[str] = []
    topology = (
        Topology()
        .add("inbox", FakeInbox, params={"got": got, "answer": answer})
        .add("results", FakeStore, params={"states": states, "asked": asked})
        .add("scheduler", Scheduler, refs={"inbox": "inbox", "results": "results"},
             params={"registry": registry, "clock": wall}, **options)
    )
    start = trio.current_time()
    async with open_node(topology) as node:
        assert trio.current_time() == start  # starting takes no virtual time
        yield Harness(node, start, got, states, asked)


class TestEvery:
    async def test_runs_every_n_seconds_from_the_start(self, autojump_clock: object) -> None:
        """every=10: runs reach the inbox at t=10, 20, 30 exactly, each a
        fresh id of the task, with no arguments and its default priority."""
        beat = periodic("beat", every=10.0, priority="high", timeout=3.0)
        async with open_scheduler(beat) as h:
            await h.until(35)
            info = await h.schedule("beat")
        assert h.times() == [10.0, 20.0, 30.0]
        submits = [submit for _, submit in h.got]
        assert {s.task for s in submits} == {"beat"}
        assert len(set(h.ids())) == 3 and all(len(i) == 16 for i in h.ids())
        assert all(s.priority == PRIORITIES.index("high") for s in submits)
        assert all(s.timeout == 3.0 for s in submits)
        assert unpack_call(submits[0].payload) == ((), {})
        assert (info.runs_total, info.last_id, info.every, info.cron) == (3, h.ids()[-1], 10.0,
                                                                         None)
        assert info.last_run == pytest.approx(BASE + 30)
        assert info.next_run == pytest.approx(BASE + 40)
        assert (info.skipped_total, info.rejected_total, info.failed_total) == (0, 0, 0)

    async def test_schedules_interleave_on_one_timer(self, autojump_clock: object) -> None:
        async with open_scheduler(periodic("a", every=10.0), periodic("b", every=15.0)) as h:
            await h.until(31)
        runs = [(t, s.task) for t, s in zip(h.times(), (s for _, s in h.got))]
        assert runs == [(10.0, "a"), (15.0, "b"), (20.0, "a"), (30.0, "a"), (30.0, "b")]

    async def test_the_start_up_line_lists_the_schedules(self, autojump_clock: object) -> None:
        async with open_scheduler(periodic("a", every=60.0),
                                  periodic("b", cron="*/5 * * * *")) as h:
            ready = h.node.ready["scheduler"]
        assert ready == ("2 schedules: a every 60 s, next 2024-01-15 12:04:30, "
                         "b cron '*/5 * * * *', next 2024-01-15 12:05:00")


class TestCron:
    async def test_runs_on_the_cron_times_in_local_time(self, autojump_clock: object) -> None:
        """*/5 from 12:03:30 local: 12:05:00 (90 s later), then 12:10:00."""
        async with open_scheduler(periodic("tick", cron="*/5 * * * *")) as h:
            first = await h.schedule("tick")
            await h.until(400)
            later = await h.schedule("tick")
        assert first.next_run == datetime(2024, 1, 15, 12, 5).timestamp()
        assert h.times() == [pytest.approx(90.0, abs=1e-3), pytest.approx(390.0, abs=1e-3)]
        assert h.times()[1] - h.times()[0] == pytest.approx(300.0, abs=1e-3)
        assert later.next_run == datetime(2024, 1, 15, 12, 15).timestamp()
        assert later.runs_total == 2 and later.skipped_missed == 0

    async def test_a_wall_clock_jump_is_followed(self, autojump_clock: object) -> None:
        """The wall clock jumps 10 minutes ahead (a suspend): the cron
        schedule notices within ``recheck``, runs once late, counts the
        slots passed over, and goes on from the next time after now."""
        offset = [0.0]

        def jumpy() -> float:
            return BASE + trio.current_time() + offset[0]

        registry = TaskRegistry()
        registry.register(periodic("tick", cron="*/5 * * * *"))
        got: list[tuple[float, Submit]] = []
        topology = (
            Topology()
            .add("inbox", FakeInbox, params={"got": got, "answer": accept})
            .add("results", FakeStore, params={"states": {}, "asked": []})
            .add("scheduler", Scheduler, refs={"inbox": "inbox", "results": "results"},
                 params={"registry": registry, "clock": jumpy}, recheck=5.0)
        )
        async with open_node(topology) as node:
            await trio.sleep(32)  # 12:04:02
            offset[0] = 700.0  # the wall clock now says 12:15:42
            await trio.sleep(8)
            stats = (await node.refs["scheduler"].call(GetStats())).detail
        [info] = stats.schedules
        # Woken at t=35 (recheck); 12:05 is run late, 12:10 and 12:15 passed over.
        assert [at for at, _ in got] == [pytest.approx(35.0, abs=1e-3)]
        assert info.skipped_missed == 2
        assert info.next_run == datetime(2024, 1, 15, 12, 20).timestamp()


class TestMissedRuns:
    async def test_falling_behind_runs_once_late_then_keeps_the_schedule(
        self, autojump_clock: object, caplog: pytest.LogCaptureFixture
    ) -> None:
        """every=10, and the inbox takes 25 s to answer the first run: the
        run due at 20 starts late at 35 (once, not a burst), the slot at 30
        is passed over and counted, and the next runs are at 40 and 50."""
        calls = [0]

        async def slow_first(submit: Submit) -> Any:
            calls[0] += 1
            if calls[0] == 1:
                await trio.sleep(25)
            return Accepted(id=submit.id)

        caplog.set_level(logging.WARNING, "fastworker.periodic")
        async with open_scheduler(periodic("beat", every=10.0), answer=slow_first,
                                  call_timeout=60.0) as h:
            await h.until(55)
            info = await h.schedule("beat")
        assert h.times() == [10.0, 35.0, 40.0, 50.0]
        assert (info.runs_total, info.skipped_missed, info.skipped_overlap) == (4, 1, 0)
        assert "beat is 15 s late: running it once now; 1 run passed over" in caplog.text

    async def test_an_inbox_that_does_not_answer_is_given_up_and_counted(
        self, autojump_clock: object
    ) -> None:
        """A call to the inbox never hangs: past call_timeout the run is
        given up and counted; its id is checked before the next run."""
        calls = [0]

        async def hang_first(submit: Submit) -> Any:
            calls[0] += 1
            if calls[0] == 1:
                await trio.sleep_forever()
            return Accepted(id=submit.id)

        async with open_scheduler(periodic("beat", every=10.0), answer=hang_first,
                                  call_timeout=2.0) as h:
            await h.until(13)
            info = await h.schedule("beat")
            await h.until(15)
            [first] = h.ids()
            h.states[first] = "running"  # the inbox took it after all
            await h.until(25)
            later = await h.schedule("beat")
        assert h.times() == [10.0]
        assert (info.failed_total, info.runs_total, info.last_id) == (1, 0, first)
        assert h.asked == [first]
        assert (later.skipped_overlap, later.failed_total) == (1, 1)


class TestOverlap:
    async def test_a_run_is_skipped_while_the_previous_one_runs(
        self, autojump_clock: object, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, "fastworker.periodic")
        async with open_scheduler(periodic("beat", every=10.0)) as h:
            await h.until(15)
            [first] = h.ids()
            h.states[first] = "running"
            await h.until(25)
            skipped = await h.schedule("beat")
            h.states[first] = "succeeded"
            await h.until(35)
            info = await h.schedule("beat")
        assert h.times() == [10.0, 30.0]
        assert h.asked == [first, first]
        assert (skipped.skipped_overlap, skipped.runs_total) == (1, 1)
        assert (info.skipped_overlap, info.runs_total, info.last_id) == (1, 2, h.ids()[1])
        assert f"beat skipped: its previous run {first} is still running" in caplog.text

    @pytest.mark.parametrize("state", ["queued", "scheduled"])
    async def test_queued_or_scheduled_also_blocks(self, autojump_clock: object,
                                                   state: str) -> None:
        async with open_scheduler(periodic("beat", every=10.0)) as h:
            await h.until(15)
            h.states[h.ids()[0]] = state
            await h.until(45)
            info = await h.schedule("beat")
        assert h.times() == [10.0]
        assert info.skipped_overlap == 3

    async def test_with_the_real_inbox_and_store(self, autojump_clock: object) -> None:
        """The real PriorityInbox and ResultStore, and no worker: the first
        run stays queued, so the next ones are skipped."""
        registry = TaskRegistry()
        registry.register(periodic("beat", every=10.0))
        dispatcher_got: list[Any] = []
        topology = (
            Topology()
            .add("dispatcher", Recorder, params={"got": dispatcher_got})
            .add("results", ResultStore)
            .add("inbox", PriorityInbox, refs={"dispatcher": "dispatcher", "results": "results"},
                 params={"task_names": lambda: {"beat"}})
            .add("scheduler", Scheduler, refs={"inbox": "inbox", "results": "results"},
                 params={"registry": registry, "clock": wall})
        )
        async with open_node(topology) as node:
            await trio.sleep(35)
            [info] = (await node.refs["scheduler"].call(GetStats())).detail.schedules
            detail = await node.refs["results"].call(GetTask(id=info.last_id))
        assert (info.runs_total, info.skipped_overlap) == (1, 2)
        assert (detail.record.task, detail.record.state) == ("beat", "queued")


class TestRejected:
    async def test_a_rejected_run_is_counted_and_the_schedule_goes_on(
        self, autojump_clock: object, caplog: pytest.LogCaptureFixture
    ) -> None:
        calls = [0]

        async def full_first(submit: Submit) -> Any:
            calls[0] += 1
            if calls[0] == 1:
                return Rejected(id=submit.id, error="QueueFull", message="the queue is full")
            return Accepted(id=submit.id)

        caplog.set_level(logging.WARNING, "fastworker.periodic")
        async with open_scheduler(periodic("beat", every=10.0), answer=full_first) as h:
            await h.until(35)
            info = await h.schedule("beat")
        assert h.times() == [10.0, 20.0, 30.0]
        assert (info.rejected_total, info.runs_total) == (1, 2)
        # The rejected run is not a previous run to wait for.
        assert h.asked == [h.ids()[1]]
        assert "beat: the run was rejected: QueueFull: the queue is full" in caplog.text


class TestOff:
    async def test_enabled_false_submits_nothing(self, autojump_clock: object) -> None:
        async with open_scheduler(periodic("beat", every=10.0),
                                  periodic("tick", cron="* * * * *"), enabled=False) as h:
            await h.until(600)
            stats = await h.stats()
            ready = h.node.ready["scheduler"]
        assert h.got == []
        assert stats == SchedulerStats(enabled=False, schedules=())
        assert ready == "off (enabled = false): 2 periodic tasks not scheduled"

    async def test_no_periodic_tasks(self, autojump_clock: object) -> None:
        async with open_scheduler(Task(name="plain", fn=nothing)) as h:
            await h.until(600)
            stats = await h.stats()
            ready = h.node.ready["scheduler"]
        assert (h.got, stats.schedules, ready) == ([], (), "no periodic tasks")


def _scheduler_actors(path: str) -> list[str]:
    topology = Topology.from_toml(path, environ={})
    return [spec.name for spec in topology.actors
            if issubclass(resolve_kind(spec.kind), Scheduler)]


def test_only_the_control_plane_schedules() -> None:
    """config/sub.toml has no scheduler, so adding subworkers never
    doubles a run; config/control.toml has exactly one."""
    assert _scheduler_actors("config/sub.toml") == []
    assert _scheduler_actors("config/control.toml") == ["scheduler"]
