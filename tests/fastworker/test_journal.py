"""The journal's file and writer, on real SQLite files in ``tmp_path``: every
op round trip, the order a restart sees, refusals of files that cannot be
trusted, group commit, the commit interval under MockClock, bounds, and
failing commits (scripted, and a real full disk when a tmpfs can be mounted).
The process-level cases (a second process, SIGKILL, the CLI) are in
test_journal_process.py."""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from actors.errors import StartError
from fastworker.errors import JournalUnavailable
from fastworker.journal import (
    DropResult,
    DropSchedule,
    DropTask,
    DropWorkflow,
    JournalCorrupt,
    JournalError,
    JournalFaults,
    JournalFile,
    JournalLocked,
    JournalWriter,
    PutRecord,
    PutResult,
    PutSchedule,
    PutTask,
    PutWorkflow,
    SetState,
)
from fastworker.journal.faults import WrappedFile
from fastworker.journal.ops import Op
from fastworker.journal.schema import APPLICATION_ID, ROWS_PER_STATEMENT, VERSION
from fastworker.messages import Attempt, Job, RemoteError, StartWorkflow, TaskRecord, WorkflowStep


def job(task_id: str, priority: int = 2, *, attempt: int = 1, payload: bytes = b"args") -> Job:
    return Job(id=task_id, task="add", payload=payload, priority=priority, timeout=30.0,
               attempt=attempt, queued_at=1000.0, expires_at=2000.0, retries=2)


def record(task_id: str, state: Any = "succeeded") -> TaskRecord:
    error = RemoteError(type="ValueError", message="boom", traceback="Traceback ...")
    return TaskRecord(
        id=task_id, state=state, task="add", attempt=2, worker="w1", workers=("w0", "w1"),
        queued_at=1.0, started_at=2.0, finished_at=3.0,
        value=b"v" if state == "succeeded" else None,
        error=None if state == "succeeded" else error,
        attempts=(Attempt(attempt=1, worker="w0", started_at=1.5, finished_at=1.7, error=error),),
    )


def workflow(workflow_id: str) -> StartWorkflow:
    return StartWorkflow(id=workflow_id, steps=(
        WorkflowStep(task="fetch", payload=b"url"),
        WorkflowStep(task="parse", payload=b"", after=(0,), input="one", priority=1, timeout=9.0),
    ))


def ids(tasks: tuple[PutTask, ...]) -> list[str]:
    return [task.job.id for task in tasks]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "fastworker.journal"


@contextmanager
def opened(path: Path, **options: Any) -> Iterator[JournalFile]:
    file = JournalFile.open(path, **options)
    try:
        yield file
    finally:
        file.close()


def write_file(path: Path, *batches: list[Op]) -> None:
    with opened(path) as file:
        for ops in batches:
            file.apply(ops)


def hint(path: Path) -> str:
    return (f"to keep what can be read and start again, stop every process using it and run "
            f"`fastworker journal salvage {path}` (it moves the damaged file aside, never deletes it)")


class TestOps:
    def test_a_task_state_outside_the_three_is_refused_when_made(self) -> None:
        """An op with an unknown state fails in its sender, not in a shared commit."""
        with pytest.raises(ValueError, match="'state' must be in"):
            PutTask(job("a"), "running")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="'state' must be in"):
            SetState(("a",), "done")  # type: ignore[arg-type]

    def test_set_state_takes_a_tuple_of_ids_not_one_id(self) -> None:
        """A bare id would be taken for its characters: it is refused when made."""
        with pytest.raises(TypeError, match="tuple of task ids, got str"):
            SetState("abc", "dispatched")  # type: ignore[arg-type]
        assert SetState(("abc",), "dispatched").ids == ("abc",)

    def test_put_result_takes_only_a_final_record(self) -> None:
        """A record that is not final cannot be stored as a result."""
        with pytest.raises(ValueError) as raised:
            PutResult(record("a", "running"))
        assert str(raised.value) == (
            "PutResult takes a final record, got state 'running' (final states: cancelled, "
            "expired, failed, succeeded)")


