"""The Registry: registration, health judged by heartbeat silence (all under
MockClock), departures, and what it tells the dispatcher and the inbox. The
dispatcher and the inbox are stand-ins that record what they are sent.

Every test runs under MockClock (the ``autojump_clock`` fixture). The
Registry judges silence every half interval from its start (time 0), so the
tests look at it between those ticks (at x.25 and x.75), never on one.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from actors import GetStats, Ref, Topology, open_node
from actors.requests import Requests
from fastworker.internal import KnownTasks, WorkerHealth, WorkerJoined, WorkerLeft
from fastworker.messages import (
    ASYNC,
    PROCESS,
    THREAD,
    Ack,
    Deregister,
    Heartbeat,
    HeldJob,
    Register,
    Registered,
    UnknownWorker,
)
from fastworker.registry import Registry, RegistryOptions
from fastworker.stats import RegistryStats, WorkerInfo
from tests.fastworker.helpers import Recorder

PEER = "tcp://10.0.0.7:40000"


@attrs.define
class Harness:
    """A running registry, and what its dispatcher and inbox were sent."""

    registry: Ref[Any]
    dispatcher_got: list[Any]
    inbox_got: list[Any]

    async def request(self, *messages: Any) -> list[Any]:
        """Send one request frame's messages, as the workers edge does."""
        answers: list[Any] = await self.registry.call(Requests(messages=messages, peer=PEER))
        await trio.testing.wait_all_tasks_blocked()
        return answers

    async def register(self, worker: str = "w1", **fields: Any) -> Any:
        [answer] = await self.request(register(worker, **fields))
        return answer

    async def beat(self, worker: str = "w1", **load: int) -> Any:
        [answer] = await self.request(Heartbeat(worker=worker, **load))
        return answer

    async def stats(self) -> RegistryStats:
        detail: RegistryStats = (await self.registry.call(GetStats())).detail
        return detail

    async def info(self, worker: str = "w1") -> WorkerInfo | None:
        """The worker's entry in the snapshot, or None once it is forgotten."""
        found = [info for info in (await self.stats()).workers if info.worker == worker]
        return found[0] if found else None


@asynccontextmanager
async def open_registry(**options: Any) -> AsyncIterator[Harness]:
    dispatcher_got: list[Any] = []
    inbox_got: list[Any] = []
    topology = (
        Topology()
        .add("dispatcher", Recorder, params={"got": dispatcher_got})
        .add("inbox", Recorder, params={"got": inbox_got})
        .add("registry", Registry, refs={"dispatcher": "dispatcher", "inbox": "inbox"},
             **options)
    )
    async with open_node(topology) as node:
        assert trio.current_time() == 0  # the tests' times count from the watch's start
        yield Harness(node.refs["registry"], dispatcher_got, inbox_got)


def register(worker: str = "w1", **fields: Any) -> Register:
    values: dict[str, Any] = {
        "host": "box", "pid": 4242, "slots": (1, 2, 1), "tasks": ("add", "mul"),
        "kinds": (THREAD, PROCESS),
        "at_most_once": ("mul",),
    }
    values.update(fields)
    return Register(worker=worker, **values)


async def test_a_worker_registering_again_tells_the_dispatcher_its_last_request_numbers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The last Pull and Report numbers a Register carries reach the
    dispatcher, which takes older copies of those requests as stale, and
    so does the worker's frame limit."""
    async with open_registry() as h:
        await h.register(pull_seq=41, report_seq=17, max_frame_bytes=65_536)
    [joined] = h.dispatcher_got
    assert (joined.pull_seq, joined.report_seq, joined.max_frame_bytes) == (41, 17, 65_536)


