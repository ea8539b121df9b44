"""``JournalLock``: one process per journal.

An exclusive ``flock`` on ``PATH.lock``, taken without waiting; the file
holds the owner's pid so a refusal can name it. The kernel drops the lock
when its holder exits, however it exits (SIGKILL too), so a stale lock file
never blocks a restart. The lock file stays after ``release``: removing it
would race with a process taking it. POSIX only (``fcntl``).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import final

from fastworker.journal.errors import JournalError, JournalLocked

__all__ = ["JournalLock"]


@final
class JournalLock:
    """The lock of the journal at ``path``, held until ``release``."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: Path | str) -> JournalLock:
        """Take the lock of the journal at ``path``.

        Raises:
            JournalLocked: another process holds it (the message names it).
            JournalError: the lock file cannot be created (no such
                directory, no permission).
        """
        path = Path(path)
        lock_path = path.with_name(path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as error:
            raise JournalError(path, f"cannot create the journal's lock file {lock_path}: "
                                     f"{error.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise JournalLocked(path, pid) from None
        except OSError as error:
            os.close(fd)
            raise JournalError(path, f"cannot lock {lock_path}: {error.strerror}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Let another process take the journal (idempotent)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor drops the flock


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None
