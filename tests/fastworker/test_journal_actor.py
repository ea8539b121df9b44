"""The Journal actor: writes applied in order and durable when answered,
recovery handed to whoever asks at start, and nothing kept when off."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from actors import GetStats, Topology, open_node
from fastworker.errors import JournalUnavailable
from fastworker.internal import JournalWrite, Recover
from fastworker.journal import (
    JournalFaults,
    JournalStats,
    PutResult,
    PutSchedule,
    PutTask,
    Recovered,
    SetState,
)
from fastworker.journaling import Journal
from tests.fastworker.test_journal import HeldFile, held_files, ids, job, opened, record


def journal(path: str) -> Topology:
    return Topology().add("journal", Journal, path=path)


async def test_a_called_write_is_durable_when_answered(tmp_path: Path) -> None:
    """A called write is answered True once committed: another process's view
    of the file (here, after the node stops) has it."""
    path = tmp_path / "j.db"
    async with open_node(journal(str(path))) as node:
        ref = node.refs["journal"]
        assert await ref.call(JournalWrite(ops=(PutTask(job=job("a")),))) is True
        stats = await ref.call(GetStats())
        assert isinstance(stats.detail, JournalStats) and stats.detail.commits_total >= 1
    with opened(path) as file:
        assert ids(file.load().queued) == ["a"]


async def test_sent_writes_keep_their_order(tmp_path: Path) -> None:
    """Writes sent one after another (nobody waiting) apply in order; a
    called write after them is answered once they are all in."""
    path = tmp_path / "j.db"
    async with open_node(journal(str(path))) as node:
        ref = node.refs["journal"]
        await ref.send(JournalWrite(ops=(PutTask(job=job("a")), PutTask(job=job("b")))))
        await ref.send(JournalWrite(ops=(SetState(ids=("a",), state="dispatched"),)))
        await ref.send(JournalWrite(ops=(PutResult(record=record("b")),)))
        assert await ref.call(JournalWrite(ops=(PutSchedule(name="s", last_run=1.0),))) is True
    with opened(path) as file:
        recovered = file.load()
    assert ids(recovered.dispatched) == ["a"] and recovered.queued == ()
    assert [r.record.id for r in recovered.results] == ["b"]
    assert [s.name for s in recovered.schedules] == ["s"]


async def test_recover_hands_over_what_the_file_held(tmp_path: Path) -> None:
    """At start the journal reads the file once; Recover answers with it."""
    path = tmp_path / "j.db"
    with opened(path) as file:
        file.apply([PutTask(job=job("x", 0)), PutTask(job=job("y", 3))])
    async with open_node(journal(str(path))) as node:
        recovered = await node.refs["journal"].call(Recover())
        again = await node.refs["journal"].call(Recover())  # a restarted actor asks again
    assert isinstance(recovered, Recovered) and ids(recovered.queued) == ["x", "y"]
    assert ids(again.queued) == ["x", "y"]


@pytest.mark.parametrize("path", ["", "off"])
async def test_off_keeps_nothing_and_answers_at_once(tmp_path: Path, path: str) -> None:
    """With the journal off, writes are answered True and recovery is empty."""
    async with open_node(journal(path)) as node:
        ref = node.refs["journal"]
        assert await ref.call(JournalWrite(ops=(PutTask(job=job("a")),))) is True
        assert await ref.call(Recover()) == Recovered()
        assert (await ref.call(GetStats())).detail is None
    assert list(tmp_path.iterdir()) == []


async def test_a_failed_commit_fails_the_call(tmp_path: Path) -> None:
    """A write the file refuses (disk full) is never answered True: the
    caller gets JournalUnavailable, and the next write goes through again."""
    path = tmp_path / "j.db"
    faults = JournalFaults()
    topology = Topology().add("journal", Journal, path=str(path), params={"wrap": faults.wrap})
    async with open_node(topology) as node:
        ref = node.refs["journal"]
        faults.fail()
        with pytest.raises(JournalUnavailable, match="database or disk is full"):
            await ref.call(JournalWrite(ops=(PutTask(job=job("lost")),)))
        faults.heal()
        assert await ref.call(JournalWrite(ops=(PutTask(job=job("kept")),))) is True
    with opened(path) as file:
        assert ids(file.load().queued) == ["kept"]


async def test_sent_writes_go_with_the_next_called_one(tmp_path: Path) -> None:
    """Writes sent without a call wait for a called one (up to
    lazy_interval) and go in its transaction, before it; the call is
    answered only once that transaction is committed."""
    files: list[HeldFile] = []
    topology = Topology().add("journal", Journal, path=str(tmp_path / "j.db"),
                              lazy_interval=60.0, params={"wrap": held_files(files)})
    async with open_node(topology) as node:
        ref, held = node.refs["journal"], files[0]
        answers: list[Any] = []

        async def call() -> None:
            answers.append(await ref.call(JournalWrite(ops=(PutTask(job=job("b")),))))

        try:
            await ref.send(JournalWrite(ops=(PutTask(job=job("a")),)))
            await ref.send(JournalWrite(ops=(SetState(ids=("a",), state="dispatched"),)))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(call)
                assert await held.next_taken() == [
                    PutTask(job=job("a")), SetState(ids=("a",), state="dispatched"),
                    PutTask(job=job("b"))]
                await trio.testing.wait_all_tasks_blocked()
                assert answers == []
                held.go()
            assert answers == [True]
        finally:
            held.go(1_000_000)  # a failure above never leaves the thread held
        stats = (await ref.call(GetStats())).detail
        assert isinstance(stats, JournalStats) and stats.commits_total == 1


async def test_a_sent_write_alone_is_committed_after_lazy_interval(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    """A sent write that no called one follows is committed lazy_interval
    after it arrived (trio's clock)."""
    files: list[HeldFile] = []
    topology = Topology().add("journal", Journal, path=str(tmp_path / "j.db"),
                              lazy_interval=0.5, params={"wrap": held_files(files, go=True)})
    async with open_node(topology) as node:
        ref = node.refs["journal"]
        await ref.send(JournalWrite(ops=(PutTask(job=job("a")),)))
        await trio.testing.wait_all_tasks_blocked()  # the journal has it
        mock_clock.jump(0.4)
        await trio.testing.wait_all_tasks_blocked()
        stats = (await ref.call(GetStats())).detail
        assert isinstance(stats, JournalStats) and stats.pending_ops == 1
        mock_clock.jump(0.1)
        assert await files[0].next_taken() == [PutTask(job=job("a"))]
