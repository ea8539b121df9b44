"""``JournalFile``: the journal's SQLite file, synchronously, from one thread.

It opens (or creates) the file under its lock, refuses one it cannot trust,
applies batches of ops in one transaction each, loads everything a restart
needs, and checkpoints. It knows nothing of trio: ``JournalWriter`` runs it
on a thread of its own, and the CLI's ``check`` and ``salvage`` use it
directly. It never blocks on another process (the lock is taken without
waiting), never overwrites or empties a file it refused, and is used from
one thread at a time.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from itertools import count
from pathlib import Path
from typing import Literal, final

import attrs

from fastworker.journal import disk
from fastworker.journal.errors import JournalError
from fastworker.journal.lock import JournalLock
from fastworker.journal.ops import Op, PutRecord, PutResult, PutSchedule, PutTask, PutWorkflow
from fastworker.journal.schema import apply_ops, decode_record, task_from_row, workflow_from_row

__all__ = ["JournalFile", "JournalFileStats", "Recovered", "Synchronous"]

log = logging.getLogger("fastworker.journal")

#: ``PRAGMA synchronous``: ``normal`` survives any process crash (a power
#: loss may lose the last commits); ``full`` also syncs every commit.
Synchronous = Literal["normal", "full"]
#: Free pages above which a checkpoint gives some back to the file system.
_VACUUM_FREE_PAGES = 1024
#: Pages given back per checkpoint (bounded, so a checkpoint stays short).
_VACUUM_STEP = 4096


@attrs.frozen(kw_only=True)
class Recovered:
    """What a journal held, for a restart.

    Tasks come back as the ``PutTask`` that wrote them (state, due time and
    key included); decide with ``dispatched`` whether each runs again.

    Attributes:
        queued: queued tasks, by level then arrival.
        scheduled: scheduled tasks (countdown, eta, a retry's backoff), by ``due_at``.
        dispatched: tasks handed to a worker and not finished, by level then arrival.
        once: of ``dispatched``, the ids of at-most-once tasks (``SetState.once``).
        records: the records of live tasks that failed an attempt (``PutRecord``).
        results: stored final records, oldest ``final_at`` first.
        schedules: each schedule's last run.
        workflows: running workflows, and failed ones kept for a retry,
            oldest first.
        keys: idempotency key -> id of the live task holding it.
        unreadable: rows that did not decode (each logged, then skipped).
    """

    queued: tuple[PutTask, ...] = ()
    scheduled: tuple[PutTask, ...] = ()
    dispatched: tuple[PutTask, ...] = ()
    once: frozenset[str] = frozenset()
    records: tuple[PutRecord, ...] = ()
    results: tuple[PutResult, ...] = ()
    schedules: tuple[PutSchedule, ...] = ()
    workflows: tuple[PutWorkflow, ...] = ()
    keys: dict[str, str] = attrs.field(factory=dict)
    unreadable: int = 0

    def summary(self) -> str:
        """One line for the log: what came back."""
        line = (f"{len(self.queued)} queued, {len(self.scheduled)} scheduled, "
                f"{len(self.dispatched)} dispatched, {len(self.results)} results, "
                f"{len(self.schedules)} schedules, {len(self.workflows)} workflows")
        return line + (f"; {self.unreadable} unreadable rows skipped" if self.unreadable else "")


@attrs.frozen(kw_only=True)
class JournalFileStats:
    """The file's size and rows."""

    path: str
    #: The database and its write-ahead log, in bytes.
    bytes: int
    tasks: int
    results: int
    schedules: int
    workflows: int = 0


@final
class JournalFile:
    """One journal file, open and locked. Make it with ``JournalFile.open``."""

    def __init__(self, path: Path, db: sqlite3.Connection, lock: JournalLock) -> None:
        self.path = path
        self._db = db
        self._lock = lock
        last = db.execute("SELECT max(seq) FROM tasks").fetchone()[0]
        self._seq = count((last or 0) + 1)

    @classmethod
    def open(
        cls,
        path: Path | str,
        *,
        synchronous: Synchronous = "normal",
        create: bool = True,
        lock: JournalLock | None = None,
    ) -> JournalFile:
        """Lock and open the journal at ``path``, creating it if missing.

        An existing file is checked first, read-only: SQLite's header,
        ``PRAGMA quick_check``, the application id and the version. A new
        file is made under a temporary name and renamed into place, so a
        crash while creating never leaves a half-made journal.

        Args:
            path: the database file; ``PATH-wal``, ``PATH-shm`` and
                ``PATH.lock`` live beside it.
            synchronous: ``normal`` or ``full`` (see ``Synchronous``).
            create: make the file when missing (``False``: ``JournalError``).
            lock: a lock already held on ``path`` (salvage's); the file owns
                it from here on.

        Raises:
            JournalLocked: another process has it open.
            JournalCorrupt: the file is not a journal this fastworker can
                use; it is left as it is.
            JournalError: it cannot be opened or created (no such directory,
                no permission).
        """
        path = Path(path)
        if synchronous not in ("normal", "full"):
            raise ValueError(f"synchronous must be 'normal' or 'full', got {synchronous!r}")
        if not create and not (path.exists() or path.is_symlink()):
            raise JournalError(path, f"there is no journal at {path}")
        if lock is None:
            if not path.parent.is_dir():
                raise JournalError(path, f"cannot create the journal {path}: the directory "
                                         f"{path.parent} does not exist")
            lock = JournalLock.acquire(path)
        try:
            if path.exists() or path.is_symlink():
                disk.verify(path)
            elif not create:
                raise JournalError(path, f"there is no journal at {path}")
            else:
                disk.refuse_orphan_wal(path)
                disk.create(path)
            db = _connect(path, synchronous)
        except BaseException:
            lock.release()
            raise
        return cls(path, db, lock)

    # -- writing ------------------------------------------------------------------

    def apply(self, ops: Sequence[Op]) -> None:
        """Apply ``ops`` in one transaction, in order; durable on return.

        Raises:
            sqlite3.Error: the write failed (disk full, I/O error); nothing
                of ``ops`` was applied.
            TypeError / ValueError: an item cannot be written (a bug in its
                sender); nothing was applied.
        """
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            apply_ops(db, ops, self._seq.__next__)
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise

    def checkpoint(self) -> None:
        """Copy the write-ahead log into the database and truncate it, and
        give free pages back when many are free (after a burst drained)."""
        db = self._db
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        if free > _VACUUM_FREE_PAGES:
            # Each step of this pragma frees one page, and execute() steps
            # once; executescript steps it to the end (no transaction is open).
            db.executescript(f"PRAGMA incremental_vacuum({_VACUUM_STEP});")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    # -- reading ------------------------------------------------------------------

    def load(self) -> Recovered:
        """Read everything a restart needs (see ``Recovered``).

        A row that does not decode is logged, counted and skipped.
        """
        db = self._db
        by_state: dict[str, list[PutTask]] = {"queued": [], "scheduled": [], "dispatched": []}
        keys: dict[str, str] = {}
        once: set[str] = set()
        records: list[PutRecord] = []
        unreadable = 0
        rows = db.execute(
            "SELECT id, state, due_at, key, job, once, record FROM tasks ORDER BY level, seq")
        for task_id, state, due_at, key, blob, at_most_once, record in rows:
            try:
                task = task_from_row(state, due_at, key, blob)
            except ValueError as error:
                unreadable += 1
                log.warning("journal %s: skipped task %r: %s", self.path, task_id, error)
                continue
            if record is not None:
                try:
                    records.append(PutRecord(decode_record(record)))
                except ValueError as error:  # the task runs on without its earlier attempts
                    unreadable += 1
                    log.warning("journal %s: skipped the record of task %r: %s", self.path,
                                task_id, error)
            by_state[task.state].append(task)
            if task.key:
                keys[task.key] = task.job.id
            if at_most_once and task.state == "dispatched":
                once.add(task.job.id)
        results = []
        for task_id, final_at, blob in db.execute(
            "SELECT id, final_at, record FROM results ORDER BY final_at"
        ):
            try:
                results.append(PutResult(decode_record(blob), float(final_at)))
            except (ValueError, TypeError) as error:
                unreadable += 1
                log.warning("journal %s: skipped result %r: %s", self.path, task_id, error)
        schedules = [
            PutSchedule(name, float(last_run), last_id)
            for name, last_run, last_id in db.execute(
                "SELECT name, last_run, last_id FROM schedules ORDER BY name")
        ]
        workflows = []
        for workflow_id, started_at, generation, failed, blob in db.execute(
            "SELECT id, started_at, generation, failed, start FROM workflows ORDER BY started_at"
        ):
            try:
                workflows.append(workflow_from_row(started_at, generation, failed, blob))
            except ValueError as error:
                unreadable += 1
                log.warning("journal %s: skipped workflow %r: %s", self.path, workflow_id, error)
        by_state["scheduled"].sort(key=lambda task: task.due_at)
        return Recovered(
            queued=tuple(by_state["queued"]),
            scheduled=tuple(by_state["scheduled"]),
            dispatched=tuple(by_state["dispatched"]),
            once=frozenset(once),
            records=tuple(records),
            results=tuple(results),
            schedules=tuple(schedules),
            workflows=tuple(workflows),
            keys=keys,
            unreadable=unreadable,
        )

    def stats(self) -> JournalFileStats:
        """The file's size and row counts (counting rows reads the tables)."""
        db = self._db
        tasks, results, schedules, workflows = (
            db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("tasks", "results", "schedules", "workflows")
        )
        return JournalFileStats(path=str(self.path), bytes=self.size(), tasks=tasks,
                                results=results, schedules=schedules, workflows=workflows)

    def size(self) -> int:
        """Bytes of the database and its write-ahead log."""
        return disk.file_bytes(self.path)

    def integrity_check(self) -> list[str]:
        """SQLite's full ``PRAGMA integrity_check``: ``[]`` when sound, else
        its problems (slower than the ``quick_check`` of ``open``)."""
        found = [row[0] for row in self._db.execute("PRAGMA integrity_check")]
        return [] if found == ["ok"] else found

    def close(self) -> None:
        """Close the file (checkpointing it) and release the lock (idempotent)."""
        try:
            self._db.close()
        finally:
            self._lock.release()


def _connect(path: Path, synchronous: Synchronous) -> sqlite3.Connection:
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as error:
        raise JournalError(path, f"cannot open the journal {path}: {error}") from None
    try:
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise JournalError(path, f"cannot put the journal {path} in WAL mode (got {mode})")
        db.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    except sqlite3.Error as error:
        db.close()
        raise JournalError(path, f"cannot open the journal {path}: {error}") from None
    except BaseException:
        db.close()
        raise
    return db


def _rollback(db: sqlite3.Connection) -> None:
    """Roll back what is left of a failed transaction (SQLite may have done
    it already, and a rollback on a failing disk may fail too)."""
    if db.in_transaction:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            pass
