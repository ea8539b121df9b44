"""The PriorityInbox: admission, duplicates, priorities and the starvation
guard, waiting for room (under MockClock), cancellation, and what it tells
the dispatcher and the store. The dispatcher and the store are stand-ins
that record what they are sent."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from actors import GetStats, Ref, Topology, open_node
from actors.requests import Requests
from fastworker.inbox import PriorityInbox
from fastworker.internal import KnownTasks, Requeue
from fastworker.limits import MAX_FAIR_KEY_LENGTH
from fastworker.messages import (
    Accepted,
    Cancel,
    Cancelled,
    CancelReply,
    Demand,
    Expired,
    Job,
    JobBatch,
    Queued,
    Records,
    Rejected,
    Released,
    StatusQuery,
    Submit,
    TaskRecord,
)
from fastworker.stats import InboxStats
from tests.fastworker.helpers import Recorder

TASKS = frozenset({"examples.tasks.add", "examples.tasks.mul", "examples.tasks.sleep"})
ADD, MUL, SLEEP = "examples.tasks.add", "examples.tasks.mul", "examples.tasks.sleep"


@attrs.define
class Harness:
    """A running inbox, and what its dispatcher and store were sent."""

    inbox: Ref[Any]
    dispatcher_got: list[Any]
    store_got: list[Any]

    async def submit(self, *submits: Submit | Cancel) -> list[Any]:
        self.tasks |= {s.task for s in submits if isinstance(s, Submit)}
        answers: list[Any] = await self.inbox.call(Requests(messages=submits))
        return answers

    granted: int = 0  # slots the dispatcher had free, ever, as this harness plays it
    tasks: frozenset[str] = TASKS  # and every task submitted through it

    def next_demand(self, n: int, only: frozenset[str] | None = None) -> Demand:
        """The Demand a dispatcher sends once ``n`` more of its slots are
        free (of ``only``'s tasks; by default any submitted): its free slots
        less what it received."""
        self.granted += n
        received = len(self.dispatched())
        return Demand(pools=((self.granted - received, self.tasks if only is None else only),),
                      received=received)

    async def demand(self, n: int, only: frozenset[str] | None = None) -> None:
        await self.inbox.send(self.next_demand(n, only))
        await trio.testing.wait_all_tasks_blocked()

    def dispatched(self) -> list[str]:
        return [job.id for batch in self.dispatcher_got for job in batch.jobs]

    def queued(self) -> list[list[str]]:
        """The ids of each Queued the store got."""
        return [[e.id for e in m.entries] for m in self.store_got if isinstance(m, Queued)]

    async def stats(self) -> InboxStats:
        stats = await self.inbox.call(GetStats())
        detail: InboxStats = stats.detail
        return detail


@asynccontextmanager
async def waiting_for_room(h: Harness, submit: Submit) -> AsyncIterator[list[Any]]:
    """``submit`` sent and parked for room (the queue is full); yields the
    list its answers go to, and waits for them on the way out."""
    answers: list[Any] = []
    async with trio.open_nursery() as nursery:

        async def waiter() -> None:
            answers.extend(await h.submit(submit))

        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        yield answers


@asynccontextmanager
async def open_inbox(
    task_names: Callable[[], Collection[str]] = lambda: TASKS,
    store_answer: Callable[[Any], Any] | None = None,
    store: type[Recorder] = Recorder, **options: Any
) -> AsyncIterator[Harness]:
    dispatcher_got: list[Any] = []
    store_got: list[Any] = []
    topology = (
        Topology()
        .add("dispatcher", Recorder, params={"got": dispatcher_got})
        .add("results", store, params={"got": store_got, "answer": store_answer})
        .add(
            "inbox",
            PriorityInbox,
            refs={"dispatcher": "dispatcher", "results": "results"},
            params={"task_names": task_names},
            **options,
        )
    )
    async with open_node(topology) as node:
        yield Harness(node.refs["inbox"], dispatcher_got, store_got)


def sub(
    id: str,
    priority: int = 2,
    *,
    task: str = "examples.tasks.add",
    queue_wait: float = 0.0,
) -> Submit:
    return Submit(id=id, task=task, payload=b"p", priority=priority, queue_wait=queue_wait)


class TestAdmission:
    async def test_fairness_keys_take_turns_and_are_counted(self) -> None:
        """A flood of one key queued first does not hold up another key's
        task; the stats count the tasks queued per key, most first."""
        flood = [Submit(id=f"f{i}", task=ADD, payload=b"p", fair_key="t1") for i in range(20)]
        async with open_inbox() as h:
            await h.submit(*flood)
            await h.submit(Submit(id="q", task=ADD, payload=b"p", fair_key="t2"),
                           Submit(id="n", task=ADD, payload=b"p"))
            stats = await h.stats()
            assert stats.fair_keys == 2
            assert stats.top_fair_keys == (("t1", 20), ("t2", 1))
            await h.demand(4)
            await trio.testing.wait_all_tasks_blocked()
            assert h.dispatched() == ["f0", "q", "n", "f1"]
            stats = await h.stats()
            assert stats.fair_keys == 1 and stats.top_fair_keys == (("t1", 18),)

    async def test_a_fairness_key_too_long_is_refused_naming_the_limit(self) -> None:
        async with open_inbox() as h:
            answers = await h.submit(
                Submit(id="a", task=ADD, payload=b"p", fair_key="k" * (MAX_FAIR_KEY_LENGTH + 1)))
        assert answers == [Rejected(
            id="a", error="InvalidSubmission",
            message=f"fair_key is {MAX_FAIR_KEY_LENGTH + 1} characters; "
                    f"the limit is {MAX_FAIR_KEY_LENGTH}")]

    async def test_a_request_is_answered_in_order_and_queued(self) -> None:
        """Each Submit of a request is answered in order, and the store hears
        of the request's tasks in one Queued."""
        async with open_inbox() as h:
            answers = await h.submit(sub("a", 0), sub("b", 3), sub("c", 2))
            stats = await h.stats()
        assert answers == [Accepted(id="a"), Accepted(id="b"), Accepted(id="c")]
        assert stats.queued == (1, 0, 1, 1)
        assert stats.accepted_total == 3
        assert h.queued() == [["a", "b", "c"]]
        entry = h.store_got[0].entries[1]
        assert (entry.task, entry.priority) == ("examples.tasks.add", 3)

    async def test_each_request_is_one_queued_notification(self) -> None:
        """The store gets one Queued per request, holding only what it queued."""
        async with open_inbox() as h:
            await h.submit(sub("a"), sub("b"))
            await h.submit(sub("c"), sub("x", task="nope"), sub("d"))
            await h.submit(sub("y", task="nope"))
        assert h.queued() == [["a", "b"], ["c", "d"]]

    async def test_requests_of_many_frames_at_once_are_decided_in_one_flush(self) -> None:
        """Requests queued together (many clients, one task each) are each
        answered, in order, and the store hears of them in one Queued; one
        that waits for room is answered once room frees."""
        async with open_inbox(capacity=3) as h:
            answers: dict[str, Any] = {}

            async def ask(id: str) -> None:
                [answers[id]] = await h.submit(sub(id, queue_wait=10))

            async with trio.open_nursery() as nursery:
                for id in "abcd":  # all queued before the inbox runs again
                    nursery.start_soon(ask, id)
                await trio.testing.wait_all_tasks_blocked()
                assert len(answers) == 3  # the fourth waits for room
                await h.demand(1)
        assert answers == {id: Accepted(id=id) for id in "abcd"}
        first, *rest = h.queued()
        assert len(first) == 3 and rest == [sorted(set("abcd") - set(first))]

    async def test_a_resent_submit_is_accepted_again_and_queued_once(self) -> None:
        """A Submit whose id is queued, or was dispatched, is Accepted without
        being queued twice."""
        async with open_inbox() as h:
            assert await h.submit(sub("a"), sub("a")) == [Accepted(id="a")] * 2
            assert await h.submit(sub("a", 0)) == [Accepted(id="a")]
            await h.demand(10)
            assert await h.submit(sub("a")) == [Accepted(id="a")]
            await h.demand(10)
            stats = await h.stats()
        assert h.dispatched() == ["a"]
        assert h.queued() == [["a"]]
        assert (stats.accepted_total, stats.duplicates_total) == (1, 3)

    async def test_unknown_task_is_rejected_naming_the_closest(self) -> None:
        """An unknown task name is UnknownTask, with the closest known name."""
        async with open_inbox() as h:
            answers = await h.submit(sub("a", task="examples.tasks.ad"))
            stats = await h.stats()
        assert answers == [
            Rejected(
                id="a",
                error="UnknownTask",
                message="unknown task 'examples.tasks.ad'; did you mean 'examples.tasks.add'? "
                "(known: examples.tasks.add, examples.tasks.mul, examples.tasks.sleep)",
            )
        ]
        assert stats.rejected_total == {"UnknownTask": 1}
        assert stats.queued == (0, 0, 0, 0)

    async def test_unknown_task_lists_ten_known_names(self) -> None:
        """Without a close match the message lists ten known names and counts the rest."""
        names = [f"tasks.t{n:02d}" for n in range(13)]
        async with open_inbox(lambda: names) as h:
            answers = await h.submit(sub("a", task="zzz"))
        assert answers[0].message == (
            "unknown task 'zzz' (known: tasks.t00, tasks.t01, tasks.t02, tasks.t03, tasks.t04, "
            "tasks.t05, tasks.t06, tasks.t07, tasks.t08, tasks.t09, and 3 more)"
        )

    async def test_task_names_are_looked_up_again_and_can_be_advertised(self) -> None:
        """A task registered after start is found by asking the source again;
        KnownTasks adds names of its own."""
        names = set(TASKS)
        async with open_inbox(lambda: names) as h:
            names.add("late.task")
            await h.inbox.send(KnownTasks(names=frozenset({"remote.task"})))
            answers = await h.submit(sub("a", task="late.task"), sub("b", task="remote.task"))
        assert answers == [Accepted(id="a"), Accepted(id="b")]

    async def test_task_names_come_from_the_registry_by_default(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without a task_names source, the inbox asks fastworker.tasks.registry."""
        import fastworker.tasks

        @attrs.frozen
        class Registry:
            def names(self) -> frozenset[str]:
                return frozenset({"registered.task"})

        monkeypatch.setattr(fastworker.tasks, "registry", Registry())
        topology = (
            Topology()
            .add("dispatcher", Recorder, params={"got": []})
            .add("results", Recorder, params={"got": []})
            .add("inbox", PriorityInbox, refs={"dispatcher": "dispatcher", "results": "results"})
        )
        async with open_node(topology) as node:
            answers = await node.refs["inbox"].call(
                Requests(messages=(sub("a", task="registered.task"), sub("b", task="registered")))
            )
            ready = node.ready["inbox"]
        assert ready == "capacity 100000, 1 task names known"
        assert answers == [
            Accepted(id="a"),
            Rejected(
                id="b",
                error="UnknownTask",
                message="unknown task 'registered'; did you mean 'registered.task'? "
                "(known: registered.task)",
            ),
        ]

    async def test_task_names_are_not_checked_when_disabled(self) -> None:
        """With check_task_names off, any name is queued."""
        async with open_inbox(check_task_names=False) as h:
            assert await h.submit(sub("a", task="any.thing")) == [Accepted(id="a")]

    @pytest.mark.parametrize("priority", [-1, 4])
    async def test_priority_out_of_range_is_invalid(self, priority: int) -> None:
        """A priority outside 0..3 is InvalidSubmission."""
        async with open_inbox() as h:
            answers = await h.submit(sub("a", priority))
        assert answers == [
            Rejected(
                id="a",
                error="InvalidSubmission",
                message=f"priority {priority} is out of range; expected 0 (critical) to 3 (low)",
            )
        ]

    @pytest.mark.parametrize("timeout", [0.0, float("nan")], ids=["zero", "nan"])
    async def test_a_time_limit_not_above_zero_is_invalid(self, timeout: float) -> None:
        """A Submit whose timeout is not a number of seconds > 0 is
        InvalidSubmission at the inbox, and nothing is queued."""
        async with open_inbox() as h:
            answers = await h.submit(attrs.evolve(sub("a"), timeout=timeout))
            stats = await h.stats()
        assert answers == [
            Rejected(
                id="a",
                error="InvalidSubmission",
                message=f"timeout {timeout!r} is not a number of seconds > 0",
            )
        ]
        assert stats.queued == (0, 0, 0, 0)
        assert h.queued() == []


class TestDispatch:
    async def test_demand_of_one_takes_the_best_job_first(self) -> None:
        """A critical job submitted later leaves before low ones queued earlier."""
        async with open_inbox() as h:
            await h.submit(sub("low1", 3), sub("low2", 3))
            await h.demand(1)
            await h.submit(sub("normal", 2))
            await h.submit(sub("critical", 0))
            for _ in range(3):
                await h.demand(1)
            await h.demand(1)  # nothing left: no empty batch
        assert h.dispatched() == ["low1", "critical", "normal", "low2"]
        assert [len(batch.jobs) for batch in h.dispatcher_got] == [1, 1, 1, 1]

    async def test_demand_stands_until_jobs_arrive(self) -> None:
        """Demand not met now is met by the jobs that arrive next."""
        async with open_inbox() as h:
            await h.demand(2)
            await h.submit(sub("a"))
            await trio.testing.wait_all_tasks_blocked()
            await h.submit(sub("b"), sub("c"))
            await trio.testing.wait_all_tasks_blocked()
            stats = await h.stats()
        assert h.dispatched() == ["a", "b"]
        assert (stats.demand, stats.queued, stats.dispatched_total) == (0, (0, 0, 1, 0), 2)

    async def test_one_job_batch_per_handled_batch(self) -> None:
        """Demands handled together are answered with one JobBatch."""
        async with open_inbox() as h:
            await h.submit(*(sub(f"j{n}") for n in range(5)))
            await h.inbox.send_batch([h.next_demand(1) for _ in range(3)])
            await trio.testing.wait_all_tasks_blocked()
        assert h.dispatcher_got == [JobBatch(jobs=h.dispatcher_got[0].jobs)]
        assert h.dispatched() == ["j0", "j1", "j2"]

    async def test_starvation_guard_lets_a_low_job_through(self) -> None:
        """After starvation_limit critical jobs while a low job waits, a low job goes."""
        async with open_inbox(starvation_limit=2) as h:
            await h.submit(*(sub(f"low{n}", 3) for n in range(3)))
            await h.submit(*(sub(f"crit{n}", 0) for n in range(5)))
            await h.demand(100)
        assert h.dispatched() == [
            "crit0", "crit1", "low0", "crit2", "crit3", "low1", "crit4", "low2",
        ]

    async def test_starvation_guard_serves_every_waiting_level(self) -> None:
        """With several lower levels waiting, each gets one job per round, highest first."""
        async with open_inbox(starvation_limit=2) as h:
            await h.submit(*(sub(f"n{n}", 2) for n in range(2)))
            await h.submit(*(sub(f"h{n}", 1) for n in range(3)))
            await h.submit(*(sub(f"c{n}", 0) for n in range(5)))
            await h.demand(100)
        assert h.dispatched() == [
            "c0", "c1", "h0", "n0", "c2", "c3", "h1", "n1", "c4", "h2",
        ]


class TestQueueFull:
    async def test_full_inbox_rejects_with_queue_full(self) -> None:
        """A full inbox answers QueueFull at once to a Submit that will not
        wait, and keeps what it holds."""
        async with open_inbox(capacity=2) as h:
            answers = await h.submit(sub("a"), sub("b"), sub("c"))
            stats = await h.stats()
        assert answers[:2] == [Accepted(id="a"), Accepted(id="b")]
        assert answers[2] == Rejected(
            id="c",
            error="QueueFull",
            message="queue full (capacity 2); pass queue_wait to wait for room",
        )
        assert (stats.queued, stats.rejected_total) == ((0, 0, 2, 0), {"QueueFull": 1})
        assert h.queued() == [["a", "b"]]

    async def test_a_waiting_submit_is_refused_when_its_wait_ends(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A Submit waits queue_wait seconds for room, then is QueueFull; the
        inbox keeps answering meanwhile."""
        async with open_inbox(capacity=1) as h:
            await h.submit(sub("a"))
            start = trio.current_time()
            answers: list[Any] = []
            async with trio.open_nursery() as nursery:

                async def waiter() -> None:
                    answers.extend(await h.submit(sub("before"), sub("b", queue_wait=2.0)))
                    answers.append(trio.current_time() - start)

                nursery.start_soon(waiter)
                await trio.testing.wait_all_tasks_blocked()
                assert await h.submit(sub("a")) == [Accepted(id="a")]
                stats = await h.stats()
                assert stats.parked == 1
        assert answers == [
            Rejected(
                id="before",
                error="QueueFull",
                message="queue full (capacity 1); pass queue_wait to wait for room",
            ),
            Rejected(id="b", error="QueueFull", message="queue full (capacity 1); waited 2.0 s"),
            2.0,
        ]

    async def test_waits_end_in_deadline_order(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A later Submit with a shorter wait is refused first, at its own deadline."""
        async with open_inbox(capacity=1) as h:
            await h.submit(sub("a"))
            start = trio.current_time()
            ended: list[tuple[str, float]] = []
            async with trio.open_nursery() as nursery:

                async def waiter(id: str, wait: float) -> None:
                    [answer] = await h.submit(sub(id, queue_wait=wait))
                    ended.append((answer.message, trio.current_time() - start))

                nursery.start_soon(waiter, "long", 5.0)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(waiter, "short", 0.25)
        assert ended == [
            ("queue full (capacity 1); waited 0.25 s", 0.25),
            ("queue full (capacity 1); waited 5.0 s", 5.0),
        ]

    async def test_a_waiting_submit_is_admitted_when_room_frees(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Room freed by dispatch goes to waiting Submits, first come first,
        and the store hears of them."""
        async with open_inbox(capacity=1) as h:
            await h.submit(sub("a", 3))
            start = trio.current_time()
            answers: list[Any] = []
            async with trio.open_nursery() as nursery:

                async def waiter() -> None:
                    answers.extend(
                        await h.submit(sub("b", 1, queue_wait=10), sub("c", 0, queue_wait=10))
                    )

                nursery.start_soon(waiter)
                await trio.testing.wait_all_tasks_blocked()
                await h.demand(1)
                assert answers == []  # b got a's room; c still waits
                await h.demand(1)
            assert trio.current_time() == start
            await h.demand(5)
        assert answers == [Accepted(id="b"), Accepted(id="c")]
        assert h.queued() == [["a"], ["b"], ["c"]]
        assert h.dispatched() == ["a", "b", "c"]

    async def test_a_waiting_submit_is_answered_when_the_inbox_stops(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Stopping the inbox answers every waiting Submit: its caller never hangs."""
        answers: list[Any] = []
        async with trio.open_nursery() as nursery:
            async with open_inbox(capacity=1) as h:
                await h.submit(sub("a"))

                async def waiter() -> None:
                    answers.extend(await h.submit(sub("b", queue_wait=60)))

                nursery.start_soon(waiter)
                await trio.testing.wait_all_tasks_blocked()
                await trio.sleep(1.5)
        assert answers == [
            Rejected(
                id="b",
                error="QueueFull",
                message="queue full (capacity 1); the inbox stopped after 1.5 s of waiting",
            )
        ]


class TestCancel:
    async def test_cancel_of_a_queued_task(self) -> None:
        """A queued task is cancelled, the store is told, and it never leaves."""
        async with open_inbox() as h:
            await h.submit(sub("a"), sub("b"))
            assert await h.submit(Cancel(id="a")) == [CancelReply(id="a", outcome="cancelled")]
            await h.demand(10)
            stats = await h.stats()
        assert Cancelled(ids=("a",)) in h.store_got
        assert h.dispatched() == ["b"]
        assert (stats.cancelled_total, stats.queued) == (1, (0, 0, 0, 0))

    async def test_cancel_of_a_dispatched_or_unknown_task(self) -> None:
        """A dispatched task is not_queued, an id never seen unknown; a resent
        Cancel of a cancelled task is cancelled again."""
        async with open_inbox() as h:
            await h.submit(sub("a"), sub("b"))
            await h.demand(1)
            answers = await h.submit(Cancel(id="a"), Cancel(id="b"), Cancel(id="zz"))
            again = await h.inbox.call(Cancel(id="b"))
        assert answers == [
            CancelReply(id="a", outcome="not_queued"),
            CancelReply(id="b", outcome="cancelled"),
            CancelReply(id="zz", outcome="unknown"),
        ]
        assert again == CancelReply(id="b", outcome="cancelled")
        assert [m for m in h.store_got if isinstance(m, Cancelled)] == [Cancelled(ids=("b",))]

    async def test_cancel_frees_room_for_a_waiting_submit(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Room freed by a Cancel goes to the Submit waiting for it."""
        async with open_inbox(capacity=1) as h:
            await h.submit(sub("a"))
            async with waiting_for_room(h, sub("b", queue_wait=10)) as answers:
                assert await h.submit(Cancel(id="a"), sub("c")) == [
                    CancelReply(id="a", outcome="cancelled"),
                    Rejected(
                        id="c",
                        error="QueueFull",
                        message="queue full (capacity 1); pass queue_wait to wait for room",
                    ),
                ]
            await h.demand(5)
        assert answers == [Accepted(id="b")]
        assert h.dispatched() == ["b"]

    async def test_a_resent_submit_whose_parked_twin_gets_the_room_is_one_task(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A Submit parked for room is resent (its answer was slow); the
        resend comes in the same request as a Cancel that frees the room:
        the parked copy takes it, and the resend is answered as that task,
        not queued a second time."""
        async with open_inbox(capacity=1) as h:
            await h.submit(sub("a"))
            async with waiting_for_room(h, sub("b", queue_wait=10)) as answers:
                assert await h.submit(Cancel(id="a"), sub("b", queue_wait=10)) == [
                    CancelReply(id="a", outcome="cancelled"), Accepted(id="b")]
            stats = await h.stats()
            await h.demand(5)
        assert answers == [Accepted(id="b")]
        assert h.dispatched() == ["b"] and h.queued() == [["a"], ["b"]]
        assert (stats.queued, stats.accepted_total, stats.duplicates_total) == ((0, 0, 1, 0), 2, 1)

    async def test_many_cancels_keep_order_and_counts(self) -> None:
        """Cancelling most of a long queue leaves the rest in order."""
        async with open_inbox() as h:
            await h.submit(*(sub(f"j{n}") for n in range(300)))
            await h.submit(*(Cancel(id=f"j{n}") for n in range(300) if n % 10))
            assert (await h.stats()).queued == (0, 0, 30, 0)
            await h.demand(1000)
        assert h.dispatched() == [f"j{n}" for n in range(0, 300, 10)]


def requeued_job(id: str, priority: int = 2, *, task: str = ADD, attempt: int = 2) -> Job:
    """A job coming back from a lost worker, as the dispatcher requeues it."""
    return Job(id=id, task=task, payload=b"p", priority=priority, timeout=None,
               attempt=attempt, losses=1)


class TestRequeue:
    async def test_requeued_jobs_go_to_the_front_of_their_levels_in_order(self) -> None:
        """Requeued jobs leave before the jobs queued at their level, in the
        order given, each as sent (its attempt and losses kept); priority
        still holds across levels."""
        async with open_inbox() as h:
            await h.submit(sub("n1"), sub("n2"), sub("h1", 1))
            back = (requeued_job("r1"), requeued_job("r2", 1), requeued_job("r3"))
            await h.inbox.send(Requeue(jobs=back))
            await trio.testing.wait_all_tasks_blocked()
            assert (await h.stats()).queued == (0, 2, 4, 0)
            await h.demand(10)
            stats = await h.stats()
        assert h.dispatched() == ["r2", "h1", "r1", "r3", "n1", "n2"]
        jobs = {job.id: job for batch in h.dispatcher_got for job in batch.jobs}
        assert [jobs[id] for id in ("r1", "r2", "r3")] == list(back)
        assert (stats.requeued_total, stats.dispatched_total) == (3, 6)

    async def test_requeue_ignores_capacity_and_does_not_tell_the_store(self) -> None:
        """Requeued jobs were accepted once: a full inbox takes them back,
        and they are not reported Queued again."""
        async with open_inbox(capacity=1) as h:
            await h.submit(sub("a"))
            await h.inbox.send(Requeue(jobs=(requeued_job("r1"), requeued_job("r2"))))
            await trio.testing.wait_all_tasks_blocked()
            full = await h.submit(sub("b"))
            stats = await h.stats()
        assert stats.queued == (0, 0, 3, 0)
        assert [answer.error for answer in full] == ["QueueFull"]
        assert h.queued() == [["a"]]

    async def test_a_requeued_job_can_be_cancelled(self) -> None:
        """A Cancel of a requeued job cancels it; the store is told, and the
        jobs around it still leave in order."""
        async with open_inbox() as h:
            await h.submit(sub("a"))
            await h.demand(1)
            await h.submit(sub("b"))
            await h.inbox.send(Requeue(jobs=(requeued_job("a"), requeued_job("c"))))
            await trio.testing.wait_all_tasks_blocked()
            assert await h.submit(Cancel(id="a")) == [CancelReply(id="a", outcome="cancelled")]
            await h.demand(10)
            stats = await h.stats()
        assert h.dispatched() == ["a", "c", "b"]
        assert Cancelled(ids=("a",)) in h.store_got
        assert (stats.cancelled_total, stats.queued) == (1, (0, 0, 0, 0))

    async def test_a_job_still_queued_is_not_requeued_twice(self) -> None:
        """A Requeue of an id that is queued already leaves the queue as it is."""
        async with open_inbox() as h:
            await h.submit(sub("a"), sub("b"))
            await h.inbox.send(Requeue(jobs=(requeued_job("b"),)))
            await trio.testing.wait_all_tasks_blocked()
            await h.demand(10)
            stats = await h.stats()
        assert h.dispatched() == ["a", "b"]
        assert stats.requeued_total == 0


class TestTaskFilter:
    async def test_only_sends_matching_jobs_and_keeps_the_others_in_order(self) -> None:
        """A Demand whose pools run only some tasks sends only jobs of those,
        best first; the others stay queued in their order for a Demand
        that allows them."""
        async with open_inbox() as h:
            await h.submit(sub("m1", 2, task=MUL), sub("a1", 3), sub("m2", 0, task=MUL),
                           sub("a2", 1), sub("a3", 3), sub("m3", 2, task=MUL))
            await h.demand(10, frozenset({ADD}))
            assert h.dispatched() == ["a2", "a1", "a3"]
            stats = await h.stats()
            await h.demand(0)
        assert stats.queued == (1, 0, 2, 0)
        assert stats.demand == 7
        assert h.dispatched() == ["a2", "a1", "a3", "m2", "m1", "m3"]

    async def test_only_keeps_the_demand_standing_for_a_matching_job(self) -> None:
        """With no matching job the demand waits, and the next matching job
        that arrives goes out, past the others."""
        async with open_inbox() as h:
            await h.submit(sub("m1", task=MUL))
            await h.demand(1, frozenset({ADD}))
            assert h.dispatched() == []
            await h.submit(sub("m2", task=MUL), sub("a1", 3))
            await trio.testing.wait_all_tasks_blocked()
            stats = await h.stats()
        assert h.dispatched() == ["a1"]
        assert (stats.demand, stats.queued) == (0, (0, 0, 2, 0))

    async def test_the_latest_demand_replaces_the_one_before(self) -> None:
        """A later Demand replaces the pools of the one before."""
        async with open_inbox() as h:
            await h.submit(sub("m1", task=MUL), sub("m2", task=MUL))
            await h.demand(2, frozenset({ADD}))
            assert h.dispatched() == []
            await h.demand(0, frozenset({MUL}))
        assert h.dispatched() == ["m1", "m2"]

    async def test_a_filtered_demand_skips_cancelled_jobs(self) -> None:
        """A cancelled job of a matching task, behind a job of another task,
        is passed over, not sent; so it is when the filter is lifted."""
        async with open_inbox() as h:
            await h.submit(sub("m1", task=MUL), sub("a1"), sub("m2", task=MUL), sub("a2"))
            await h.submit(Cancel(id="a1"))
            await h.demand(10, frozenset({ADD}))
            stats = await h.stats()
            await h.demand(0)
        assert (stats.queued, stats.demand) == ((0, 0, 2, 0), 9)
        assert h.dispatched() == ["a2", "m1", "m2"]

    async def test_each_pool_takes_only_its_tasks_up_to_its_free_slots(self) -> None:
        """Two pools (say a worker's threads and its lanes): each job takes a
        slot of a pool that runs its task, so a flood of one task never
        takes the slots only the other can use."""
        async with open_inbox() as h:
            await h.submit(*(sub(f"m{n}", 2, task=MUL) for n in range(5)), sub("a1", 3))
            await h.inbox.send(Demand(pools=((2, frozenset({MUL})), (1, frozenset({ADD}))),
                                      received=0))
            await trio.testing.wait_all_tasks_blocked()
            stats = await h.stats()
        assert h.dispatched() == ["m0", "m1", "a1"]
        assert (stats.demand, stats.queued) == (0, (0, 0, 3, 0))

    async def test_jobs_on_their_way_are_charged_to_a_new_demand(self) -> None:
        """A Demand written before the dispatcher received the last batch:
        the jobs still on their way take slots of it first."""
        async with open_inbox() as h:
            await h.submit(*(sub(f"a{n}") for n in range(6)))
            await h.inbox.send(Demand(pools=((2, TASKS),), received=0))
            await trio.testing.wait_all_tasks_blocked()
            assert h.dispatched() == ["a0", "a1"]
            # One more slot freed before the two arrived: 3 free, 2 coming.
            await h.inbox.send(Demand(pools=((3, TASKS),), received=0))
            await trio.testing.wait_all_tasks_blocked()
            assert h.dispatched() == ["a0", "a1", "a2"]
            # Now it has them (and placed them): 1 slot free.
            await h.inbox.send(Demand(pools=((1, TASKS),), received=3))
            await trio.testing.wait_all_tasks_blocked()
        assert h.dispatched() == ["a0", "a1", "a2", "a3"]

    async def test_jobs_of_several_tasks_on_their_way_are_charged_to_their_pools(
        self,
    ) -> None:
        """Jobs on their way are charged to the pool of their own task: two
        "mul" jobs and one "add" job on their way leave, of a new Demand of
        3 "mul" slots and 1 "add" slot, one "mul" slot and no "add" slot."""
        async with open_inbox() as h:
            await h.submit(*(sub(f"m{n}", 2, task=MUL) for n in range(5)),
                           sub("a1", 3), sub("a2", 3))
            pools = ((2, frozenset({MUL})), (1, frozenset({ADD})))
            await h.inbox.send(Demand(pools=pools, received=0))
            await trio.testing.wait_all_tasks_blocked()
            assert h.dispatched() == ["m0", "m1", "a1"]
            await h.inbox.send(Demand(pools=((3, frozenset({MUL})), (1, frozenset({ADD}))),
                                      received=0))
            await trio.testing.wait_all_tasks_blocked()
            stats = await h.stats()
        assert h.dispatched() == ["m0", "m1", "a1", "m2"]
        assert (stats.demand, stats.queued) == (0, (0, 0, 2, 1))


async def test_no_job_is_ever_dropped(autojump_clock: trio.testing.MockClock) -> None:
    """Under a random mix of submits, resends, cancels and demands, every
    accepted and not cancelled task is dispatched exactly once."""
    rng = random.Random(7)
    accepted: set[str] = set()
    cancelled: set[str] = set()
    async with open_inbox(capacity=8, starvation_limit=3) as h:
        for _step in range(400):
            roll = rng.random()
            if roll < 0.6:
                ids = [f"t{rng.randrange(150)}" for _ in range(rng.randrange(1, 5))]
                submits = [sub(i, rng.randrange(4), queue_wait=rng.choice([0, 0.5])) for i in ids]
                for answer in await h.submit(*submits):
                    if isinstance(answer, Accepted):
                        accepted.add(answer.id)
            elif roll < 0.75:
                [reply] = await h.submit(Cancel(id=f"t{rng.randrange(150)}"))
                if reply.outcome == "cancelled":
                    cancelled.add(reply.id)
            else:
                await h.demand(rng.randrange(4))
        await h.demand(1000)
        stats = await h.stats()
    dispatched = h.dispatched()
    assert len(dispatched) == len(set(dispatched))
    assert set(dispatched) == accepted - cancelled
    assert sorted(i for q in h.queued() for i in q) == sorted(accepted)
    assert stats.queued == (0, 0, 0, 0)
    assert stats.dispatched_total == len(dispatched)


def later(id: str, delay: float = 0.0, *, expires_in: float | None = None,
          priority: int = 2) -> Submit:
    return Submit(id=id, task=ADD, payload=b"p", priority=priority, delay=delay,
                  expires_in=expires_in)


def reported(h: Harness, kind: type[Any]) -> list[str]:
    return [id for m in h.store_got if isinstance(m, kind) for id in m.ids]


class TestScheduled:
    async def test_a_delayed_task_is_held_then_queued_at_its_time(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """countdown / eta: held until its time on trio's clock, then queued
        behind what is queued, and the store hears of both moments."""
        async with open_inbox() as h:
            assert await h.submit(later("late", 10.0), sub("now")) == [
                Accepted(id="late"), Accepted(id="now")]
            [entries] = [m.entries for m in h.store_got if isinstance(m, Queued)]
            await h.demand(5)
            before = (h.dispatched(), await h.stats(), trio.current_time())
            await trio.sleep(9.9)
            assert h.dispatched() == ["now"]
            await trio.sleep(0.2)
            await trio.testing.wait_all_tasks_blocked()
            after = await h.stats()
        assert [e.scheduled_for > 0 for e in entries] == [True, False]
        assert before[0] == ["now"] and before[1].scheduled == 1
        assert h.dispatched() == ["now", "late"]
        assert reported(h, Released) == ["late"]
        assert after.scheduled == 0

    async def test_scheduled_tasks_are_released_in_time_order(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        async with open_inbox() as h:
            await h.submit(later("c", 30.0), later("a", 10.0), later("b", 20.0))
            await h.demand(5)
            await trio.sleep(31)
            await trio.testing.wait_all_tasks_blocked()
        assert h.dispatched() == ["a", "b", "c"]

    async def test_a_scheduled_task_can_be_cancelled_and_never_runs(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        async with open_inbox() as h:
            await h.submit(later("x", 5.0))
            assert await h.inbox.call(Cancel(id="x")) == CancelReply(id="x", outcome="cancelled")
            await h.demand(5)
            await trio.sleep(10)
            await trio.testing.wait_all_tasks_blocked()
            stats = await h.stats()
        assert h.dispatched() == []
        assert reported(h, Cancelled) == ["x"] and reported(h, Released) == []
        assert stats.scheduled == 0

    async def test_scheduled_tasks_have_their_own_bound(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        async with open_inbox(scheduled_capacity=2) as h:
            answers = await h.submit(later("a", 5), later("b", 5), later("c", 5), sub("d"))
        assert answers[:2] == [Accepted(id="a"), Accepted(id="b")]
        assert isinstance(answers[2], Rejected) and answers[2].error == "QueueFull"
        assert "2 scheduled tasks already wait" in answers[2].message
        assert answers[3] == Accepted(id="d")  # the queue itself has room

    @pytest.mark.parametrize(("field", "value"), [
        ("delay", -1.0), ("delay", float("nan")), ("expires_in", 0.0), ("expires_in", -5.0)])
    async def test_a_bad_delay_or_deadline_is_an_invalid_submission(
        self, field: str, value: float
    ) -> None:
        async with open_inbox() as h:
            [answer] = await h.submit(attrs.evolve(later("bad"), **{field: value}))
        assert isinstance(answer, Rejected) and answer.error == "InvalidSubmission"
        assert field in answer.message


class TestDeadlines:
    async def test_a_task_still_queued_at_its_deadline_expires(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """No worker asks in time: at its deadline it leaves the queue and
        the store hears it expired; a later demand does not get it."""
        async with open_inbox() as h:
            await h.submit(later("x", expires_in=5.0), sub("y"))
            await trio.sleep(4.9)
            assert reported(h, Expired) == []
            await trio.sleep(0.2)
            await trio.testing.wait_all_tasks_blocked()
            stats = await h.stats()
            await h.demand(5)
            again = await h.inbox.call(Cancel(id="x"))
        assert reported(h, Expired) == ["x"]
        assert h.dispatched() == ["y"]
        assert (stats.queued, stats.expired_total) == ((0, 0, 1, 0), 1)
        assert again.outcome == "not_queued"

    async def test_a_task_handed_out_in_time_carries_its_deadline_and_does_not_expire_here(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        async with open_inbox() as h:
            await h.demand(1)
            await h.submit(later("x", expires_in=5.0))
            await trio.sleep(10)
            await trio.testing.wait_all_tasks_blocked()
        [job] = [job for batch in h.dispatcher_got for job in batch.jobs]
        assert job.expires_at is not None and job.expires_at > job.queued_at
        assert reported(h, Expired) == []

    async def test_a_deadline_before_the_scheduled_time_expires_it_unrun(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        async with open_inbox() as h:
            await h.demand(5)
            await h.submit(later("x", 60.0, expires_in=30.0))
            await trio.sleep(61)
            await trio.testing.wait_all_tasks_blocked()
        assert reported(h, Expired) == ["x"]
        assert h.dispatched() == [] and reported(h, Released) == []


def job(id: str, attempt: int = 2, *, expires_at: float | None = None) -> Job:
    return Job(id=id, task=ADD, payload=b"p", priority=2, timeout=None, attempt=attempt,
               expires_at=expires_at)


class TestRetries:
    async def test_a_retry_is_held_for_its_backoff_then_queued_behind(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A Requeue with delays holds each failed attempt for its own wait
        (trio's clock), then queues it at the back of its level."""
        async with open_inbox() as h:
            await h.inbox.send(Requeue(jobs=(job("r1"), job("r2", 3)), delays=(2.0, 0.5)))
            await h.demand(5)
            await h.submit(sub("new"))
            await trio.sleep(0.4)
            assert h.dispatched() == ["new"]
            held = await h.stats()
            await trio.sleep(0.2)
            await trio.testing.wait_all_tasks_blocked()
            assert h.dispatched() == ["new", "r2"]
            await trio.sleep(1.5)
            await trio.testing.wait_all_tasks_blocked()
            stats = await h.stats()
        assert h.dispatched() == ["new", "r2", "r1"]
        attempts = [j.attempt for batch in h.dispatcher_got for j in batch.jobs]
        assert attempts == [1, 3, 2]
        assert reported(h, Released) == ["r2", "r1"]
        assert (held.scheduled, stats.scheduled, stats.retried_total) == (2, 0, 2)

    async def test_a_retry_waiting_for_its_backoff_can_be_cancelled(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        async with open_inbox() as h:
            await h.inbox.send(Requeue(jobs=(job("r"),), delays=(10.0,)))
            answer = await h.inbox.call(Cancel(id="r"))
            await h.demand(5)
            await trio.sleep(11)
            await trio.testing.wait_all_tasks_blocked()
        assert answer.outcome == "cancelled"
        assert h.dispatched() == [] and reported(h, Cancelled) == ["r"]

    async def test_a_retry_due_after_its_deadline_expires_unrun(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        async with open_inbox() as h:
            await h.inbox.send(
                Requeue(jobs=(job("r", expires_at=time.time() + 5.0),), delays=(30.0,)))
            await h.demand(5)
            await trio.sleep(31)
            await trio.testing.wait_all_tasks_blocked()
        assert reported(h, Expired) == ["r"]
        assert h.dispatched() == []

    async def test_a_bad_retries_count_is_an_invalid_submission(self) -> None:
        async with open_inbox() as h:
            [answer] = await h.submit(attrs.evolve(sub("x"), retries=-1))
            [good] = await h.submit(attrs.evolve(sub("y"), retries=2))
            await h.demand(1)
        assert isinstance(answer, Rejected) and "retries -1" in answer.message
        assert good == Accepted(id="y")
        [queued] = [j for batch in h.dispatcher_got for j in batch.jobs]
        assert queued.retries == 2


def keyed(id: str, key: str, **fields: Any) -> Submit:
    return attrs.evolve(sub(id), key=key, **fields)


def answer_status(states: dict[str, str]) -> Callable[[Any], Any]:
    """A store's answer to StatusQuery: each id in its state, ``unknown``
    if it has none (the store never had, or has dropped, its record)."""
    def answer(message: Any) -> Any:
        if isinstance(message, StatusQuery):
            return Records(records=tuple(
                TaskRecord(id=id, state=states.get(id, "unknown")) for id in message.ids))
        return None
    return answer


class SilentStore(Recorder):
    """A store that takes StatusQuery calls and never answers them."""

    async def handle(self, message: Any) -> Any:
        self.got.append(message)
        if isinstance(message, StatusQuery):
            self.defer()
        return None


class TestUniqueKeys:
    async def test_a_key_held_by_a_queued_or_scheduled_task_returns_its_id(self) -> None:
        async with open_inbox() as h:
            first = await h.submit(keyed("a", "k"), keyed("b", "k"), keyed("c", "other"))
            later_too = await h.submit(keyed("s", "sk", delay=60.0), keyed("t", "sk"))
            stats = await h.stats()
        assert first == [Accepted(id="a"), Accepted(id="a"), Accepted(id="c")]
        assert later_too == [Accepted(id="s"), Accepted(id="s")]
        assert h.queued() == [["a", "c"], ["s"]]
        assert (stats.unique_hits_total, stats.keys) == (2, 3)

    async def test_a_running_holder_keeps_its_key_until_the_store_says_it_ended(self) -> None:
        """Once the holder is handed out, the inbox asks the store (one
        StatusQuery per request) and frees the key only when it is final."""
        states = {"a": "running"}

        def store(message: Any) -> Any:
            if isinstance(message, StatusQuery):
                return Records(records=tuple(
                    TaskRecord(id=id, state=states.get(id, "unknown")) for id in message.ids))
            return None

        async with open_inbox(store_answer=store) as h:
            await h.submit(keyed("a", "k"))
            await h.demand(1)
            while_running = await h.submit(keyed("b", "k"), keyed("b2", "k"))
            states["a"] = "succeeded"
            after = await h.submit(keyed("c", "k"))
            again = await h.submit(keyed("d", "k"))
        asked = [m.ids for m in h.store_got if isinstance(m, StatusQuery)]
        assert while_running == [Accepted(id="a"), Accepted(id="a")]
        assert after == [Accepted(id="c")] and again == [Accepted(id="c")]
        assert asked == [("a",), ("a",)]  # "c" is still queued: no question

    async def test_a_cancelled_holder_frees_its_key(self) -> None:
        def store(message: Any) -> Any:
            if isinstance(message, StatusQuery):
                return Records(records=tuple(
                    TaskRecord(id=id, state="cancelled") for id in message.ids))
            return None

        async with open_inbox(store_answer=store) as h:
            await h.submit(keyed("a", "k"))
            await h.inbox.call(Cancel(id="a"))
            answer = await h.submit(keyed("b", "k"))
        assert answer == [Accepted(id="b")]

    async def test_a_refused_submission_does_not_take_the_key(self) -> None:
        async with open_inbox(capacity=1) as h:
            await h.submit(sub("full"))
            refused = await h.submit(keyed("a", "k"))
            await h.demand(1)
            taken = await h.submit(keyed("b", "k"))
        assert isinstance(refused[0], Rejected) and refused[0].error == "QueueFull"
        assert taken == [Accepted(id="b")]

    async def test_without_an_answer_from_the_store_the_key_stays_held(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        async with open_inbox(key_check_timeout=1.0) as h:  # the Recorder answers None
            await h.submit(keyed("a", "k"))
            await h.demand(1)
            answer = await h.submit(keyed("b", "k"))
        assert answer == [Accepted(id="a")]

    async def test_a_store_silent_past_the_key_check_timeout_leaves_the_key_held(
        self, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """When the store does not answer within ``key_check_timeout``, the
        key stays with its holder (a task that may still run is not started
        twice), the inbox says so once, and it goes on serving."""
        async with open_inbox(store=SilentStore, key_check_timeout=2.0) as h:
            await h.submit(keyed("a", "k"))
            await h.demand(1)
            asked_at = trio.current_time()
            answer = await h.submit(keyed("b", "k"))
            waited = trio.current_time() - asked_at
            unkeyed = await h.submit(sub("c"))
        assert answer == [Accepted(id="a")] and unkeyed == [Accepted(id="c")]
        assert [m.ids for m in h.store_got if isinstance(m, StatusQuery)] == [("a",)]
        assert waited == pytest.approx(2.0, abs=0.1)
        assert [r.getMessage() for r in caplog.records if r.name == "fastworker.inbox"] == [
            "inbox: the store did not say in 2 s whether 1 keyed tasks ended; "
            "their keys stay held"]

    async def test_a_holder_the_store_has_forgotten_frees_its_key(self) -> None:
        """A holder the store no longer knows (its record was dropped, or it
        never got one) counts as ended: the key goes to the next Submit."""
        async with open_inbox(store_answer=answer_status({})) as h:
            await h.submit(keyed("a", "k"))
            await h.demand(1)
            answer = await h.submit(keyed("b", "k"))
            stats = await h.stats()
        assert answer == [Accepted(id="b")]
        assert stats.keys == 1

    async def test_past_its_limit_the_map_drops_the_keys_of_every_ended_holder(self) -> None:
        """Past ``recent_ids`` keys, the next request, keyed or not, asks the
        store about every holder outside the queue and drops the ended ones;
        a running holder keeps its key."""
        states = {"a": "succeeded", "b": "failed", "c": "running"}
        async with open_inbox(store_answer=answer_status(states), recent_ids=2) as h:
            await h.submit(keyed("a", "ka"), keyed("b", "kb"), keyed("c", "kc"))
            await h.demand(3)
            before = await h.stats()
            await h.submit(sub("plain"))
            after = await h.stats()
            again = await h.submit(keyed("d", "ka"), keyed("e", "kc"))
        asked = [sorted(m.ids) for m in h.store_got if isinstance(m, StatusQuery)]
        assert (before.keys, after.keys) == (3, 1)
        assert asked[0] == ["a", "b", "c"]
        assert again == [Accepted(id="d"), Accepted(id="c")]

    async def test_a_submit_with_the_key_of_one_waiting_for_room_gets_its_answer(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A Submit whose key is held by one still waiting for room is not
        queued as well, even though the store knows nothing of the holder
        yet: once room frees, the holder is queued and both are answered
        with its id."""
        answers: dict[str, list[Any]] = {}
        async with open_inbox(capacity=1, store_answer=answer_status({})) as h:
            await h.submit(sub("full"))

            async def submit(submit: Submit) -> None:
                answers[submit.id] = await h.submit(submit)

            with trio.fail_after(600):  # a Submit never answered fails, not hangs
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(submit, keyed("a", "k", queue_wait=60.0))
                    await trio.testing.wait_all_tasks_blocked()
                    nursery.start_soon(submit, keyed("b", "k", queue_wait=60.0))
                    nursery.start_soon(submit, keyed("a", "k", queue_wait=60.0))  # a resend
                    await trio.testing.wait_all_tasks_blocked()
                    waiting = await h.stats()
                    await h.demand(3)
            stats = await h.stats()
        assert answers == {"a": [Accepted(id="a")], "b": [Accepted(id="a")]}
        assert waiting.parked == 1
        assert h.dispatched() == ["full", "a"]
        assert (stats.keys, stats.accepted_total) == (1, 2)
        assert not [m for m in h.store_got if isinstance(m, StatusQuery)]

    async def test_submits_following_one_refused_for_room_are_refused_with_it(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """When the wait of a keyed Submit ends before room frees, those that
        came with its key meanwhile are refused with it (each with its own
        id), and the key is free again."""
        answers: dict[str, list[Any]] = {}
        async with open_inbox(capacity=1) as h:
            await h.submit(sub("full"))

            async def submit(submit: Submit) -> None:
                answers[submit.id] = await h.submit(submit)

            with trio.fail_after(600):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(submit, keyed("a", "k", queue_wait=1.0))
                    await trio.testing.wait_all_tasks_blocked()
                    nursery.start_soon(submit, keyed("b", "k"))
            stats = await h.stats()
            await h.demand(1)
            later = await h.submit(keyed("c", "k"))
        why = "queue full (capacity 1); waited 1.0 s"
        assert answers == {"a": [Rejected(id="a", error="QueueFull", message=why)],
                           "b": [Rejected(id="b", error="QueueFull", message=why)]}
        assert (stats.keys, stats.rejected_total) == (0, {"QueueFull": 2})
        assert later == [Accepted(id="c")]

    async def test_past_its_limit_holders_still_in_the_inbox_are_not_asked_about(self) -> None:
        """Holders still queued are not asked about when the map is past its
        limit (the store need not know them yet): they keep their keys."""
        async with open_inbox(store_answer=answer_status({}), recent_ids=1) as h:
            await h.submit(keyed("a", "ka"), keyed("b", "kb"))
            await h.submit(sub("x"))
            stats = await h.stats()
            again = await h.submit(keyed("c", "ka"))
        assert not [m for m in h.store_got if isinstance(m, StatusQuery)]
        assert stats.keys == 2 and again == [Accepted(id="a")]

    async def test_at_its_limit_the_map_is_not_trimmed(self) -> None:
        """Holding exactly ``recent_ids`` keys, a request asks nothing of
        the store: trimming begins past the limit."""
        states = {"a": "succeeded", "b": "succeeded"}
        async with open_inbox(store_answer=answer_status(states), recent_ids=2) as h:
            await h.submit(keyed("a", "ka"), keyed("b", "kb"))
            await h.demand(2)
            await h.submit(sub("x"))
            stats = await h.stats()
        assert not [m for m in h.store_got if isinstance(m, StatusQuery)]
        assert stats.keys == 2

    async def test_a_submission_refused_after_waiting_for_room_frees_its_key(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A keyed Submit parked for room and refused when its wait ends
        leaves no key behind: the next Submit with the key is queued as
        itself, with no question to the store."""
        async with open_inbox(capacity=1) as h:
            await h.submit(sub("full"))
            refused = await h.submit(keyed("a", "k", queue_wait=1.0))
            after_refusal = await h.stats()
            await h.demand(1)
            taken = await h.submit(keyed("b", "k"))
        assert isinstance(refused[0], Rejected) and refused[0].error == "QueueFull"
        assert refused[0].message == "queue full (capacity 1); waited 1.0 s"
        assert after_refusal.keys == 0
        assert taken == [Accepted(id="b")]
        assert not [m for m in h.store_got if isinstance(m, StatusQuery)]
