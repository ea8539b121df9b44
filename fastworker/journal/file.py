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
import os
import sqlite3
import time
from collections.abc import Sequence
from itertools import count
from pathlib import Path
from typing import Literal, final

import attrs

from fastworker.journal.errors import JournalCorrupt, JournalError
from fastworker.journal.lock import JournalLock
from fastworker.journal.ops import Op, PutResult, PutSchedule, PutTask
from fastworker.journal.schema import (
    APPLICATION_ID,
    SCHEMA,
    VERSION,
    apply_ops,
    decode_record,
    task_from_row,
)
from fastworker.messages import PROTOCOL_VERSION

__all__ = [
    "JournalFile",
    "JournalFileStats",
    "Recovered",
    "Synchronous",
    "file_bytes",
    "verify",
]

log = logging.getLogger("fastworker.journal")

#: ``PRAGMA synchronous``: ``normal`` survives any process crash (a power
#: loss may lose the last commits); ``full`` also syncs every commit.
Synchronous = Literal["normal", "full"]
_SQLITE_MAGIC = b"SQLite format 3\x00"
#: Free pages above which a checkpoint gives some back to the file system.
_VACUUM_FREE_PAGES = 1024
#: Pages given back per checkpoint (bounded, so a checkpoint stays short).
_VACUUM_STEP = 4096
#: quick_check lines quoted in a refusal.
_PROBLEMS_SHOWN = 2


@attrs.frozen(kw_only=True)
class Recovered:
    """What a journal held, for a restart.

    Tasks come back as the ``PutTask`` that wrote them (state, due time and
    key included); decide with ``dispatched`` whether each runs again.

    Attributes:
        queued: queued tasks, by level then arrival.
        scheduled: scheduled tasks (countdown, eta, a retry's backoff), by ``due_at``.
        dispatched: tasks handed to a worker and not finished, by level then arrival.
        results: stored final records, oldest ``final_at`` first.
        schedules: each schedule's last run.
        keys: idempotency key -> id of the live task holding it.
        unreadable: rows that did not decode (each logged, then skipped).
    """

    queued: tuple[PutTask, ...] = ()
    scheduled: tuple[PutTask, ...] = ()
    dispatched: tuple[PutTask, ...] = ()
    results: tuple[PutResult, ...] = ()
    schedules: tuple[PutSchedule, ...] = ()
    keys: dict[str, str] = attrs.field(factory=dict)
    unreadable: int = 0

    def summary(self) -> str:
        """One line for the log: what came back."""
        line = (f"{len(self.queued)} queued, {len(self.scheduled)} scheduled, "
                f"{len(self.dispatched)} dispatched, {len(self.results)} results, "
                f"{len(self.schedules)} schedules")
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
                verify(path)
            elif not create:
                raise JournalError(path, f"there is no journal at {path}")
            else:
                _refuse_orphan_wal(path)
                _create(path)
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
        unreadable = 0
        rows = db.execute("SELECT id, state, due_at, key, job FROM tasks ORDER BY level, seq")
        for task_id, state, due_at, key, blob in rows:
            try:
                task = task_from_row(state, due_at, key, blob)
            except ValueError as error:
                unreadable += 1
                log.warning("journal %s: skipped task %r: %s", self.path, task_id, error)
                continue
            by_state[task.state].append(task)
            if task.key:
                keys[task.key] = task.job.id
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
        by_state["scheduled"].sort(key=lambda task: task.due_at)
        return Recovered(
            queued=tuple(by_state["queued"]),
            scheduled=tuple(by_state["scheduled"]),
            dispatched=tuple(by_state["dispatched"]),
            results=tuple(results),
            schedules=tuple(schedules),
            keys=keys,
            unreadable=unreadable,
        )

    def stats(self) -> JournalFileStats:
        """The file's size and row counts (counting rows reads the tables)."""
        db = self._db
        tasks, results, schedules = (
            db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("tasks", "results", "schedules")
        )
        return JournalFileStats(path=str(self.path), bytes=self.size(), tasks=tasks,
                                results=results, schedules=schedules)

    def size(self) -> int:
        """Bytes of the database and its write-ahead log."""
        return file_bytes(self.path)

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


def file_bytes(path: Path) -> int:
    """Bytes of the database at ``path`` and its write-ahead log."""
    total = 0
    for name in (path, *_side_files(path)[:1]):
        try:
            total += name.stat().st_size
        except FileNotFoundError:
            pass
    return total


