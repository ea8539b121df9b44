"""The PriorityInbox with a journal: a Submit is answered Accepted only once
its task is written, a failed write answers JournalUnavailable and queues
nothing, and a new node on the same file (after a stop or a crash) takes
back what the journal held: queued tasks in order, scheduled ones re-armed,
dispatched ones as their next attempt (at-most-once ones failed), keys and
ids. The real Journal actor on a file in tmp_path; the dispatcher and the
store are stand-ins that record what they are sent."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import fastworker.tasks
from actors import GetStats, Ref, Topology, open_node
from actors.requests import Answers
from fastworker.client.outcome import accepted_id
from fastworker.errors import JournalUnavailable
from fastworker.inbox import PriorityInbox
from fastworker.inbox.journaled import Unwritten, UnwrittenTask
from fastworker.internal import (
    Adopted,
    JournalWrite,
    KnownTasks,
    PurgeQueued,
    RecoveredDispatched,
    Requeue,
)
from fastworker.journal import JournalFaults, JournalFile, PutTask, Recovered
from fastworker.journal.faults import WrappedFile
from fastworker.journal.ops import DropTask, Op, SetState
from fastworker.journaling import Journal
from fastworker.messages import (
    Accepted,
    Cancel,
    Cancelled,
    CancelReply,
    Demand,
    Finished,
    Job,
    JobBatch,
    Queued,
    QueuedEntry,
    Rejected,
    Submit,
)
from fastworker.tasks import TaskRegistry
from tests.fastworker.helpers import Recorder
from tests.fastworker.test_inbox import Harness as InboxHarness

ADD, ONCE = "examples.tasks.add", "examples.tasks.once"
TASKS = frozenset({ADD, ONCE})


class Crash(Exception):
    """Raised inside a node's block: the node is cancelled at once."""


@attrs.define
class Harness(InboxHarness):
    """An inbox harness whose inbox has a journal."""

    journal: Ref[Any] = attrs.field(kw_only=True)

    async def written(self) -> None:
        """Wait until everything sent to the journal so far is committed."""
        assert await self.journal.call(JournalWrite(ops=(DropTask("-"),))) is True

    def dispatched(self) -> list[tuple[str, int]]:  # type: ignore[override]
        """(id, attempt) of each job handed to the dispatcher."""
        return [(job.id, job.attempt) for m in self.dispatcher_got if isinstance(m, JobBatch)
                for job in m.jobs]

    def queued(self) -> list[str]:  # type: ignore[override]
        """The ids of every Queued the store got, in one list."""
        return [e.id for m in self.store_got if isinstance(m, Queued) for e in m.entries]


@asynccontextmanager
async def open_inbox(path: Path, wrap: Any = None, **options: Any) -> AsyncIterator[Harness]:
    dispatcher_got: list[Any] = []
    store_got: list[Any] = []
    journal_params = {} if wrap is None else {"wrap": wrap}
    # The inbox refers to the journal, so the journal starts first (and
    # stops last): the inbox asks it to Recover in its setup.
    topology = (
        Topology()
        .add("journal", Journal, path=str(path), params=journal_params)
        .add("dispatcher", Recorder, params={"got": dispatcher_got})
        .add("results", Recorder, params={"got": store_got})
        .add("inbox", PriorityInbox,
             refs={"dispatcher": "dispatcher", "results": "results", "journal": "journal"},
             params={"task_names": lambda: TASKS}, **options)
    )
    async with open_node(topology) as node:
        yield Harness(node.refs["inbox"], dispatcher_got, store_got, journal=node.refs["journal"])


def sub(id: str, priority: int = 2, *, task: str = ADD, key: str = "",
        delay: float = 0.0) -> Submit:
    return Submit(id=id, task=task, payload=b"p", priority=priority, key=key, delay=delay)


def job(id: str, priority: int = 2, *, task: str = ADD, attempt: int = 1) -> Job:
    return Job(id=id, task=task, payload=b"p", priority=priority, timeout=None,
               attempt=attempt, queued_at=1.0)


def load(path: Path) -> Recovered:
    file = JournalFile.open(path)
    try:
        return file.load()
    finally:
        file.close()


def write(path: Path, ops: list[Op]) -> None:
    file = JournalFile.open(path)
    try:
        file.apply(ops)
    finally:
        file.close()


