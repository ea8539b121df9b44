"""The journal: an embedded SQLite file (WAL mode) that keeps what a
control plane must not lose in a crash: accepted tasks until they end,
final results while the store keeps them, each schedule's last run, and
running workflows (and failed ones, for a retry).

``JournalWriter`` is the trio side (group commit on a thread of its own);
``JournalFile`` the file itself, synchronous; ``fastworker.journal.ops`` the
operations actors write; ``fastworker journal check|salvage PATH`` the
commands for a damaged file. docs/durability.md tells the whole story.
"""

from fastworker.journal.commit import Commit as Commit
from fastworker.journal.errors import JournalCorrupt as JournalCorrupt
from fastworker.journal.errors import JournalError as JournalError
from fastworker.journal.errors import JournalLocked as JournalLocked
from fastworker.journal.faults import JournalFaults as JournalFaults
from fastworker.journal.file import JournalFile as JournalFile
from fastworker.journal.file import JournalFileStats as JournalFileStats
from fastworker.journal.file import Recovered as Recovered
from fastworker.journal.ops import DropResult as DropResult
from fastworker.journal.ops import DropSchedule as DropSchedule
from fastworker.journal.ops import DropTask as DropTask
from fastworker.journal.ops import DropWorkflow as DropWorkflow
from fastworker.journal.ops import PutRecord as PutRecord
from fastworker.journal.ops import PutResult as PutResult
from fastworker.journal.ops import PutSchedule as PutSchedule
from fastworker.journal.ops import PutTask as PutTask
from fastworker.journal.ops import PutWorkflow as PutWorkflow
from fastworker.journal.ops import SetState as SetState
from fastworker.journal.writer import JournalStats as JournalStats
from fastworker.journal.writer import JournalWriter as JournalWriter

__all__ = [
    "Commit",
    "DropResult",
    "DropSchedule",
    "DropTask",
    "DropWorkflow",
    "JournalCorrupt",
    "JournalError",
    "JournalFaults",
    "JournalFile",
    "JournalFileStats",
    "JournalLocked",
    "JournalStats",
    "JournalWriter",
    "PutRecord",
    "PutResult",
    "PutSchedule",
    "PutTask",
    "PutWorkflow",
    "Recovered",
    "SetState",
]
