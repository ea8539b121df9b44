"""The Dispatcher: credit accounting, Assign batching, jobs held for lack of
credit, and, wired to a real PriorityInbox, every task placed exactly once.
The inbox and the executor are stand-ins that record what they are sent."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from actors import Actor, ActorContext, GetStats, NoOptions, Ref, Topology, open_node
from actors.requests import Requests
from fastworker.dispatcher import Dispatcher
from fastworker.inbox import PriorityInbox
from fastworker.internal import DrainWorker
from fastworker.messages import (
    ASYNC,
    THREAD,
    Accepted,
    Assign,
    Credit,
    Demand,
    Job,
    JobBatch,
    Returned,
    Submit,
)
from fastworker.stats import DispatcherStats
from tests.fastworker.helpers import Recorder


class Executor(Actor[Assign]):
    """Stands in for the executor: "runs" each job at once, records it, and
    gives its slot back as credit."""

    refs_required = ("dispatcher",)

    def __init__(self, options: NoOptions, context: ActorContext, *, ran: list[str]) -> None:
        super().__init__(options, context)
        self.ran = ran

    async def handle(self, message: Assign) -> None:
        self.ran.extend(job.id for job in message.jobs)
        await self.refs["dispatcher"].send(
            Credit(worker="local", slots=(len(message.jobs), 0, 0)))


@attrs.define
class Harness:
    """A running dispatcher, and what its inbox and executor were sent."""

    dispatcher: Ref[Any]
    inbox_got: list[Any]
    executor_got: list[Any]

    async def send(self, *messages: Any) -> None:
        """Send messages so that the dispatcher handles them as one batch."""
        await self.dispatcher.send_batch(messages)
        await trio.testing.wait_all_tasks_blocked()

    def assigned(self) -> list[list[str]]:
        return [[job.id for job in m.jobs] for m in self.executor_got]

    async def stats(self) -> DispatcherStats:
        stats = await self.dispatcher.call(GetStats())
        detail: DispatcherStats = stats.detail
        return detail


@asynccontextmanager
async def open_dispatcher() -> AsyncIterator[Harness]:
    inbox_got: list[Any] = []
    executor_got: list[Any] = []
    topology = (
        Topology()
        .add("inbox", Recorder, params={"got": inbox_got})
        .add("executor", Recorder, params={"got": executor_got})
        .add("results", Recorder, params={"got": []})
        .add("dispatcher", Dispatcher, refs={"inbox": "inbox", "executor": "executor",
                                             "results": "results"})
    )
    async with open_node(topology) as node:
        yield Harness(node.refs["dispatcher"], inbox_got, executor_got)


#: The tasks the executors run: "t", an async task.
TASKS = {"t": ASYNC}


def demand(n: int = 0, *, received: int = 0) -> Demand:
    """A Demand of ``n`` free slots for task "t" (none: an empty one)."""
    return Demand(pools=((n, frozenset(TASKS)),) if n else (), received=received)


def credit(n: int, worker: str = "local", *, first: bool = False) -> Credit:
    """``n`` more async slots of an executor; its ``first`` Credit names its tasks."""
    return Credit(worker=worker, slots=(n, 0, 0), tasks=TASKS if first else None)


def batch(*ids: str) -> JobBatch:
    return JobBatch(
        jobs=tuple(Job(id=i, task="t", payload=b"", priority=2, timeout=None) for i in ids)
    )


async def test_credit_is_asked_of_the_inbox_and_spent_on_jobs() -> None:
    """Credit becomes Demand; jobs go to the executor and spend credit; each
    Demand says the free credit now (not more on top of the last), and how
    many jobs were received when it was written."""
    async with open_dispatcher() as h:
        await h.send(credit(3, first=True))
        assert h.inbox_got == [demand(3)]
        await h.send(batch("a", "b"))
        assert h.assigned() == [["a", "b"]]
        stats = await h.stats()
        assert (stats.credit, stats.asked) == ({"local": 1}, 1)
        await h.send(credit(2))
        stats = await h.stats()
    assert h.inbox_got == [demand(3), demand(1, received=2), demand(3, received=2)]
    assert (stats.credit, stats.asked, stats.held) == ({"local": 3}, 3, 0)
    assert (stats.assigned_total, stats.batches_total) == (2, 1)


async def test_credits_handled_together_are_one_demand() -> None:
    """Several Credits in one handled batch are asked for with one Demand."""
    async with open_dispatcher() as h:
        await h.send(credit(2, "w1", first=True), credit(3, "w2", first=True), credit(1, "w1"))
        stats = await h.stats()
    assert h.inbox_got == [demand(6)]  # one pool: both run the same tasks
    assert stats.credit == {"w1": 3, "w2": 3}


async def test_jobs_go_to_the_worker_with_the_most_free_credit() -> None:
    """A batch spreads over workers, most free credit first, in one Assign per worker."""
    async with open_dispatcher() as h:
        await h.send(credit(2, "w1", first=True), credit(3, "w2", first=True))
        await h.send(batch("j1", "j2", "j3", "j4"))
        stats = await h.stats()
    # w2 (3) j1; tie 2-2 goes by name: w1 j2; w2 (2) j3; tie 1-1: w1 j4.
    # Assigns go out in the order the workers got their first job.
    assert h.assigned() == [["j1", "j3"], ["j2", "j4"]]
    assert stats.credit == {"w1": 0, "w2": 1}


async def test_jobs_without_credit_are_held_not_dropped(caplog: pytest.LogCaptureFixture) -> None:
    """Jobs that arrive with no credit are logged and held until credit
    arrives; the credit they take is not asked of the inbox."""
    caplog.set_level(logging.INFO, logger="fastworker.dispatcher")
    async with open_dispatcher() as h:
        await h.send(batch("a", "b", "c"))
        assert h.executor_got == []
        assert (await h.stats()).held == 3
        await h.send(credit(2, first=True))
        assert h.assigned() == [["a", "b"]]
        await h.send(credit(2))
        stats = await h.stats()
    assert h.assigned() == [["a", "b"], ["c"]]
    assert h.inbox_got == [demand(received=3), demand(1, received=3)]
    assert (stats.held, stats.credit, stats.asked) == (0, {"local": 1}, 1)
    assert [r.getMessage() for r in caplog.records] == [
        "dispatcher: holding 3 jobs that no worker with free slots can run until one has room "
        "(1 such batches in the last 60 s)"
    ]


async def test_a_batch_and_credit_together_are_placed() -> None:
    """A JobBatch and a Credit handled together: the jobs are placed, what
    credit is left is asked for."""
    async with open_dispatcher() as h:
        await h.send(credit(2, first=True))
        await h.send(batch("a", "b"), credit(2))
    assert h.assigned() == [["a", "b"]]
    assert h.inbox_got == [demand(2), demand(2, received=2)]


async def test_every_task_runs_exactly_once_through_inbox_and_dispatcher(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Wired to a real inbox and a credit-returning executor, every accepted
    task is assigned exactly once, and no more at once than the credit."""
    ran: list[str] = []
    topology = (
        Topology()
        .add("results", Recorder, params={"got": []})
        .add("executor", Executor, refs={"dispatcher": "dispatcher"}, params={"ran": ran})
        .add("dispatcher", Dispatcher, refs={"inbox": "inbox", "executor": "executor",
                                             "results": "results"})
        .add(
            "inbox",
            PriorityInbox,
            refs={"dispatcher": "dispatcher", "results": "results"},
            check_task_names=False,
            capacity=20,
        )
    )
    async with open_node(topology) as node:
        ids = [f"t{n}" for n in range(100)]
        submits = [
            Submit(id=i, task="t", payload=b"", priority=n % 4, queue_wait=30.0)
            for n, i in enumerate(ids)
        ]
        async with trio.open_nursery() as nursery:

            async def submit(chunk: list[Submit]) -> None:
                answers = await node.refs["inbox"].call(Requests(messages=tuple(chunk)))
                assert answers == [Accepted(id=s.id) for s in chunk]

            for start in range(0, 100, 10):
                nursery.start_soon(submit, submits[start : start + 10])
            await trio.testing.wait_all_tasks_blocked()
            await node.refs["dispatcher"].send(credit(4, first=True))
        await trio.testing.wait_all_tasks_blocked()
        stats = await node.stats()
    assert sorted(ran) == sorted(ids)
    dispatcher: DispatcherStats = stats["dispatcher"].detail
    assert (dispatcher.credit, dispatcher.held, dispatcher.assigned_total) == ({"local": 4}, 0, 100)
    assert stats["inbox"].detail.dispatched_total == 100
    assert trio.current_time() < 30  # waiting Submits were admitted, none timed out