def ids(tasks: tuple[PutTask, ...]) -> list[str]:
    return [task.job.id for task in tasks]


class HeldFile(WrappedFile):
    """A journal file whose commits wait until the test lets them through."""

    def __init__(self, file: JournalFile) -> None:
        super().__init__(file)
        self.entered = threading.Event()
        self.release = threading.Event()

    def apply(self, ops: Sequence[Op]) -> None:
        if any(isinstance(op, PutTask) for op in ops):
            self.entered.set()
            self.release.wait(30)
        self.file.apply(ops)


def holding() -> tuple[list[HeldFile], Callable[[JournalFile], HeldFile]]:
    """A journal file wrapper whose commits of new tasks wait (``HeldFile``),
    and the list of the files it wrapped."""
    held: list[HeldFile] = []

    def wrap(file: JournalFile) -> HeldFile:
        held.append(HeldFile(file))
        return held[-1]

    return held, wrap


class HeldOnceFile(WrappedFile):
    """A journal file whose commits of at-most-once dispatches wait until
    the test lets them through."""

    def __init__(self, file: JournalFile) -> None:
        super().__init__(file)
        self.entered = threading.Event()
        self.release = threading.Event()

    def apply(self, ops: Sequence[Op]) -> None:
        if any(isinstance(op, SetState) and op.once for op in ops):
            self.entered.set()
            self.release.wait(30)
        self.file.apply(ops)


