"""``JournalFaults``: make a journal's commits fail on purpose.

For tests of what the control plane does when its disk is full or failing
(ours, and a user's): ``JournalWriter.open(path, wrap=faults.wrap)``, then
``faults.fail()`` until ``faults.heal()``. A failing commit raises what
SQLite raises for a full disk, ``sqlite3.OperationalError("database or disk
is full")``, before anything is written. Switches are thread-safe: the
trio side flips them, the journal's thread reads them.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import final

from fastworker.journal.file import JournalFile, JournalFileStats, Recovered
from fastworker.journal.ops import Op

__all__ = ["DISK_FULL", "FaultyFile", "JournalFaults", "WrappedFile"]

#: SQLite's message for SQLITE_FULL.
DISK_FULL = "database or disk is full"


@final
class JournalFaults:
    """Scripted commit failures, shared by the files it wraps."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failing: str | None = None
        self._fail_next = 0
        self._next_message = DISK_FULL
        #: Commits failed on purpose, and commits let through.
        self.failed_total = 0
        self.applied_total = 0

    def fail(self, message: str = DISK_FULL) -> None:
        """Fail every commit from now on, with ``message``."""
        with self._lock:
            self._failing = message

    def fail_next(self, n: int, message: str = DISK_FULL) -> None:
        """Fail the next ``n`` commits, then let them through again."""
        with self._lock:
            self._fail_next, self._next_message = n, message

    def heal(self) -> None:
        """Let every commit through again."""
        with self._lock:
            self._failing, self._fail_next = None, 0

    def wrap(self, file: JournalFile) -> FaultyFile:
        """``file``, with its commits failing as scripted."""
        return FaultyFile(file, self)

    def _fault(self) -> str | None:
        with self._lock:
            if self._fail_next:
                self._fail_next -= 1
                message: str | None = self._next_message
            else:
                message = self._failing
            if message is None:
                self.applied_total += 1
            else:
                self.failed_total += 1
            return message


class WrappedFile:
    """A ``JournalFile`` seen through a wrapper: everything goes to the file;
    a subclass changes ``apply`` (to fail it, or to hold it)."""

    def __init__(self, file: JournalFile) -> None:
        self.file = file

    @property
    def path(self) -> Path:
        return self.file.path

    def apply(self, ops: Sequence[Op]) -> None:
        self.file.apply(ops)

    def load(self) -> Recovered:
        return self.file.load()

    def stats(self) -> JournalFileStats:
        return self.file.stats()

    def size(self) -> int:
        return self.file.size()

    def checkpoint(self) -> None:
        self.file.checkpoint()

    def close(self) -> None:
        self.file.close()


@final
class FaultyFile(WrappedFile):
    """A ``JournalFile`` whose ``apply`` fails when its ``JournalFaults`` says."""

    def __init__(self, file: JournalFile, faults: JournalFaults) -> None:
        super().__init__(file)
        self.faults = faults

    def apply(self, ops: Sequence[Op]) -> None:
        message = self.faults._fault()
        if message is not None:
            raise sqlite3.OperationalError(message)
        self.file.apply(ops)