class Spy(Actor[Any]):
    """Passes every message on to ``to``, keeping a copy (what the
    dispatcher sends the inbox)."""

    refs_required = ("to",)

    def __init__(self, options: NoOptions, context: ActorContext, *, got: list[Any]) -> None:
        super().__init__(options, context)
        self.got = got

    async def handle(self, message: Any) -> None:
        self.got.append(message)
        await self.refs["to"].send(message)


@attrs.define
class Wired:
    """A dispatcher wired to a real inbox; the executor a recording stand-in
    whose credit the test gives back."""

    dispatcher: Ref[Any]
    inbox: Ref[Any]
    to_inbox: list[Any]
    executor_got: list[Any]

    async def submit(self, *ids: str, priority: int = 2) -> None:
        answers = await self.inbox.call(Requests(messages=tuple(
            Submit(id=i, task="t", payload=b"", priority=priority) for i in ids)))
        assert answers == [Accepted(id=i) for i in ids]
        await trio.testing.wait_all_tasks_blocked()

    async def send(self, message: Any) -> None:
        await self.dispatcher.send(message)
        await trio.testing.wait_all_tasks_blocked()

    def assigned(self) -> list[list[str]]:
        return [[job.id for job in m.jobs] for m in self.executor_got if m.jobs]

    def demands(self) -> list[Demand]:
        return [m for m in self.to_inbox if isinstance(m, Demand)]


