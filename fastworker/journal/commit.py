"""What the trio side and the journal's thread pass each other: a
``Batch`` of writes that go in one transaction, a ``Call`` to run on the
thread, the ``Commit`` a writer waits on, and the ``Storage`` the thread
writes to. A batch belongs to the trio thread while it is the last in the
queue, to the journal's thread once taken, and comes back through
``run_sync_soon``: neither side touches it while the other owns it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic, Protocol, TypeVar, final

import trio

from fastworker.errors import JournalUnavailable
from fastworker.journal.file import JournalFileStats, Recovered
from fastworker.journal.ops import Op

__all__ = ["Batch", "Call", "Commit", "Storage"]

T = TypeVar("T")


class Storage(Protocol):
    """What the writer needs of a journal file: ``JournalFile``, or a
    wrapper around one (``JournalFaults.wrap``)."""

    @property
    def path(self) -> Path: ...

    def apply(self, ops: Sequence[Op]) -> None: ...

    def load(self) -> Recovered: ...

    def stats(self) -> JournalFileStats: ...

    def size(self) -> int: ...

    def checkpoint(self) -> None: ...

    def close(self) -> None: ...


class Batch:
    """Writes that go in one transaction. The trio thread appends to it while
    it is the last in the queue; the journal's thread owns it once taken,
    and hands it back through ``run_sync_soon``."""

    __slots__ = ("ops", "writes", "released", "created_at", "done", "failure", "errors",
                 "committed")

    def __init__(self, *, released: bool, created_at: float) -> None:
        self.ops: list[Op] = []
        #: How many ops each write added, in order.
        self.writes: list[int] = []
        #: Whether the thread may take it (with a commit interval, not before its time).
        self.released = released
        self.created_at = created_at
        self.done = trio.Event()
        #: Why the whole batch failed (None: it did not).
        self.failure: str | None = None
        #: Errors of single writes, by index (a bad op fails only its own write).
        self.errors: dict[int, Exception] = {}
        #: Ops committed.
        self.committed = 0


class Call(Generic[T]):
    """A function to run on the journal's thread, in order with the batches."""

    __slots__ = ("function", "done", "result", "error")
    released = True

    def __init__(self, function: Callable[[Storage], T]) -> None:
        self.function = function
        self.done = trio.Event()
        self.result: T | None = None
        self.error: BaseException | None = None


@final
class Commit:
    """The outcome of one ``write``: ``await wait()`` until it is durable."""

    __slots__ = ("_batch", "_index")

    def __init__(self, batch: Batch, index: int) -> None:
        self._batch = batch
        self._index = index

    @property
    def done(self) -> bool:
        """Whether it was committed or failed."""
        return self._batch.done.is_set()

    async def wait(self) -> None:
        """Wait until the write is committed.

        Raises:
            JournalUnavailable: it was not written (disk full, I/O error);
                the message says why. Nothing of it is in the journal.
            TypeError / ValueError: it could not be written at all (an op of
                a bug); the other writes of its transaction were committed.
        """
        batch = self._batch
        await batch.done.wait()
        error = batch.errors.get(self._index)
        if error is not None:
            raise error
        if batch.failure is not None:
            raise JournalUnavailable(batch.failure)
