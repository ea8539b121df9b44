"""The Executor runs assigned jobs, reports them in batches and gives credit back.

Each test runs a node of the executor and two stand-ins that record what
reaches them: ``dispatcher`` (credit) and ``results`` (``Running`` and
``Finished``). Tests wait on what the stand-ins record, never on the clock;
async time limits run under the autojump clock, and the sync time limit,
which real time drives, is a tiny one whose outcome is awaited as an event.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
import threading
import time
import types
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from actors import Actor, GetStats, Node, Topology, open_node
from fastworker.executor import Executor, isolated, threads
from fastworker.messages import (
    ASYNC,
    PROCESS,
    THREAD,
    Assign,
    CancelReply,
    Credit,
    Finished,
    Job,
    Outcome,
    Retry,
    Returned,
    Running,
    Stop,
)
from fastworker.payload import pack_call, unpack_value
from fastworker.stats import ExecutorStats
from fastworker.tasks import Backoff, TaskRegistry, task
from tests.fastworker import (
    procpool_tasks,  # noqa: F401 (registers procpool_tests.*)
    sample_tasks,
)
from tests.fastworker.sample_tasks import (
    ENTERED,
    GATES,
    THREAD_IDENTS,
    TRIO_GATES,
    Concurrency,
)

_ids = itertools.count(1)


class Log:
    """What one stand-in received, in order; tests wait on it."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self._changed = trio.Event()

    def add(self, messages: list[Any]) -> None:
        self.messages.extend(messages)
        self._changed.set()
        self._changed = trio.Event()

    async def until(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``condition()`` holds (a guard fails the test past ``timeout``)."""
        with trio.fail_after(timeout):
            while not condition():
                await self._changed.wait()

    def of(self, cls: type[Any]) -> list[Any]:
        return [m for m in self.messages if isinstance(m, cls)]

    @property
    def outcomes(self) -> dict[str, Outcome]:
        return {o.id: o for f in self.of(Finished) for o in f.outcomes}

    def credits(self, kind: int) -> list[int]:
        """Of each Credit in order, the slots of ``kind`` it grants."""
        return [c.slots[kind] for c in self.of(Credit)]

    def granted(self, kind: int) -> int:
        """The credit of ``kind`` granted so far."""
        return sum(self.credits(kind))


class StandIn(Actor[Any]):
    """Records every message it receives into a ``Log``; with ``hold``, only
    once that event is set (a slow actor: its mailbox fills)."""

    def __init__(self, options: Any, context: Any, *, log: Log,
                 hold: trio.Event | None = None) -> None:
        super().__init__(options, context)
        self.log = log
        self.hold = hold

    async def handle_batch(self, messages: list[Any]) -> None:
        if self.hold is not None:
            await self.hold.wait()
        self.log.add(messages)


class Harness:
    def __init__(self, node: Node, dispatcher: Log, results: Log) -> None:
        self.node, self.dispatcher, self.results = node, dispatcher, results

    async def assign(self, *jobs: Job) -> None:
        await self.node.refs["executor"].send(Assign(jobs=jobs))

    async def outcomes_of(self, *jobs: Job) -> list[Outcome]:
        """Wait until every job has an outcome; return them in order."""
        await self.results.until(lambda: all(j.id in self.results.outcomes for j in jobs))
        return [self.results.outcomes[j.id] for j in jobs]

    async def stats(self) -> ExecutorStats:
        snapshot = await self.node.refs["executor"].call(GetStats())
        detail: ExecutorStats = snapshot.detail
        return detail


@asynccontextmanager
async def executor(
    registry: TaskRegistry | None = None, *, hold_results: trio.Event | None = None,
    **options: Any
) -> AsyncIterator[Harness]:
    """A node of an executor and its two stand-ins; ``hold_results`` holds
    up the results stand-in until it is set."""
    dispatcher, results = Log(), Log()
    options.setdefault("worker", "w")
    topology = (
        Topology()
        .add("dispatcher", StandIn, params={"log": dispatcher})
        .add("results", StandIn, params={"log": results, "hold": hold_results})
        .add(
            "executor",
            Executor,
            refs={"dispatcher": "dispatcher", "results": "results"},
            params={} if registry is None else {"registry": registry},
            **options,
        )
    )
    async with open_node(topology) as node:
        try:
            yield Harness(node, dispatcher, results)
        finally:
            if hold_results is not None:
                hold_results.set()  # or the node's stop would wait for it


def job(task: str, *args: Any, timeout: float | None = None, payload: bytes | None = None,
        priority: int = 2, **kwargs: Any) -> Job:
    return Job(
        id=f"j{next(_ids)}",
        task=task,
        payload=pack_call(args, kwargs) if payload is None else payload,
        priority=priority,
        timeout=timeout,
        attempt=1,
    )


def value_of(outcome: Outcome) -> Any:
    """The unpickled value of a job that succeeded."""
    assert outcome.error is None, outcome.error
    assert outcome.value is not None
    return unpack_value(outcome.value)


@pytest.fixture
def gates() -> Any:
    """Makes keys for ``tests.sample.block``, each with its events; every
    one is released at teardown whatever happens."""
    keys: list[str] = []

    def make() -> str:
        key = f"gate{next(_ids)}"
        GATES[key], ENTERED[key] = threading.Event(), threading.Event()
        keys.append(key)
        return key

    yield make
    for key in keys:
        GATES.pop(key).set()
        ENTERED.pop(key)


async def entered(key: str) -> bool:
    """Whether a ``tests.sample.block`` job of ``key`` began within 10 s."""
    return await trio.to_thread.run_sync(ENTERED[key].wait, 10.0)


@pytest.fixture
def gate() -> Any:
    """A key for ``tests.sample.block``; its thread is released at teardown
    whatever happens, so no test leaves a thread blocked."""
    key = f"gate{next(_ids)}"
    GATES[key], ENTERED[key] = threading.Event(), threading.Event()
    yield key
    GATES.pop(key).set()
    ENTERED.pop(key)


async def test_worker_name_defaults_to_host_and_pid() -> None:
    """Without a worker name, records name the host and process."""
    async with executor(worker="") as harness:
        await harness.dispatcher.until(lambda: bool(harness.dispatcher.messages))
        assert harness.dispatcher.messages[0].worker == f"{socket.gethostname()}:{os.getpid()}"


@pytest.mark.parametrize("task", ["tests.sample.add", "tests.sample.async_add"])
async def test_value_round_trips(task: str) -> None:
    """A sync or async task's return value comes back pickled, with times."""
    async with executor() as harness:
        the_job = job(task, 2, y=3)
        await harness.assign(the_job)
        [outcome] = await harness.outcomes_of(the_job)
        assert value_of(outcome) == 5
        assert (outcome.id, outcome.attempt, outcome.worker) == (the_job.id, 1, "w")
        assert 0 < outcome.started_at <= outcome.finished_at
        [running] = harness.results.of(Running)
        assert running.ids == (the_job.id,)
        assert running.worker == "w"
        assert harness.results.messages.index(running) < len(harness.results.messages) - 1


class TestErrors:
    async def test_sync_exception_is_captured(self) -> None:
        """A builtin exception is reported by name, message and traceback text,
        the traceback starting at the task function."""
        async with executor() as harness:
            the_job = job("tests.sample.fail", 7)
            await harness.assign(the_job)
            [outcome] = await harness.outcomes_of(the_job)
        assert outcome.value is None
        assert outcome.error is not None
        assert (outcome.error.type, outcome.error.message) == ("ValueError", "bad value 7")
        assert outcome.error.kind == "error"
        assert "in fail" in outcome.error.traceback
        assert 'raise ValueError(f"bad value {value}")' in outcome.error.traceback
        assert "_call_sync" not in outcome.error.traceback

    async def test_async_exception_is_named_by_module(self) -> None:
        """A non-builtin exception is named module.Qualname."""
        async with executor() as harness:
            the_job = job("tests.sample.async_fail", 8)
            await harness.assign(the_job)
            [outcome] = await harness.outcomes_of(the_job)
        assert outcome.error is not None
        assert outcome.error.type == "tests.fastworker.sample_tasks.SampleError"
        assert outcome.error.message == "async bad value 8"
        assert "in async_fail" in outcome.error.traceback

    async def test_unknown_task_fails_without_running(self) -> None:
        """A task this worker does not know fails as UnknownTask, names close
        matches, is never reported running, and its slot comes back."""
        registry = TaskRegistry()
        registry.register(sample_tasks.noop)
        async with executor(registry=registry, concurrency=2, prefetch=0) as harness:
            the_job = job("tests.sample.nop")
            await harness.assign(the_job)
            [outcome] = await harness.outcomes_of(the_job)
            # Never announced: its credit is taken back as async.
            await harness.dispatcher.until(
                lambda: harness.dispatcher.credits(ASYNC) == [2, 1])
        assert outcome.error is not None
        assert outcome.error.type == "UnknownTask"
        assert outcome.error.message == (
            "no task named 'tests.sample.nop' on worker w (did you mean 'tests.sample.noop'?); "
            "import the module that defines it on this worker ([node] imports or "
            "FASTWORKER_TASKS)"
        )
        assert harness.results.of(Running) == []

    async def test_a_job_past_its_deadline_expires_without_running(self) -> None:
        """A job whose deadline passed on its way here is not started: it
        ends as expired, is never reported running, and its slot comes back;
        one still in time runs."""
        async with executor(threads=2, prefetch=0) as harness:
            stale = attrs.evolve(job("tests.sample.add", 1, 2), expires_at=time.time() - 1)
            fresh = attrs.evolve(job("tests.sample.add", 2, 2), expires_at=time.time() + 60)
            await harness.assign(stale, fresh)
            expired, ran = await harness.outcomes_of(stale, fresh)
            await harness.dispatcher.until(lambda: harness.dispatcher.granted(THREAD) == 4)
        assert expired.error is not None
        assert (expired.error.type, expired.error.kind) == ("TaskExpired", "expired")
        assert value_of(ran) == 4
        assert [r.ids for r in harness.results.of(Running)] == [(fresh.id,)]

    @pytest.mark.parametrize("task", ["tests.sample.add", "tests.sample.async_add"])
    async def test_bad_payload_is_an_invalid_submission(self, task: str) -> None:
        """Arguments that do not unpickle fail the job as InvalidSubmission."""
        async with executor() as harness:
            the_job = job(task, payload=b"not a pickle")
            await harness.assign(the_job)
            [outcome] = await harness.outcomes_of(the_job)
        assert outcome.error is not None
        assert outcome.error.type == "InvalidSubmission"
        assert outcome.error.message.startswith(
            f"cannot unpickle the arguments of task {task}: UnpicklingError: "
        )

    async def test_unpicklable_return_value_fails_the_job(self) -> None:
        """A return value that cannot be pickled fails with the TypeError text."""
        async with executor() as harness:
            the_job = job("tests.sample.unpicklable")
            await harness.assign(the_job)
            [outcome] = await harness.outcomes_of(the_job)
        assert outcome.error is not None
        assert outcome.error.type == "TypeError"
        assert outcome.error.message == (
            "the task's return value cannot be pickled: "
            "TypeError: cannot pickle '_thread.lock' object"
        )

    async def test_stats_count_outcomes(self) -> None:
        """The snapshot counts successes and failures apart."""
        async with executor(concurrency=3, threads=2, processes=1) as harness:
            jobs = [job("tests.sample.add", 1, 1), job("tests.sample.fail", 1),
                    job("tests.sample.nothing")]
            await harness.assign(*jobs)
            await harness.outcomes_of(*jobs)
            assert await harness.stats() == ExecutorStats(
                worker="w", concurrency=3, in_flight=0, threads=2, succeeded_total=1,
                failed_total=2, timed_out_total=0, late_results_discarded=0,
                slots=(3, 2, 1), running=(0, 0, 0), waiting=(0, 0, 0), prefetch=(1, 1, 1),
            )


class TestTimeLimits:
    async def test_async_limits_job_then_task_then_default(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An async task is cancelled at its job's limit, else its task's,
        else the executor's default."""
        async with executor(default_timeout=2.0) as harness:
            jobs = [
                job("tests.sample.async_sleep", 10, timeout=1.5),
                job("tests.sample.async_slow"),
                job("tests.sample.async_sleep", 10),
                job("tests.sample.async_sleep", 1),
            ]
            await harness.assign(*jobs)
            outcomes = await harness.outcomes_of(*jobs)
            stats = await harness.stats()
        errors = [o.error for o in outcomes]
        assert [(e.type, e.kind) for e in errors[:3] if e] == [("TaskTimeout", "timeout")] * 3
        assert [e.message for e in errors[:3] if e] == [
            "task tests.sample.async_sleep ran past its time limit of 1.5 s",
            "task tests.sample.async_slow ran past its time limit of 5 s",
            "task tests.sample.async_sleep ran past its time limit of 2 s",
        ]
        assert value_of(outcomes[3]) == "slept"
        assert (stats.timed_out_total, stats.failed_total, stats.in_flight) == (3, 0, 0)
        assert harness.dispatcher.granted(ASYNC) - harness.dispatcher.credits(ASYNC)[0] == 4

    async def test_sync_timeout_fails_at_deadline_and_keeps_slot_until_thread_ends(
        self, gate: str
    ) -> None:
        """A sync task past its limit is reported as timed out at once; its
        slot returns only when its thread is done, and its late result is
        discarded."""
        async with executor(concurrency=1, threads=1, prefetch=0) as harness:
            the_job = job("tests.sample.block", gate, timeout=0.05)
            await harness.assign(the_job)
            [outcome] = await harness.outcomes_of(the_job)
            assert outcome.error is not None
            assert (outcome.error.type, outcome.error.kind) == ("TaskTimeout", "timeout")
            assert outcome.error.message == (
                "task tests.sample.block ran past its time limit of 0.05 s"
            )
            # The thread is still in the task: the slot stays taken.
            stats = await harness.stats()
            assert (stats.in_flight, stats.late_results_discarded) == (1, 0)
            assert harness.dispatcher.credits(THREAD) == [1]

            GATES[gate].set()
            await harness.dispatcher.until(lambda: harness.dispatcher.credits(THREAD) == [1, 1])
            stats = await harness.stats()
            assert (stats.in_flight, stats.late_results_discarded) == (0, 1)
            assert (stats.timed_out_total, stats.succeeded_total) == (1, 0)
        finished = [o for f in harness.results.of(Finished) for o in f.outcomes]
        assert finished == [outcome]

    async def test_sync_limit_starts_when_a_thread_takes_the_job(self, gate: str) -> None:
        """A sync job waiting for a busy thread is not timed out while it waits."""
        async with executor(concurrency=2, threads=1) as harness:
            blocker = job("tests.sample.block", gate, timeout=0.2)
            waiting = job("tests.sample.add", 1, 2, timeout=0.1)
            await harness.assign(blocker, waiting)
            # The blocker timing out proves twice the waiting job's limit
            # has passed while it was queued behind the blocker.
            [blocked] = await harness.outcomes_of(blocker)
            assert blocked.error is not None and blocked.error.kind == "timeout"
            assert waiting.id not in harness.results.outcomes
            GATES[gate].set()
            [added] = await harness.outcomes_of(waiting)
        assert value_of(added) == 3


class TestBatching:
    @pytest.mark.parametrize("task", ["tests.sample.async_add", "tests.sample.add"])
    async def test_reports_are_batched(self, task: str) -> None:
        """Async jobs: one Running per Assign. Thread jobs are running once
        their threads begin them, reported by the collector's passes: a few
        Running, as threads begin at their own pace. Far fewer Finished and
        Credit messages than jobs."""
        kind = ASYNC if task.endswith("async_add") else THREAD
        async with executor(concurrency=100, threads=100, prefetch=0) as harness:
            jobs = [job(task, n, 1) for n in range(100)]
            await harness.assign(*jobs)
            outcomes = await harness.outcomes_of(*jobs)
            await harness.dispatcher.until(lambda: harness.dispatcher.granted(kind) == 200)
        assert [value_of(o) for o in outcomes] == list(range(1, 101))
        running = harness.results.of(Running)
        assert len(running) == 1 if kind == ASYNC else len(running) <= 25
        assert sum(len(r.ids) for r in running) == 100
        assert len(harness.results.of(Finished)) <= 25
        assert len(harness.dispatcher.of(Credit)) <= 26

    async def test_credit_adds_back_up_to_slots_and_prefetch(self) -> None:
        """After the initial grant, credit comes back one per finished job,
        until the dispatcher holds the kind's slots and prefetch again."""
        async with executor(concurrency=4, threads=2, prefetch=2, min_prefetch=2) as harness:
            jobs = [job("tests.sample.add", n, n) for n in range(4)]
            await harness.assign(*jobs)
            await harness.outcomes_of(*jobs)
            await harness.dispatcher.until(lambda: harness.dispatcher.granted(THREAD) == 8)
            await trio.testing.wait_all_tasks_blocked()
        assert harness.dispatcher.credits(THREAD)[0] == 4
        assert harness.dispatcher.granted(THREAD) == 8
        assert harness.dispatcher.granted(ASYNC) == 6  # untouched


class TestConcurrency:
    async def test_never_more_than_concurrency_jobs_run(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Fed only as credit allows, the executor runs at most
        ``concurrency`` jobs at once, and uses all of them."""
        Concurrency.peak = 0
        jobs = [job("tests.sample.overlap", 1 + n % 3) for n in range(30)]
        async with executor(concurrency=5, prefetch=2) as harness:
            credits = harness.dispatcher
            sent = 0
            while sent < len(jobs):
                await credits.until(lambda sent=sent: credits.granted(ASYNC) > sent)
                n = credits.granted(ASYNC) - sent
                await harness.assign(*jobs[sent : sent + n])
                sent += n
            await harness.outcomes_of(*jobs)
        assert Concurrency.peak == 5

    async def test_jobs_past_credit_wait_for_a_slot(
        self, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A dispatcher that assigns past its credit does not push the
        executor past its bound: the extra jobs wait, and a warning says so."""
        Concurrency.peak = 0
        jobs = [job("tests.sample.overlap", 1) for _ in range(10)]
        with caplog.at_level(logging.WARNING, logger="fastworker.executor"):
            async with executor(concurrency=3, prefetch=1) as harness:
                await harness.assign(*jobs)
                outcomes = await harness.outcomes_of(*jobs)
                await harness.dispatcher.until(lambda: harness.dispatcher.granted(ASYNC) == 8)
        assert all(o.error is None for o in outcomes)
        assert Concurrency.peak == 3
        assert "executor: assigned 6 async jobs past its credit; they wait for a free slot" in (
            caplog.messages
        )
        assert len(harness.results.of(Running)) > 1

    async def test_threads_are_reused(self) -> None:
        """Sync tasks run on the executor's few long-lived threads."""
        THREAD_IDENTS.clear()
        async with executor(concurrency=50, threads=3) as harness:
            for _ in range(4):
                jobs = [job("tests.sample.thread_ident") for _ in range(50)]
                await harness.assign(*jobs)
                await harness.outcomes_of(*jobs)
        assert 1 <= len(THREAD_IDENTS) <= 3
        assert threading.get_ident() not in THREAD_IDENTS


class TestSlots:
    """A job starts only on a free slot of its kind; the others wait here,
    best first; credit is counted per kind."""

    async def test_setup_grants_slots_and_prefetch_per_kind_and_names_the_tasks(
        self, gates: Callable[[], str], caplog: pytest.LogCaptureFixture
    ) -> None:
        """The first Credit grants each kind its slots plus the prefetch, and
        names every task with its kind; jobs of one kind take only that
        kind's credit, which comes back as they end."""
        async with executor(threads=2, processes=1, concurrency=3, prefetch=1,
                            min_prefetch=1) as harness:
            dispatcher = harness.dispatcher
            await dispatcher.until(lambda: bool(dispatcher.of(Credit)))
            [first] = dispatcher.of(Credit)
            assert first == Credit(worker="w", slots=(4, 3, 2), prefetch=(1, 1, 1), holds=(4, 3, 2))
            assert first.tasks is not None
            assert (first.tasks["tests.sample.add"], first.tasks["tests.sample.async_add"]) == (
                THREAD, ASYNC)
            assert harness.node.ready["executor"] == (
                "slots: 3 async, 2 thread, 1 process; prefetch up to 1")

            keys = [gates() for _ in range(3)]
            blocked = [job("tests.sample.block", key) for key in keys]
            await harness.assign(*blocked)
            assert await entered(keys[0]) and await entered(keys[1])
            stats = await harness.stats()
            assert (stats.running, stats.waiting, stats.in_flight) == ((0, 2, 0), (0, 1, 0), 3)
            # The thread credit is spent (one more is past it); the async
            # credit is whole: 4 async jobs are no surprise.
            key = f"slots{next(_ids)}"
            TRIO_GATES[key] = trio.Event()
            waits = [job("tests.sample.async_wait", key) for _ in range(4)]
            with caplog.at_level(logging.WARNING, logger="fastworker.executor"):
                await harness.assign(*waits)
                past = job("tests.sample.add", 1, 1)
                await harness.assign(past)
                await trio.testing.wait_all_tasks_blocked()
            assert caplog.messages == [
                "executor: assigned 1 thread jobs past its credit; they wait for a free slot"]
            stats = await harness.stats()
            assert (stats.running, stats.waiting) == ((3, 2, 0), (1, 2, 0))
            assert len(dispatcher.of(Credit)) == 1

            # As they end, each kind's credit comes back to it.
            TRIO_GATES[key].set()
            for key in keys:
                GATES[key].set()
            await harness.outcomes_of(*blocked, *waits, past)
            await dispatcher.until(lambda: dispatcher.granted(THREAD) == 3 + 3)
            await dispatcher.until(lambda: dispatcher.granted(ASYNC) == 4 + 4)
            await trio.testing.wait_all_tasks_blocked()
            # The thread job past the credit was not credit given: 3, not 4, come back.
            assert [dispatcher.granted(kind) for kind in (ASYNC, THREAD, PROCESS)] == [8, 6, 2]
            stats = await harness.stats()
            assert (stats.running, stats.waiting, stats.in_flight) == ((0, 0, 0), (0, 0, 0), 0)

    async def test_a_critical_job_starts_before_low_ones_that_waited_longer(
        self, gates: Callable[[], str]
    ) -> None:
        """Jobs waiting for a slot start best first (priority, then arrival),
        not in the order they came: as threads free, the critical job starts
        before the low one that waited longer. The threads hold their
        prefetch (here 1) in their own queue, best first too, so the freed
        thread starts that low job or the critical one if the collector
        handed it over first; both start before the last low job."""
        async with executor(threads=2, prefetch=1) as harness:
            blocker_key, critical_key = gates(), gates()
            low_keys = [gates() for _ in range(3)]
            blocker = job("tests.sample.block", blocker_key, priority=3)
            lows = [job("tests.sample.block", key, priority=3) for key in low_keys]
            critical = job("tests.sample.block", critical_key, priority=0)
            await harness.assign(blocker)
            await harness.assign(*lows)  # one more thread, one prefetched, one waits
            await harness.assign(critical)
            assert await entered(blocker_key) and await entered(low_keys[0])
            stats = await harness.stats()
            assert (stats.running, stats.waiting) == ((0, 2, 0), (0, 3, 0))
            GATES[blocker_key].set()
            GATES[low_keys[0]].set()  # two threads free: the prefetched and the critical
            assert await entered(low_keys[1]) and await entered(critical_key)
            assert not ENTERED[low_keys[2]].is_set()
            for key in (critical_key, *low_keys):
                GATES[key].set()
            await harness.outcomes_of(blocker, critical, *lows)
        started = [ids for r in harness.results.of(Running) for ids in r.ids]
        assert set(started[:2]) == {blocker.id, lows[0].id}  # two threads begin at once
        assert set(started[2:4]) == {lows[1].id, critical.id}
        assert started[4:] == [lows[2].id]

    async def test_a_sync_job_waits_for_its_kind_while_async_slots_are_free(
        self, gate: str
    ) -> None:
        """With every thread busy, a sync job is not started (not reported
        running, not queued for a thread) however many async slots are
        free; async jobs run past it."""
        async with executor(concurrency=8, threads=1, prefetch=0) as harness:
            blocker, waiting = job("tests.sample.block", gate), job("tests.sample.add", 1, 2)
            await harness.assign(blocker, waiting)
            await trio.to_thread.run_sync(ENTERED[gate].wait)
            quick = job("tests.sample.async_add", 2, 2)
            await harness.assign(quick)
            [ran] = await harness.outcomes_of(quick)
            assert value_of(ran) == 4
            running = [ids for r in harness.results.of(Running) for ids in r.ids]
            assert running == [blocker.id, quick.id]
            stats = await harness.stats()
            assert (stats.running, stats.waiting) == ((0, 1, 0), (0, 1, 0))
            GATES[gate].set()
            [added] = await harness.outcomes_of(waiting)
        assert value_of(added) == 3
        running = [ids for r in harness.results.of(Running) for ids in r.ids]
        assert running == [blocker.id, quick.id, waiting.id]

    async def test_give_back_returns_the_waiting_jobs_and_then_their_credit(
        self, gates: Callable[[], str]
    ) -> None:
        """``Assign(give_back=True)`` hands back every job not started, best
        first and as they came (same attempt), in one Returned: those
        prefetched into the threads' queue and those waiting past it. Their
        credit follows, once the slots they held are free; the running job
        runs on."""
        async with executor(threads=1, prefetch=2, min_prefetch=2) as harness:
            gate = gates()
            dispatcher = harness.dispatcher
            running = job("tests.sample.block", gate, priority=0)  # the threads take it first
            second = attrs.evolve(job("tests.sample.add", 1, 1), attempt=2)
            first = job("tests.sample.add", 2, 2, priority=0)
            last = job("tests.sample.add", 3, 3)
            await harness.assign(running, second, first, last)
            await trio.to_thread.run_sync(ENTERED[gate].wait)
            stats = await harness.stats()
            assert (stats.running, stats.waiting) == ((0, 1, 0), (0, 3, 0))
            await harness.node.refs["executor"].send(Assign(jobs=(), give_back=True))
            await dispatcher.until(lambda: bool(dispatcher.of(Returned)))
            [returned] = dispatcher.of(Returned)
            assert returned.jobs == (first, second, last)
            stats = await harness.stats()
            assert (stats.running, stats.waiting) == ((0, 1, 0), (0, 0, 0))
            GATES[gate].set()
            [outcome] = await harness.outcomes_of(running)
            await dispatcher.until(lambda: dispatcher.granted(THREAD) == 3 + 3)
            credits = [c for c in dispatcher.of(Credit)[1:] if any(c.slots)]
            assert all(dispatcher.messages.index(returned) < dispatcher.messages.index(c)
                       for c in credits)
        assert value_of(outcome) == "late"
        assert set(harness.results.outcomes) == {running.id}  # the others never ran here
        # Only the job a thread began was reported running.
        assert [ids for r in harness.results.of(Running) for ids in r.ids] == [running.id]

    async def test_tasks_are_named_at_setup_and_after_the_registry_changes(
        self, gate: str
    ) -> None:
        """Credit.tasks comes in the first Credit and in the first one after
        each change to the registry (from the next batch or collector pass,
        with no credit if there is none), and never otherwise."""
        registry = TaskRegistry()
        registry.register(sample_tasks.block)
        async with executor(registry=registry, concurrency=1, threads=1, processes=1,
                            prefetch=0) as harness:
            dispatcher = harness.dispatcher
            the_job = job("tests.sample.block", gate)
            GATES[gate].set()
            await harness.assign(the_job)
            await harness.outcomes_of(the_job)
            await dispatcher.until(lambda: len(dispatcher.of(Credit)) == 2)
            # A batch after a change: the tasks, with no credit to give.
            registry.register(sample_tasks.async_add)
            await harness.node.refs["executor"].send(Assign(jobs=()))
            await dispatcher.until(lambda: len(dispatcher.of(Credit)) == 3)
            await harness.node.refs["executor"].send(Assign(jobs=()))  # no change: nothing
            # A change while a job runs: the collector's pass as it ends
            # sends its credit and the tasks.
            GATES[gate].clear()
            ENTERED[gate].clear()
            other = job("tests.sample.block", gate)
            await harness.assign(other)
            await trio.to_thread.run_sync(ENTERED[gate].wait)
            registry.register(sample_tasks.pid)
            GATES[gate].set()
            await harness.outcomes_of(other)
            await dispatcher.until(lambda: sum(c.slots[1] for c in dispatcher.of(Credit)) == 3)
            await trio.testing.wait_all_tasks_blocked()
        credits = dispatcher.of(Credit)
        assert [c.slots for c in credits[:3]] == [(1, 1, 1), (0, 1, 0), (0, 0, 0)]
        assert [c.tasks for c in credits[:3]] == [
            {"tests.sample.block": THREAD},
            None,
            {"tests.sample.block": THREAD, "tests.sample.async_add": ASYNC},
        ]
        # A collector's pass (as the thread began the job, or as it ended)
        # named the new task once, and the slot came back.
        later = credits[3:]
        assert [c.tasks for c in later if c.tasks is not None] == [
            {"tests.sample.block": THREAD, "tests.sample.async_add": ASYNC,
             "tests.sample.pid": THREAD}]
        assert [sum(c.slots[k] for c in later) for k in range(3)] == [0, 1, 0]


class TestAdaptivePrefetch:
    """The prefetch per kind follows the start rate and the round trip to
    the Dispatcher (here a stand-in that answers each Credit with as many
    jobs, ``ROUND_TRIP`` after it was sent), and the Dispatcher hears of
    each change."""

    ROUND_TRIP = 0.05

    async def feed(self, harness: Harness, seconds: float, task_seconds: float,
                   answered: set[int]) -> None:
        """For ``seconds``, answer each Credit not in ``answered`` (indexes)
        with as many jobs of ``task_seconds`` as its async slots, one round
        trip after it came; one cut short is answered by the next call."""
        dispatcher = harness.dispatcher

        async def answer(index: int, credit: Credit) -> None:
            await trio.sleep(self.ROUND_TRIP)
            await harness.assign(*(job("tests.sample.async_sleep", task_seconds)
                                   for _ in range(credit.slots[ASYNC])))
            answered.add(index)

        with trio.move_on_after(seconds):
            async with trio.open_nursery() as nursery:
                seen = 0
                while True:
                    credits = dispatcher.of(Credit)
                    for index in range(seen, len(credits)):
                        if index not in answered:
                            nursery.start_soon(answer, index, credits[index])
                    seen = len(credits)
                    await dispatcher.until(lambda n=seen: len(dispatcher.of(Credit)) > n,
                                           timeout=seconds + 10.0)

    def told(self, harness: Harness) -> tuple[int, int, int]:
        """The prefetch per kind the Dispatcher was last told."""
        told = [c.prefetch for c in harness.dispatcher.of(Credit) if c.prefetch is not None]
        return told[-1]

    async def test_short_tasks_raise_it_and_long_ones_bring_it_back_to_one(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        answered: set[int] = set()
        async with executor(concurrency=4, prefetch=64) as harness:
            assert self.told(harness) == (1, 1, 1)
            # 4 slots of 10 ms tasks start 400/s: two 50 ms round trips
            # hold 40, 20 ms of starts 8. (The estimate of the trip rises
            # only from jobs that used up all the credit out, so it stays
            # under: once the slots are kept busy, no credit runs out.)
            await self.feed(harness, 3.0, 0.01, answered)
            stats = await harness.stats()
            assert 20 <= stats.prefetch[ASYNC] <= 40
            assert self.told(harness)[ASYNC] >= stats.prefetch[ASYNC]
            assert stats.prefetch[THREAD] == stats.prefetch[PROCESS] == 1  # nothing started
            # 1 s tasks start 4/s: less than one per two round trips (the
            # 4 lanes start theirs together, so a window may see a burst).
            await self.feed(harness, 20.0, 1.0, answered)
            stats = await harness.stats()
            assert stats.prefetch[ASYNC] <= 2 and self.told(harness)[ASYNC] <= 2
            assert stats.prefetch[THREAD] == stats.prefetch[PROCESS] == 1

    async def test_while_a_smaller_prefetch_drains_the_dispatcher_is_told_the_credit_left(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Credit granted is not taken back: when the prefetch shrinks, what
        the Dispatcher holds beyond the free slots is still prefetch room,
        and the executor tells that, so placement does not take it for
        free slots."""
        answered: set[int] = set()
        async with executor(concurrency=4, prefetch=64) as harness:
            await self.feed(harness, 3.0, 0.01, answered)
            risen = (await harness.stats()).prefetch[ASYNC]
            await trio.sleep(2.0)  # the Dispatcher holds its credit; nothing starts
            last = job("tests.sample.async_sleep", 1.0)
            await harness.assign(last)
            await harness.outcomes_of(last)
            await trio.testing.wait_all_tasks_blocked()
            stats = await harness.stats()
        # Every job assigned has ended: the credit the Dispatcher holds is
        # all it was granted less one per job.
        held = harness.dispatcher.granted(ASYNC) - len(harness.results.outcomes)
        assert stats.prefetch[ASYNC] == 1 < risen  # the target fell
        assert self.told(harness)[ASYNC] == held - 4  # what it holds past its 4 free slots

    async def test_min_prefetch_equal_to_prefetch_keeps_it_fixed(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        async with executor(concurrency=4, prefetch=6, min_prefetch=6) as harness:
            await self.feed(harness, 3.0, 0.01, set())
            stats = await harness.stats()
        assert stats.prefetch == (6, 6, 6) == self.told(harness)
        assert harness.dispatcher.credits(ASYNC)[0] == 4 + 6


class TestGracefulStop:
    async def test_graceful_stop_waits_for_a_running_job(self) -> None:
        """Leaving the node lets a running job finish and report first; the
        worker threads end afterwards."""
        TRIO_GATES["stop"] = trio.Event()

        async def release_once_stopping() -> None:
            # Everything is blocked only once the stop reaches the executor's
            # drain, which waits for the job.
            await trio.testing.wait_all_tasks_blocked()
            TRIO_GATES["stop"].set()

        async with trio.open_nursery() as nursery:
            async with executor(worker="stopping") as harness:
                the_job = job("tests.sample.async_wait", "stop")
                await harness.assign(the_job)
                await harness.results.until(lambda: bool(harness.results.of(Running)))
                threads = [t for t in threading.enumerate() if t.name.endswith("(stopping)")]
                nursery.start_soon(release_once_stopping)
        outcome = harness.results.outcomes[the_job.id]
        assert value_of(outcome) == "released"
        assert len(threads) == 8
        for thread in threads:
            await trio.to_thread.run_sync(thread.join, 10.0)
            assert not thread.is_alive()


class TestRetries:
    """A failed attempt with retries left comes back as its next attempt:
    the outcome says after how long, and the dispatcher gets the job."""

    @pytest.mark.parametrize(("task", "wait"), [
        ("tests.sample.retried", 1.0), ("tests.sample.async_retried", 0.5)])
    async def test_a_failed_attempt_with_retries_left_is_retried(
        self, task: str, wait: float
    ) -> None:
        async with executor() as harness:
            first = job(task, 1)
            await harness.assign(first)
            [outcome] = await harness.outcomes_of(first)
            await harness.dispatcher.until(lambda: bool(harness.dispatcher.of(Retry)))
            stats = await harness.stats()
        [retry] = harness.dispatcher.of(Retry)
        assert outcome.error is not None and outcome.error.type == "ConnectionError"
        assert outcome.retry_in is not None
        assert wait * 0.5 <= outcome.retry_in <= wait  # jitter: half to all of the wait
        assert [(j.id, j.attempt, j.payload) for j in retry.jobs] == [
            (first.id, 2, first.payload)]
        assert retry.delays == (outcome.retry_in,)
        assert stats.retried_total == 1

    async def test_the_wait_grows_and_the_last_attempt_is_final(self) -> None:
        """retries=2, base 1 s, factor 3, no jitter: waits 1 s then 3 s; the
        third attempt's failure is final."""
        async with executor() as harness:
            jobs = [attrs.evolve(job("tests.sample.retried", n), attempt=n) for n in (1, 2, 3)]
            await harness.assign(*jobs)
            outcomes = await harness.outcomes_of(*jobs)

            def retried() -> list[int]:
                return [j.attempt for r in harness.dispatcher.of(Retry) for j in r.jobs]

            await harness.dispatcher.until(lambda: len(retried()) == 2)
        assert [o.retry_in for o in outcomes] == [1.0, 3.0, None]
        assert sorted(retried()) == [2, 3]  # threads finish in any order

    async def test_an_exception_not_in_retry_on_fails_at_once(self) -> None:
        async with executor() as harness:
            the_job = job("tests.sample.picky", 1)
            await harness.assign(the_job)
            [outcome] = await harness.outcomes_of(the_job)
            stats = await harness.stats()
        assert outcome.error is not None and outcome.error.type == "ValueError"
        assert outcome.retry_in is None
        assert harness.dispatcher.of(Retry) == [] and stats.retried_total == 0

    async def test_the_per_call_retries_override_the_tasks(self) -> None:
        async with executor() as harness:
            none = attrs.evolve(job("tests.sample.retried", 1), retries=0)
            more = attrs.evolve(job("tests.sample.picky", 1), retries=5)
            extra = attrs.evolve(job("tests.sample.fail", 1), retries=1)
            await harness.assign(none, more, extra)
            outcomes = await harness.outcomes_of(none, more, extra)
        # picky still refuses ValueError; a task without retries gets them per call
        assert [o.retry_in is not None for o in outcomes] == [False, False, True]

    async def test_running_past_the_time_limit_is_retried_too(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        async with executor() as harness:
            the_job = job("tests.sample.slow_retried")
            await harness.assign(the_job)
            [outcome] = await harness.outcomes_of(the_job)
        assert outcome.error is not None and outcome.error.kind == "timeout"
        assert outcome.retry_in is not None


class TestBackoff:
    def test_the_wait_is_exponential_and_capped(self) -> None:
        backoff = Backoff(base=0.5, factor=2.0, max=3.0, jitter=False)
        assert [backoff.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
        assert Backoff(base=1.0, max=10.0, jitter=False).delay(10_000) == 10.0

    def test_jitter_draws_between_half_and_all_of_the_wait(self) -> None:
        backoff = Backoff(base=4.0, factor=1.0, max=4.0)
        assert backoff.delay(1, rng=lambda: 0.0) == 2.0
        assert backoff.delay(1, rng=lambda: 0.999) == pytest.approx(3.998)

    @pytest.mark.parametrize(("options", "complaint"), [
        ({"retries": -1}, "retries must be a whole number"),
        ({"retries": 1.5}, "retries must be a whole number"),
        ({"backoff": "soon"}, "backoff must be a Backoff or seconds"),
        ({"retry_on": ValueError()}, "retry_on must be an exception class"),
        ({"retry_on": (ValueError, int)}, "retry_on must be an exception class"),
    ])
    def test_bad_retry_options_are_a_type_error(
        self, options: dict[str, Any], complaint: str
    ) -> None:
        with pytest.raises(TypeError, match=complaint):
            task(name="tests.never", **options)(lambda: None)

    def test_bad_backoff_values_are_a_type_error(self) -> None:
        with pytest.raises(TypeError, match="factor must be a number >= 1"):
            Backoff(factor=0.5)
        with pytest.raises(TypeError, match="max must be seconds >= base"):
            Backoff(base=10.0, max=1.0)


class TestStop:
    """A Stop reaches a job wherever the executor holds it, and says how."""

    async def stop(self, harness: Harness, the_job: Job) -> str:
        reply = await harness.node.refs["executor"].call(Stop(id=the_job.id))
        assert isinstance(reply, CancelReply) and reply.id == the_job.id
        return reply.outcome

    async def test_a_running_async_job_is_interrupted(self) -> None:
        async with executor() as harness:
            key = f"stop{next(_ids)}"
            TRIO_GATES[key] = trio.Event()
            the_job = job("tests.sample.async_wait", key)
            await harness.assign(the_job)
            await harness.results.until(lambda: bool(harness.results.of(Running)))
            await trio.testing.wait_all_tasks_blocked()  # it waits at its gate
            how = await self.stop(harness, the_job)
            [outcome] = await harness.outcomes_of(the_job)
            after = job("tests.sample.async_add", 2, 3)  # its lane goes on
            await harness.assign(after)
            [next_outcome] = await harness.outcomes_of(after)
            stats = await harness.stats()
        assert how == "interrupted" and value_of(next_outcome) == 5
        assert outcome.error is not None
        assert (outcome.error.type, outcome.error.kind) == ("TaskCancelled", "cancelled")
        assert "interrupted" in outcome.error.message and outcome.retry_in is None
        assert (stats.cancelled_total, stats.timed_out_total, stats.in_flight) == (1, 0, 0)

    async def test_a_running_thread_job_is_abandoned_and_its_result_discarded(
        self, gate: str
    ) -> None:
        async with executor(concurrency=2, threads=1, prefetch=1) as harness:
            running = job("tests.sample.block", gate)
            waiting = job("tests.sample.add", 1, 2)
            await harness.assign(running, waiting)
            await trio.to_thread.run_sync(ENTERED[gate].wait)
            how = await self.stop(harness, running)
            not_begun = await self.stop(harness, waiting)
            outcomes = await harness.outcomes_of(running, waiting)
            GATES[gate].set()
            await harness.dispatcher.until(lambda: harness.dispatcher.granted(THREAD) == 4)
            stats = await harness.stats()
        assert (how, not_begun) == ("abandoned", "cancelled")
        assert [o.error.kind if o.error else None for o in outcomes] == ["cancelled"] * 2
        assert "cannot be stopped" in outcomes[0].error.message  # type: ignore[union-attr]
        assert (stats.late_results_discarded, stats.cancelled_total, stats.succeeded_total) == (
            1, 2, 0)
        finished = [o.id for f in harness.results.of(Finished) for o in f.outcomes]
        assert finished == [running.id, waiting.id]  # nothing more once the thread returned

    async def test_an_async_job_stopped_before_a_lane_takes_it_never_runs(self) -> None:
        async with executor() as harness:
            key = f"stop{next(_ids)}"
            TRIO_GATES[key] = trio.Event()
            the_job = job("tests.sample.async_wait", key)
            await harness.node.refs["executor"].send_batch(
                [Assign(jobs=(the_job,)), Stop(id=the_job.id)])
            [outcome] = await harness.outcomes_of(the_job)
            stats = await harness.stats()
        assert outcome.error is not None and "before it started" in outcome.error.message
        assert (stats.cancelled_total, stats.in_flight) == (1, 0)

    async def test_a_job_it_does_not_hold_is_not_queued(self) -> None:
        async with executor() as harness:
            done = job("tests.sample.add", 1, 1)
            await harness.assign(done)
            await harness.outcomes_of(done)
            assert await self.stop(harness, done) == "not_queued"


class Tags:
    """A TCP listener that ``procpool_tests.tagged`` jobs connect to: the
    test learns which job a pool process began, and releases it."""

    def __init__(self, listener: trio.SocketListener) -> None:
        self.listener = listener
        self.port: int = listener.socket.getsockname()[1]
        self._streams: dict[int, trio.SocketStream] = {}

    def job(self, tag: int, priority: int = 2) -> Job:
        """A job that says ``tag`` here once it begins, and returns it once released."""
        return job("procpool_tests.tagged", self.port, tag, priority=priority)

    async def began(self) -> int:
        """The tag of the next job a pool process begins (a guard fails the
        test past 10 s)."""
        with trio.fail_after(10):
            stream = await self.listener.accept()
            line = b""
            while not line.endswith(b"\n"):
                chunk = await stream.receive_some()
                assert chunk, "the job closed its connection before sending its tag"
                line += chunk
        tag = int(line)
        self._streams[tag] = stream
        return tag

    async def release(self, tag: int) -> None:
        """Let the job of ``tag`` return (it reads the end of its connection)."""
        await self._streams.pop(tag).aclose()

    async def aclose(self) -> None:
        """Release every job, and refuse those yet to begin (they fail)."""
        for tag in list(self._streams):
            await self.release(tag)
        await self.listener.aclose()


@asynccontextmanager
async def tags() -> AsyncIterator[Tags]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    reporter = Tags(listeners[0])
    try:
        yield reporter
    finally:
        await reporter.aclose()


def started_ids(results: Log) -> list[str]:
    """The ids in every ``Running``, in order."""
    return [ids for r in results.of(Running) for ids in r.ids]


def running_precedes_finished(results: Log, the_job: Job) -> bool:
    """Whether the job's first ``Running`` came before its ``Finished``."""
    messages = results.messages
    running = next(n for n, m in enumerate(messages)
                   if isinstance(m, Running) and the_job.id in m.ids)
    finished = next(n for n, m in enumerate(messages)
                    if isinstance(m, Finished) and any(o.id == the_job.id for o in m.outcomes))
    return running < finished


class TestPoolHandOff:
    """The executor hands the pool its slots plus its prefetch; the jobs
    wait in the pool best first, and a process that frees begins the best
    one itself. Tests use the real pool (real processes, the real clock);
    ``procpool_tests.tagged`` jobs say when they begin, and wait to be
    released."""

    async def test_a_freed_process_begins_the_best_handed_job_without_the_collector(
        self
    ) -> None:
        """With its one process busy, a critical job handed after low ones
        begins before them, as the process frees, even while the
        executor's collector is held up (the results store reads nothing):
        the pool does not wait for the collector's pass. Each job's
        ``Running`` still precedes its ``Finished``."""
        hold = trio.Event()
        async with executor(processes=1, prefetch=3, min_prefetch=3,
                            hold_results=hold) as harness, tags() as reporter:
            blocker = reporter.job(0, priority=3)
            await harness.assign(blocker)
            assert await reporter.began() == 0
            lows = [reporter.job(n, priority=3) for n in (1, 2)]
            critical = reporter.job(9, priority=0)
            await harness.assign(*lows)
            await harness.assign(critical)
            stats = await harness.stats()
            assert (stats.running, stats.waiting, stats.in_flight) == ((0, 0, 1), (0, 0, 3), 4)
            # The results stand-in holds the blocker's Running and reads no
            # more: fill its mailbox, so the collector's next send waits.
            await trio.testing.wait_all_tasks_blocked()
            results = harness.node.refs["results"]
            with contextlib.suppress(trio.WouldBlock):
                while True:
                    results.send_nowait("filler")
            await reporter.release(0)
            assert await reporter.began() == 9
            await reporter.release(9)
            assert await reporter.began() == 1
            await reporter.release(1)
            assert await reporter.began() == 2
            await reporter.release(2)
            hold.set()
            outcomes = await harness.outcomes_of(blocker, critical, *lows)
        assert [value_of(o) for o in outcomes] == [0, 9, 1, 2]
        assert started_ids(harness.results) == [blocker.id, critical.id, lows[0].id, lows[1].id]
        for the_job in (blocker, critical, *lows):
            assert running_precedes_finished(harness.results, the_job)

    async def test_running_is_sent_when_a_runner_begins_the_job(self) -> None:
        """Jobs handed to a busy pool are not reported running while they
        wait there; each is once a process begins it, before its ``Finished``."""
        async with executor(processes=1, prefetch=2, min_prefetch=2) as harness, tags() as reporter:
            jobs = [reporter.job(n) for n in range(3)]
            await harness.assign(*jobs)
            assert await reporter.began() == 0
            await trio.testing.wait_all_tasks_blocked()
            assert started_ids(harness.results) == [jobs[0].id]
            for n in (0, 1):
                await reporter.release(n)
                assert await reporter.began() == n + 1
            await reporter.release(2)
            outcomes = await harness.outcomes_of(*jobs)
            await harness.dispatcher.until(lambda: harness.dispatcher.granted(PROCESS) == 3 + 3)
        assert [value_of(o) for o in outcomes] == [0, 1, 2]
        assert started_ids(harness.results) == [j.id for j in jobs]
        for the_job in jobs:
            assert running_precedes_finished(harness.results, the_job)

    async def test_give_back_takes_the_jobs_no_process_began(self) -> None:
        """``Assign(give_back=True)`` hands back the jobs waiting in the pool,
        best first and as they came, in one ``Returned``; their credit
        follows it; the job a process runs runs on."""
        async with executor(processes=1, prefetch=3, min_prefetch=3) as harness, tags() as reporter:
            dispatcher = harness.dispatcher
            running = reporter.job(0, priority=0)
            await harness.assign(running)
            assert await reporter.began() == 0
            second = attrs.evolve(job("procpool_tests.add", 1, 1), attempt=2)
            first = job("procpool_tests.add", 2, 2, priority=0)
            last = job("procpool_tests.add", 3, 3)
            await harness.assign(second, first, last)
            stats = await harness.stats()
            assert (stats.running, stats.waiting) == ((0, 0, 1), (0, 0, 3))
            await harness.node.refs["executor"].send(Assign(jobs=(), give_back=True))
            await dispatcher.until(lambda: bool(dispatcher.of(Returned)))
            [returned] = dispatcher.of(Returned)
            assert returned.jobs == (first, second, last)
            await dispatcher.until(lambda: dispatcher.granted(PROCESS) == 4 + 3)
            stats = await harness.stats()
            assert (stats.running, stats.waiting, stats.in_flight) == ((0, 0, 1), (0, 0, 0), 1)
            await reporter.release(0)
            [outcome] = await harness.outcomes_of(running)
            await dispatcher.until(lambda: dispatcher.granted(PROCESS) == 4 + 4)
            credits = dispatcher.of(Credit)[1:]
            assert all(dispatcher.messages.index(returned) < dispatcher.messages.index(c)
                       for c in credits)
        assert value_of(outcome) == 0
        assert set(harness.results.outcomes) == {running.id}  # the others never ran here
        assert started_ids(harness.results) == [running.id]

    async def test_a_job_stopped_before_a_process_began_it_never_runs(self) -> None:
        """A ``Stop`` of a job waiting in the pool answers ``cancelled``, its
        outcome says so at once, its slot is free, and no process runs it."""
        async with executor(processes=1, prefetch=1, min_prefetch=1) as harness, tags() as reporter:
            blocker, waiting = reporter.job(0), reporter.job(1)
            await harness.assign(blocker)
            assert await reporter.began() == 0
            await harness.assign(waiting)
            reply = await harness.node.refs["executor"].call(Stop(id=waiting.id))
            assert reply == CancelReply(id=waiting.id, outcome="cancelled")
            [outcome] = await harness.outcomes_of(waiting)
            stats = await harness.stats()
            assert (stats.running, stats.waiting, stats.cancelled_total) == (
                (0, 0, 1), (0, 0, 0), 1)
            await reporter.release(0)
            after = job("procpool_tests.add", 2, 3)
            await harness.assign(after)
            [ran] = await harness.outcomes_of(after)
            await harness.dispatcher.until(lambda: harness.dispatcher.granted(PROCESS) == 2 + 3)
            stats = await harness.stats()
        assert outcome.error is not None and outcome.error.kind == "cancelled"
        assert "before it started" in outcome.error.message
        assert value_of(ran) == 5
        assert started_ids(harness.results) == [blocker.id, after.id]
        assert (stats.in_flight, stats.succeeded_total) == (0, 2)


@pytest.mark.parametrize(("runner", "task", "kind", "slots"), [
    ("pool", "procpool_tests.add", PROCESS, {"processes": 1}),
    ("threads", "tests.sample.add", THREAD, {"threads": 1}),
])
async def test_a_job_that_expired_waiting_for_its_runner_is_not_run(
    monkeypatch: pytest.MonkeyPatch, runner: str, task: str, kind: int, slots: dict[str, int]
) -> None:
    """A job whose ``expires`` deadline passed by the time a pool process
    or a thread would begin it (it waited in their queue) fails as
    ``TaskExpired``, unstarted (no ``Running``), and its slot comes back.
    (The wall clock that runner reads is an hour ahead.)"""
    monkeypatch.setattr(isolated if runner == "pool" else threads, "time",
                        types.SimpleNamespace(time=lambda: time.time() + 3600,
                                              monotonic=time.monotonic))
    async with executor(prefetch=0, **slots) as harness:
        the_job = attrs.evolve(job(task, 1, 2), expires_at=time.time() + 60)
        await harness.assign(the_job)
        [outcome] = await harness.outcomes_of(the_job)
        await harness.dispatcher.until(lambda: harness.dispatcher.granted(kind) == 1 + 1)
        stats = await harness.stats()
    assert outcome.error is not None
    assert (outcome.error.type, outcome.error.kind) == ("TaskExpired", "expired")
    assert outcome.error.message.endswith("before it could start; it was not started")
    assert harness.results.of(Running) == []
    assert (stats.in_flight, stats.processes) == (0, 0)


async def test_the_executors_isolation_option_sends_sync_tasks_to_its_processes() -> None:
    """``isolation = "process"`` in the config: sync tasks that do not
    choose run in the pool's processes; async ones stay in the nursery."""
    async with executor(isolation="process", processes=1) as harness:
        sync, async_ = job("tests.sample.pid"), job("tests.sample.async_add", 1, 2)
        await harness.assign(sync, async_)
        outcomes = await harness.outcomes_of(sync, async_)
        stats = await harness.stats()
    assert value_of(outcomes[0]) != os.getpid()
    assert value_of(outcomes[1]) == 3
    assert stats.processes == 1
