"""``fastworker journal check`` and ``salvage``: what to do with a journal
the control plane refused.

``check`` opens the journal (under its lock, as a control plane would),
runs SQLite's full integrity check and decodes every row. ``salvage`` moves
the damaged file aside (with its write-ahead log) to
``PATH.damaged-<time>``, reads every row it still can, skipping damaged
pages, and writes them into a fresh journal at ``PATH``. It never deletes
or writes the damaged file: the copy aside is opened read-only.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import attrs

from fastworker.journal.disk import file_bytes
from fastworker.journal.errors import JournalCorrupt, JournalError, salvage_hint
from fastworker.journal.file import JournalFile, Recovered
from fastworker.journal.lock import JournalLock
from fastworker.journal.ops import (
    Op,
    PutRecord,
    PutResult,
    PutSchedule,
    PutTask,
    PutWorkflow,
    SetState,
)
from fastworker.journal.schema import decode_record, task_from_row, workflow_from_row

__all__ = [
    "CheckReport",
    "Lost",
    "SalvageReport",
    "check",
    "salvage",
]

#: Rows read per query while the pages are sound.
_CHUNK: Final = 256
#: Ops per transaction when filling the new journal.
_WRITE_CHUNK: Final = 1024
_ROWID_MAX: Final = 2**63 - 1
_ROWID_MIN: Final = -(2**63)
_SIDE_FILES: Final = ("-wal", "-shm")


@attrs.frozen(kw_only=True)
class CheckReport:
    """What ``check`` found: ``problems`` is empty for a sound journal."""

    path: str
    bytes: int
    recovered: Recovered
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        """The report, for a person."""
        if self.ok:
            return [f"{self.path}: ok: {self.recovered.summary()}; {_size(self.bytes)}"]
        return [f"{self.path}: {problem}" for problem in self.problems] + [
            f"{self.path}: {salvage_hint(self.path)}"]


@attrs.frozen(kw_only=True)
class Lost:
    """Rows of ``table`` that could not be read: rowids ``first``..``last``
    (``last`` ``None``: to the end of the table), or ``undecodable`` rows
    that were read but did not decode."""

    table: str
    first: int = 0
    last: int | None = None
    undecodable: int = 0
    reason: str = ""

    def describe(self) -> str:
        if self.undecodable:
            return f"{self.table}: {self.undecodable} rows did not decode"
        if self.reason:
            return f"{self.table}: could not be read at all ({self.reason})"
        start = "the start" if self.first <= _ROWID_MIN + 1 else f"rowid {self.first}"
        if self.last is None:
            return f"{self.table}: the rows from {start} to the end of the table were unreadable"
        return (f"{self.table}: up to {self.last - max(self.first, 1) + 1} rows "
                f"(rowids {max(self.first, 1)}..{self.last}) were on damaged pages")


@attrs.frozen(kw_only=True)
class SalvageReport:
    """What ``salvage`` did."""

    path: str
    #: Where the damaged file went.
    aside: str
    tasks: int
    results: int
    schedules: int
    workflows: int = 0
    lost: tuple[Lost, ...] = ()

    def lines(self) -> list[str]:
        """The report, for a person."""
        lines = [
            f"moved {self.path} aside to {self.aside} (with its -wal and -shm, if any)",
            f"kept {self.tasks} tasks, {self.results} results, {self.schedules} schedules "
            f"and {self.workflows} workflows in a new journal at {self.path}",
        ]
        if not self.lost:
            return lines + ["lost: nothing that could be seen"]
        return lines + [f"lost: {lost.describe()}" for lost in self.lost]


def check(path: Path | str) -> CheckReport:
    """Check the journal at ``path`` thoroughly; the file is not changed
    (beyond what opening a journal does: its write-ahead log is applied).

    Raises:
        JournalLocked: a process has it open.
        JournalError: there is no journal at ``path``.
    """
    path = Path(path)
    try:
        file = JournalFile.open(path, create=False)
    except JournalCorrupt as error:
        return CheckReport(path=str(path), bytes=file_bytes(path), recovered=Recovered(),
                           problems=(error.problem,))
    try:
        problems = [f"damaged: {line}" for line in file.integrity_check()[:5]]
        recovered = file.load()
        size = file.size()
    finally:
        file.close()
    if recovered.unreadable:
        problems.append(f"{recovered.unreadable} rows do not decode (a control plane skips them)")
    return CheckReport(path=str(path), bytes=size, recovered=recovered, problems=tuple(problems))


def salvage(path: Path | str, *, clock: Callable[[], float] = time.time) -> SalvageReport:
    """Move the journal at ``path`` aside and keep what can be read of it
    in a new journal at ``path``.

    Raises:
        JournalLocked: a process has it open (it is left as it is).
        JournalError: there is no journal at ``path``.
    """
    path = Path(path)
    lock = JournalLock.acquire(path)
    try:
        if not path.exists():
            raise JournalError(path, f"there is no journal at {path} to salvage")
        aside = _move_aside(path, clock())
        ops, lost = _read(aside)
        file = JournalFile.open(path, lock=lock)
    except BaseException:
        lock.release()
        raise
    try:
        for start in range(0, len(ops), _WRITE_CHUNK):
            file.apply(ops[start:start + _WRITE_CHUNK])
        file.checkpoint()
    finally:
        file.close()
    return SalvageReport(
        path=str(path), aside=str(aside),
        tasks=sum(type(op) is PutTask for op in ops),
        results=sum(type(op) is PutResult for op in ops),
        schedules=sum(type(op) is PutSchedule for op in ops),
        workflows=sum(type(op) is PutWorkflow for op in ops),
        lost=tuple(lost),
    )


def _move_aside(path: Path, now: float) -> Path:
    """Rename the journal and its side files to ``PATH.damaged-<time>``: the
    database first, so a crash in between leaves a log without its database
    (which a control plane refuses), never a database without its log."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    number = 1
    while any(Path(f"{aside}{suffix}").exists() for suffix in ("", *_SIDE_FILES)):
        number += 1
        aside = path.with_name(f"{path.name}.damaged-{stamp}-{number}")
    path.rename(aside)
    for suffix in _SIDE_FILES:
        side = Path(f"{path}{suffix}")
        if side.exists():
            side.rename(f"{aside}{suffix}")
    return aside


