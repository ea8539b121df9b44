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
from fastworker.stats import DispatcherStats
from fastworker.inbox import PriorityInbox
from fastworker.messages import Accepted, Assign, Credit, Demand, Job, JobBatch, Submit
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
        await self.refs["dispatcher"].send(Credit(worker="local", n=len(message.jobs)))


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
                                             "results": "results"},
             params={"local_tasks": lambda: {"t"}})
    )
    async with open_node(topology) as node:
        yield Harness(node.refs["dispatcher"], inbox_got, executor_got)


def demand(n: int) -> Demand:
    """A Demand of the local executor, which has task "t" only."""
    return Demand(n=n, only=frozenset({"t"}))


def batch(*ids: str) -> JobBatch:
    return JobBatch(
        jobs=tuple(Job(id=i, task="t", payload=b"", priority=2, timeout=None) for i in ids)
    )


async def test_credit_is_asked_of_the_inbox_and_spent_on_jobs() -> None:
    """Credit becomes Demand; jobs go to the executor and spend credit; new
    credit asks only for what is not already asked for."""
    async with open_dispatcher() as h:
        await h.send(Credit(worker="local", n=3))
        assert h.inbox_got == [demand(3)]
        await h.send(batch("a", "b"))
        assert h.assigned() == [["a", "b"]]
        stats = await h.stats()
        assert (stats.credit, stats.asked) == ({"local": 1}, 1)
        await h.send(Credit(worker="local", n=2))
        stats = await h.stats()
    assert h.inbox_got == [demand(3), demand(2)]
    assert (stats.credit, stats.asked, stats.held) == ({"local": 3}, 3, 0)
    assert (stats.assigned_total, stats.batches_total) == (2, 1)


async def test_credits_handled_together_are_one_demand() -> None:
    """Several Credits in one handled batch are asked for with one Demand."""
    async with open_dispatcher() as h:
        await h.send(Credit(worker="w1", n=2), Credit(worker="w2", n=3), Credit(worker="w1", n=1))
        stats = await h.stats()
    assert h.inbox_got == [demand(6)]
    assert stats.credit == {"w1": 3, "w2": 3}


async def test_jobs_go_to_the_worker_with_the_most_free_credit() -> None:
    """A batch spreads over workers, most free credit first, in one Assign per worker."""
    async with open_dispatcher() as h:
        await h.send(Credit(worker="w1", n=2), Credit(worker="w2", n=3))
        await h.send(batch("j1", "j2", "j3", "j4"))
        stats = await h.stats()
    # w2 (3) j1; tie 2-2 goes by name: w1 j2; w2 (2) j3; tie 1-1: w1 j4.
    # Assigns go out in the order the workers got their first job.
    assert h.assigned() == [["j1", "j3"], ["j2", "j4"]]
    assert stats.credit == {"w1": 0, "w2": 1}


async def test_jobs_without_credit_are_held_not_dropped(caplog: pytest.LogCaptureFixture) -> None:
    """Jobs that arrive with no credit are logged and held until credit
    arrives; that credit is not asked of the inbox again."""
    caplog.set_level(logging.INFO, logger="fastworker.dispatcher")
    async with open_dispatcher() as h:
        await h.send(batch("a", "b", "c"))
        assert h.executor_got == []
        assert (await h.stats()).held == 3
        await h.send(Credit(worker="local", n=2))
        assert h.assigned() == [["a", "b"]]
        await h.send(Credit(worker="local", n=2))
        stats = await h.stats()
    assert h.assigned() == [["a", "b"], ["c"]]
    assert h.inbox_got == [demand(1)]
    assert (stats.held, stats.credit, stats.asked) == (0, {"local": 1}, 1)
    assert [r.getMessage() for r in caplog.records] == [
        "dispatcher: holding 3 jobs that no worker with free slots can run until one has room "
        "(1 such batches in the last 60 s)"
    ]


async def test_a_batch_and_credit_together_are_placed() -> None:
    """A JobBatch and a Credit handled together: jobs use the old credit,
    the new credit is asked for."""
    async with open_dispatcher() as h:
        await h.send(Credit(worker="local", n=2))
        await h.send(batch("a", "b"), Credit(worker="local", n=2))
    assert h.assigned() == [["a", "b"]]
    assert h.inbox_got == [demand(2), demand(2)]


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
                                             "results": "results"},
             params={"local_tasks": lambda: {"t"}})
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
            await node.refs["dispatcher"].send(Credit(worker="local", n=4))
        await trio.testing.wait_all_tasks_blocked()
        stats = await node.stats()
    assert sorted(ran) == sorted(ids)
    dispatcher: DispatcherStats = stats["dispatcher"].detail
    assert (dispatcher.credit, dispatcher.held, dispatcher.assigned_total) == ({"local": 4}, 0, 100)
    assert stats["inbox"].detail.dispatched_total == 100
    assert trio.current_time() < 30  # waiting Submits were admitted, none timed out