class TestJournalFile:
    def test_a_missing_file_is_created_as_a_journal(self, path: Path) -> None:
        """A new journal is a WAL database marked with our application id and
        version, and holds nothing; no temporary file is left."""
        with opened(path) as file:
            assert file.load().summary() == (
                "0 queued, 0 scheduled, 0 dispatched, 0 results, 0 schedules, 0 workflows")
        db = sqlite3.connect(path)
        try:
            assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
            assert db.execute("PRAGMA user_version").fetchone()[0] == VERSION
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            db.close()
        assert sorted(p.name for p in path.parent.iterdir()) == [
            "fastworker.journal", "fastworker.journal.lock"]

    def test_a_missing_directory_is_a_clear_error(self, tmp_path: Path) -> None:
        """A journal in a directory that does not exist names the directory."""
        path = tmp_path / "nowhere" / "fastworker.journal"
        with pytest.raises(JournalError) as raised:
            JournalFile.open(path)
        assert str(raised.value) == (
            f"cannot create the journal {path}: the directory {path.parent} does not exist")
        assert isinstance(raised.value, StartError)

    def test_a_missing_file_is_not_created_when_asked_not_to(self, path: Path) -> None:
        """``create=False`` (check, salvage) refuses a missing file and leaves nothing."""
        with pytest.raises(JournalError, match=f"^there is no journal at {path}$"):
            JournalFile.open(path, create=False)
        assert list(path.parent.iterdir()) == []

    def test_every_op_round_trips(self, path: Path) -> None:
        """What the ops wrote comes back after a reopen, field for field."""
        write_file(path, [
            PutTask(job("q", 1), key="k-q"),
            PutTask(job("s", 3), "scheduled", due_at=5000.5, key="k-s"),
            PutTask(job("d", 0), "dispatched"),
            PutTask(job("gone")),
            PutTask(job("ended")),
            PutResult(record("ended", "failed"), final_at=1234.5),
            PutResult(record("kept"), final_at=1000.0),
            PutResult(record("evicted"), final_at=900.0),
            PutSchedule("nightly", 100.0, "t-1"),
            PutSchedule("hourly", 50.0, "t-0"),
            PutSchedule("removed", 1.0),
            PutWorkflow(workflow("w-failed"), 20.0, generation=2, failed=True),
            PutWorkflow(workflow("w-running"), 10.0),
            PutWorkflow(workflow("w-done"), 5.0),
        ], [
            DropWorkflow("w-done"),
            PutWorkflow(workflow("w-running"), 10.0, generation=1),
            DropTask("gone"),
            DropResult("evicted"),
            DropSchedule("removed"),
            PutSchedule("hourly", 60.0, "t-2"),
        ])
        with opened(path) as file:
            found = file.load()
        assert found.queued == (PutTask(job("q", 1), key="k-q"),)
        assert found.scheduled == (PutTask(job("s", 3), "scheduled", 5000.5, "k-s"),)
        assert found.dispatched == (PutTask(job("d", 0), "dispatched"),)
        assert found.results == (
            PutResult(record("kept"), 1000.0), PutResult(record("ended", "failed"), 1234.5))
        assert found.schedules == (PutSchedule("hourly", 60.0, "t-2"),
                                   PutSchedule("nightly", 100.0, "t-1"))
        assert found.workflows == (PutWorkflow(workflow("w-running"), 10.0, generation=1),
                                   PutWorkflow(workflow("w-failed"), 20.0, 2, failed=True))
        assert found.keys == {"k-q": "q", "k-s": "s"}
        assert found.unreadable == 0

    def test_set_state_moves_a_task_and_a_new_attempt_replaces_it(self, path: Path) -> None:
        """SetState moves a task between states; a PutTask of the same id (its
        next attempt) replaces the job; a SetState of an unknown id does nothing."""
        write_file(path, [PutTask(job("a")), PutTask(job("b"))], [
            SetState(("a",), "dispatched"),
            SetState(("b",), "scheduled", due_at=77.0),
            SetState(("nobody",), "queued"),
        ], [PutTask(job("a", attempt=2), "scheduled", due_at=88.0)])
        with opened(path) as file:
            found = file.load()
        assert found.queued == found.dispatched == ()
        assert found.scheduled == (
            PutTask(job("b"), "scheduled", 77.0), PutTask(job("a", attempt=2), "scheduled", 88.0))

    def test_marks_and_records_of_live_tasks_come_back_with_them(self, path: Path) -> None:
        """A dispatched task marked ``once`` comes back among ``once`` (a
        later SetState without it clears it); a live task's ``PutRecord``
        comes back in ``records`` until its task ends; a record of a task
        with no row is not kept."""
        write_file(path, [PutTask(job("o")), PutTask(job("p")), PutTask(job("r")),
                          PutTask(job("ended"))], [
            SetState(("o",), "dispatched", once=True),
            SetState(("p",), "dispatched", once=True),
            PutRecord(record("r", "scheduled")),
            PutRecord(record("ended", "scheduled")),
            PutRecord(record("nobody", "scheduled")),
        ], [SetState(("p",), "queued"), PutResult(record("ended"), final_at=1.0)])
        with opened(path) as file:
            found = file.load()
        assert found.once == {"o"}
        assert found.records == (PutRecord(record("r", "scheduled")),)
        with pytest.raises(ValueError, match="live task"):
            PutRecord(record("x", "failed"))

    def test_a_batch_bigger_than_a_statement_goes_in_whole_and_in_order(
            self, path: Path) -> None:
        """Runs of ops longer than one statement's rows (ROWS_PER_STATEMENT,
        and sizes that are not powers of two) are applied whole, in order:
        each task ends where its last op put it."""
        n = ROWS_PER_STATEMENT * 2 + 77
        names = [f"t{i:03d}" for i in range(n)]
        write_file(path, [
            *(PutTask(job(name)) for name in names),
            SetState(tuple(names), "dispatched"),
            SetState(("t000",), "scheduled", due_at=5.0), SetState(("t000",), "queued"),
            *(PutResult(record(name), 1.0) for name in names[1:100]),
            *(DropTask(name) for name in names[100:150]),
        ])
        with opened(path) as file:
            found = file.load()
        assert [t.job.id for t in found.queued] == ["t000"]
        assert [t.job.id for t in found.dispatched] == names[150:]
        assert [r.record.id for r in found.results] == names[1:100]

    def test_queued_tasks_come_back_by_level_then_arrival(self, path: Path) -> None:
        """Queued tasks load in priority order, and in arrival order within a
        level; a task put again (its next attempt) keeps its first place."""
        write_file(path, [PutTask(job("low-1", 3)), PutTask(job("normal-1", 2))],
                   [PutTask(job("critical-1", 0)), PutTask(job("normal-2", 2))],
                   [PutTask(job("low-2", 3)), PutTask(job("critical-2", 0))],
                   [PutTask(job("normal-1", 2, attempt=2))])
        with opened(path) as file:
            # Arrival order survives a reopen: new tasks go after the old ones.
            file.apply([PutTask(job("normal-3", 2)), PutTask(job("critical-3", 0))])
            found = file.load()
        assert ids(found.queued) == ["critical-1", "critical-2", "critical-3",
                                     "normal-1", "normal-2", "normal-3", "low-1", "low-2"]
        assert found.queued[3].job.attempt == 2

    def test_ops_of_one_batch_apply_in_their_order(self, path: Path) -> None:
        """Kinds interleaved in one batch keep their order: a task put,
        dropped and put again in one transaction is there; one put then
        finished is gone."""
        write_file(path, [
            PutTask(job("again")), PutTask(job("done")), DropTask("again"),
            PutResult(record("done"), 1.0), PutTask(job("again"), "dispatched"),
        ])
        with opened(path) as file:
            found = file.load()
        assert ids(found.dispatched) == ["again"]
        assert found.queued == ()
        assert [r.record.id for r in found.results] == ["done"]

    def test_a_failed_batch_applies_nothing(self, path: Path) -> None:
        """A batch that fails part way is rolled back whole, and the file
        takes the next batch."""
        with opened(path) as file:
            file.apply([PutTask(job("before"))])
            with pytest.raises(TypeError, match="not a journal op: str"):
                file.apply([PutTask(job("lost")), "not an op"])  # type: ignore[list-item]
            with pytest.raises(sqlite3.IntegrityError):
                file.apply([DropTask("before"), PutTask(job("x"), due_at=None)])  # type: ignore[arg-type]
            file.apply([PutTask(job("after"))])
            assert ids(file.load().queued) == ["before", "after"]

    def test_a_row_that_does_not_decode_is_skipped_and_counted(
        self, path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A damaged row costs that row only: logged, counted, skipped."""
        write_file(path, [PutTask(job("good")), PutTask(job("bad")),
                          PutResult(record("r-bad"), 1.0), PutResult(record("r-good"), 2.0)])
        db = sqlite3.connect(path)
        db.execute("UPDATE tasks SET job = x'c1' WHERE id = 'bad'")
        db.execute("UPDATE results SET record = 'text' WHERE id = 'r-bad'")
        db.commit()
        db.close()
        with caplog.at_level(logging.WARNING, "fastworker.journal"), opened(path) as file:
            found = file.load()
        assert ids(found.queued) == ["good"]
        assert [r.record.id for r in found.results] == ["r-good"]
        assert found.unreadable == 2
        assert found.summary().endswith("; 2 unreadable rows skipped")
        assert [m for m in caplog.messages if "skipped" in m] == [
            f"journal {path}: skipped task 'bad': malformed msgpack: invalid opcode '\\xc1' (byte 0)",
            f"journal {path}: skipped result 'r-bad': expected bytes, got str",
        ]

    def test_a_second_open_is_refused_naming_the_holder(self, path: Path) -> None:
        """While one JournalFile holds the journal, another open is refused
        (the lock is per open file, so this holds inside one process too),
        and the message names the holder's pid; closing frees it."""
        first = JournalFile.open(path)
        try:
            with pytest.raises(JournalLocked) as raised:
                JournalFile.open(path)
            assert raised.value.pid == os.getpid()
            assert str(raised.value) == (
                f"the journal {path} is in use by process {os.getpid()} (lock file {path}.lock); "
                "stop that process, or give this one another journal (journal = \"...\" or "
                "FASTWORKER_JOURNAL)")
        finally:
            first.close()
        JournalFile.open(path).close()

    def test_stats_count_rows_and_bytes(self, path: Path) -> None:
        """stats() gives the path, the bytes of the database and its log, and rows."""
        with opened(path) as file:
            file.apply([PutTask(job(f"t{i}")) for i in range(10)]
                       + [PutResult(record("r"), 1.0), PutSchedule("s", 1.0)])
            stats = file.stats()
            wal = path.with_name(path.name + "-wal").stat().st_size
            assert stats.bytes == path.stat().st_size + wal
        assert (stats.path, stats.tasks, stats.results, stats.schedules) == (str(path), 10, 1, 1)

    def test_the_file_stays_bounded_under_a_steady_load(self, path: Path) -> None:
        """Tasks that come and go, with checkpoints, leave a file that stops
        growing; a burst that drained is given back by later checkpoints."""
        payload = b"x" * 300
        sizes = []
        with opened(path) as file:
            for round_ in range(60):
                batch = [PutTask(job(f"{round_}-{i}", payload=payload)) for i in range(500)]
                file.apply(batch)
                file.apply([DropTask(op.job.id) for op in batch])
                if round_ % 5 == 4:
                    file.checkpoint()
                    sizes.append(file.size())
            steady = sizes[-1]
            assert steady <= 2 * sizes[0], sizes  # no growth with the rounds
            assert max(sizes[2:]) == max(sizes[:3]), sizes
            # A burst of 20,000 queued tasks, then drained.
            for start in range(0, 20_000, 1000):
                file.apply([PutTask(job(f"burst-{i}", payload=payload))
                            for i in range(start, start + 1000)])
            file.checkpoint()
            peak = file.size()
            for start in range(0, 20_000, 1000):
                file.apply([DropTask(f"burst-{i}") for i in range(start, start + 1000)])
            for _ in range(3):
                file.checkpoint()
            assert file.size() < peak / 2, (file.size(), peak)
            assert file.integrity_check() == []


def corrupt_files(path: Path) -> dict[str, bytes]:
    """Bad files by name: what each holds."""
    write_file(path, [PutTask(job(f"t{i}", payload=b"PAYLOAD-%05d-" % i + b"x" * 200))
                      for i in range(2000)])
    sound = path.read_bytes()
    page = sound.find(b"PAYLOAD-01000-") // 4096
    middle = bytearray(sound)
    middle[page * 4096:(page + 1) * 4096] = bytes(range(256)) * 16
    other = path.with_name("other.db")
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    newer = bytearray(sound)
    newer[60:64] = (VERSION + 1).to_bytes(4, "big")  # user_version in SQLite's header
    return {
        "garbage": bytes(range(256)) * 40,
        "empty": b"",
        "truncated": sound[: len(sound) // 2],
        "header_only": sound[:100],
        "page_in_the_middle": bytes(middle),
        "another_database": other.read_bytes(),
        "newer_version": bytes(newer),
    }


REFUSALS = {
    "garbage": "it is not an SQLite database (its first bytes are not SQLite's header)",
    "empty": "the file is empty (0 bytes): it was truncated, or was never a journal",
    "truncated": "it is damaged: database disk image is malformed",
    "header_only": "it is damaged: database disk image is malformed",
    "page_in_the_middle": "it is damaged: database disk image is malformed",
    "another_database": "it is an SQLite database, but not a fastworker journal",
    "newer_version": f"it is a journal of version {VERSION + 1}, and this fastworker reads "
                     f"version {VERSION}",
}


@pytest.mark.parametrize("kind", sorted(REFUSALS))
def test_a_file_that_cannot_be_trusted_is_refused_and_left_alone(
    tmp_path: Path, kind: str
) -> None:
    """A file that is not a sound journal of our version is refused with one
    line naming it, what is wrong and how to recover; it is not changed."""
    bad = corrupt_files(tmp_path / "source.journal")[kind]
    path = tmp_path / "fastworker.journal"
    path.write_bytes(bad)
    with pytest.raises(JournalCorrupt) as raised:
        JournalFile.open(path)
    message = str(raised.value)
    assert "\n" not in message
    assert raised.value.problem == REFUSALS[kind]
    if kind == "another_database":
        assert message.endswith("; give the journal another path, or move that file away")
    elif kind == "newer_version":
        assert message.endswith(
            "; run the fastworker that wrote it, or move it aside with `fastworker journal "
            f"salvage {path}` (it keeps what this version can read)")
    else:
        assert message == f"the journal {path} cannot be used: {REFUSALS[kind]}; {hint(path)}"
    assert path.read_bytes() == bad
    assert not path.with_name(path.name + "-wal").exists()
    JournalLocked_free = JournalFile.open(tmp_path / "source.journal")  # the lock was released
    JournalLocked_free.close()


def test_a_log_without_its_database_is_refused(path: Path) -> None:
    """A write-ahead log whose database is gone holds commits: a new
    journal is not made beside it."""
    wal = path.with_name(path.name + "-wal")
    wal.write_bytes(b"frames")
    with pytest.raises(JournalCorrupt) as raised:
        JournalFile.open(path)
    assert str(raised.value) == (
        f"the journal {path} cannot be used: the file is missing but its write-ahead log {wal} "
        f"is there; put the journal back, or move {wal} away to start with an empty journal")
    assert not path.exists()


# -- the writer ---------------------------------------------------------------


async def committed(writer: JournalWriter, ops: list[Op]) -> None:
    await (await writer.write(ops)).wait()


async def load(path: Path) -> Any:
    return await trio.to_thread.run_sync(lambda: _load(path))


def _load(path: Path) -> Any:
    with opened(path) as file:
        return file.load()


class TestJournalWriter:
    async def test_a_write_is_in_the_file_when_its_commit_returns(self, path: Path) -> None:
        """Once commit.wait() returns, another reader of the file sees the ops."""
        async with JournalWriter.open(path) as writer:
            await committed(writer, [PutTask(job("a")), PutSchedule("s", 1.0)])
            reader = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
            try:
                assert reader.execute("SELECT id FROM tasks").fetchall() == [("a",)]
            finally:
                reader.close()
            stats = writer.stats()
        assert (stats.commits_total, stats.ops_total, stats.pending_ops) == (1, 2, 0)
        assert stats.healthy and stats.last_commit_at > 0 and stats.bytes > 0

    async def test_concurrent_writes_share_transactions(self, path: Path) -> None:
        """Writes made while a commit is under way go together in the next
        one: 200 writers end in far fewer transactions."""
        async with JournalWriter.open(path) as writer:
            async with trio.open_nursery() as nursery:
                for i in range(200):
                    nursery.start_soon(committed, writer, [PutTask(job(f"t{i}"))])
            stats = writer.stats()
        assert stats.ops_total == 200
        assert stats.commits_total <= 10, stats
        assert len((await load(path)).queued) == 200

    async def test_a_transaction_holds_at_most_max_batch_ops(self, path: Path) -> None:
        """max_batch_ops bounds a transaction: 100 one-op writes with a bound
        of 10 take at least 10 commits."""
        async with JournalWriter.open(path, max_batch_ops=10) as writer:
            commits = [writer.write_nowait([PutTask(job(f"t{i}"))]) for i in range(100)]
            for commit in commits:
                await commit.wait()
            stats = writer.stats()
        assert stats.ops_total == 100
        assert 10 <= stats.commits_total <= 20, stats

    async def test_writes_apply_in_the_order_they_were_made(self, path: Path) -> None:
        """A later write sees the effect of an earlier one, in one transaction
        or across several."""
        async with JournalWriter.open(path, max_batch_ops=2) as writer:
            commits = [writer.write_nowait(ops) for ops in (
                [PutTask(job("a")), PutTask(job("b"))],
                [SetState(("a",), "dispatched")],
                [DropTask("b"), PutTask(job("c"))],
                [PutResult(record("a"), 1.0)],
            )]
            await commits[-1].wait()
            assert all(commit.done for commit in commits)  # an earlier write is done too
            found = await writer.load()
        assert ids(found.queued) == ["c"] and found.dispatched == ()
        assert [r.record.id for r in found.results] == ["a"]

    async def test_an_empty_write_waits_for_the_earlier_ones(self, path: Path) -> None:
        """Writing no ops is a barrier: done when every earlier write is
        (at once when nothing is pending)."""
        async with JournalWriter.open(path) as writer:
            assert writer.write_nowait([]).done
            first = writer.write_nowait([PutTask(job("a"))])
            barrier = writer.write_nowait([])
            assert not barrier.done
            await barrier.wait()
            assert first.done

    async def test_a_commit_interval_keeps_a_batch_open_on_trios_clock(
        self, path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """With commit_interval, writes within it go in one transaction,
        committed the interval after the first write."""
        async with JournalWriter.open(path, commit_interval=0.05) as writer:
            start = trio.current_time()
            first = await writer.write([PutTask(job("a"))])
            await trio.sleep(0.02)
            second = await writer.write([PutTask(job("b"))])
            assert not first.done
            await first.wait()
            assert trio.current_time() - start == pytest.approx(0.05)
            await second.wait()
            assert writer.stats().commits_total == 1
            # The next batch has its own interval, from its first write.
            await trio.sleep(1.0)
            again = trio.current_time()
            await committed(writer, [PutTask(job("c"))])
            assert trio.current_time() - again == pytest.approx(0.05)

    @pytest.mark.parametrize("lazy", [False, True], ids=["write", "lazy_write"])
    async def test_a_full_batch_does_not_wait_for_the_interval(
        self, path: Path, autojump_clock: trio.testing.MockClock, lazy: bool
    ) -> None:
        """A batch that reaches max_batch_ops is committed at once."""
        async with JournalWriter.open(path, commit_interval=10.0, lazy_interval=10.0,
                                      max_batch_ops=4) as writer:
            start = trio.current_time()
            commit = await writer.write([PutTask(job(f"t{i}")) for i in range(4)], lazy=lazy)
            await commit.wait()
            assert trio.current_time() == start

    async def test_a_lazy_write_alone_waits_for_its_interval(
        self, path: Path, mock_clock: trio.testing.MockClock
    ) -> None:
        """A lazy write that no other write joins is committed lazy_interval
        after it was made, on trio's clock, and not before."""
        files: list[HeldFile] = []
        async with JournalWriter.open(path, lazy_interval=0.5,
                                      wrap=held_files(files, go=True)) as writer:
            commit = await writer.write([PutTask(job("a"))], lazy=True)
            mock_clock.jump(0.4)
            await trio.testing.wait_all_tasks_blocked()
            assert not commit.done and writer.stats().pending_ops == 1
            mock_clock.jump(0.1)
            assert await files[0].next_taken() == [PutTask(job("a"))]
            await commit.wait()
            assert writer.stats().commits_total == 1
        assert ids((await load(path)).queued) == ["a"]

    async def test_a_write_takes_the_lazy_writes_before_it_along(
        self, path: Path, mock_clock: trio.testing.MockClock
    ) -> None:
        """A write that is not lazy goes at once (the clock does not move),
        with the lazy writes made before it in the same transaction, in the
        order they were made."""
        files: list[HeldFile] = []
        async with JournalWriter.open(path, lazy_interval=60.0,
                                      wrap=held_files(files, go=True)) as writer:
            lazy = await writer.write([PutTask(job("a")), PutTask(job("b"))], lazy=True)
            moved = await writer.write([SetState(("a",), "dispatched")], lazy=True)
            waited = await writer.write([DropTask("b"), PutTask(job("c"))])
            assert await files[0].next_taken() == [
                PutTask(job("a")), PutTask(job("b")), SetState(("a",), "dispatched"),
                DropTask("b"), PutTask(job("c"))]
            await waited.wait()
            assert lazy.done and moved.done
            stats = writer.stats()
        assert (stats.commits_total, stats.ops_total) == (1, 5)
        found = await load(path)
        assert ids(found.dispatched) == ["a"] and ids(found.queued) == ["c"]

    async def test_a_followed_lazy_batch_goes_at_once(
        self, path: Path, mock_clock: trio.testing.MockClock
    ) -> None:
        """Lazy writes that fill a batch up to max_batch_ops start the next
        one, and the full one goes at once: only the last batch waits."""
        files: list[HeldFile] = []
        async with JournalWriter.open(path, lazy_interval=60.0, max_batch_ops=4,
                                      wrap=held_files(files, go=True)) as writer:
            first = await writer.write([PutTask(job(f"a{i}")) for i in range(3)], lazy=True)
            second = await writer.write([PutTask(job(f"b{i}")) for i in range(2)], lazy=True)
            assert await files[0].next_taken() == [PutTask(job(f"a{i}")) for i in range(3)]
            await first.wait()
            await trio.testing.wait_all_tasks_blocked()
            assert not second.done

    async def test_a_write_is_done_only_once_committed_and_in_order(self, path: Path) -> None:
        """A write somebody waits for is done (and its callbacks called) only
        once its transaction is committed; writes made meanwhile, lazy or
        not, wait for the next transaction, in the order they were made."""
        files: list[HeldFile] = []
        answers: list[tuple[str, Exception | None]] = []
        async with JournalWriter.open(path, lazy_interval=60.0,
                                      wrap=held_files(files)) as writer:
            held = files[0]
            try:
                first = await writer.write([PutTask(job("a"))])
                first.add_done_callback(lambda error: answers.append(("a", error)))
                assert await held.next_taken() == [PutTask(job("a"))]
                moved = await writer.write([SetState(("a",), "dispatched")], lazy=True)
                second = await writer.write([PutTask(job("b"))])
                second.add_done_callback(lambda error: answers.append(("b", error)))
                await trio.testing.wait_all_tasks_blocked()
                assert answers == [] and not first.done and not second.done
                assert await trio.to_thread.run_sync(read_ids, path) == []
                held.go()
                await first.wait()
                assert answers == [("a", None)]
                assert await held.next_taken() == [
                    SetState(("a",), "dispatched"), PutTask(job("b"))]
                await trio.testing.wait_all_tasks_blocked()
                assert not moved.done and not second.done
                assert await trio.to_thread.run_sync(read_ids, path) == ["a"]
                held.go()
                await second.wait()
                assert moved.done and answers == [("a", None), ("b", None)]
            finally:
                held.go(1_000_000)  # a failure above never leaves the thread held
        found = await load(path)
        assert ids(found.dispatched) == ["a"] and ids(found.queued) == ["b"]

    async def test_a_write_joining_lazy_ones_goes_at_its_commit_interval(
        self, path: Path, mock_clock: trio.testing.MockClock
    ) -> None:
        """With a commit interval, a write that joins a batch of lazy writes
        makes it go at its own interval, sooner than the lazy one."""
        files: list[HeldFile] = []
        async with JournalWriter.open(path, commit_interval=0.05, lazy_interval=1.0,
                                      wrap=held_files(files, go=True)) as writer:
            lazy = await writer.write([PutTask(job("a"))], lazy=True)
            mock_clock.jump(0.5)
            waited = await writer.write([PutTask(job("b"))])
            mock_clock.jump(0.04)
            await trio.testing.wait_all_tasks_blocked()
            assert not lazy.done and not waited.done
            mock_clock.jump(0.01)
            assert await files[0].next_taken() == [PutTask(job("a")), PutTask(job("b"))]
            await waited.wait()
            assert lazy.done and writer.stats().commits_total == 1

    async def test_a_done_callback_gets_the_outcome(
        self, path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A commit's callback gets None once it is committed, or the error
        wait() raises; on a commit already done it is called at once; one
        that raises is logged and the others still get theirs."""
        faults = JournalFaults()
        got: list[Exception | None] = []

        def broken(error: Exception | None) -> None:
            raise RuntimeError("a broken callback")

        async with JournalWriter.open(path, wrap=faults.wrap) as writer:
            written = await writer.write([PutTask(job("a"))])
            written.add_done_callback(broken)
            written.add_done_callback(got.append)
            await written.wait()
            faults.fail()
            refused = await writer.write([PutTask(job("b"))])
            refused.add_done_callback(got.append)
            with pytest.raises(JournalUnavailable):
                await refused.wait()
            written.add_done_callback(got.append)
        assert got[0] is None and isinstance(got[1], JournalUnavailable) and got[2] is None
        assert len(got) == 3
        assert [r.message for r in caplog.records if r.name == "fastworker.journal"][0] == (
            "a journal commit's callback failed")

    async def test_a_write_waits_for_room_when_too_much_is_pending(self, path: Path) -> None:
        """Past max_pending_ops, write_nowait raises WouldBlock and write
        waits until a commit frees room; one larger write goes alone."""
        async with JournalWriter.open(path, max_pending_ops=10) as writer:
            first = writer.write_nowait([PutTask(job(f"t{i}")) for i in range(10)])
            assert writer.stats().pending_ops == 10
            with pytest.raises(trio.WouldBlock):
                writer.write_nowait([PutTask(job("more"))])
            more = await writer.write([PutTask(job("more"))])
            assert first.done  # it waited for the commit
            await more.wait()
            big = await writer.write([PutTask(job(f"big{i}")) for i in range(25)])
            await big.wait()
            assert writer.stats().ops_total == 36

    async def test_a_failing_disk_fails_the_commit_and_the_writer_recovers(
        self, path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A commit that fails (disk full) fails its writes with
        JournalUnavailable, marks the writer unhealthy, and acknowledges
        nothing; the next commit that succeeds makes it healthy again."""
        faults = JournalFaults()
        async with JournalWriter.open(path, wrap=faults.wrap) as writer:
            await committed(writer, [PutTask(job("before"))])
            faults.fail()
            with pytest.raises(JournalUnavailable) as raised:
                await committed(writer, [PutTask(job("refused"))])
            assert str(raised.value) == (
                f"the journal at {path} cannot be written: database or disk is full")
            stats = writer.stats()
            assert not writer.healthy and stats.failures_total == 1
            assert stats.last_error == str(raised.value) and stats.pending_ops == 0
            faults.heal()
            await committed(writer, [PutTask(job("after"))])
            assert writer.healthy
        assert ids((await load(path)).queued) == ["before", "after"]
        assert [r.message for r in caplog.records if r.name == "fastworker.journal"] == [
            f"the journal at {path} cannot be written: database or disk is full; writes are "
            "refused until one succeeds (1 failed commits in the last 60 s)",
            f"journal {path}: writing again after 1 failed commits",
        ]

    async def test_a_real_full_disk(self, tmp_path: Path) -> None:
        """On a tiny tmpfs (when one can be mounted: root), writes fail with
        JournalUnavailable once the disk is full and succeed again once there
        is room; every acknowledged task is in the file and no refused one is.
        Where no tmpfs can be mounted, the scripted fault stands in."""
        with tiny_disk(tmp_path / "disk") as disk:
            faults = JournalFaults()
            path = (disk or tmp_path) / "fastworker.journal"
            filler = (disk or tmp_path) / "filler"
            acked, refused = [], []
            async with JournalWriter.open(path, wrap=None if disk else faults.wrap) as writer:
                if disk:
                    filler.write_bytes(b"\0" * 300_000)
                for n in range(1000):
                    if not disk and n == 20:
                        faults.fail()
                    batch = [f"{n}-{i}" for i in range(20)]
                    try:
                        await committed(writer, [PutTask(job(t, payload=b"p" * 500)) for t in batch])
                    except JournalUnavailable as error:
                        assert str(error).endswith("cannot be written: database or disk is full")
                        refused.extend(batch)
                        break
                    acked.extend(batch)
                assert refused and not writer.healthy
                if disk:
                    filler.unlink()
                else:
                    faults.heal()
                await committed(writer, [PutTask(job("after"))])
                assert writer.healthy
            found = set(ids((await load(path)).queued))
            assert set(acked) | {"after"} <= found
            assert not found & set(refused)

    async def test_a_bad_write_fails_alone(self, path: Path) -> None:
        """A write the file cannot take (a bug in its sender) fails with its
        own error; the writes it shared a transaction with are committed, and
        the writer stays healthy."""
        async with JournalWriter.open(path) as writer:
            good = writer.write_nowait([PutTask(job("good"))])
            bad = writer.write_nowait([PutTask(job("bad"), due_at=None)])  # type: ignore[arg-type]
            also = writer.write_nowait([PutTask(job("also"))])
            await good.wait()
            with pytest.raises(sqlite3.IntegrityError):
                await bad.wait()
            await also.wait()
            assert writer.healthy and writer.stats().ops_total == 2
        assert ids((await load(path)).queued) == ["good", "also"]

    async def test_closing_commits_what_was_written(self, path: Path) -> None:
        """Leaving the context commits the writes still pending, even when
        the context is left by cancellation."""
        with trio.CancelScope() as scope:
            async with JournalWriter.open(path, commit_interval=60.0) as writer:
                commit = writer.write_nowait([PutTask(job("late"))])
                scope.cancel()
                await trio.sleep_forever()
        assert commit.done
        await commit.wait()
        assert ids((await load(path)).queued) == ["late"]

    async def test_a_closed_writer_refuses_writes(self, path: Path) -> None:
        """A write after close raises trio's ClosedResourceError."""
        async with JournalWriter.open(path) as writer:
            pass
        with pytest.raises(trio.ClosedResourceError):
            await writer.write([PutTask(job("a"))])

    async def test_opening_a_refused_file_raises_from_open(self, path: Path) -> None:
        """The file's refusal comes out of JournalWriter.open, and the lock is free again."""
        path.write_bytes(b"not a database at all")
        with pytest.raises(JournalCorrupt):
            async with JournalWriter.open(path):
                pass  # pragma: no cover
        path.unlink()
        async with JournalWriter.open(path) as writer:
            assert writer.healthy

    async def test_checkpoints_truncate_the_log(self, path: Path) -> None:
        """The writer checkpoints every checkpoint_every commits, which keeps
        the write-ahead log short."""
        async with JournalWriter.open(path, checkpoint_every=5) as writer:
            for n in range(20):
                await committed(writer, [PutTask(job(f"{n}-{i}")) for i in range(50)])
            await writer.checkpoint()
            stats = writer.stats()
            assert stats.checkpoints_total >= 4
            assert path.with_name(path.name + "-wal").stat().st_size == 0
            assert (await writer.file_stats()).tasks == 1000


class HeldFile(WrappedFile):
    """A journal file whose commits each wait for the test's ``go``; each
    transaction's ops are handed to the test as its commit begins."""

    def __init__(self, file: JournalFile, *, go: bool = False) -> None:
        super().__init__(file)
        self.taken: queue.Queue[list[Op]] = queue.Queue()
        self._go = threading.Semaphore(1_000_000 if go else 0)

    def apply(self, ops: Sequence[Op]) -> None:
        self.taken.put(list(ops))
        if not self._go.acquire(timeout=30):
            raise RuntimeError("the test never let this commit go")
        self.file.apply(ops)

    def go(self, n: int = 1) -> None:
        """Let the next ``n`` commits through."""
        self._go.release(n)

    async def next_taken(self) -> list[Op]:
        """The ops of the next transaction the thread begins (10 s at most)."""
        return await trio.to_thread.run_sync(lambda: self.taken.get(timeout=10))


def held_files(files: list[HeldFile], *, go: bool = False) -> Any:
    """A ``wrap`` that makes each opened file a ``HeldFile`` and lists it."""

    def wrap(file: JournalFile) -> HeldFile:
        files.append(HeldFile(file, go=go))
        return files[-1]

    return wrap


def read_ids(path: Path) -> list[str]:
    """The ids of the tasks another reader of the file sees now."""
    reader = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        return [row[0] for row in reader.execute("SELECT id FROM tasks ORDER BY seq")]
    finally:
        reader.close()


@contextmanager
def tiny_disk(where: Path) -> Iterator[Path | None]:
    """A 1 MB tmpfs mounted at ``where`` (``None`` if it cannot be mounted),
    always unmounted."""
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)],
                             capture_output=True).returncode == 0 if os.geteuid() == 0 else False
    try:
        yield where if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(where)], check=True)