async def test_register_is_welcomed_and_told_to_dispatcher_and_inbox(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A Register is answered with the configured interval and missed limit;
    the dispatcher gets WorkerJoined with the tasks and the at-most-once
    ones, the inbox the task names; the snapshot lists the worker."""
    async with open_registry(heartbeat_interval=2.0, missed_limit=4) as h:
        answer = await h.register()
        info = await h.info()
        stats = await h.stats()
    assert answer == Registered(worker="w1", heartbeat_interval=2.0, missed_limit=4)
    assert h.dispatcher_got == [
        WorkerJoined(worker="w1", tasks=frozenset({"add", "mul"}), kinds=(THREAD, PROCESS),
                     slots=(1, 2, 1), at_most_once=frozenset({"mul"}))
    ]
    assert h.inbox_got == [KnownTasks(names=frozenset({"add", "mul"}),
                                      at_most_once=frozenset({"mul"}))]
    assert info is not None
    assert (info.host, info.pid, info.slots, info.tasks, info.peer) == (
        "box", 4242, (1, 2, 1), ("add", "mul"), PEER)
    assert (info.health, info.silent_for, info.gone_at, info.reason) == ("alive", 0.0, 0.0, "")
    assert info.registered_at > 0 and info.last_seen_at > 0  # wall-clock times
    assert (stats.registered_total, stats.lost_total, stats.left_total) == (1, 0, 0)


async def test_the_dispatcher_gets_each_task_s_kind_in_the_order_of_the_sorted_tasks(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture,
) -> None:
    """Whatever order a worker lists its tasks in, ``WorkerJoined.kinds``
    gives the kind of each of ``sorted(tasks)``; the log line says the
    slots per kind. A worker that names no kinds is passed on as such."""
    caplog.set_level(logging.INFO, logger="fastworker.registry")
    async with open_registry() as h:
        await h.register("w1", tasks=("mul", "add", "sleep"), kinds=(PROCESS, ASYNC, THREAD),
                         slots=(3, 0, 2))
        await h.register("w2", kinds=())
    first, second = h.dispatcher_got
    assert dict(zip(sorted(first.tasks), first.kinds, strict=True)) == {
        "add": ASYNC, "mul": PROCESS, "sleep": THREAD}
    assert first.kinds == (ASYNC, PROCESS, THREAD) and first.slots == (3, 0, 2)
    assert (second.kinds, second.slots) == ((), (1, 2, 1))
    assert any(record.getMessage().endswith(
        "(pid 4242 on box, 3 async, 0 thread, 2 process slots, 3 tasks)")
        for record in caplog.records)


async def test_silence_makes_a_worker_suspect_then_a_beat_makes_it_alive_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """After 1.5 intervals without a heartbeat the worker is suspect (the
    dispatcher is told); a Heartbeat makes it alive again (told too) and
    records its load."""
    async with open_registry(heartbeat_interval=1.0) as h:
        await h.register()
        await trio.sleep_until(1.25)
        info = await h.info()
        assert info is not None and (info.health, info.silent_for) == ("alive", 1.25)
        assert h.dispatcher_got[1:] == []
        await trio.sleep_until(1.75)  # judged suspect at 1.5
        info = await h.info()
        assert info is not None and (info.health, info.silent_for) == ("suspect", 1.75)
        assert h.dispatcher_got[1:] == [WorkerHealth(worker="w1", health="suspect")]
        assert await h.beat(in_flight=3, succeeded_total=10, failed_total=2) == Ack()
        info = await h.info()
    assert h.dispatcher_got[1:] == [
        WorkerHealth(worker="w1", health="suspect"),
        WorkerHealth(worker="w1", health="alive"),
    ]
    assert info is not None
    assert (info.health, info.silent_for) == ("alive", 0.0)
    assert (info.in_flight, info.succeeded_total, info.failed_total) == (3, 10, 2)


async def test_regular_beats_keep_a_worker_alive(autojump_clock: trio.testing.MockClock) -> None:
    """A worker beating every interval is never suspect, however long it runs."""
    async with open_registry(heartbeat_interval=1.0) as h:
        await h.register()
        for _ in range(20):
            await trio.sleep(1.0)
            assert await h.beat() == Ack()
        info = await h.info()
    assert h.dispatcher_got == [h.dispatcher_got[0]]  # WorkerJoined, nothing after
    assert info is not None and info.health == "alive"


async def test_missed_limit_intervals_of_silence_lose_the_worker(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """missed_limit intervals of silence: WorkerLeft(lost=True) with a reason
    naming the silence; the snapshot shows health, reason, gone_at; its
    heartbeats are then answered UnknownWorker."""
    async with open_registry(heartbeat_interval=1.0, missed_limit=3) as h:
        await h.register()
        await trio.sleep_until(2.75)
        info = await h.info()
        assert info is not None and info.health == "suspect"
        await trio.sleep_until(3.25)  # judged lost at 3.0
        info = await h.info()
        stats = await h.stats()
        beat = await h.beat()
    assert h.dispatcher_got[1:] == [
        WorkerHealth(worker="w1", health="suspect"),
        WorkerLeft(worker="w1", reason="no heartbeat for 3.0 s (3 intervals of 1 s)", lost=True),
    ]
    assert info is not None
    assert (info.health, info.silent_for) == ("lost", 3.25)
    assert info.reason == "no heartbeat for 3.0 s (3 intervals of 1 s)"
    assert info.gone_at > 0
    assert (stats.registered_total, stats.lost_total, stats.left_total) == (1, 1, 0)
    assert beat == UnknownWorker(worker="w1")


async def test_a_lost_worker_is_forgotten_after_keep_gone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A lost worker stays listed keep_gone seconds after it was lost, then
    leaves the snapshot (its count stays)."""
    async with open_registry(heartbeat_interval=1.0, missed_limit=2, keep_gone=10.0) as h:
        await h.register()
        await trio.sleep_until(2.25)  # lost at 2.0
        assert (info := await h.info()) is not None and info.health == "lost"
        await trio.sleep_until(11.75)
        assert (info := await h.info()) is not None and info.health == "lost"
        await trio.sleep_until(12.25)  # forgotten at 12.0
        assert await h.info() is None
        stats = await h.stats()
    assert (stats.workers, stats.lost_total) == ((), 1)


async def test_a_lost_worker_that_registers_again_joins_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A lost worker answered UnknownWorker registers again: it is alive and
    the dispatcher gets a new WorkerJoined."""
    async with open_registry(heartbeat_interval=1.0, missed_limit=2) as h:
        await h.register()
        await trio.sleep_until(2.25)
        assert await h.beat() == UnknownWorker(worker="w1")
        assert isinstance(await h.register(), Registered)
        info = await h.info()
        stats = await h.stats()
    assert [type(m) for m in h.dispatcher_got] == [WorkerJoined, WorkerHealth, WorkerLeft,
                                                   WorkerJoined]
    assert info is not None and (info.health, info.reason, info.gone_at) == ("alive", "", 0.0)
    assert stats.registered_total == 2


async def test_a_heartbeat_of_an_unknown_worker_is_answered_unknown_worker(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A worker the registry never saw (it restarted) is told to register."""
    async with open_registry() as h:
        assert await h.beat("ghost") == UnknownWorker(worker="ghost")
        assert await h.info("ghost") is None
    assert h.dispatcher_got == []


async def test_deregister_is_a_clean_departure(autojump_clock: trio.testing.MockClock) -> None:
    """Deregister: Ack, WorkerLeft(lost=False), health left with a reason;
    a later Heartbeat is UnknownWorker and a second Deregister changes nothing."""
    async with open_registry() as h:
        await h.register()
        [answer] = await h.request(Deregister(worker="w1"))
        info = await h.info()
        beat = await h.beat()
        [again] = await h.request(Deregister(worker="w1"))
        stats = await h.stats()
    assert (answer, again) == (Ack(), Ack())
    assert h.dispatcher_got[1:] == [
        WorkerLeft(worker="w1", reason="deregistered (a clean stop)", lost=False)
    ]
    assert info is not None
    assert (info.health, info.reason) == ("left", "deregistered (a clean stop)")
    assert info.gone_at > 0
    assert beat == UnknownWorker(worker="w1")
    assert (stats.lost_total, stats.left_total) == (0, 1)


async def test_a_resent_register_of_a_live_worker_changes_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A Register resent by a live (even suspect) worker is welcomed again
    without a second WorkerJoined or KnownTasks; it counts as heard from."""
    async with open_registry(heartbeat_interval=1.0) as h:
        await h.register()
        await trio.sleep_until(1.75)  # suspect
        first = await h.info()
        answer = await h.register()
        info = await h.info()
        stats = await h.stats()
    assert answer == Registered(worker="w1", heartbeat_interval=1.0, missed_limit=3)
    assert [type(m) for m in h.dispatcher_got] == [WorkerJoined, WorkerHealth]
    assert len(h.inbox_got) == 1
    assert first is not None and info is not None
    assert (info.health, info.silent_for) == ("alive", 0.0)
    assert info.registered_at == first.registered_at
    assert stats.registered_total == 1


async def test_max_workers_refuses_more(autojump_clock: trio.testing.MockClock) -> None:
    """Past max_workers live workers a new one is answered UnknownWorker and
    not told to anyone; a listed one may register again; once one leaves,
    room is made."""
    async with open_registry(max_workers=1) as h:
        await h.register("w1")
        assert await h.register("w2") == UnknownWorker(worker="w2")
        assert await h.info("w2") is None
        assert isinstance(await h.register("w1"), Registered)
        await h.request(Deregister(worker="w1"))
        assert isinstance(await h.register("w2"), Registered)
    assert [(type(m), m.worker) for m in h.dispatcher_got] == [
        (WorkerJoined, "w1"), (WorkerLeft, "w1"), (WorkerJoined, "w2"),
    ]


@pytest.mark.parametrize(("fields", "reason"), [
    ({"worker": "w" * 257}, "worker name is 257 characters; the limit is 256"),
    ({"worker": ""}, "worker name must not be empty"),
    ({"host": "h" * 257}, "host name is 257 characters; the limit is 256"),
    ({"tasks": ("t",) * 10_001}, "tasks names 10001 tasks; the limit is 10000"),
    ({"tasks": ("t" * 513,)}, "a task name is 513 characters; the limit is 512"),
    ({"at_most_once": ("t" * 513,)}, "a task name is 513 characters; the limit is 512"),
    ({"slots": (1, 0, 0), "holding": (HeldJob(id="a", attempt=1, started_at=0.0),) * 2},
     "it holds 2 jobs where it holds at most 1"),
    ({"slots": (1, 0, 0), "prefetch": (1, 0, 0), "holds": (2, 1, 1),
      "holding": (HeldJob(id="a", attempt=1, started_at=0.0),) * 5},
     "it holds 5 jobs where it holds at most 4"),
    ({"slots": (1, 0, 0), "holds": (2, 1)},
     "holds has 2 counts; expected 3 (async, thread, process)"),
    ({"slots": (4, 8, 0), "holds": (4, 7, 9)},
     "holds for thread is 7; expected at least its slots (8)"),
    ({"kinds": (THREAD, THREAD, THREAD)},
     "kinds names 3 kinds for 2 tasks; expected one per task, or none"),
    ({"kinds": (THREAD, 7)}, "a task's kind is 7; expected 0 to 2 (KINDS)"),
    ({"kinds": (-1, THREAD)}, "a task's kind is -1; expected 0 to 2 (KINDS)"),
    ({"slots": (1, -1, 0)}, "slots for thread is -1; expected 0 or more"),
    ({"prefetch": (1, 1, -3)}, "prefetch for process is -3; expected 0 to 65536"),
    ({"prefetch": (1, 2**40, 0)}, f"prefetch for thread is {2**40}; expected 0 to 65536"),
    ({"prefetch": (1, 1)}, "prefetch has 2 counts; expected 3 (async, thread, process)"),
    ({"holding": (HeldJob(id="a" * 257, attempt=1, started_at=0.0),)},
     "a held job's id is 257 characters; the limit is 256"),
    ({"pull_seq": -1}, "pull_seq is -1; expected 0 or more"),
    ({"report_seq": -5}, "report_seq is -5; expected 0 or more"),
    ({"max_frame_bytes": -1}, "max_frame_bytes is -1; expected 0 or more"),
])
async def test_a_register_over_a_limit_is_refused_and_kept_nowhere(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture,
    fields: dict[str, Any], reason: str,
) -> None:
    """The registry keeps what a worker registers for as long as it lives:
    a Register over a limit is answered UnknownWorker (the worker asks
    again), logged with the reason, and told to nobody."""
    worker = fields.pop("worker", "w1")
    async with open_registry() as h:
        assert await h.register(worker, **fields) == UnknownWorker(worker=worker)
        assert (await h.stats()).workers == ()
    assert h.dispatcher_got == [] and h.inbox_got == []
    assert any(reason in record.getMessage() and "refused worker" in record.getMessage()
               for record in caplog.records)


async def test_a_register_at_the_limits_is_welcomed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_registry() as h:
        answer = await h.register("w" * 256, host="h" * 256, tasks=("t" * 512,) * 10_000,
                                  at_most_once=(), slots=(1, 0, 0), kinds=(),
                                  holding=(HeldJob(id="a" * 256, attempt=1, started_at=0.0),))
    assert isinstance(answer, Registered)


async def test_max_workers_counts_a_departed_worker_that_comes_back_as_new(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A worker still listed as left (or lost) that registers again is one
    more live worker: past max_workers it is refused like any newcomer."""
    async with open_registry(max_workers=1) as h:
        await h.register("w1")
        await h.request(Deregister(worker="w1"))
        assert isinstance(await h.register("w2"), Registered)
        assert await h.register("w1") == UnknownWorker(worker="w1")
        info = await h.info("w1")
        stats = await h.stats()
    assert info is not None and info.health == "left"
    assert sum(1 for w in stats.workers if w.health == "alive") == 1
    assert [(type(m), m.worker) for m in h.dispatcher_got] == [
        (WorkerJoined, "w1"), (WorkerLeft, "w1"), (WorkerJoined, "w2"),
    ]


async def test_one_request_frame_gets_one_answer_per_message(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Several messages of one frame are answered in order; one the registry
    does not take is answered None."""
    async with open_registry() as h:
        answers = await h.request(
            register("w1"), Heartbeat(worker="w1"), Heartbeat(worker="w2"), KnownTasks(
                names=frozenset())
        )
    assert answers == [
        Registered(worker="w1", heartbeat_interval=1.0, missed_limit=3),
        Ack(),
        UnknownWorker(worker="w2"),
        None,
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [("heartbeat_interval", 0), ("missed_limit", 1), ("keep_gone", -1), ("max_workers", 0)],
)
def test_bad_options_are_refused(field: str, value: Any) -> None:
    """Options are checked when built."""
    with pytest.raises(ValueError, match=field):
        RegistryOptions(**{field: value})
