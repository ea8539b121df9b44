"""The Dispatcher with subworkers: jobs handed out through parked Pulls as
far as each worker's Report credit goes, the local executor as a fallback,
the Demand's task filter, results passed on, and the jobs of a worker that
was lost, left or drained (requeued, or failed as WorkerLost / PoisonTask).

The inbox, the executor and the store are stand-ins that record what they
are sent; subworker requests arrive as the workers edge sends them:
``Requests`` with ``Ref.call``, one answer per message. Every test runs
under MockClock (``autojump_clock``), so a Pull left parked at the end is
answered by its wait in virtual time instead of holding the test up.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, deque
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from trio.testing import MockClock

from actors import GetStats, Ref, Topology, open_node
from actors.frame import Framer
from actors.requests import Answers, Requests
from fastworker.dispatcher import Dispatcher, pulls
from fastworker.dispatcher.outgoing import Outgoing
from fastworker.dispatcher.placement import Placement
from fastworker.dispatcher.remote import Subworkers
from fastworker.internal import (
    Adopted,
    Dispatched,
    DrainWorker,
    RecoveredDispatched,
    Requeue,
    Requeued,
    ResultsKept,
    WorkerHealth,
    WorkerJoined,
    WorkerLeft,
)
from fastworker.messages import (
    ASYNC,
    CODEC,
    PROCESS,
    THREAD,
    Ack,
    Assign,
    Cancel,
    Cancelled,
    CancelReply,
    Credit,
    Demand,
    Drain,
    Finished,
    HeldJob,
    Job,
    JobBatch,
    Outcome,
    Pull,
    RemoteError,
    Report,
    Retry,
    Returned,
    Running,
    Slots,
    Stop,
    UnknownWorker,
)
from fastworker.stats import DispatcherStats, WorkerLoad
from tests.fastworker.helpers import Recorder

PEER = "tcp://10.0.0.7:40000"
#: Virtual seconds a background request waits before failing instead of hanging.
PATIENCE = 10_000.0
#: The tasks the local executor has, and their kinds of slot: "a"
#: (subworkers have it too) and "l", both async.
LOCAL_KINDS = {"a": ASYNC, "l": ASYNC}
LOCAL_TASKS = frozenset(LOCAL_KINDS)


class Pending:
    """A request running in the background; ``answer`` is set once it returns."""

    def __init__(self) -> None:
        self.answer: Any = None
        self.answered_at: float | None = None

    async def run(self, dispatcher: Ref[Any], messages: tuple[Any, ...]) -> None:
        # A Pull never answered fails the test (CallTimeout) rather than hang it.
        self.answer = await dispatcher.call(Requests(messages=messages, peer=PEER),
                                            timeout=PATIENCE)
        self.answered_at = trio.current_time()


@attrs.define
class Harness:
    """A running dispatcher, and what its inbox, executor and store were sent."""

    dispatcher: Ref[Any]
    nursery: trio.Nursery
    inbox_got: list[Any]
    executor_got: list[Any]
    results_got: list[Any]
    #: The tasks the local executor says it runs in its first Credit.
    local_tasks: dict[str, int] = attrs.field(factory=lambda: dict(LOCAL_KINDS))
    credited: bool = False

    async def send(self, *messages: Any) -> None:
        """Send messages so that the dispatcher handles them as one batch."""
        await self.dispatcher.send_batch(messages)
        await trio.testing.wait_all_tasks_blocked()

    async def request(self, *messages: Any) -> list[Any]:
        """One request frame from a subworker, answered at once."""
        answers: list[Any] = await self.dispatcher.call(Requests(messages=messages, peer=PEER))
        await trio.testing.wait_all_tasks_blocked()
        return answers

    async def pull(self, worker: str, seq: int, *, wait: float = 30.0) -> Pending:
        """A Pull in the background: answered at once, or parked (no answer yet)."""
        pending = Pending()
        self.nursery.start_soon(pending.run, self.dispatcher,
                                (Pull(worker=worker, wait=wait, seq=seq),))
        await trio.testing.wait_all_tasks_blocked()
        return pending

    async def join(self, worker: str, *tasks: str, credit: int | Slots = 0,
                   at_most_once: Collection[str] = ()) -> None:
        """A subworker registers (the Registry's WorkerJoined) and offers
        credit (a number: of async slots, which its tasks take)."""
        await self.send(WorkerJoined(worker=worker, tasks=frozenset(tasks),
                                     at_most_once=frozenset(at_most_once)))
        slots = (credit, 0, 0) if isinstance(credit, int) else credit
        if any(slots):
            assert await self.request(Report(worker=worker, credit=slots)) == [Ack()]

    async def credit(self, n: int = 0, *, slots: Slots | None = None,
                     tasks: dict[str, int] | None = None) -> None:
        """The local executor offers ``n`` more async slots (or ``slots``);
        its first Credit (or one given ``tasks``) says what it runs."""
        if tasks is None and not self.credited:
            tasks = self.local_tasks
        self.credited = True
        await self.send(Credit(worker="local", slots=slots or (n, 0, 0), tasks=tasks))

    def demands(self) -> list[Demand]:
        return [m for m in self.inbox_got if isinstance(m, Demand)]

    def requeued(self) -> list[Requeue]:
        return [m for m in self.inbox_got if isinstance(m, Requeue)]

    def local(self) -> list[str]:
        """The ids the local executor was assigned."""
        return [job.id for m in self.executor_got for job in m.jobs]

    def reports(self) -> list[Any]:
        """What the store was sent, without the Dispatched timestamps (nor
        the ``ResultsKept`` the acks of Reports wait for)."""
        return [m for m in self.results_got if not isinstance(m, (Dispatched, ResultsKept))]

    def dispatched(self) -> list[tuple[str, tuple[str, ...]]]:
        """(worker, ids) of each Dispatched the store was sent."""
        return [(m.worker, m.ids) for m in self.results_got if isinstance(m, Dispatched)]

    def finished(self) -> list[Outcome]:
        return [o for m in self.results_got if isinstance(m, Finished) for o in m.outcomes]

    async def stats(self) -> DispatcherStats:
        detail: DispatcherStats = (await self.dispatcher.call(GetStats())).detail
        return detail

    async def load(self, worker: str) -> WorkerLoad | None:
        found = [w for w in (await self.stats()).workers if w.worker == worker]
        return found[0] if found else None


class GatedStore(Recorder):
    """A store stand-in that answers ``ResultsKept`` once ``kept`` is set."""

    def __init__(self, options: Any, context: Any, *, got: list[Any],
                 kept: trio.Event | None) -> None:
        super().__init__(options, context, got=got)
        self.kept = kept

    async def handle(self, message: Any) -> Any:
        self.got.append(message)
        if isinstance(message, ResultsKept) and self.kept is not None:
            await self.kept.wait()
        return True if isinstance(message, ResultsKept) else None


@asynccontextmanager
async def open_dispatcher(
    local_tasks: dict[str, int] | None = None, *,
    kept: trio.Event | None = None, **options: Any
) -> AsyncIterator[Harness]:
    """``local_tasks``: what the local executor says it runs in its first
    Credit (``h.credit``; by default ``LOCAL_KINDS``); ``kept``: the store
    answers ``ResultsKept`` only once it is set."""
    inbox_got: list[Any] = []
    executor_got: list[Any] = []
    results_got: list[Any] = []
    topology = (
        Topology()
        .add("inbox", Recorder, params={"got": inbox_got})
        .add("executor", Recorder, params={"got": executor_got})
        .add("results", GatedStore, params={"got": results_got, "kept": kept})
        .add("dispatcher", Dispatcher,
             refs={"inbox": "inbox", "executor": "executor", "results": "results"},
             **options)
    )
    async with open_node(topology) as node, trio.open_nursery() as nursery:
        yield Harness(node.refs["dispatcher"], nursery, inbox_got, executor_got, results_got,
                      dict(LOCAL_KINDS) if local_tasks is None else local_tasks)


def job(id: str, task: str = "a", *, attempt: int = 1, losses: int = 0) -> Job:
    return Job(id=id, task=task, payload=b"p", priority=2, timeout=None, attempt=attempt,
               losses=losses)


def batch(*jobs: Job) -> JobBatch:
    return JobBatch(jobs=jobs)


def demand(*pools: tuple[int, Collection[str]], received: int = 0) -> Demand:
    """A Demand of these pools, (free, tasks) each, in that order."""
    return Demand(pools=tuple((free, frozenset(tasks)) for free, tasks in pools),
                  received=received)


def assigned(pending: Pending) -> list[str]:
    """The ids of the Assign a Pull was answered with."""
    [answer] = pending.answer
    assert isinstance(answer, Assign)
    return [j.id for j in answer.jobs]


def outcome(id: str, *, worker: str = "w1", attempt: int = 1) -> Outcome:
    return Outcome(id=id, attempt=attempt, worker=worker, value=b"v", started_at=1.0,
                   finished_at=2.0)


async def hold(h: Harness, worker: str, *jobs: Job, seq: int = 1) -> None:
    """Have ``worker`` (joined, with credit) pull ``jobs``: it holds them."""
    pending = await h.pull(worker, seq)
    await h.send(batch(*jobs))
    assert assigned(pending) == [j.id for j in jobs]


class TestAssigning:
    async def test_a_subworker_gets_jobs_through_its_pull_up_to_its_credit(
        self, autojump_clock: MockClock
    ) -> None:
        """Jobs placed before a Pull wait for it and go in one Assign; no more
        than the Report's credit is given; the rest waits for more credit."""
        async with open_dispatcher() as h:
            await h.join("w1", "a", credit=2)
            assert h.demands() == [demand((2, {"a"}))]
            await h.send(batch(job("j1"), job("j2"), job("j3")))
            assert (await h.stats()).held == 1
            first = await h.pull("w1", seq=1)
            assert assigned(first) == ["j1", "j2"]
            second = await h.pull("w1", seq=2)
            assert second.answer is None  # parked: no credit left
            await h.request(Report(worker="w1", credit=(1, 0, 0)))
            assert assigned(second) == ["j3"]
            load = await h.load("w1")
        assert h.executor_got == []
        assert load == WorkerLoad(worker="w1", local=False, health="alive", credit=0, held=3,
                                  assigned_total=3)

    async def test_a_parked_pull_gets_a_whole_batch_at_once(
        self, autojump_clock: MockClock
    ) -> None:
        """The jobs of one handled batch reach a parked Pull as one Assign."""
        async with open_dispatcher() as h:
            await h.join("w1", "a", credit=5)
            pending = await h.pull("w1", seq=1)
            assert pending.answer is None
            await h.send(batch(job("j1"), job("j2"), job("j3")))
        assert assigned(pending) == ["j1", "j2", "j3"]

    async def test_an_assign_fits_one_frame_and_the_rest_come_with_the_next_pull(
        self, autojump_clock: MockClock
    ) -> None:
        """Jobs whose arguments together exceed a frame go in several
        answers, each of which the workers edge can pack; a job alone larger
        than the budget still goes (alone). Before, one Assign carried them
        all, could not be sent, and its jobs waited for nobody."""
        frame = 64 * 1024
        framer = Framer(CODEC, max_frame_bytes=frame)
        big = [Job(id=f"j{n}", task="a", payload=bytes(20_000), priority=2, timeout=None)
               for n in range(7)]
        async with open_dispatcher(max_frame_bytes=frame) as h:
            await h.join("w1", "a", credit=8)
            await h.send(batch(*big, Job(id="huge", task="a", payload=bytes(60_000),
                                         priority=2, timeout=None)))
            answers = []
            for seq in range(1, 6):
                pending = await h.pull("w1", seq=seq, wait=0.0)
                [answer] = pending.answer
                framer.pack([answer])  # FrameError if it did not fit
                answers.append([job.id for job in answer.jobs])
        # 20,259 bytes counted per job of 20,000: two fit the 49,152 left of
        # a 64 KiB frame, and the job of 60,000 goes alone.
        assert answers == [["j0", "j1"], ["j2", "j3"], ["j4", "j5"], ["j6"], ["huge"]]

    async def test_a_job_alone_larger_than_the_workers_frame_fails_with_job_too_large(
        self, autojump_clock: MockClock
    ) -> None:
        """A subworker registered with a frame limit smaller than a job is
        never sent it (its link would drop the answer, each time): the job
        fails, saying why and by how much; its credit is given back, and the
        other jobs go."""
        async with open_dispatcher() as h:
            await h.send(WorkerJoined(worker="w1", tasks=frozenset({"a"}), max_frame_bytes=8192))
            assert await h.request(Report(worker="w1", credit=(2, 0, 0))) == [Ack()]
            big = Job(id="big", task="a", payload=bytes(10_000), priority=2, timeout=None)
            pending = await h.pull("w1", seq=1)
            await h.send(batch(big, job("j2")))
            load = await h.load("w1")
            stats = await h.stats()
        assert assigned(pending) == ["j2"]
        [failed] = h.finished()
        assert (failed.id, failed.attempt, failed.worker) == ("big", 1, "w1")
        assert failed.error is not None and failed.error.type == "JobTooLarge"
        assert failed.error.message == (
            "task a's job is about 10260 bytes, more than the 7680 bytes a job sent to worker "
            "w1 may take (its max_frame_bytes, or the workers port's, less room for the frame); "
            "not sent. Pass less data, or raise FASTWORKER_MAX_FRAME_BYTES on both")
        assert load is not None and (load.held, load.credit) == (1, 1)
        assert stats.too_large_total == 1

    async def test_jobs_of_a_task_a_worker_lacks_are_never_sent_to_it(
        self, autojump_clock: MockClock
    ) -> None:
        """A job of a task the worker cannot run is held for one that can,
        however much credit the first has."""
        async with open_dispatcher() as h:
            await h.join("w1", "a", credit=5)
            w1 = await h.pull("w1", seq=1)
            await h.send(batch(job("b1", "b"), job("a1"), job("b2", "b")))
            assert assigned(w1) == ["a1"]
            assert (await h.stats()).held == 2
            w1_again = await h.pull("w1", seq=2)
            await h.join("w2", "b", credit=5)
            w2 = await h.pull("w2", seq=1)
            assert w1_again.answer is None
            assert assigned(w2) == ["b1", "b2"]
            assert (await h.stats()).held == 0

    async def test_jobs_go_to_the_worker_with_the_most_free_credit(
        self, autojump_clock: MockClock
    ) -> None:
        """With w1 offering 1 slot and w2 4, three jobs all go to w2; then,
        each with 1 free slot, the tie goes to the worker that joined first."""
        async with open_dispatcher() as h:
            await h.join("w1", "a", credit=1)
            await h.join("w2", "a", credit=4)
            w1, w2 = await h.pull("w1", seq=1), await h.pull("w2", seq=1)
            await h.send(batch(job("j1"), job("j2"), job("j3")))
            assert w1.answer is None
            assert assigned(w2) == ["j1", "j2", "j3"]
            await h.send(batch(job("j4"), job("j5")))
            stats = await h.stats()
        assert assigned(w1) == ["j4"]
        assert stats.held == 0 and stats.credit == {"w1": 0, "w2": 0}

    async def test_a_suspect_worker_gets_nothing_new_until_heard_again(
        self, autojump_clock: MockClock
    ) -> None:
        """A suspect worker's credit is neither asked for nor spent; once it
        is alive again, the held job goes to it."""
        async with open_dispatcher() as h:
            await h.join("w1", "a", "s", credit=2)
            await h.join("w2", "a", credit=2)
            w1, w2 = await h.pull("w1", seq=1), await h.pull("w2", seq=1)
            await h.send(WorkerHealth(worker="w1", health="suspect"))
            assert h.demands()[-1] == demand((2, {"a"}))  # w1's credit left out
            await h.send(batch(job("j1"), job("j2"), job("j3")))
            assert w1.answer is None
            assert assigned(w2) == ["j1", "j2"]
            assert (await h.stats()).held == 1
            await h.send(WorkerHealth(worker="w1", health="alive"))
            assert assigned(w1) == ["j3"]
        assert h.demands()[-1] == demand((1, {"a", "s"}), received=3)

    async def test_a_pull_or_drain_of_an_unknown_worker_is_answered_unknown_worker(
        self, autojump_clock: MockClock
    ) -> None:
        """A worker the dispatcher does not know (it restarted) is told so."""
        async with open_dispatcher() as h:
            answers = await h.request(Drain(worker="ghost"), Pull(worker="ghost", seq=1))
        assert answers == [UnknownWorker(worker="ghost"), UnknownWorker(worker="ghost")]


class TestLocalExecutor:
    async def test_with_never_the_local_executor_only_runs_what_no_live_subworker_can(
        self, autojump_clock: MockClock
    ) -> None:
        """With local = "never" and a subworker that runs "a" (full), the
        local executor gets no "a" jobs, but gets jobs of "l", which only
        it has; once the subworker is gone, it gets the "a" jobs too."""
        async with open_dispatcher(local="never") as h:
            await h.credit(5)
            await h.join("w1", "a")
            await h.send(batch(job("a1"), job("l1", "l"), job("a2")))
            assert h.local() == ["l1"]
            assert (await h.stats()).held == 2
            await h.send(WorkerLeft(worker="w1", reason="stopped", lost=False))
        assert h.local() == ["l1", "a1", "a2"]

    async def test_with_fallback_a_subworker_with_credit_gets_the_job_first(
        self, autojump_clock: MockClock
    ) -> None:
        """With local = "fallback" a job goes to a subworker with free
        credit though the local executor has far more."""
        async with open_dispatcher() as h:
            await h.credit(256)
            await h.join("w1", "a", credit=2)
            w1 = await h.pull("w1", seq=1)
            await h.send(batch(job("j1"), job("j2")))
            stats = await h.stats()
        assert assigned(w1) == ["j1", "j2"]
        assert h.local() == []
        assert stats.credit == {"local": 256, "w1": 0}

    async def test_with_fallback_the_local_executor_takes_what_full_subworkers_cannot(
        self, autojump_clock: MockClock
    ) -> None:
        """With local = "fallback" and the subworkers that run "a" full, the
        local executor takes the "a" jobs rather than leave its slots idle;
        the subworkers' free credit is used first."""
        async with open_dispatcher() as h:
            await h.credit(4)
            await h.join("w1", "a", credit=1)
            await h.join("w2", "a", credit=1)
            w1 = await h.pull("w1", seq=1)
            w2 = await h.pull("w2", seq=1)
            await h.send(batch(job("j1"), job("j2"), job("j3"), job("j4")))
            stats = await h.stats()
        assert sorted(assigned(w1) + assigned(w2)) == ["j1", "j2"]
        assert h.local() == ["j3", "j4"]
        assert stats.held == 0
        assert stats.credit == {"local": 2, "w1": 0, "w2": 0}

    async def test_with_never_a_job_waits_for_a_subworker_while_local_slots_are_free(
        self, autojump_clock: MockClock
    ) -> None:
        """With local = "never" the local executor's free credit is neither
        used for nor asked for tasks a live subworker has: the job waits
        until the subworker has room."""
        async with open_dispatcher(local="never") as h:
            await h.credit(4)
            await h.join("w1", "a", credit=1)
            w1 = await h.pull("w1", seq=1)
            await h.send(batch(job("j1"), job("j2")))
            assert assigned(w1) == ["j1"]
            assert h.local() == []
            assert (await h.stats()).held == 1
            w1_next = await h.pull("w1", seq=2)
            assert await h.request(Report(worker="w1", credit=(1, 0, 0), seq=1)) == [Ack()]
        assert assigned(w1_next) == ["j2"]
        assert h.local() == []

    async def test_the_held_jobs_log_line_says_whether_free_slots_may_run_them(
        self, autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """With local = "fallback" jobs are held only once every worker that
        can run them is full, and the log says so; with local = "never" the
        free local slots that may not run them are counted in the line, as
        are free slots of another kind than the jobs need."""
        caplog.set_level(logging.INFO, logger="fastworker.dispatcher")
        async with open_dispatcher() as h:
            await h.credit(2)
            await h.join("w1", "a", credit=1)
            w1 = await h.pull("w1", seq=1)
            await h.send(batch(job("j1"), job("j2"), job("j3"), job("j4")))
            fallback = await h.stats()
        assert (assigned(w1), h.local(), fallback.held) == (["j1"], ["j2", "j3"], 1)
        async with open_dispatcher(local="never") as h:
            await h.credit(4)
            await h.join("w1", "a", credit=1)
            await h.send(batch(job("j1"), job("j2")))
            never = await h.stats()
        assert (h.local(), never.held) == ([], 1)
        async with open_dispatcher({"a": ASYNC, "s": THREAD}) as h:
            await h.credit(3)  # async slots; "s" runs on a thread
            await h.send(batch(job("s1", "s")))
            other_kind = await h.stats()
        assert (h.local(), other_kind.held) == ([], 1)
        assert [r.getMessage() for r in caplog.records if "holding" in r.getMessage()] == [
            "dispatcher: holding 1 jobs that no worker with free slots can run until one "
            "has room (1 such batches in the last 60 s)",
            "dispatcher: holding 1 jobs while 4 free slots may not run them (slots of another "
            "kind, workers without their tasks, or the local executor with local = \"never\") "
            "(1 such batches in the last 60 s)",
            "dispatcher: holding 1 jobs while 3 free slots may not run them (slots of another "
            "kind, workers without their tasks, or the local executor with local = \"never\") "
            "(1 such batches in the last 60 s)",
        ]

    async def test_with_local_always_the_local_executor_gets_its_share(
        self, autojump_clock: MockClock
    ) -> None:
        """With local = "always" the local executor is one more worker."""
        async with open_dispatcher(local="always") as h:
            await h.credit(2)
            await h.join("w1", "a", credit=2)
            w1 = await h.pull("w1", seq=1)
            await h.send(batch(job("j1"), job("j2"), job("j3"), job("j4")))
            stats = await h.stats()
        assert sorted(h.local() + assigned(w1)) == ["j1", "j2", "j3", "j4"]
        assert (len(h.local()), len(assigned(w1))) == (2, 2)
        assert stats.credit == {"local": 0, "w1": 0}


class TestDemand:
    async def test_the_demand_names_the_tasks_the_free_workers_can_run(
        self, autojump_clock: MockClock
    ) -> None:
        """The Demand is the free credit now, a pool per set of tasks: a
        worker without credit adds none, one that offers credit adds a pool
        of its own tasks; jobs received are taken off, and counted in
        ``received``."""
        async with open_dispatcher() as h:
            await h.join("w1", "a", credit=2)
            await h.join("w2", "b", "c")
            assert h.demands() == [demand((2, {"a"}))]
            await h.request(Report(worker="w2", credit=(1, 0, 0)))
            assert h.demands()[-1] == demand((2, {"a"}), (1, {"b", "c"}))
            await h.send(batch(job("j1"), job("j2")))
            assert h.demands()[-1] == demand((1, {"b", "c"}), received=2)
            assert len(h.demands()) == 3

    async def test_with_never_the_demand_leaves_out_tasks_subworkers_have(
        self, autojump_clock: MockClock
    ) -> None:
        """With local = "never" the local executor's free credit asks only
        for the tasks no subworker has."""
        async with open_dispatcher(local="never") as h:
            await h.credit(3)
            await h.join("w1", "a")
        assert h.demands() == [demand((3, LOCAL_TASKS)), demand((3, {"l"}))]

    async def test_with_fallback_the_demand_asks_for_every_task_of_the_local_executor(
        self, autojump_clock: MockClock
    ) -> None:
        """With local = "fallback" the local executor's free credit is asked
        for with all its tasks, those the (full) subworkers have too."""
        async with open_dispatcher() as h:
            await h.credit(3)
            await h.join("w1", "a", "s")
        assert h.demands() == [demand((3, LOCAL_TASKS))]

    async def test_with_never_credit_for_nothing_it_may_run_is_not_asked_for(
        self, autojump_clock: MockClock
    ) -> None:
        """With local = "never" and subworkers that have every local task,
        the local executor's free credit is not asked of the inbox (its
        jobs would only wait)."""
        async with open_dispatcher(local="never") as h:
            await h.join("w1", "a", "l", credit=2)
            await h.credit(5)
        assert h.demands() == [demand((2, {"a", "l"}))]

    async def test_without_subworkers_the_demand_names_the_local_tasks(
        self, autojump_clock: MockClock
    ) -> None:
        """With the local executor alone, the demand is for the tasks it has."""
        async with open_dispatcher() as h:
            await h.credit(3)
        assert h.demands() == [demand((3, LOCAL_TASKS))]

    async def test_a_task_registered_locally_later_is_asked_for(
        self, autojump_clock: MockClock
    ) -> None:
        """The local executor names its tasks again in a Credit when they
        changed (a task registered after start): it is demanded too, and a
        Credit without tasks keeps them."""
        async with open_dispatcher({"a": ASYNC}) as h:
            await h.credit(1)
            await h.credit(1, tasks={"a": ASYNC, "late": ASYNC})
            await h.credit(1)
        assert h.demands() == [demand((1, {"a"})), demand((2, {"a", "late"})),
                               demand((3, {"a", "late"}))]


class TestReports:
    async def test_a_resent_report_adds_no_credit_twice(self, autojump_clock: MockClock) -> None:
        """A Report resent after its answer was lost (same seq) is answered
        and adds nothing; the next one counts again."""
        async with open_dispatcher() as h:
            await h.join("w1", "a")
            for report in (Report(worker="w1", credit=(2, 0, 0), seq=1),
                           Report(worker="w1", credit=(2, 0, 0), seq=1),
                           Report(worker="w1", credit=(1, 0, 0), seq=2)):
                assert await h.request(report) == [Ack()]
            load = await h.load("w1")
        assert load is not None and load.credit == 3

    async def test_a_report_passes_running_and_finished_on_to_the_store(
        self, autojump_clock: MockClock
    ) -> None:
        """A Report's Running and outcomes go to the store; the finished job
        is no longer held and the credit is free again."""
        async with open_dispatcher() as h:
            await h.join("w1", "a", credit=1)
            await hold(h, "w1", job("j1"))
            running = Running(ids=("j1",), worker="w1", started_at=1.0, attempts=(1,))
            assert await h.request(Report(worker="w1", running=(running,))) == [Ack()]
            answer = await h.request(Report(worker="w1", credit=(1, 0, 0),
                                            finished=(outcome("j1"),)))
            load = await h.load("w1")
            stats = await h.stats()
        assert answer == [Ack()]
        assert h.reports() == [running, Finished(outcomes=(outcome("j1"),))]
        assert load is not None and (load.held, load.credit) == (0, 1)
        assert stats.late_results_total == 0

    async def test_a_report_of_an_unknown_worker_still_passes_its_results_on(
        self, autojump_clock: MockClock
    ) -> None:
        """Results are never dropped: an unknown worker's are passed on, and
        it is told to register (its credit is not taken)."""
        async with open_dispatcher() as h:
            running = Running(ids=("j1",), worker="ghost", started_at=1.0, attempts=(1,))
            answer = await h.request(
                Report(worker="ghost", credit=(3, 0, 0), running=(running,),
                       finished=(outcome("j0", worker="ghost"),)))
            stats = await h.stats()
        assert answer == [UnknownWorker(worker="ghost")]
        assert h.reports() == [running, Finished(outcomes=(outcome("j0", worker="ghost"),))]
        assert stats.workers == ()
        assert h.demands() == []


class TestPulls:
    async def test_a_parked_pull_is_answered_empty_after_its_wait(
        self, autojump_clock: MockClock
    ) -> None:
        """A Pull with nothing for it is answered with an empty Assign once
        its wait is over."""
        async with open_dispatcher() as h:
            await h.join("w1", "a", credit=1)
            pending = await h.pull("w1", seq=1, wait=3.0)
            await trio.sleep(2.5)
            assert pending.answer is None
            await trio.sleep(1.0)
        assert pending.answer == [Assign(jobs=())]
        assert pending.answered_at == 3.0

    async def test_pull_wait_max_caps_the_wait(self, autojump_clock: MockClock) -> None:
        """A Pull asking to wait longer than pull_wait_max is answered at pull_wait_max."""
        async with open_dispatcher(pull_wait_max=5.0) as h:
            await h.join("w1", "a", credit=1)
            pending = await h.pull("w1", seq=1, wait=1000.0)
        assert (pending.answer, pending.answered_at) == ([Assign(jobs=())], 5.0)

    @pytest.mark.parametrize("wait", [math.nan, -1.0])
    async def test_a_pull_whose_wait_is_not_a_number_of_seconds_waits_none(
        self, autojump_clock: MockClock, wait: float
    ) -> None:
        """NaN or a negative wait (only a signed peer can send one) is answered
        at once, not parked with a deadline no clock reaches."""
        async with open_dispatcher() as h:
            await h.join("w1", "a", credit=1)
            pending = await h.pull("w1", seq=1, wait=wait)
            with trio.fail_after(1.0):
                while pending.answer is None:
                    await trio.sleep(0.01)
        assert (pending.answer, pending.answered_at) == ([Assign(jobs=())], 0.0)

    async def test_a_resent_pull_gets_the_same_jobs_again(self, autojump_clock: MockClock) -> None:
        """A Pull resent with the seq of the one last answered (its answer was
        lost on the way) gets the same Assign; the next seq gets new jobs."""
        async with open_dispatcher() as h:
            await h.join("w1", "a", credit=3)
            await h.send(batch(job("j1"), job("j2")))
            first = await h.pull("w1", seq=1)
            again = await h.pull("w1", seq=1)
            assert first.answer == again.answer
            assert assigned(again) == ["j1", "j2"]
            following = await h.pull("w1", seq=2)
            assert following.answer is None
            await h.send(batch(job("j3")))
            assert assigned(following) == ["j3"]
            assert (await h.stats()).assigned_total == 3

    async def test_an_assign_carries_the_control_planes_clock_stamped_again_when_resent(
        self, autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A Pull's answer is stamped with the control plane's wall clock
        when it is made, so that the subworker counts its jobs' deadlines
        from then; the same answer resent later is stamped anew, and a
        job's own deadline is left on the control plane's clock."""
        wall = [1_000.0]
        monkeypatch.setattr(pulls, "time", SimpleNamespace(time=lambda: wall[0]))
        async with open_dispatcher() as h:
            await h.join("w1", "a", credit=1)
            first = await h.pull("w1", seq=1)
            await h.send(batch(attrs.evolve(job("j1"), expires_at=1_060.0)))
            wall[0] = 1_005.0
            again = await h.pull("w1", seq=1)
        [sent], [resent] = first.answer, again.answer
        assert (sent.sent_at, resent.sent_at) == (1_000.0, 1_005.0)
        assert [j.expires_at for j in sent.jobs] == [j.expires_at for j in resent.jobs] == [
            1_060.0]

    async def test_a_newer_pull_sends_the_parked_one_home(self, autojump_clock: MockClock) -> None:
        """A worker keeps one parked Pull: a newer one answers the older one
        (empty), and jobs go to the newer one."""
        async with open_dispatcher() as h:
            await h.join("w1", "a", credit=1)
            older = await h.pull("w1", seq=1)
            newer = await h.pull("w1", seq=2)
            assert older.answer == [Assign(jobs=())]
            await h.send(batch(job("j1")))
        assert assigned(newer) == ["j1"]


class TestStaleAndUnacknowledged:
    """Copies of a subworker's requests that the network delayed or repeated
    never take jobs away from the Pull the worker waits on, and jobs whose
    Assign the worker does not acknowledge go back to the queue."""

    async def test_a_pull_older_than_the_newest_gets_no_jobs_and_is_counted(
        self, autojump_clock: MockClock
    ) -> None:
        """A delayed copy of Pull 1 arriving while Pull 3 is parked is
        answered with no jobs; the next jobs go to Pull 3."""
        async with open_dispatcher() as h:
            await h.join("w1", "a", credit=3)
            await hold(h, "w1", job("j1"), seq=1)
            await hold(h, "w1", job("j2"), seq=2)
            parked = await h.pull("w1", seq=3)
            stale = await h.pull("w1", seq=1)
            assert stale.answer == [Assign(jobs=())]
            await h.send(batch(job("j3")))
            stats = await h.stats()
        assert assigned(parked) == ["j3"]
        assert stats.stale_pulls_total == 1
        assert stats.taken_back_total == 0 and h.requeued() == []

    async def test_every_copy_of_the_parked_pull_gets_the_same_answer(
        self, autojump_clock: MockClock
    ) -> None:
        """A second copy of the parked Pull answers the first now, and gets
        the same answer; jobs placed later go to the next Pull."""
        async with open_dispatcher() as h:
            await h.join("w1", "a", credit=1)
            first = await h.pull("w1", seq=1)
            copy = await h.pull("w1", seq=1)
            assert first.answer == copy.answer == [Assign(jobs=())]
            following = await h.pull("w1", seq=2)
            await h.send(batch(job("j1")))
        assert assigned(following) == ["j1"]

    async def test_an_unacknowledged_assign_is_taken_back_after_ack_timeout(
        self, autojump_clock: MockClock
    ) -> None:
        """Jobs whose Assign is followed by no Pull and no Report within
        ack_timeout go back to the queue as their next attempt, with their
        credit; a late resend of that Pull then gets nothing."""
        async with open_dispatcher(ack_timeout=4.0) as h:
            await h.join("w1", "a", credit=2)
            await hold(h, "w1", job("j1"), job("j2"))
            await trio.sleep(3.9)
            assert h.requeued() == []
            await trio.sleep(0.2)
            resent = await h.pull("w1", seq=1)
            load = await h.load("w1")
            stats = await h.stats()
        assert h.requeued() == [Requeue(jobs=(job("j1", attempt=2), job("j2", attempt=2)))]
        assert resent.answer == [Assign(jobs=())]
        assert load is not None and (load.held, load.credit) == (0, 2)
        assert stats.taken_back_total == 2

    @pytest.mark.parametrize("acknowledgement", ["next_pull", "report"])
    async def test_the_next_pull_or_a_report_acknowledges_an_assign(
        self, autojump_clock: MockClock, acknowledgement: str
    ) -> None:
        """Pull 2, or a Report saying it received the answer to Pull 1,
        acknowledges Pull 1's jobs: they stay with the worker."""
        async with open_dispatcher(ack_timeout=4.0) as h:
            await h.join("w1", "a", credit=1)
            await hold(h, "w1", job("j1"), seq=1)
            if acknowledgement == "next_pull":
                await h.pull("w1", seq=2)
            else:
                assert await h.request(Report(worker="w1", seq=1, assigned=1)) == [Ack()]
            await trio.sleep(10.0)
            load = await h.load("w1")
            stats = await h.stats()
        assert h.requeued() == []
        assert load is not None and load.held == 1
        assert stats.taken_back_total == 0

    async def test_a_taken_back_job_that_ran_after_all_is_late_and_takes_its_credit_again(
        self, autojump_clock: MockClock
    ) -> None:
        """The worker had the jobs after all: its result is a late one (the
        queued copy cancelled), and the credit given back is taken again."""
        async with open_dispatcher(ack_timeout=4.0) as h:
            await h.join("w1", "a", credit=1)
            await hold(h, "w1", job("j1"))
            await trio.sleep(5.0)
            running = Running(ids=("j1",), worker="w1", started_at=1.0, attempts=(1,))
            await h.request(Report(worker="w1", seq=1, running=(running,)))
            await h.request(Report(worker="w1", seq=2, credit=(1, 0, 0), finished=(outcome("j1"),)))
            load = await h.load("w1")
            stats = await h.stats()
        assert [m for m in h.inbox_got if isinstance(m, Cancel)] == [Cancel(id="j1")]
        assert load is not None and load.credit == 1
        assert stats.late_results_total == 1

    async def test_the_copy_of_a_taken_back_job_run_there_keeps_its_credit(
        self, autojump_clock: MockClock
    ) -> None:
        """A job taken back, then placed on the same worker as its next
        attempt and run there, is no run "after all": the worker's credit
        is what it reports."""
        async with open_dispatcher(ack_timeout=4.0) as h:
            await h.join("w1", "a", credit=1)
            await hold(h, "w1", job("j1"), seq=1)
            await trio.sleep(5.0)
            again = await h.pull("w1", seq=2)
            await h.send(batch(job("j1", attempt=2)))
            assert assigned(again) == ["j1"]
            running = Running(ids=("j1",), worker="w1", started_at=1.0, attempts=(2,))
            await h.request(Report(worker="w1", seq=1, running=(running,)))
            await h.request(Report(worker="w1", seq=2, credit=(1, 0, 0),
                                   finished=(outcome("j1", attempt=2),)))
            load = await h.load("w1")
        assert load is not None and (load.held, load.credit) == (0, 1)

    async def test_requests_from_before_a_registration_are_stale(
        self, autojump_clock: MockClock
    ) -> None:
        """A worker registering again says the last Pull and Report numbers
        it used: copies up to them still on their way take no jobs, and add
        no credit."""
        async with open_dispatcher() as h:
            await h.send(WorkerJoined(worker="w1", tasks=frozenset({"a"}), pull_seq=10,
                                      report_seq=7))
            assert await h.request(Report(worker="w1", credit=(5, 0, 0), seq=7)) == [Ack()]
            assert await h.request(Report(worker="w1", credit=(1, 0, 0), seq=8)) == [Ack()]
            stale = await h.pull("w1", seq=9)
            pending = await h.pull("w1", seq=11)
            await h.send(batch(job("j1"), job("j2")))
            stats = await h.stats()
        assert stale.answer == [Assign(jobs=())]
        assert assigned(pending) == ["j1"]
        assert stats.stale_pulls_total == 1


class TestGoneWorkers:
    async def test_a_lost_workers_jobs_are_requeued_as_their_next_attempt(
        self, autojump_clock: MockClock
    ) -> None:
        """A lost worker's delivered jobs go back as attempt + 1 with one more
        loss; those placed but not yet pulled go back as the same attempt,
        behind them; the store hears of each with its attempt."""
        async with open_dispatcher() as h:
            await h.join("w1", "a", credit=3)
            await hold(h, "w1", job("j1"))
            await h.send(batch(job("j2", attempt=3, losses=1)))  # placed, never pulled
            await h.send(WorkerLeft(worker="w1", reason="no heartbeat", lost=True))
            stats = await h.stats()
        # Oldest first: j1 was placed (and pulled) before j2.
        assert h.requeued() == [Requeue(jobs=(
            job("j1", attempt=2, losses=1),
            job("j2", attempt=3, losses=1),
        ))]
        assert Requeued(ids=("j1", "j2"), attempts=(2, 3)) in h.results_got
        assert h.finished() == []
        assert (stats.redelivered_total, stats.failed_lost_total) == (1, 0)
        assert stats.workers == ()

    async def test_a_lost_workers_parked_pull_is_answered_unknown_worker(
        self, autojump_clock: MockClock
    ) -> None:
        """The Pull a lost worker left parked is told it is unknown."""
        async with open_dispatcher() as h:
            await h.join("w1", "a", credit=1)
            pending = await h.pull("w1", seq=1)
            await h.send(WorkerLeft(worker="w1", reason="no heartbeat", lost=True))
        assert pending.answer == [UnknownWorker(worker="w1")]

    async def test_an_at_most_once_task_of_a_lost_worker_fails_with_worker_lost(
        self, autojump_clock: MockClock
    ) -> None:
        """A job of an at-most-once task is never run twice: it fails."""
        async with open_dispatcher() as h:
            await h.join("w1", "a", "once", credit=2, at_most_once={"once"})
            await hold(h, "w1", job("o1", "once"), job("a1"))
            await h.send(WorkerLeft(worker="w1", reason="no heartbeat", lost=True))
            stats = await h.stats()
        [failed] = h.finished()
        assert (failed.id, failed.attempt, failed.worker) == ("o1", 1, "w1")
        assert failed.error is not None and failed.error.type == "WorkerLost"
        assert "at-most-once" in failed.error.message
        assert h.requeued() == [Requeue(jobs=(job("a1", attempt=2, losses=1),))]
        assert (stats.redelivered_total, stats.failed_lost_total) == (1, 1)

    async def test_a_job_that_lost_poison_after_workers_fails_as_poison(
        self, autojump_clock: MockClock
    ) -> None:
        """A job already lost poison_after - 1 times fails with PoisonTask
        when its worker is lost again; one lost fewer times is requeued."""
        async with open_dispatcher(poison_after=3) as h:
            await h.join("w1", "a", credit=2)
            await hold(h, "w1", job("p", attempt=3, losses=2), job("q", attempt=2, losses=1))
            await h.send(WorkerLeft(worker="w1", reason="no heartbeat", lost=True))
        [failed] = h.finished()
        assert (failed.id, failed.attempt) == ("p", 3)
        assert failed.error is not None and failed.error.type == "PoisonTask"
        assert h.requeued() == [Requeue(jobs=(job("q", attempt=3, losses=2),))]

    async def test_a_job_lost_poison_after_times_is_not_handed_out(
        self, autojump_clock: MockClock
    ) -> None:
        """A job that comes already lost poison_after times (the journal
        counts a control-plane restart as a loss) fails with PoisonTask
        instead of reaching a worker; the others of its batch go on."""
        async with open_dispatcher(poison_after=3) as h:
            await h.join("w1", "a", credit=2)
            pending = await h.pull("w1", 1)
            await h.send(batch(job("p", attempt=4, losses=3), job("q", attempt=2, losses=2)))
            stats = await h.stats()
        assert assigned(pending) == ["q"]
        [failed] = h.finished()
        assert (failed.id, failed.attempt) == ("p", 4)
        assert failed.error is not None and failed.error.type == "PoisonTask"
        assert "lost 3 times" in failed.error.message
        assert stats.failed_lost_total == 1

    async def test_a_worker_that_left_cleanly_adds_no_loss(self, autojump_clock: MockClock) -> None:
        """WorkerLeft(lost=False) requeues as the next attempt without
        counting a loss, even for a job one loss short of poison."""
        async with open_dispatcher(poison_after=3) as h:
            await h.join("w1", "a", credit=1)
            await hold(h, "w1", job("p", losses=2))
            await h.send(WorkerLeft(worker="w1", reason="deregistered", lost=False))
        assert h.requeued() == [Requeue(jobs=(job("p", attempt=2, losses=2),))]
        assert h.finished() == []

    async def test_a_late_result_is_kept_and_its_requeued_copy_cancelled(
        self, autojump_clock: MockClock
    ) -> None:
        """A lost worker's result arriving after its job was requeued goes to
        the store, and the requeued copy is cancelled at the inbox (once)."""
        async with open_dispatcher() as h:
            await h.join("w1", "a", credit=1)
            await hold(h, "w1", job("j1"))
            await h.send(WorkerLeft(worker="w1", reason="no heartbeat", lost=True))
            answer = await h.request(Report(worker="w1", finished=(outcome("j1"),)))
            await h.request(Report(worker="w1", finished=(outcome("j1"),)))  # resent
            stats = await h.stats()
        assert answer == [UnknownWorker(worker="w1")]
        assert [m for m in h.inbox_got if isinstance(m, Cancel)] == [Cancel(id="j1")]
        assert h.finished() == [outcome("j1"), outcome("j1")]
        assert stats.late_results_total == 2

    async def test_a_result_for_a_job_taken_back_from_a_rejoined_worker_is_late(
        self, autojump_clock: MockClock
    ) -> None:
        """A worker that registered again no longer holds its old jobs (they
        were requeued); its result for one is kept, the copy cancelled."""
        async with open_dispatcher() as h:
            await h.join("w1", "a", credit=1)
            await hold(h, "w1", job("j1"))
            await h.join("w1", "a")
            assert h.requeued() == [Requeue(jobs=(job("j1", attempt=2),))]
            answer = await h.request(Report(worker="w1", finished=(outcome("j1"),)))
        assert answer == [Ack()]
        assert [m for m in h.inbox_got if isinstance(m, Cancel)] == [Cancel(id="j1")]
        assert h.finished() == [outcome("j1")]


class TestDrain:
    async def test_drain_answers_the_parked_pull_and_assigns_nothing_more(
        self, autojump_clock: MockClock
    ) -> None:
        """Drain: the parked Pull is answered at once, the worker gets no new
        jobs (a Pull is answered at once, empty) and its credit is not asked for."""
        async with open_dispatcher() as h:
            await h.join("w1", "a", credit=2)
            pending = await h.pull("w1", seq=1)
            assert await h.request(Drain(worker="w1")) == [Ack()]
            assert (pending.answer, pending.answered_at) == ([Assign(jobs=())], 0.0)
            await h.send(batch(job("j1")))
            after = await h.pull("w1", seq=2)
            assert after.answer == [Assign(jobs=())]
            load = await h.load("w1")
            stats = await h.stats()
        assert load is not None and (load.health, load.credit) == ("draining", 0)
        assert stats.held == 1
        assert h.demands()[-1] == demand(received=1)  # nothing asked for

    async def test_drain_requeues_jobs_placed_but_not_pulled(
        self, autojump_clock: MockClock
    ) -> None:
        """Jobs placed for a draining worker with no Pull parked go back to
        the queue as the same attempt."""
        async with open_dispatcher() as h:
            await h.join("w1", "a", credit=2)
            await h.send(batch(job("j1")))
            await h.request(Drain(worker="w1"))
            load = await h.load("w1")
        assert h.requeued() == [Requeue(jobs=(job("j1"),))]
        assert Requeued(ids=("j1",), attempts=(1,)) in h.results_got
        assert load is not None and load.held == 0

    async def test_the_local_executor_takes_over_the_tasks_of_a_draining_worker(
        self, autojump_clock: MockClock
    ) -> None:
        """A draining subworker no longer counts as one that can run its
        tasks: even with local = "never" the local executor runs them again."""
        async with open_dispatcher(local="never") as h:
            await h.credit(2)
            await h.join("w1", "a")
            await h.send(batch(job("j1")))
            assert h.local() == []
            await h.request(Drain(worker="w1"))
        assert h.local() == ["j1"]


class TestOperatorDrain:
    async def test_a_drained_subworker_gets_nothing_new_until_resumed(
        self, autojump_clock: MockClock
    ) -> None:
        """DrainWorker stops new placements on a subworker (its next Pull is
        answered at once asking for its unstarted jobs back; the one after
        stays parked, with nothing), the jobs go to the other worker, and
        resuming gives it work again."""
        async with open_dispatcher() as h:
            await h.join("w1", "a", credit=4)
            await h.join("w2", "a", credit=1)
            assert await h.dispatcher.call(DrainWorker(worker="w1")) is True
            drained = await h.load("w1")
            asked_back = await h.pull("w1", seq=1)
            assert asked_back.answer == [Assign(jobs=(), give_back=True)]
            pending = await h.pull("w1", seq=2)
            other = await h.pull("w2", seq=1)
            await h.send(batch(job("j1"), job("j2")))
            assert pending.answer is None
            assert assigned(other) == ["j1"]
            assert (await h.stats()).held == 1  # j2 waits: w1 is drained
            assert await h.dispatcher.call(DrainWorker(worker="w1", resume=True)) is True
            await trio.testing.wait_all_tasks_blocked()
            assert assigned(pending) == ["j2"]
            resumed = await h.load("w1")
        assert drained is not None and drained.drained
        assert resumed is not None and not resumed.drained

    async def test_draining_the_last_subworker_of_a_task_falls_back_to_the_local_executor(
        self, autojump_clock: MockClock
    ) -> None:
        """With local = fallback, a drained subworker no longer counts as one
        that can run its tasks: the control plane's executor takes them."""
        async with open_dispatcher() as h:
            await h.join("w1", "a", credit=2)
            await h.credit(2)
            assert await h.dispatcher.call(DrainWorker(worker="w1")) is True
            await h.send(batch(job("j1")))
        assert h.local() == ["j1"]

    async def test_draining_an_unknown_worker_answers_false(
        self, autojump_clock: MockClock
    ) -> None:
        async with open_dispatcher() as h:
            assert await h.dispatcher.call(DrainWorker(worker="nobody")) is False

    async def test_every_placement_is_reported_to_the_store_with_its_worker(
        self, autojump_clock: MockClock
    ) -> None:
        """The store hears which worker each job was handed to (the
        timeline's "dispatched")."""
        async with open_dispatcher() as h:
            await h.credit(1)
            await h.join("w1", "a", credit=2)
            await hold(h, "w1", job("j1"), job("j2"))
            await h.send(batch(job("j3", "l")))
        assert h.dispatched() == [("w1", ("j1", "j2")), ("local", ("j3",))]


class TestRetries:
    async def test_a_subworkers_failed_attempt_is_retried_from_the_dispatchers_copy(
        self, autojump_clock: MockClock
    ) -> None:
        """The Report's outcome says retry_in: the job the Dispatcher holds
        goes back to the inbox as its next attempt, held for that long; the
        outcome still reaches the store. A resent Report retries nothing twice."""
        failed = attrs.evolve(outcome("j1"), value=None, retry_in=2.5,
                              error=RemoteError(type="ConnectionError", message="flaky"))
        async with open_dispatcher() as h:
            await h.join("w1", "a", credit=1)
            await hold(h, "w1", job("j1"))
            await h.request(Report(worker="w1", finished=(failed,), seq=1))
            await h.request(Report(worker="w1", finished=(failed,), seq=1))
            stats = await h.stats()
        assert h.requeued() == [Requeue(jobs=(job("j1", attempt=2),), delays=(2.5,))]
        assert h.finished()[0] == failed
        assert stats.retried_total == 1

    async def test_the_local_executors_retries_go_to_the_inbox(
        self, autojump_clock: MockClock
    ) -> None:
        async with open_dispatcher() as h:
            await h.send(Retry(jobs=(job("j1", attempt=2), job("j2", attempt=3)),
                               delays=(1.0, 4.0)))
        assert h.requeued() == [Requeue(jobs=(job("j1", attempt=2), job("j2", attempt=3)),
                                        delays=(1.0, 4.0))]


class TestStop:
    async def test_a_job_no_worker_has_yet_is_cancelled_here(
        self, autojump_clock: MockClock
    ) -> None:
        async with open_dispatcher() as h:
            await h.send(batch(job("j1")))  # no worker with credit: held here
            [reply] = await h.request(Stop(id="j1"))
            stats = await h.stats()
        assert reply == CancelReply(id="j1", outcome="cancelled")
        assert Cancelled(ids=("j1",)) in h.results_got and stats.held == 0

    async def test_a_job_placed_but_not_yet_pulled_is_cancelled_and_its_credit_kept(
        self, autojump_clock: MockClock
    ) -> None:
        async with open_dispatcher() as h:
            await h.join("w1", "a", credit=1)
            await h.send(batch(job("j1")))
            [reply] = await h.request(Stop(id="j1"))
            load = await h.load("w1")
        assert reply.outcome == "cancelled"
        assert (load.credit, load.held) == (1, 0)
        assert Cancelled(ids=("j1",)) in h.results_got

    async def test_a_subworker_running_the_job_is_told_with_its_next_assign(
        self, autojump_clock: MockClock
    ) -> None:
        async with open_dispatcher() as h:
            await h.join("w1", "a", credit=1)
            await hold(h, "w1", job("j1"))
            parked = await h.pull("w1", seq=2)
            [reply] = await h.request(Stop(id="j1"))
        assert reply.outcome == "requested"
        [answer] = parked.answer
        assert answer == Assign(jobs=(), cancel=("j1",))

    async def test_the_local_executor_is_asked(self, autojump_clock: MockClock) -> None:
        async with open_dispatcher() as h:  # the stand-in executor answers None
            reply = await h.dispatcher.call(Stop(id="j9"), timeout=PATIENCE)
        assert reply is None
        assert Stop(id="j9") in h.executor_got


class TestAcrossARestart:
    """Results that reach a control plane twice, or one that restarted
    (issue 14): each is passed on once where it can be told, and a late one
    cancels the queued copy of a task recovered as dispatched."""

    async def test_a_resent_report_is_handled_once_and_counted(
        self, autojump_clock: MockClock
    ) -> None:
        """A Report seen before (its answer was lost) is answered again but
        its outcomes are not passed on twice: counted as resent, not late."""
        async with open_dispatcher() as h:
            await h.join("w1", "a", credit=1)
            await hold(h, "w1", job("j1"))
            report = Report(worker="w1", finished=(outcome("j1"),), seq=5)
            assert await h.request(report) == [Ack()]
            assert await h.request(report) == [Ack()]
            stats = await h.stats()
        assert h.finished() == [outcome("j1")]
        assert (stats.resent_results_total, stats.late_results_total) == (1, 0)

    async def test_a_late_result_of_a_recovered_dispatched_task_cancels_its_queued_copy(
        self, autojump_clock: MockClock
    ) -> None:
        """After a restart, a subworker the control plane does not know yet
        reports a task the journal said was dispatched (the inbox queued it
        again): the result goes to the store and the queued copy is
        cancelled, once; a resend from across the restart reaches the store
        again (it keeps one result per (id, attempt))."""
        async with open_dispatcher() as h:
            await h.send(RecoveredDispatched(ids=("j1", "j2")))
            answer = await h.request(Report(worker="w1", finished=(outcome("j1"),), seq=9))
            await h.join("w1", "a")
            again = await h.request(Report(worker="w1", finished=(outcome("j1"),), seq=10))
            stats = await h.stats()
        assert (answer, again) == ([UnknownWorker(worker="w1")], [Ack()])
        assert [m for m in h.inbox_got if isinstance(m, Cancel)] == [Cancel(id="j1")]
        assert h.finished() == [outcome("j1"), outcome("j1")]
        assert stats.late_results_total == 2

    async def test_a_late_result_cancels_a_copy_the_restart_brought_back_as_queued(
        self, autojump_clock: MockClock
    ) -> None:
        """A task handed out just before a crash, whose dispatch was not yet
        written, comes back queued (not among the recovered dispatched): its
        late final result cancels that copy all the same, once."""
        async with open_dispatcher() as h:
            await h.request(Report(worker="w1", finished=(outcome("j1"),), seq=4))
            await h.join("w1", "a")
            await h.request(Report(worker="w1", finished=(outcome("j1"),), seq=5))
        assert [m for m in h.inbox_got if isinstance(m, Cancel)] == [Cancel(id="j1")]

    async def test_a_recovered_copy_already_with_the_dispatcher_is_dropped(
        self, autojump_clock: MockClock
    ) -> None:
        """The queued copy of a recovered task that the inbox already handed
        over (held for want of a worker) is dropped when the late result comes."""
        async with open_dispatcher() as h:  # no local executor
            await h.send(RecoveredDispatched(ids=("j1",)))
            await h.send(batch(job("j1", attempt=2), job("j2")))
            assert (await h.stats()).held == 2
            await h.request(Report(worker="w1", finished=(outcome("j1"),)))
            stats = await h.stats()
        assert stats.held == 1
        assert [m for m in h.inbox_got if isinstance(m, Cancel)] == [Cancel(id="j1")]

    async def test_a_late_failed_attempt_to_be_retried_leaves_the_queued_copy(
        self, autojump_clock: MockClock
    ) -> None:
        """A late outcome that is to be retried does not cancel the queued
        copy: that copy is its retry."""
        async with open_dispatcher() as h:
            await h.send(RecoveredDispatched(ids=("j1",)))
            failed = attrs.evolve(outcome("j1"), value=None, retry_in=5.0,
                                  error=RemoteError(type="ValueError", message="no"))
            await h.request(Report(worker="w1", finished=(failed,)))
            await h.request(Report(worker="w1", finished=(outcome("j1", attempt=2),)))
        assert [m for m in h.inbox_got if isinstance(m, Cancel)] == [Cancel(id="j1")]
        assert h.finished() == [failed, outcome("j1", attempt=2)]


class TestResultsKept:
    async def test_a_report_of_results_is_acked_once_the_store_keeps_them(
        self, autojump_clock: MockClock
    ) -> None:
        """A Report with results is answered Ack only once the store says
        they are kept (written to its journal): a restart before that would
        lose results the subworker no longer keeps. A Report of credit alone
        is answered at once."""
        kept = trio.Event()
        async with open_dispatcher(kept=kept) as h:
            await h.join("w1", "a", credit=1)
            await hold(h, "w1", job("j1"))
            answered: list[Any] = []

            async def report() -> None:
                answered.extend(await h.dispatcher.call(Requests(messages=(
                    Report(worker="w1", finished=(outcome("j1"),), seq=2),), peer=PEER)))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(report)
                await trio.testing.wait_all_tasks_blocked()
                assert answered == [] and h.finished() == [outcome("j1")]
                assert await h.request(Report(worker="w1", credit=(1, 0, 0), seq=3)) == [Ack()]
                kept.set()
            assert answered == [Ack()]
        kinds = [type(m) for m in h.results_got if isinstance(m, (Finished, ResultsKept))]
        assert kinds == [Finished, ResultsKept]


class TestAdoption:
    """A subworker that registers again with a restarted control plane says
    which jobs it holds; those the journal brought back as dispatched are
    adopted: they end there, and their copies in the inbox do not run."""

    @pytest.mark.parametrize("order", ["recovered_first", "joined_first"])
    async def test_a_recovered_task_a_worker_holds_is_adopted(
        self, autojump_clock: MockClock, order: str
    ) -> None:
        """Whichever comes first, recovery or the registration: the inbox is
        told to keep the copies (``running``) of all the worker holds (the
        journal may have brought one back as queued), the store where they
        run (attempt and start); a result goes to the store and its copy is
        forgotten (``ended``), never cancelled as a queued task."""
        joined = WorkerJoined(worker="w1", tasks=frozenset({"a"}), holding=(
            HeldJob(id="j1", attempt=2, started_at=50.0), HeldJob(id="j2", attempt=1),
            HeldJob(id="other", attempt=1)))
        recovered = RecoveredDispatched(ids=("j1", "j2", "j3"))
        async with open_dispatcher() as h:
            await h.send(*((recovered, joined) if order == "recovered_first" else (joined,)))
            if order == "joined_first":
                await h.send(recovered)
            await h.request(Report(worker="w1", finished=(outcome("j1", attempt=2),), seq=1))
            stats = await h.stats()
        adopted = [m for m in h.inbox_got if isinstance(m, Adopted)]
        assert adopted == [Adopted(ids=("j1", "j2", "other"), state="running"),
                           Adopted(ids=("j1",), state="ended")]
        assert [m for m in h.inbox_got if isinstance(m, Cancel)] == []
        assert Running(ids=("j1",), worker="w1", started_at=50.0, attempts=(2,)) in h.results_got
        assert ("w1", ("j2",)) in h.dispatched()
        assert h.finished() == [outcome("j1", attempt=2)]
        assert stats.late_results_total == 1

    async def test_a_failed_attempt_of_an_adopted_task_runs_its_copy_as_the_retry(
        self, autojump_clock: MockClock
    ) -> None:
        """An adopted task's attempt that fails and is to be retried: its copy
        is queued again after the backoff (``again``, with the delay)."""
        async with open_dispatcher() as h:
            await h.send(RecoveredDispatched(ids=("j1",)))
            await h.send(WorkerJoined(worker="w1", tasks=frozenset({"a"}),
                                      holding=(HeldJob(id="j1", attempt=1),)))
            failed = attrs.evolve(outcome("j1"), value=None, retry_in=5.0,
                                  error=RemoteError(type="ValueError", message="no"))
            await h.request(Report(worker="w1", finished=(failed,), seq=1))
        assert [m for m in h.inbox_got if isinstance(m, Adopted)][-1] == Adopted(
            ids=("j1",), state="again", delays=(5.0,))

    async def test_a_worker_gone_with_adopted_tasks_has_their_copies_run(
        self, autojump_clock: MockClock
    ) -> None:
        """A worker lost (or gone) while it runs adopted tasks: their copies
        run (``again``); a Stop of an adopted task reaches the worker."""
        async with open_dispatcher() as h:
            await h.send(RecoveredDispatched(ids=("j1", "j2")))
            await h.send(WorkerJoined(worker="w1", tasks=frozenset({"a"}), holding=(
                HeldJob(id="j1", attempt=1), HeldJob(id="j2", attempt=1))))
            stopped = await h.dispatcher.call(Stop(id="j2"))
            pending = await h.pull("w1", 1)
            cancel = pending.answer
            await h.send(WorkerLeft(worker="w1", reason="no heartbeat", lost=True))
        assert stopped == CancelReply(id="j2", outcome="requested")
        assert cancel == [Assign(jobs=(), cancel=("j2",))]
        assert [m for m in h.inbox_got if isinstance(m, Adopted)][-1] == Adopted(
            ids=("j1", "j2"), state="again")


class TestKindsOfSlot:
    """Credit counts per kind of slot (async lanes, threads, pool processes):
    a job takes a slot of the kind its task needs on that worker, and the
    Demand asks for each kind's free slots with the tasks that run on them."""

    async def test_a_job_waits_for_a_slot_of_its_kind_though_others_are_free(
        self, autojump_clock: MockClock
    ) -> None:
        """The local executor runs "a" in a lane and "s" on a thread. With
        only async credit it gets the "a" job, not the "s" one (held), and
        the Demand's pool of its async slots does not name "s"; a thread
        slot freed takes the "s" job, the async credit left untouched."""
        async with open_dispatcher({"a": ASYNC, "s": THREAD}) as h:
            await h.credit(slots=(3, 0, 0))
            assert h.demands() == [demand((3, {"a"}))]
            await h.send(batch(job("s1", "s"), job("a1")))
            assert h.local() == ["a1"]
            assert (await h.stats()).held == 1
            await h.credit(slots=(0, 1, 0))
            load = await h.load("local")
            held = (await h.stats()).held
        assert (h.local(), held) == (["a1", "s1"], 0)
        assert load is not None and load.credit_by_kind == (2, 0, 0)
        assert h.demands() == [demand((3, {"a"})), demand((2, {"a"}), received=2)]

    async def test_the_demand_has_a_pool_per_kind_with_the_tasks_it_runs(
        self, autojump_clock: MockClock
    ) -> None:
        """Free slots of each kind are asked for with the tasks that run on
        them: no sync task is in the pool of the async slots."""
        async with open_dispatcher({"a": ASYNC, "s": THREAD, "p": PROCESS}) as h:
            await h.credit(slots=(4, 2, 1))
        assert h.demands() == [demand((4, {"a"}), (2, {"s"}), (1, {"p"}))]

    async def test_with_fallback_the_local_executor_takes_a_job_no_subworker_has_a_slot_for(
        self, autojump_clock: MockClock
    ) -> None:
        """w1 runs "a" in a lane and offers 1 async slot and 3 thread slots:
        the first "a" job goes to w1 (a subworker first, though the local
        executor has more free credit), the second to the local executor,
        since w1's free thread slots cannot run it. Those thread slots,
        for no task of w1's, are not asked of the inbox."""
        async with open_dispatcher() as h:
            await h.credit(4)
            await h.join("w1", "a", credit=(1, 3, 0))
            assert h.demands()[-1] == demand((4, LOCAL_TASKS), (1, {"a"}))
            w1 = await h.pull("w1", seq=1)
            await h.send(batch(job("j1"), job("j2")))
            load = await h.load("w1")
        assert assigned(w1) == ["j1"]
        assert h.local() == ["j2"]
        assert load is not None and load.credit_by_kind == (0, 3, 0)
        assert h.demands()[-1] == demand((3, LOCAL_TASKS), received=2)


def test_placement_gives_each_job_a_slot_of_the_kind_its_task_needs_there() -> None:
    """Of two subworkers, w1 has the most free credit, all async; w2 runs
    "s" on a thread and "p" in a pool process. The "s" and "p" jobs go to
    w2, the "a" job to w1, and a second "s" job waits (w2's one thread slot
    is taken) though w1 has credit left. The pools keep the kinds apart."""
    placement = Placement(local="always")
    w1 = placement.add_subworker("w1", {"a": ASYNC, "s": THREAD}, frozenset())
    w2 = placement.add_subworker("w2", {"s": THREAD, "p": PROCESS}, frozenset())
    w1.add_credit((5, 0, 0))
    w2.add_credit((0, 1, 2))
    assert placement.pools() == {frozenset({"a"}): 5, frozenset({"s"}): 1,
                                 frozenset({"p"}): 2}
    placed, kept = placement.place(
        deque([job("s1", "s"), job("a1"), job("s2", "s"), job("p1", "p")]))
    assert {w.name: [j.id for j in jobs] for w, jobs in placed.items()} == {
        "w2": ["s1", "p1"], "w1": ["a1"]}
    assert [j.id for j in kept] == ["s2"]
    assert (w1.credit, w2.credit) == ([4, 0, 0], [0, 0, 1])
    assert placement.pools() == {frozenset({"a"}): 4, frozenset({"p"}): 1}


def test_placement_falls_back_to_the_local_executor_per_kind() -> None:
    """With local = "fallback", a subworker with a free slot of the job's
    kind is chosen before the local executor; once its slots of that kind
    are used up, the local executor takes the job, though the subworker
    has slots of another kind free."""
    placement = Placement(local="fallback")
    placement.add_local_credit("local", (0, 8, 0), {"s": THREAD, "a": ASYNC})
    w1 = placement.add_subworker("w1", {"s": THREAD, "a": ASYNC}, frozenset())
    w1.add_credit((5, 1, 0))
    placed, kept = placement.place(deque([job("s1", "s"), job("s2", "s")]))
    assert {w.name: [j.id for j in jobs] for w, jobs in placed.items()} == {
        "w1": ["s1"], "local": ["s2"]}
    assert not kept
    assert (w1.credit, placement.workers["local"].credit) == ([5, 0, 0], [0, 7, 0])


class TestNoHoarding:
    async def test_an_idle_newcomer_gets_the_next_jobs_within_one_dispatch(
        self, autojump_clock: MockClock
    ) -> None:
        """w1 is saturated (it holds as many jobs as it offered slots): no
        more is asked for, and a job that comes anyway is held. w2 joins
        and offers 2 slots: the dispatch of its Report hands it the held
        job and asks the inbox for its other slot; the next JobBatch's job
        goes to w2 in the dispatch that handles it, not to w1."""
        async with open_dispatcher() as h:
            await h.join("w1", "a", credit=2)
            await hold(h, "w1", job("j1"), job("j2"))
            assert h.demands()[-1] == demand(received=2)
            await h.send(batch(job("j3")))
            assert (await h.stats()).held == 1
            await h.join("w2", "a")
            w2 = await h.pull("w2", seq=1)
            w1 = await h.pull("w1", seq=2)
            assert await h.request(Report(worker="w2", credit=(2, 0, 0))) == [Ack()]
            assert assigned(w2) == ["j3"]
            assert h.demands()[-1] == demand((1, {"a"}), received=3)
            w2_next = await h.pull("w2", seq=2)
            await h.send(batch(job("j4")))
            assert assigned(w2_next) == ["j4"]
            assert w1.answer is None
            stats = await h.stats()
        assert (stats.held, stats.credit) == (0, {"w1": 0, "w2": 0})

    async def test_a_lost_workers_prefetched_jobs_are_requeued_like_its_running_ones(
        self, autojump_clock: MockClock
    ) -> None:
        """w1 holds 3 jobs and reported one started (the others wait there
        for a slot): all 3 go back as their next attempt when it is lost."""
        async with open_dispatcher() as h:
            await h.join("w1", "a", credit=3)
            await hold(h, "w1", job("j1"), job("j2"), job("j3"))
            running = Running(ids=("j1",), worker="w1", started_at=1.0, attempts=(1,))
            assert await h.request(Report(worker="w1", running=(running,), seq=1)) == [Ack()]
            load = await h.load("w1")
            await h.send(WorkerLeft(worker="w1", reason="no heartbeat", lost=True))
            stats = await h.stats()
        assert load is not None and (load.held, load.running) == (3, 1)
        assert h.requeued() == [Requeue(jobs=tuple(
            job(i, attempt=2, losses=1) for i in ("j1", "j2", "j3")))]
        assert Requeued(ids=("j1", "j2", "j3"), attempts=(2, 2, 2)) in h.results_got
        assert stats.redelivered_total == 3


class TestGivingBack:
    """An operator's drain asks a worker for the jobs it holds and has not
    started; those it gives back are queued again, the same attempt."""

    async def test_a_drained_subworkers_parked_pull_asks_for_its_unstarted_jobs(
        self, autojump_clock: MockClock
    ) -> None:
        """Draining w1 answers its parked Pull at once with give_back. Its
        Report of jobs returned requeues those it holds and had not reported
        started (j2, j3), the same attempt; a started one (j1) and one it
        does not hold (j0) are passed over, and the Report resent does not
        requeue them twice. Its next Pull waits: nothing more to give back."""
        async with open_dispatcher() as h:
            await h.join("w1", "a", credit=3)
            await hold(h, "w1", job("j1"), job("j2"), job("j3", attempt=2))
            running = Running(ids=("j1",), worker="w1", started_at=1.0, attempts=(1,))
            assert await h.request(Report(worker="w1", running=(running,), seq=1)) == [Ack()]
            parked = await h.pull("w1", seq=2)
            assert parked.answer is None
            assert await h.dispatcher.call(DrainWorker(worker="w1")) is True
            await trio.testing.wait_all_tasks_blocked()
            assert parked.answer == [Assign(jobs=(), give_back=True)]
            report = Report(worker="w1", returned=("j1", "j2", "j3", "j0"), seq=2)
            assert await h.request(report) == [Ack()]
            assert await h.request(report) == [Ack()]  # resent: its answer was lost
            following = await h.pull("w1", seq=3)
            load = await h.load("w1")
        assert h.requeued() == [Requeue(jobs=(job("j2"), job("j3", attempt=2)))]
        assert [m for m in h.results_got if isinstance(m, Requeued)] == [
            Requeued(ids=("j2", "j3"), attempts=(1, 2))]
        assert following.answer == [Assign(jobs=())]  # answered at the end of its wait
        assert load is not None and (load.held, load.running, load.drained) == (1, 1, True)

    async def test_a_subworker_resumed_before_its_next_pull_keeps_its_jobs(
        self, autojump_clock: MockClock
    ) -> None:
        """Drained and resumed before it pulled again: its next Pull does
        not ask for its jobs back (it may start them after all)."""
        async with open_dispatcher() as h:
            await h.join("w1", "a", credit=2)
            await hold(h, "w1", job("j1"))
            assert await h.dispatcher.call(DrainWorker(worker="w1")) is True
            assert await h.dispatcher.call(DrainWorker(worker="w1", resume=True)) is True
            following = await h.pull("w1", seq=2)
            assert following.answer is None  # parked, as before the drain
            await h.send(batch(job("j2")))
        assert assigned(following) == ["j2"]
        assert following.answer[0].give_back is False

    async def test_draining_the_local_executor_asks_it_for_its_unstarted_jobs(
        self, autojump_clock: MockClock
    ) -> None:
        """The local executor drained is sent an Assign with give_back; the
        jobs it returns are requeued (the same attempt), and it gets nothing
        new while drained."""
        async with open_dispatcher() as h:
            await h.credit(3)
            await h.send(batch(job("j1"), job("j2"), job("j3", attempt=2)))
            assert await h.dispatcher.call(DrainWorker(worker="local")) is True
            await trio.testing.wait_all_tasks_blocked()
            assert h.executor_got[-1] == Assign(jobs=(), give_back=True)
            await h.send(Returned(jobs=(job("j2"), job("j3", attempt=2))))
            await h.credit(2)  # their slots, free again
            await h.send(batch(job("j4")))
            stats = await h.stats()
        assert h.requeued() == [Requeue(jobs=(job("j2"), job("j3", attempt=2)))]
        assert Requeued(ids=("j2", "j3"), attempts=(1, 2)) in h.results_got
        assert h.local() == ["j1", "j2", "j3"]
        assert (stats.held, stats.redelivered_total) == (1, 0)


class TestWorkerLoad:
    async def test_worker_load_shows_jobs_running_and_free_credit_by_kind(
        self, autojump_clock: MockClock
    ) -> None:
        """``running`` counts the held jobs a subworker reported started
        (an id it does not hold is not counted) until they end;
        ``credit_by_kind`` its free credit per kind, ``credit`` their sum
        over the kinds its tasks need."""
        async with open_dispatcher() as h:
            await h.credit(slots=(2, 3, 1))
            await h.join("w1", "a", credit=(3, 1, 0))
            await hold(h, "w1", job("j1"), job("j2"))
            running = Running(ids=("j1", "zz"), worker="w1", started_at=1.0, attempts=(1, 1))
            assert await h.request(Report(worker="w1", running=(running,), seq=1)) == [Ack()]
            w1, local = await h.load("w1"), await h.load("local")
            assert await h.request(Report(worker="w1", credit=(1, 0, 0), seq=2,
                                          finished=(outcome("j1"),))) == [Ack()]
            after = await h.load("w1")
        # ``credit`` counts the kinds its tasks use: w1's task is async.
        assert w1 == WorkerLoad(worker="w1", local=False, health="alive", credit=1, held=2,
                                assigned_total=2, running=1, credit_by_kind=(1, 1, 0))
        assert local == WorkerLoad(worker="local", local=True, health="alive", credit=2,
                                   held=0, assigned_total=0, credit_by_kind=(2, 3, 1))
        assert after is not None
        assert (after.held, after.running, after.credit_by_kind) == (1, 0, (2, 1, 0))


async def test_an_acknowledgement_handled_before_the_take_back_keeps_the_jobs() -> None:
    """The ack timer finds Assign 1 overdue, but the worker's Pull 2 (its
    acknowledgement) is handled before the take-back it asked for: nothing
    is taken back, and above all not the jobs just answered to Pull 2."""
    placement = Placement(local="fallback")
    out = Outgoing()
    remote = Subworkers("dispatcher", placement, out, Counter(), poison_after=3,
                        pull_wait_max=5.0, ack_timeout=4.0)
    remote.join(WorkerJoined(worker="w1", tasks=frozenset({"a"})))
    worker = placement.workers["w1"]
    worker.credit = [4, 0, 0]
    remote.hand(worker, [job("j1")])
    first = Answers(1)
    remote.answer(Pull(worker="w1", seq=1), first, 0, may_wait=False)
    assert first.values[0].jobs == (job("j1"),)
    await remote.pulls._overdue(trio.current_time() + 10.0)  # Assign 1 falls overdue
    remote.hand(worker, [job("j2")])
    second = Answers(1)
    remote.answer(Pull(worker="w1", seq=2), second, 0, may_wait=False)  # acknowledges 1
    assert second.values[0].jobs == (job("j2"),)
    remote.take_back()
    assert out.requeue == [] and set(worker.held) == {"j1", "j2"}


class TestWhereAJobGoes:
    """The order of choice among workers with credit for a job."""

    async def test_free_slots_anywhere_before_a_subworkers_prefetch_room(
        self, autojump_clock: MockClock
    ) -> None:
        """With ``local = "fallback"``: a subworker's free slots first, then
        the local executor's, and only then the subworker's prefetch room:
        a job never waits in a prefetch while a slot is idle."""
        async with open_dispatcher() as h:
            await h.send(WorkerJoined(worker="w1", tasks=frozenset({"a"}), prefetch=(2, 2, 2)))
            assert await h.request(Report(worker="w1", credit=(5, 0, 0))) == [Ack()]  # 3 + 2
            await h.credit(4)
            pending = await h.pull("w1", seq=1)
            await h.send(batch(*(job(f"j{n}") for n in range(9))))
        assert assigned(pending) == ["j0", "j1", "j2", "j7", "j8"]
        assert h.local() == ["j3", "j4", "j5", "j6"]

    async def test_a_subworkers_prefetch_as_its_latest_report_says(
        self, autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A subworker's prefetch follows its start rate: a Report tells the
        new one, and placement reads its free slots from it. A prefetch the
        wrong shape is ignored, with a warning that says why."""
        async with open_dispatcher() as h:
            await h.send(WorkerJoined(worker="w1", tasks=frozenset({"a"}), prefetch=(2, 2, 2)))
            with caplog.at_level(logging.WARNING, logger="fastworker.dispatcher"):
                assert await h.request(Report(worker="w1", seq=1, prefetch=(1,))) == [Ack()]
            assert "worker w1 said a prefetch the dispatcher ignores: prefetch has 1 counts; " \
                "expected 3 (async, thread, process)" in caplog.text
            assert await h.request(
                Report(worker="w1", seq=2, credit=(5, 0, 0), prefetch=(4, 1, 1))) == [Ack()]
            await h.credit(4)
            pending = await h.pull("w1", seq=1)
            await h.send(batch(*(job(f"j{n}") for n in range(9))))
        assert assigned(pending) == ["j0", "j5", "j6", "j7", "j8"]  # 1 slot + 4 prefetch
        assert h.local() == ["j1", "j2", "j3", "j4"]

    async def test_a_worker_that_runs_fewer_tasks_is_chosen_first(
        self, autojump_clock: MockClock
    ) -> None:
        """wb runs x and y, wa only x, one free slot each: x goes to wa, so
        y still finds a slot (on wb) in the same dispatch."""
        async with open_dispatcher(local="never") as h:
            await h.join("wb", "x", "y", credit=1)
            await h.join("wa", "x", credit=1)
            on_a, on_b = await h.pull("wa", seq=1), await h.pull("wb", seq=1)
            await h.send(batch(job("x1", "x"), job("y1", "y")))
            stats = await h.stats()
        assert (assigned(on_a), assigned(on_b), stats.held) == (["x1"], ["y1"], 0)

    async def test_a_drained_workers_unpulled_jobs_give_their_credit_back(
        self, autojump_clock: MockClock
    ) -> None:
        """Jobs placed on a subworker but not yet pulled go back to the queue
        when it is drained, and so does their credit: resumed, it gets jobs
        again (its link counts that credit as the control plane's)."""
        async with open_dispatcher(local="never") as h:
            await h.join("w1", "a", credit=2)
            await h.send(batch(job("j1"), job("j2")))  # no Pull parked: in its outbox
            assert await h.dispatcher.call(DrainWorker(worker="w1")) is True
            assert await h.dispatcher.call(DrainWorker(worker="w1", resume=True)) is True
            load = await h.load("w1")
            pending = await h.pull("w1", seq=1)
            await h.send(batch(job("j1"), job("j2")))
        assert [j.id for m in h.requeued() for j in m.jobs] == ["j1", "j2"]
        assert load is not None and load.credit == 2
        assert assigned(pending) == ["j1", "j2"]
