"""The journal across processes: a second process refused while one holds
it, SIGKILL at random moments (mid-commit included) losing no acknowledged
write, and the ``fastworker journal check|salvage`` commands on real
damaged files. Every process is killed and reaped; every wait is for a
line or an exit, with ``GUARD`` turning a hang into a failure."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from fastworker.journal import (
    JournalFile,
    JournalLocked,
    PutRecord,
    PutResult,
    PutSchedule,
    PutTask,
    PutWorkflow,
    SetState,
)
from tests.fastworker.test_journal import (
    REFUSALS,
    corrupt_files,
    hint,
    job,
    opened,
    record,
    workflow,
)
from tests.process.harness import Lines

ROOT = Path(__file__).resolve().parents[2]
GUARD = 30  # seconds; a hang fails the test instead of stalling the run


class Child:
    """A child process, read line by line (stdout and stderr merged)."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._lines = Lines(process)
        self.lines = self._lines.read

    async def line(self) -> str | None:
        """The next line, or ``None`` at the end of the output."""
        return await self._lines.next()

    async def wait_for(self, prefix: str) -> str:
        """Read on until a line starting with ``prefix``."""
        with trio.move_on_after(GUARD):
            while (line := await self.line()) is not None:
                if line.startswith(prefix):
                    return line
            pytest.fail(f"the child ended before {prefix!r}; it wrote:\n" + "\n".join(self.lines))
        pytest.fail(f"no {prefix!r} within {GUARD} s; the child wrote:\n" + "\n".join(self.lines))

    async def rest(self) -> list[str]:
        """The lines left, up to the end of the output."""
        found = []
        with trio.fail_after(GUARD):
            while (line := await self.line()) is not None:
                found.append(line)
        return found