class TestAcknowledgedMeansWritten:
    async def test_accepted_only_once_the_task_is_written(self, tmp_path: Path) -> None:
        """While its write is under way a Submit is not answered, its task is
        not dispatched (though demand stands) and the store has not heard of
        it; once committed it is Accepted, told and dispatched."""
        path = tmp_path / "j.db"
        held, wrap = holding()

        async with open_inbox(path, wrap=wrap) as h:
            await h.demand(5)
            answers: list[Any] = []

            async def submit() -> None:
                answers.extend(await h.submit(sub("a"), sub("b", 0)))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(submit)
                await trio.to_thread.run_sync(held[0].entered.wait)
                await trio.testing.wait_all_tasks_blocked()
                assert answers == [] and h.dispatched() == [] and h.queued() == []
                held[0].release.set()
            assert answers == [Accepted(id="a"), Accepted(id="b")]
            await trio.testing.wait_all_tasks_blocked()
            assert h.queued() == ["a", "b"]
            assert h.dispatched() == [("b", 1), ("a", 1)]
            await h.written()
        assert ids(load(path).dispatched) == ["b", "a"]

    async def test_a_cancel_before_the_write_drops_the_task(self, tmp_path: Path) -> None:
        """A task cancelled while its write is under way is written, then
        dropped: never queued, and the store hears Queued then Cancelled."""
        path = tmp_path / "j.db"
        held, wrap = holding()

        async with open_inbox(path, wrap=wrap) as h:
            answers: list[Any] = []

            async def submit() -> None:
                answers.extend(await h.submit(sub("a")))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(submit)
                await trio.to_thread.run_sync(held[0].entered.wait)
                assert await h.submit(Cancel(id="a")) == [CancelReply(id="a", outcome="cancelled")]
                held[0].release.set()
            assert answers == [Accepted(id="a")]
            await h.demand(5)
            await h.written()
            stats = await h.stats()
        assert h.dispatched() == [] and stats.queued == (0, 0, 0, 0)
        kinds = [type(m) for m in h.store_got if isinstance(m, (Queued, Cancelled))]
        assert kinds == [Queued, Cancelled]
        recovered = load(path)
        assert recovered.queued == () and recovered.keys == {}

    async def test_a_purge_takes_queued_held_and_unwritten_tasks_that_match(
            self, tmp_path: Path) -> None:
        """``PurgeQueued`` cancels what matches its level, name and
        ``scheduled``, tasks whose write is under way too (written, then
        dropped); the others stay; the journal keeps none of the purged."""
        path = tmp_path / "j.db"
        held, wrap = holding()

        async with open_inbox(path, wrap=wrap) as h:
            answers: list[Any] = []

            async def submit() -> None:
                answers.extend(await h.submit(sub("w1"), sub("w2", 0), sub("w3", task=ONCE)))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(submit)
                await trio.to_thread.run_sync(held[0].entered.wait)
                # Unwritten: w1 matches (normal, ADD); w2 is critical, w3 another task.
                assert await h.inbox.call(PurgeQueued(level=2, task=ADD)) == 1
                held[0].release.set()
            assert answers == [Accepted(id="w1"), Accepted(id="w2"), Accepted(id="w3")]
            assert await h.submit(sub("q1"), sub("q2", 3), sub("later", delay=600.0),
                                  sub("q3", task=ONCE)) == [
                Accepted(id=id) for id in ("q1", "q2", "later", "q3")]
            # w2, q1, q2 (any level), not later (held for later)
            assert await h.inbox.call(PurgeQueued(task=ADD)) == 3
            assert await h.inbox.call(PurgeQueued(task=ADD, scheduled=True)) == 1  # later
            assert await h.inbox.call(PurgeQueued(task=ADD)) == 0
            await h.written()
            stats = await h.stats()
            assert stats.queued == (0, 0, 2, 0) and stats.scheduled == 0  # w3, q3
            assert stats.cancelled_total == 5
        cancelled = [id for m in h.store_got if isinstance(m, Cancelled) for id in m.ids]
        assert sorted(cancelled) == ["later", "q1", "q2", "w1", "w2"]
        recovered = load(path)
        assert sorted(ids(recovered.queued)) == ["q3", "w3"]
        assert recovered.scheduled == ()

    async def test_a_failed_write_answers_journal_unavailable(self, tmp_path: Path) -> None:
        """A write that fails (disk full) answers each of its Submits
        JournalUnavailable: nothing is queued, dispatched or told to the store,
        keys and ids are forgotten; once the disk heals the same Submits go in."""
        path = tmp_path / "j.db"
        faults = JournalFaults()
        async with open_inbox(path, wrap=faults.wrap) as h:
            faults.fail()
            answers = await h.submit(sub("a", key="k"), sub("b", delay=60.0))
            await h.demand(5)
            stats = await h.stats()
            assert [type(a) for a in answers] == [Rejected, Rejected]
            assert answers[0] == Rejected(
                id="a", error="JournalUnavailable", message=answers[0].message)
            assert "database or disk is full" in answers[0].message
            assert h.dispatched() == [] and h.queued() == []
            assert stats.queued == (0, 0, 0, 0) and stats.scheduled == 0
            assert stats.rejected_total == {"JournalUnavailable": 2}
            assert stats.accepted_total == 0
            faults.heal()
            # Not duplicates: the ids and the key were forgotten.
            assert await h.submit(sub("a", key="k"), sub("c", key="k")) == [
                Accepted(id="a"), Accepted(id="a")]
            await trio.testing.wait_all_tasks_blocked()
            assert h.dispatched() == [("a", 1)] and h.queued() == ["a"]
            await h.written()
        assert ids(load(path).dispatched) == ["a"]

    async def test_a_submit_waiting_for_room_is_written_before_it_is_accepted(
            self, tmp_path: Path) -> None:
        """A Submit parked for room is written once room frees, then Accepted."""
        path = tmp_path / "j.db"
        async with open_inbox(path, capacity=1) as h:
            assert await h.submit(sub("a")) == [Accepted(id="a")]
            async with trio.open_nursery() as nursery:
                answers: list[Any] = []

                async def submit() -> None:
                    answers.extend(await h.submit(attrs.evolve(sub("b"), queue_wait=60.0)))

                nursery.start_soon(submit)
                await trio.testing.wait_all_tasks_blocked()
                assert answers == []
                await h.demand(1)
            assert answers == [Accepted(id="b")]
            await h.written()
        assert ids(load(path).queued) == ["b"] and ids(load(path).dispatched) == ["a"]

    async def test_a_submit_with_the_key_of_one_waiting_for_room_waits_for_its_write(
            self, tmp_path: Path) -> None:
        """A Submit whose key is held by one parked for room is answered as
        that one is: with its id, once it is queued and written."""
        path = tmp_path / "j.db"
        async with open_inbox(path, capacity=1) as h:
            assert await h.submit(sub("a")) == [Accepted(id="a")]
            answers: dict[str, list[Any]] = {}

            async def submit(submit: Submit) -> None:
                answers[submit.id] = await h.submit(submit)

            with trio.fail_after(10):  # a Submit never answered fails, not hangs
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(submit, attrs.evolve(sub("b", key="k"), queue_wait=60.0))
                    await trio.testing.wait_all_tasks_blocked()
                    nursery.start_soon(submit, sub("c", key="k"))
                    await trio.testing.wait_all_tasks_blocked()
                    assert answers == {}
                    await h.demand(1)
            assert answers == {"b": [Accepted(id="b")], "c": [Accepted(id="b")]}
            await h.written()
        assert ids(load(path).queued) == ["b"]

    async def test_every_move_is_journaled(self, tmp_path: Path,
                                           mock_clock: trio.testing.MockClock) -> None:
        """Dispatched, put back by a lost worker (its next attempt), held for a
        retry's backoff, released, cancelled and expired: each reaches the file."""
        path = tmp_path / "j.db"
        async with open_inbox(path) as h:
            await h.submit(sub("lost", 0), sub("retry", 0), sub("late", 0, delay=30.0),
                           sub("cancel"), attrs.evolve(sub("expire"), expires_in=10.0))
            await trio.testing.wait_all_tasks_blocked()
            await h.demand(2)
            assert h.dispatched() == [("lost", 1), ("retry", 1)]
            await h.inbox.send(Requeue(jobs=(job("lost", 0, attempt=2),)))
            await h.inbox.send(Requeue(jobs=(job("retry", 0, attempt=2),), delays=(60.0,)))
            assert await h.submit(Cancel(id="cancel")) == [
                CancelReply(id="cancel", outcome="cancelled")]
            mock_clock.jump(40.0)  # "late" is released, "expire" expires
            await trio.testing.wait_all_tasks_blocked()
            await h.written()
        recovered = load(path)
        assert [(t.job.id, t.job.attempt) for t in recovered.queued] == [("lost", 2), ("late", 1)]
        assert [(t.job.id, t.job.attempt) for t in recovered.scheduled] == [("retry", 2)]
        assert recovered.scheduled[0].due_at > time.time() + 50.0
        assert recovered.dispatched == ()

    @pytest.mark.parametrize("end", ["stop", "crash"])
    async def test_an_at_most_once_job_leaves_only_once_its_dispatch_is_written(
            self, tmp_path: Path, end: str) -> None:
        """A job of an at-most-once task (here, as a subworker advertised it)
        reaches the dispatcher only after its ``dispatched`` is committed,
        marked at-most-once; other jobs do not wait. After a stop or a crash
        the task fails with WorkerLost though this registry does not know it
        at all."""
        path = tmp_path / "j.db"
        held: list[HeldOnceFile] = []

        def wrap(file: JournalFile) -> HeldOnceFile:
            held.append(HeldOnceFile(file))
            return held[-1]

        try:
            async with open_inbox(path, wrap=wrap) as h:
                await h.inbox.send(KnownTasks(names=frozenset({ONCE}),
                                              at_most_once=frozenset({ONCE})))
                assert await h.submit(sub("once", 0, task=ONCE), sub("plain")) == [
                    Accepted(id="once"), Accepted(id="plain")]
                await h.demand(5)
                await trio.to_thread.run_sync(held[0].entered.wait)
                await trio.testing.wait_all_tasks_blocked()
                assert h.dispatched() == [("plain", 1)]
                held[0].release.set()
                await h.written()
                await trio.testing.wait_all_tasks_blocked()
                assert h.dispatched() == [("plain", 1), ("once", 1)]
                if end == "crash":
                    raise Crash
        except Crash:
            pass
        recovered = load(path)
        assert ids(recovered.dispatched) == ["once", "plain"]
        assert recovered.once == {"once"}
        async with open_inbox(path) as h:
            await h.demand(5)
            await trio.testing.wait_all_tasks_blocked()
            assert h.dispatched() == [("plain", 2)]
        (finished,) = [m for m in h.store_got if isinstance(m, Finished)]
        (outcome,) = finished.outcomes
        assert outcome.id == "once" and outcome.error is not None
        assert outcome.error.type == "WorkerLost"

    async def test_an_at_most_once_job_whose_dispatch_fails_to_be_written_waits(
            self, tmp_path: Path, mock_clock: trio.testing.MockClock) -> None:
        """If its ``dispatched`` cannot be written (disk full), an
        at-most-once job does not leave: it is held a second and tried
        again, and leaves once the journal writes again; the dispatcher's
        demand for it stands meanwhile."""
        path = tmp_path / "j.db"
        faults = JournalFaults()
        async with open_inbox(path, wrap=faults.wrap) as h:
            await h.inbox.send(KnownTasks(names=frozenset({ONCE}),
                                          at_most_once=frozenset({ONCE})))
            assert await h.submit(sub("once", task=ONCE)) == [Accepted(id="once")]
            faults.fail()
            await h.demand(1)
            with pytest.raises(JournalUnavailable):
                await h.written()  # after the dispatch's write, which failed too
            await trio.testing.wait_all_tasks_blocked()  # held back from now
            mock_clock.jump(0.5)
            await trio.testing.wait_all_tasks_blocked()
            assert h.dispatched() == []
            assert (await h.stats()).scheduled == 1
            faults.heal()
            mock_clock.jump(0.6)
            await trio.testing.wait_all_tasks_blocked()
            await h.written()  # after the dispatch's second write
            await trio.testing.wait_all_tasks_blocked()
            assert h.dispatched() == [("once", 1)]
        assert load(path).once == {"once"}

    def test_the_client_raises_journal_unavailable(self) -> None:
        """The client turns the refusal into fastworker.errors.JournalUnavailable."""
        rejected = Rejected(id="a", error="JournalUnavailable", message="disk is full")
        with pytest.raises(JournalUnavailable, match="disk is full"):
            accepted_id(rejected)


