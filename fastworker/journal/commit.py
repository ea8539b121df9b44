"""What the trio side and the journal's thread pass each other: a
``Batch`` of writes that go in one transaction, a ``Call`` to run on the
thread, the ``Commit`` a writer waits on, and the ``Storage`` the thread
writes to. A batch belongs to the trio thread while it is the last in the
queue, to the journal's thread once taken, and comes back through
``run_sync_soon``: neither side touches it while the other owns it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic, Protocol, TypeVar, final

import trio

from fastworker.errors import JournalUnavailable
from fastworker.journal.file import JournalFileStats, Recovered
from fastworker.journal.ops import Op

__all__ = ["Batch", "Call", "Commit", "Storage"]

log = logging.getLogger("fastworker.journal")

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

    __slots__ = ("ops", "writes", "released", "due", "done", "callbacks", "failure", "errors",
                 "committed")

    def __init__(self, *, released: bool) -> None:
        self.ops: list[Op] = []
        #: How many ops each write added, in order.
        self.writes: list[int] = []
        #: Whether the thread may take it (not before its time, see ``due``).
        self.released = released
        #: Trio time at which the writer releases it (``inf``: not by time).
        self.due = math.inf
        self.done = trio.Event()
        #: ``(write index, callback)`` to call once done (``Commit.add_done_callback``).
        self.callbacks: list[tuple[int, Callable[[Exception | None], object]]] = []
        #: Why the whole batch failed (None: it did not).
        self.failure: str | None = None
        #: Errors of single writes, by index (a bad op fails only its own write).
        self.errors: dict[int, Exception] = {}
        #: Ops committed.
        self.committed = 0

    def error(self, index: int) -> Exception | None:
        """Why write ``index`` was not written (``None``: it was, once done)."""
        error = self.errors.get(index)
        if error is not None:
            return error
        if self.failure is not None:
            return JournalUnavailable(self.failure)
        return None

    def finish(self) -> None:
        """On the trio thread, once committed or failed: wake the waiters and
        call the callbacks (an exception of one is logged, never raised)."""
        self.done.set()
        callbacks, self.callbacks = self.callbacks, []
        for index, callback in callbacks:
            self.call_back(index, callback)

    def call_back(self, index: int, callback: Callable[[Exception | None], object]) -> None:
        """``callback`` with write ``index``'s outcome; an exception it raises is logged."""
        try:
            callback(self.error(index))
        except Exception:
            log.exception("a journal commit's callback failed")


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

    def add_done_callback(self, callback: Callable[[Exception | None], object]) -> None:
        """Call ``callback(None)`` once the write is committed, or
        ``callback(error)`` with what ``wait`` would raise; on the trio
        thread, as the writer learns of it (at once if it is done). It must
        not wait; an exception it raises is logged."""
        batch = self._batch
        if batch.done.is_set():
            batch.call_back(self._index, callback)
        else:
            batch.callbacks.append((self._index, callback))

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
        error = batch.error(self._index)
        if error is not None:
            raise error