@asynccontextmanager
async def child(*args: str) -> AsyncIterator[Child]:
    """``tests/fastworker/journal_child.py`` with ``args``, killed and reaped on exit."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "tests.fastworker.journal_child", *args], cwd=ROOT,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        yield Child(process)
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    await stream.aclose()


async def journal_command(*args: str | Path) -> subprocess.CompletedProcess[bytes]:
    """``python -m fastworker journal ARGS``, run to its end."""
    with trio.fail_after(GUARD):
        return await trio.run_process(
            [sys.executable, "-m", "fastworker", "journal", *map(str, args)], cwd=ROOT,
            capture_stdout=True, capture_stderr=True, check=False)


def out(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    return result.stdout.decode().splitlines()


def err(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    return result.stderr.decode().splitlines()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "fastworker.journal"


async def test_a_second_process_is_refused_naming_the_holder(path: Path) -> None:
    """While a process holds the journal, another cannot open it (nor check
    it); the refusal names the file and the holder's pid. Once the holder
    is gone, the journal opens."""
    async with child("hold", str(path)) as holder:
        ready = await holder.wait_for("ready")
        assert ready == f"ready {holder.process.pid}"
        with pytest.raises(JournalLocked) as raised:
            JournalFile.open(path)
        assert raised.value.pid == holder.process.pid
        message = (f"the journal {path} is in use by process {holder.process.pid} (lock file "
                   f"{path}.lock); stop that process, or give this one another journal "
                   "(journal = \"...\" or FASTWORKER_JOURNAL)")
        assert str(raised.value) == message
        checked = await journal_command("check", path)
        assert (checked.returncode, out(checked), err(checked)) == (1, [], [message])
        salvaged = await journal_command("salvage", path)
        assert (salvaged.returncode, err(salvaged)) == (1, [message])
        assert sorted(p.name for p in path.parent.iterdir()) == [
            "fastworker.journal", "fastworker.journal-shm", "fastworker.journal-wal",
            "fastworker.journal.lock"]
        assert holder.process.stdin is not None
        await holder.process.stdin.aclose()  # the holder closes the journal and exits
        assert (await holder.rest(), await holder.process.wait()) == ([], 0)
    with opened(path) as file:
        assert file.load().queued == ()


async def test_sigkill_at_random_moments_loses_no_acknowledged_write(path: Path) -> None:
    """A writer killed with SIGKILL, again and again, at random moments
    (its batches are large, so often inside a commit or a checkpoint):
    after every kill the file passes SQLite's integrity check and holds
    every id the writer printed as acknowledged."""
    rng = random.Random(14)
    acknowledged: list[str] = []
    kills = 0
    for run in range(12):
        async with child("write", str(path), str(run)) as writer:
            await writer.wait_for("ready")
            lines = [await writer.wait_for("acked") for _ in range(rng.randint(0, 5))]
            writer.process.send_signal(signal.SIGKILL)
            assert await writer.process.wait() == -signal.SIGKILL
            kills += 1
            lines += [line for line in await writer.rest() if line.startswith("acked")]
        for line in lines:
            _, prefix, size = line.split()
            acknowledged.extend(f"{prefix}-{i}" for i in range(int(size)))
        with opened(path) as file:
            assert file.integrity_check() == []
            found = file.load()
        held = {task.job.id for task in found.queued}
        lost = [task_id for task_id in acknowledged if task_id not in held]
        assert (run, len(lost), found.unreadable) == (run, 0, 0)
    assert kills >= 10
    assert len(acknowledged) > 1000


# -- fastworker journal check | salvage -----------------------------------------


def sound_journal(path: Path) -> None:
    with opened(path) as file:
        file.apply([PutTask(job("q1")), PutTask(job("q2")),
                    PutTask(job("s"), "scheduled", due_at=10.0),
                    PutRecord(record("s", "scheduled")),
                    PutTask(job("d")), SetState(("d",), "dispatched", once=True),
                    PutResult(record("r"), 1.0), PutSchedule("nightly", 5.0, "q1"),
                    PutWorkflow(workflow("w"), 7.0, generation=1, failed=True)])


async def test_check_reports_a_sound_journal(path: Path) -> None:
    """check exits 0 with the journal's rows and size."""
    sound_journal(path)
    result = await journal_command("check", path)
    assert result.returncode == 0, result
    [line] = out(result)
    assert line.startswith(f"{path}: ok: 2 queued, 1 scheduled, 1 dispatched, 1 results, "
                           "1 schedules, 1 workflows; ")
    assert line.endswith(" KB") and err(result) == []


async def test_check_of_a_missing_journal_fails(path: Path) -> None:
    """check of a path with no journal exits 1 with one line, creating nothing."""
    result = await journal_command("check", path)
    assert (result.returncode, out(result), err(result)) == (
        1, [], [f"there is no journal at {path}"])
    assert list(path.parent.iterdir()) == []


@pytest.mark.parametrize("kind", ["garbage", "truncated", "page_in_the_middle"])
async def test_check_refuses_a_damaged_journal(tmp_path: Path, kind: str) -> None:
    """check exits 1, saying what is wrong and how to recover; the file is unchanged."""
    bad = corrupt_files(tmp_path / "source.journal")[kind]
    path = tmp_path / "fastworker.journal"
    path.write_bytes(bad)
    result = await journal_command("check", path)
    assert (result.returncode, out(result)) == (
        1, [f"{path}: {REFUSALS[kind]}", f"{path}: {hint(path)}"])
    assert path.read_bytes() == bad