class TestRecovery:
    @pytest.mark.parametrize("end", ["stop", "crash"])
    async def test_a_new_node_takes_back_what_was_accepted(self, tmp_path: Path,
                                                           end: str) -> None:
        """After a stop or a crash, a node on the same file queues again
        what was queued (by level, then arrival), puts dispatched tasks at
        the front of their level as their next attempt, holds scheduled ones,
        holds keys, tells the store of every task, and recognises a resent
        Submit; each task exactly once."""
        path = tmp_path / "j.db"
        try:
            async with open_inbox(path) as h:
                assert await h.submit(sub("q1"), sub("q2", 3), sub("d0", 0), sub("q3"),
                                      sub("k1", key="key"), sub("s1", delay=3600.0)) == [
                    Accepted(id=i) for i in ("q1", "q2", "d0", "q3", "k1", "s1")]
                await trio.testing.wait_all_tasks_blocked()
                await h.demand(1)
                assert h.dispatched() == [("d0", 1)]
                await h.written()
                if end == "crash":
                    raise Crash
        except Crash:
            pass
        async with open_inbox(path) as h:
            stats = await h.stats()
            assert stats.queued == (1, 0, 3, 1) and stats.scheduled == 1 and stats.keys == 1
            assert sorted(h.queued()) == ["d0", "k1", "q1", "q2", "q3", "s1"]
            # Resent: recognised, not queued twice; the key still held by k1.
            assert await h.submit(sub("q1"), sub("k2", key="key")) == [
                Accepted(id="q1"), Accepted(id="k1")]
            await h.demand(10)
            assert h.dispatched() == [("d0", 2), ("q1", 1), ("q3", 1), ("k1", 1), ("q2", 1)]
            stats = await h.stats()
            assert stats.duplicates_total == 1 and stats.scheduled == 1
            await h.written()
        recovered = load(path)
        assert ids(recovered.scheduled) == ["s1"]
        assert ids(recovered.dispatched) == ["d0", "q1", "q3", "k1", "q2"]
        assert [t.job.attempt for t in recovered.dispatched] == [2, 1, 1, 1, 1]
        assert recovered.keys == {"key": "k1"}

    async def test_fairness_keys_survive_a_restart(self, tmp_path: Path) -> None:
        """Queued tasks come back with their fairness keys: after a crash the
        keys still take turns, and the inbox counts the tasks per key."""
        path = tmp_path / "j.db"
        flood = [Submit(id=f"f{i}", task=ADD, payload=b"p", fair_key="flood") for i in range(5)]
        quiet = Submit(id="q", task=ADD, payload=b"p", fair_key="quiet")
        try:
            async with open_inbox(path) as h:
                assert await h.submit(*flood, quiet) == [
                    Accepted(id=s.id) for s in (*flood, quiet)]
                await h.written()
                raise Crash
        except Crash:
            pass
        async with open_inbox(path) as h:
            stats = await h.stats()
            assert stats.fair_keys == 2
            assert stats.top_fair_keys == (("flood", 5), ("quiet", 1))
            await h.demand(3)
            assert h.dispatched() == [("f0", 1), ("q", 1), ("f1", 1)]
            batch = next(m for m in h.dispatcher_got if isinstance(m, JobBatch))
            assert [j.fair_key for j in batch.jobs] == ["flood", "quiet", "flood"]

    async def test_scheduled_tasks_are_armed_again(self, tmp_path: Path,
                                                   mock_clock: trio.testing.MockClock) -> None:
        """A scheduled task is held until its wall-clock due time, now on
        this node's clock; one whose time passed while the node was down is
        queued at once."""
        path = tmp_path / "j.db"
        wall = time.time()
        write(path, [PutTask(job("late"), "scheduled", wall - 10.0),
                     PutTask(job("soon"), "scheduled", wall + 600.0)])
        async with open_inbox(path) as h:
            await h.demand(10)
            assert h.dispatched() == [("late", 1)]
            mock_clock.jump(500.0)
            await trio.testing.wait_all_tasks_blocked()
            assert h.dispatched() == [("late", 1)]
            mock_clock.jump(200.0)
            await trio.testing.wait_all_tasks_blocked()
            assert h.dispatched() == [("late", 1), ("soon", 1)]
            await h.written()
        assert ids(load(path).dispatched) == ["late", "soon"]

    async def test_with_a_grace_dispatched_tasks_wait_before_they_run_again(
            self, tmp_path: Path, mock_clock: trio.testing.MockClock) -> None:
        """With recovery_grace, a task the journal brings back as dispatched
        is held that long before it runs again (the dispatcher is told which
        ones, so a late result can cancel the copy): one cancelled within
        the grace never runs; the other runs once the grace is over."""
        path = tmp_path / "j.db"
        write(path, [PutTask(job("finished"), "dispatched"),
                     PutTask(job("unheard"), "dispatched")])
        async with open_inbox(path, recovery_grace=5.0) as h:
            await h.demand(10)
            assert h.dispatched() == []
            told = [m for m in h.dispatcher_got if isinstance(m, RecoveredDispatched)]
            assert [m.ids for m in told] == [("finished", "unheard")]
            # The late result of "finished" arrived: the dispatcher cancels its copy.
            assert await h.submit(Cancel(id="finished")) == [
                CancelReply(id="finished", outcome="cancelled")]
            mock_clock.jump(4.9)
            await trio.testing.wait_all_tasks_blocked()
            assert h.dispatched() == []
            mock_clock.jump(0.2)
            await trio.testing.wait_all_tasks_blocked()
            assert h.dispatched() == [("unheard", 2)]
            await h.written()
        recovered = load(path)
        assert ids(recovered.dispatched) == ["unheard"] and recovered.scheduled == ()

    async def test_a_purge_leaves_the_tasks_a_subworker_may_still_run(
            self, tmp_path: Path, mock_clock: trio.testing.MockClock) -> None:
        """Recovered tasks that were dispatched wait out the grace because a
        subworker may still run them: a purge (with ``scheduled``) leaves
        them, and cancels the recovered queued and scheduled ones."""
        path = tmp_path / "j.db"
        write(path, [PutTask(job("out"), "dispatched"), PutTask(job("waiting"), "queued"),
                     PutTask(job("later"), "scheduled", time.time() + 600)])
        async with open_inbox(path, recovery_grace=5.0) as h:
            assert await h.inbox.call(PurgeQueued(scheduled=True)) == 2
            await h.demand(10)
            mock_clock.jump(5.1)
            await trio.testing.wait_all_tasks_blocked()
            assert h.dispatched() == [("out", 2)]

    async def test_copies_of_adopted_tasks_wait_for_their_worker(
            self, tmp_path: Path, mock_clock: trio.testing.MockClock,
            caplog: pytest.LogCaptureFixture) -> None:
        """Recovered dispatched tasks a subworker still runs (``Adopted``)
        are not run again when the grace ends; one whose result came is
        forgotten; one whose worker went runs then, at the front; one whose
        attempt failed runs after its backoff. One line says what the grace
        ended with."""
        path = tmp_path / "j.db"
        write(path, [PutTask(job(i), "dispatched") for i in ("kept", "again", "ended", "retry")])
        async with open_inbox(path, recovery_grace=5.0) as h:
            await h.inbox.send(Adopted(ids=("kept", "ended", "retry", "unknown"),
                                       state="running"))
            await h.inbox.send(Adopted(ids=("ended",), state="ended"))
            await h.inbox.send(Adopted(ids=("retry",), state="again", delays=(30.0,)))
            await h.demand(10)
            with caplog.at_level(logging.INFO, logger="fastworker.inbox"):
                mock_clock.jump(5.1)
                await trio.testing.wait_all_tasks_blocked()
            assert h.dispatched() == [("again", 2)]
            await h.inbox.send(Adopted(ids=("kept",), state="again"))
            await trio.testing.wait_all_tasks_blocked()
            assert h.dispatched() == [("again", 2), ("kept", 2)]
            mock_clock.jump(30.0)
            await trio.testing.wait_all_tasks_blocked()
            assert h.dispatched() == [("again", 2), ("kept", 2), ("retry", 2)]
            await h.written()
        [line] = [r.getMessage() for r in caplog.records if "grace over" in r.getMessage()]
        assert line.endswith("of 4 tasks that were dispatched, 2 run again, 1 still run on the "
                             "subworkers that had them, 0 at-most-once failed as lost, 1 ended "
                             "meanwhile")
        # (The store's PutResult drops "ended": it is not in this harness.)
        assert ids(load(path).dispatched) == ["kept", "again", "ended", "retry"]

    async def test_with_a_grace_at_most_once_tasks_wait_for_a_worker_to_adopt_them(
            self, tmp_path: Path, mock_clock: trio.testing.MockClock) -> None:
        """With recovery_grace, a dispatched at-most-once task is never run
        again: one a subworker adopts ends there (its result), one whose
        adopting worker goes fails with WorkerLost then, and one nobody
        adopts fails with WorkerLost when the grace is over."""
        path = tmp_path / "j.db"
        write(path, [PutTask(job(i, task=ONCE)) for i in ("adopted", "gone", "unheard")] + [
            SetState(("adopted", "gone", "unheard"), "dispatched", once=True)])
        async with open_inbox(path, recovery_grace=5.0) as h:
            told = [m for m in h.dispatcher_got if isinstance(m, RecoveredDispatched)]
            assert [set(m.ids) for m in told] == [{"adopted", "gone", "unheard"}]
            await h.inbox.send(Adopted(ids=("adopted", "gone"), state="running"))
            await h.inbox.send(Adopted(ids=("gone",), state="again"))
            await trio.testing.wait_all_tasks_blocked()
            lost_early = [o.id for m in h.store_got if isinstance(m, Finished) for o in m.outcomes]
            await h.demand(10)
            mock_clock.jump(5.1)
            await trio.testing.wait_all_tasks_blocked()
            await h.inbox.send(Adopted(ids=("adopted",), state="ended"))
            stats = await h.stats()
        assert h.dispatched() == [] and stats.queued == (0, 0, 0, 0)
        assert lost_early == ["gone"]
        outcomes = [o for m in h.store_got if isinstance(m, Finished) for o in m.outcomes]
        assert [o.id for o in outcomes] == ["gone", "unheard"]
        assert all(o.error is not None and o.error.type == "WorkerLost" for o in outcomes)

    async def test_an_at_most_once_task_is_failed_not_run_again(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A dispatched task of an at-most-once task is failed with WorkerLost
        (the store hears Queued, then Finished) and is not queued; another
        dispatched task runs again as its next attempt."""
        registry = TaskRegistry()
        monkeypatch.setattr(fastworker.tasks, "registry", registry)
        fastworker.tasks.task(name=ONCE, at_most_once=True)(lambda: None)
        path = tmp_path / "j.db"
        write(path, [PutTask(job("once", task=ONCE), "dispatched"),
                     PutTask(job("again", attempt=2), "dispatched")])
        async with open_inbox(path) as h:
            await h.demand(10)
            assert h.dispatched() == [("again", 3)]
            assert await h.submit(sub("once", task=ONCE)) == [Accepted(id="once")]
            stats = await h.stats()
        assert stats.queued == (0, 0, 0, 0)
        reports = [m for m in h.store_got if isinstance(m, (Queued, Finished))]
        assert [type(m) for m in reports] == [Queued, Finished]
        finished = reports[1]
        assert isinstance(finished, Finished)
        (outcome,) = finished.outcomes
        assert outcome.id == "once" and outcome.error is not None
        assert outcome.error.type == "WorkerLost"
        assert "at-most-once task examples.tasks.once" in outcome.error.message

    async def test_a_restart_counts_as_a_loss_of_what_was_dispatched(
            self, tmp_path: Path) -> None:
        """A task brought back as dispatched runs again with one more loss,
        so that one which keeps bringing the control plane down is failed
        as poison by the dispatcher (``poison_after``) instead of forever."""
        path = tmp_path / "j.db"
        write(path, [PutTask(attrs.evolve(job("again", attempt=2), losses=1), "dispatched")])
        async with open_inbox(path) as h:
            await h.demand(10)
            await trio.testing.wait_all_tasks_blocked()
        (batch,) = [m for m in h.dispatcher_got if isinstance(m, JobBatch)]
        assert [(j.id, j.attempt, j.losses) for j in batch.jobs] == [("again", 3, 2)]

    async def test_a_journal_that_is_off_recovers_nothing(self, tmp_path: Path) -> None:
        """With the journal off the inbox works as without one."""
        async with open_inbox(Path("off")) as h:
            assert await h.submit(sub("a")) == [Accepted(id="a")]
            await h.demand(1)
            assert h.dispatched() == [("a", 1)]
        assert list(tmp_path.iterdir()) == []


class TestUnwritten:
    def test_writes_settle_in_the_order_they_were_made(self) -> None:
        """A write answered before an earlier one waits for it, so that tasks
        queue in the order they were written."""
        unwritten = Unwritten(key_limit=10)
        for name in ("first", "second"):
            unwritten.add(UnwrittenTask(job(name), entry(name), key=""))
            assert unwritten.take() is not None
        first, second = unwritten.writes
        second.done = True
        assert unwritten.done() == []
        first.done, first.error = True, "disk full"
        assert unwritten.done() == [first, second]
        unwritten.settle(first)
        unwritten.settle(second)
        assert unwritten.by_id == {} and unwritten.queued == 0 and not unwritten.writes

    def test_a_failed_write_rejects_every_submit_waiting_on_it(self) -> None:
        """Each Submit waiting on a failed write (its own, or a resent one of
        its id or key) is refused with JournalUnavailable under its own id."""
        unwritten = Unwritten(key_limit=10)
        unwritten.add(UnwrittenTask(job("a"), entry("a"), key="k"))
        answers = Answers(2)
        answers.later()
        answers.later()
        assert unwritten.wait("a", "a", answers, 0)
        assert unwritten.wait("a", "b", answers, 1)  # "b" named the key "a" holds
        assert not unwritten.wait("c", "c", answers, 1)
        write = unwritten.take()
        assert write is not None
        write.done, write.error = True, "disk full"
        assert list(write.answer()) == [answers]
        assert answers.values == [
            Rejected(id="a", error="JournalUnavailable", message="disk full"),
            Rejected(id="b", error="JournalUnavailable", message="disk full")]


def entry(id: str) -> QueuedEntry:
    return QueuedEntry(id=id, task=ADD, priority=2, queued_at=1.0)


async def test_with_the_journal_off_the_inbox_accepts_without_it() -> None:
    """A journal that is off keeps nothing: the inbox asks it so once, at
    start, and then accepts and dispatches without writing to it."""
    async with open_inbox(Path("off")) as h:
        before = (await h.journal.call(GetStats())).handled_total
        answers = await h.submit(sub("a"), sub("b"))
        await h.inbox.send(Demand(pools=((2, frozenset({ADD})),), received=0))
        await trio.testing.wait_all_tasks_blocked()
        after = (await h.journal.call(GetStats())).handled_total
    assert answers == [Accepted(id="a"), Accepted(id="b")]
    assert h.dispatched() == [("a", 1), ("b", 1)]
    assert after == before + 1  # the stats request itself: nothing was written

