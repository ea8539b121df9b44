"""The journal's start-up errors: why a control plane cannot open its
journal. They stop the node before it accepts anything, so they subclass
the runtime's ``StartError`` (``fastworker run`` prints them as one line and
exits 1); clients never see them. A journal that fails while running raises
``fastworker.errors.JournalUnavailable`` instead.

    StartError (actors.errors)
    └── JournalError          the journal cannot be opened (no directory, no permission)
        ├── JournalLocked     another process holds it
        └── JournalCorrupt    not a journal, damaged, or of an unknown version
"""

from __future__ import annotations

from pathlib import Path

from actors.errors import StartError

__all__ = [
    "JournalCorrupt",
    "JournalError",
    "JournalLocked",
    "salvage_hint",
]


def salvage_hint(path: Path | str) -> str:
    """How to recover a damaged journal, for a message."""
    return (f"to keep what can be read and start again, stop every process using it and run "
            f"`fastworker journal salvage {path}` (it moves the damaged file aside, never deletes it)")


class JournalError(StartError):
    """Raised when the journal file cannot be opened or created.

    Attributes:
        path: the journal file.
    """

    def __init__(self, path: Path | str, message: str) -> None:
        self.path = Path(path)
        super().__init__(message)


class JournalLocked(JournalError):
    """Raised when another process holds the journal's lock: two control
    planes never share one journal.

    Attributes:
        pid: the process holding it, or ``None`` if it wrote no pid yet.
    """

    def __init__(self, path: Path | str, pid: int | None) -> None:
        self.pid = pid
        holder = f"process {pid}" if pid is not None else "another process"
        super().__init__(
            path,
            f"the journal {path} is in use by {holder} (lock file {path}.lock); stop that "
            f"process, or give this one another journal (journal = \"...\" or FASTWORKER_JOURNAL)",
        )


class JournalCorrupt(JournalError):
    """Raised when the file at the journal's path cannot be trusted: it is
    not an SQLite database, not a fastworker journal, damaged (truncated, a
    bad page), or of a version this fastworker does not read. The file is
    left as it is.

    Attributes:
        problem: what is wrong, in a few words.
    """

    def __init__(self, path: Path | str, problem: str, *, hint: str | None = None) -> None:
        self.problem = problem
        super().__init__(
            path, f"the journal {path} cannot be used: {problem}; {hint or salvage_hint(path)}"
        )