async def test_salvage_keeps_the_rows_around_a_damaged_page(tmp_path: Path) -> None:
    """salvage of a journal with a bad page in the middle moves it aside
    untouched and keeps every row off that page in a new, sound journal,
    in the same order."""
    bad = corrupt_files(tmp_path / "source.journal")["page_in_the_middle"]
    path = tmp_path / "fastworker.journal"
    path.write_bytes(bad)
    result = await journal_command("salvage", path)
    assert result.returncode == 0, result
    moved, kept, lost = out(result)
    aside = next(path.parent.glob("fastworker.journal.damaged-*[0-9]"))
    assert moved == f"moved {path} aside to {aside} (with its -wal and -shm, if any)"
    assert aside.read_bytes() == bad
    with opened(path) as file:
        assert file.integrity_check() == []
        found = file.load()
    numbers = [int(task.job.id[1:]) for task in found.queued]
    assert numbers == sorted(numbers)  # arrival order kept
    assert 1900 < len(numbers) < 2000 and 1000 not in numbers
    assert kept == (f"kept {len(numbers)} tasks, 0 results, 0 schedules and 0 workflows in a "
                    f"new journal at {path}")
    assert lost.startswith("lost: tasks: up to ")
    assert lost.endswith(" were on damaged pages")
    checked = await journal_command("check", path)
    assert checked.returncode == 0


async def test_salvage_of_garbage_keeps_nothing_and_says_so(path: Path) -> None:
    """A file that is no database at all is moved aside; the new journal is empty."""
    path.write_bytes(b"\x00garbage" * 1000)
    result = await journal_command("salvage", path)
    assert result.returncode == 0, result
    assert out(result)[1:] == [
        f"kept 0 tasks, 0 results, 0 schedules and 0 workflows in a new journal at {path}",
        "lost: every table: could not be read at all (file is not a database)"]
    with opened(path) as file:
        assert file.load().summary() == (
            "0 queued, 0 scheduled, 0 dispatched, 0 results, 0 schedules, 0 workflows")


async def test_salvage_of_a_sound_journal_keeps_everything(path: Path) -> None:
    """Nothing is lost salvaging a sound journal, states and keys included."""
    sound_journal(path)
    with opened(path) as file:
        before = file.load()
    result = await journal_command("salvage", path)
    assert out(result)[1:] == [
        f"kept 4 tasks, 1 results, 1 schedules and 1 workflows in a new journal at {path}",
        "lost: nothing that could be seen"]
    with opened(path) as file:
        after = file.load()
    assert after == before
    assert after.once == {"d"} and [r.record.id for r in after.records] == ["s"]


async def test_salvage_carries_a_version_1_journal_over(path: Path) -> None:
    """A journal of version 1 (no at-most-once marks, no live records, no
    workflows) is
    refused at start, and salvage carries its rows into a new journal of
    this version: the way the refusal's hint gives."""
    with opened(path) as file:
        file.apply([PutTask(job("q1")), PutTask(job("d")), SetState(("d",), "dispatched"),
                    PutResult(record("r"), 1.0)])
    db = sqlite3.connect(path, isolation_level=None)  # back to the tables of version 1
    db.executescript("""
        CREATE TABLE v1 (id TEXT PRIMARY KEY, seq INTEGER NOT NULL, level INTEGER NOT NULL,
                         state TEXT NOT NULL, due_at REAL NOT NULL, key TEXT NOT NULL,
                         job BLOB NOT NULL);
        INSERT INTO v1 SELECT id, seq, level, state, due_at, key, job FROM tasks;
        DROP TABLE tasks;
        ALTER TABLE v1 RENAME TO tasks;
        DROP TABLE workflows;
        PRAGMA user_version = 1;
    """)
    db.close()
    refused = await journal_command("check", path)
    assert refused.returncode == 1
    assert "it is a journal of version 1" in out(refused)[0]
    result = await journal_command("salvage", path)
    assert result.returncode == 0, result
    assert out(result)[1] == (f"kept 2 tasks, 1 results, 0 schedules and 0 workflows in a new "
                              f"journal at {path}")
    with opened(path) as file:
        found = file.load()
    assert [t.job.id for t in found.queued] == ["q1"]
    assert [t.job.id for t in found.dispatched] == ["d"] and found.once == frozenset()
    assert [r.record.id for r in found.results] == ["r"]


async def test_the_journal_command_needs_an_action(path: Path) -> None:
    """`fastworker journal` without check or salvage is a usage error (exit 2)."""
    result = await journal_command()
    assert result.returncode == 2
    assert "the following arguments are required: ACTION" in result.stderr.decode()