@asynccontextmanager
async def open_wired() -> AsyncIterator[Wired]:
    to_inbox: list[Any] = []
    executor_got: list[Any] = []
    topology = (
        Topology()
        .add("results", Recorder, params={"got": []})
        .add("executor", Recorder, params={"got": executor_got})
        .add("to_inbox", Spy, refs={"to": "inbox"}, params={"got": to_inbox})
        .add("dispatcher", Dispatcher, refs={"inbox": "to_inbox", "executor": "executor",
                                             "results": "results"})
        .add("inbox", PriorityInbox, refs={"dispatcher": "dispatcher", "results": "results"},
             check_task_names=False, capacity=100)
    )
    async with open_node(topology) as node:
        yield Wired(node.refs["dispatcher"], node.refs["inbox"], to_inbox, executor_got)


def threads(n: int, *, first: bool = False) -> Credit:
    """``n`` more thread slots of the local executor, which runs "t" on threads."""
    return Credit(worker="local", slots=(0, n, 0), tasks={"t": THREAD} if first else None)


def thread_demand(n: int = 0, *, received: int = 0) -> Demand:
    return Demand(pools=((n, frozenset({"t"})),) if n else (), received=received)


async def test_a_flood_leaves_the_inbox_only_as_far_as_free_credit_so_a_critical_job_goes_next(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The local executor runs "t" on threads and offers 2 (its free
    threads and prefetch). Of 40 low jobs queued, 2 leave the inbox: each
    Demand asks for the free credit, no more. A critical job submitted
    after the flood is the next to go when a slot frees, before the 38 low
    ones still queued."""
    async with open_wired() as w:
        await w.send(threads(2, first=True))
        await w.submit(*(f"low{n}" for n in range(40)), priority=3)
        assert w.assigned() == [["low0", "low1"]]
        await w.submit("crit", priority=0)
        assert w.assigned() == [["low0", "low1"]]
        await w.send(threads(1))  # a job ended: a thread is free
        assert w.assigned() == [["low0", "low1"], ["crit"]]
        await w.send(threads(1))
        stats = await w.inbox.call(GetStats())
    assert w.assigned() == [["low0", "low1"], ["crit"], ["low2"]]
    assert w.demands() == [
        thread_demand(2), thread_demand(received=2),
        thread_demand(1, received=2), thread_demand(received=3),
        thread_demand(1, received=3), thread_demand(received=4),
    ]
    assert stats.detail.queued == (0, 0, 0, 37)


async def test_jobs_the_local_executor_gives_back_are_the_first_to_leave_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Drained by an operator, the local executor is asked for the jobs it
    has not started; those it returns are queued again at the front, the
    same attempt: once it is resumed and has slots, they go before the
    jobs that were queued behind them."""
    async with open_wired() as w:
        await w.send(threads(3, first=True))
        await w.submit("j0", "j1", "j2", "j3", "j4")
        assert w.assigned() == [["j0", "j1", "j2"]]
        assert await w.dispatcher.call(DrainWorker(worker="local")) is True
        await trio.testing.wait_all_tasks_blocked()
        assert w.executor_got[-1] == Assign(jobs=(), give_back=True)
        await w.send(Returned(jobs=w.executor_got[0].jobs[1:]))  # j0 started
        assert await w.dispatcher.call(DrainWorker(worker="local", resume=True)) is True
        await w.send(threads(2))
    assert w.assigned() == [["j0", "j1", "j2"], ["j1", "j2"]]
    assert [job.attempt for job in w.executor_got[-1].jobs] == [1, 1]
