"""The journal file on disk, around SQLite: checking an existing file
read-only before it is opened for writing, making a new one so that a crash
never leaves half of one, and its size. A refused file is left exactly as
it was found; nothing here keeps a connection open.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from fastworker.journal.errors import JournalCorrupt, JournalError
from fastworker.journal.schema import APPLICATION_ID, SCHEMA, VERSION
from fastworker.messages import PROTOCOL_VERSION

__all__ = ["create", "file_bytes", "refuse_orphan_wal", "verify"]

_SQLITE_MAGIC = b"SQLite format 3\x00"
#: quick_check lines quoted in a refusal.
_PROBLEMS_SHOWN = 2


def file_bytes(path: Path) -> int:
    """Bytes of the database at ``path`` and its write-ahead log."""
    total = 0
    for name in (path, path.with_name(path.name + "-wal")):
        try:
            total += name.stat().st_size
        except OSError:  # not there (yet), or the disk fails: counted as 0
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


def refuse_orphan_wal(path: Path) -> None:
    """A write-ahead log without its database holds commits of a journal
    that was deleted or moved: a new file must not meet it."""
    wal = path.with_name(path.name + "-wal")
    if wal.exists():
        raise JournalCorrupt(
            path, f"the file is missing but its write-ahead log {wal} is there",
            hint=f"put the journal back, or move {wal} away to start with an empty journal")


def create(path: Path) -> None:
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