def _read(damaged: Path) -> tuple[list[Op], list[Lost]]:
    """Every row of ``damaged`` that can be read, as ops (tasks in their
    arrival order, so the new journal keeps it), and what was lost."""
    lost: list[Lost] = []
    try:
        db = sqlite3.connect(f"{damaged.absolute().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as error:
        return [], [Lost(table="every table", reason=str(error))]
    try:
        db.execute("SELECT name FROM sqlite_master").fetchall()
    except sqlite3.DatabaseError as error:  # not a database, or its first page is gone
        db.close()
        return [], [Lost(table="every table", reason=str(error))]
    try:
        if _has_columns(db, "tasks", "once", "record"):
            task_rows = _read_table(db, "tasks", "seq, state, due_at, key, job, once, record",
                                    lost)
        else:  # a journal of version 1
            task_rows = [(*row, 0, None) for row in
                         _read_table(db, "tasks", "seq, state, due_at, key, job", lost)]
        result_rows = _read_table(db, "results", "final_at, record", lost)
        schedule_rows = _read_table(db, "schedules", "name, last_run, last_id", lost)
        workflow_rows = (_read_table(db, "workflows", "started_at, generation, failed, start", lost)
                         if _has_table(db, "workflows") else [])  # none before version 3
    finally:
        db.close()
    tasks: list[tuple[Any, list[Op]]] = []
    bad = 0
    for _, seq, state, due_at, key, blob, once, record in task_rows:
        try:
            task = task_from_row(state, due_at, key, blob)
        except ValueError:
            bad += 1
            continue
        written: list[Op] = [task]
        if once and task.state == "dispatched":
            written.append(SetState((task.job.id,), "dispatched", task.due_at, once=True))
        if record is not None:
            try:
                written.append(PutRecord(decode_record(record)))
            except ValueError:
                bad += 1  # the task is kept, without its earlier attempts
        tasks.append((seq if isinstance(seq, int) else 0, written))
    if bad:
        lost.append(Lost(table="tasks", undecodable=bad))
    tasks.sort(key=lambda pair: pair[0])
    ops: list[Op] = [op for _, written in tasks for op in written]
    bad = 0
    for _, final_at, blob in result_rows:
        try:
            ops.append(PutResult(decode_record(blob), float(final_at)))
        except (ValueError, TypeError):
            bad += 1
    if bad:
        lost.append(Lost(table="results", undecodable=bad))
    bad = 0
    for _, name, last_run, last_id in schedule_rows:
        if isinstance(name, str) and isinstance(last_run, (int, float)) and isinstance(last_id, str):
            ops.append(PutSchedule(name, float(last_run), last_id))
        else:
            bad += 1
    if bad:
        lost.append(Lost(table="schedules", undecodable=bad))
    bad = 0
    for _, started_at, generation, failed, blob in workflow_rows:
        try:
            ops.append(workflow_from_row(started_at, generation, failed, blob))
        except ValueError:
            bad += 1
    if bad:
        lost.append(Lost(table="workflows", undecodable=bad))
    return ops, lost


def _has_table(db: sqlite3.Connection, table: str) -> bool:
    try:
        return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                          (table,)).fetchone() is not None
    except sqlite3.DatabaseError:
        return True  # reading the table says what is wrong