def verify(path: Path) -> None:
    """Check, read-only, that ``path`` is a sound journal of our version.

    Raises:
        JournalCorrupt: it is not (the problem in a few words).
        JournalError: it cannot be read at all.
    """
    if not path.is_file():
        raise JournalError(path, f"the journal {path} is not a regular file")
    try:
        with open(path, "rb") as file:
            head = file.read(len(_SQLITE_MAGIC))
    except OSError as error:
        raise JournalError(path, f"cannot read the journal {path}: {error.strerror}") from None
    if not head:
        raise JournalCorrupt(path, "the file is empty (0 bytes): it was truncated, or was "
                                   "never a journal")
    if head != _SQLITE_MAGIC:
        raise JournalCorrupt(path, "it is not an SQLite database (its first bytes are not "
                                   "SQLite's header)")
    # Reading a WAL database makes its -wal and -shm if missing: those are
    # removed again if the file is refused, so it is left as it was found.
    made = [side for side in _side_files(path) if not side.exists()]
    try:
        _verify_contents(path)
    except BaseException:
        for side in made:
            if side.exists() and (side.name.endswith("-shm") or side.stat().st_size == 0):
                side.unlink()
        raise


def _verify_contents(path: Path) -> None:
    try:
        db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as error:
        raise JournalCorrupt(path, f"SQLite cannot open it: {error}") from None
    try:
        problems = [row[0] for row in db.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise JournalCorrupt(path, f"it is damaged: {_first_lines(problems)}")
        application_id = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as error:
        raise JournalCorrupt(path, f"it is damaged: {error}") from None
    finally:
        db.close()
    if application_id != APPLICATION_ID:
        raise JournalCorrupt(path, "it is an SQLite database, but not a fastworker journal",
                             hint="give the journal another path, or move that file away")
    if version != VERSION:
        raise JournalCorrupt(
            path, f"it is a journal of version {version}, and this fastworker reads version "
                  f"{VERSION}",
            hint="run the fastworker that wrote it, or move it aside with "
                 f"`fastworker journal salvage {path}` (it keeps what this version can read)")


def _side_files(path: Path) -> list[Path]:
    return [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm")]


def _first_lines(problems: list[str]) -> str:
    lines = [line.strip() for text in problems for line in text.splitlines()
             if line.strip() and not line.startswith("*** in database")]
    shown = "; ".join(lines[:_PROBLEMS_SHOWN])
    return shown + (f" (and {len(lines) - _PROBLEMS_SHOWN} more)"
                    if len(lines) > _PROBLEMS_SHOWN else "")


def _refuse_orphan_wal(path: Path) -> None:
    """A write-ahead log without its database holds commits of a journal
    that was deleted or moved: a new file must not meet it."""
    wal = path.with_name(path.name + "-wal")
    if wal.exists():
        raise JournalCorrupt(
            path, f"the file is missing but its write-ahead log {wal} is there",
            hint=f"put the journal back, or move {wal} away to start with an empty journal")


def _create(path: Path) -> None:
    """Make an empty journal at ``path``: built under a temporary name,
    synced, then renamed into place."""
    temporary = path.with_name(f"{path.name}.new-{os.getpid()}")
    temporary.unlink(missing_ok=True)
    try:
        db = sqlite3.connect(temporary, isolation_level=None)
        try:
            db.execute("PRAGMA auto_vacuum = INCREMENTAL")  # before any table exists
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute(f"PRAGMA user_version = {VERSION}")
            db.execute("BEGIN")
            for statement in _statements(SCHEMA):
                db.execute(statement)
            db.executemany("INSERT INTO meta (name, value) VALUES (?, ?)", [
                ("created_at", f"{time.time():.3f}"),
                ("protocol", str(PROTOCOL_VERSION)),
            ])
            db.execute("COMMIT")
        finally:
            db.close()
        fd = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temporary, path)
        _sync_directory(path.parent)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise JournalError(path, f"cannot create the journal {path}: {error.strerror}") from None
    except sqlite3.Error as error:
        temporary.unlink(missing_ok=True)
        raise JournalError(path, f"cannot create the journal {path}: {error}") from None


def _statements(script: str) -> list[str]:
    return [part.strip() for part in script.split(";") if part.strip()]


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