def _has_columns(db: sqlite3.Connection, table: str, *names: str) -> bool:
    try:
        columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
    except sqlite3.DatabaseError:
        return True  # reading the table says what is wrong
    return set(names) <= columns


def _read_table(
    db: sqlite3.Connection, table: str, columns: str, lost: list[Lost]
) -> list[tuple[Any, ...]]:
    """The rows of ``table`` that can be read, in rowid order. Where a read
    fails on a damaged page, the next readable rowid is searched for (a
    doubling probe, then a bisection), and the rowids skipped are noted."""
    query = f"SELECT rowid, {columns} FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT ?"

    def read(after: int, limit: int) -> list[tuple[Any, ...]] | None:
        try:
            return db.execute(query, (after, limit)).fetchall()
        except sqlite3.OperationalError as error:
            if "no such" in str(error):  # the table or a column is not there
                raise
            return None
        except sqlite3.DatabaseError:
            return None

    rows: list[tuple[Any, ...]] = []
    last = _ROWID_MIN
    try:
        while True:
            chunk = read(last, _CHUNK)
            if chunk is None:
                chunk = read(last, 1)
            if chunk is None:
                resume = _next_readable(lambda after: read(after, 1) is not None, last)
                lost.append(Lost(table=table, first=last + 1, last=resume))
                if resume is None:
                    break
                last = resume
                continue
            if not chunk:
                break
            rows.extend(chunk)
            last = chunk[-1][0]
    except sqlite3.DatabaseError as error:
        lost.append(Lost(table=table, reason=str(error)))
    return rows


def _next_readable(readable: Callable[[int], bool], failed: int) -> int | None:
    """The smallest ``after`` past ``failed`` from which reading works
    (``None``: none). Assumes, as a damaged page makes it, that reading
    fails from a range of rowids and works past it."""
    step = 1
    while not readable(probe := failed + step):
        if probe >= _ROWID_MAX:
            return None
        step = min(step * 2, _ROWID_MAX - failed)
    low, high = failed + step // 2 if step > 1 else failed, probe
    while high - low > 1:
        middle = (low + high) // 2
        if readable(middle):
            high = middle
        else:
            low = middle
    return high


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n / (1024 * 1024):.1f} MB"
