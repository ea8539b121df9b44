"""``JournalThread``: the thread that owns a journal's file and commits it.

``JournalWriter`` (the trio side) queues ``Batch``es and ``Call``s; this
thread takes them in queue order, each once it is released, one at a time.
It commits a batch in one transaction (each write alone when one of them
has a bad op), runs a call, and checkpoints the write-ahead log after
``checkpoint_every`` commits, or ``checkpoint_interval`` seconds when there
were commits. Every outcome goes back to the trio thread through
``TrioToken.run_sync_soon``, as a call of the writer's ``HandBack``.

What it must not do: take a batch before it is released, let a bad op fail
the other writes of its transaction, or stop on a failed commit (the file's
or the disk's fault is reported, and the next batch is tried).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, final

import attrs
import trio

from fastworker.errors import JournalUnavailable
from fastworker.journal.commit import Batch, Call, Storage

__all__ = ["HandBack", "JournalThread"]

log = logging.getLogger("fastworker.journal")

#: Seconds between two measures of the file's size after commits (it is
#: measured at each checkpoint too): a stat per commit, on the thread that
#: hands the commit back, delays trio's taking it (both want the GIL).
SIZE_INTERVAL = 1.0


@final
@attrs.frozen(kw_only=True)
class HandBack:
    """What the journal's thread reports, each called on the trio thread
    through ``run_sync_soon``: none of them may raise."""

    #: The file opened (``None``, and its size in bytes) or failed to (the error, 0).
    opened: Callable[[BaseException | None, int], object]
    #: A batch was committed or failed; the file's size as last measured
    #: (after the commit before, or at the last checkpoint: measuring it
    #: before handing a commit back would delay whoever waits on it).
    committed: Callable[[Batch, int], object]
    #: The write-ahead log was checkpointed; the file's size since.
    checkpointed: Callable[[int], object]
    #: The thread failed (a bug, logged) and takes nothing more: why.
    broken: Callable[[str], object]
    #: The thread has ended and closed the file.
    stopped: Callable[[], object]


@final
class JournalThread:
    """Runs a journal's ``Storage`` on a thread of its own. Start it with
    ``start``; ``close`` lets it commit what is queued and stop.

    The trio side shares ``queue`` with it, under ``condition``: it appends
    batches and calls, marks batches released, and notifies the condition
    when there is something to take.
    """

    def __init__(
        self,
        path: Path,
        *,
        checkpoint_every: int,
        checkpoint_interval: float,
        token: trio.lowlevel.TrioToken,
        hand_back: HandBack,
    ) -> None:
        self.path = path
        self._checkpoint_every = checkpoint_every
        self._checkpoint_interval = checkpoint_interval
        self._token = token
        self._hand_back = hand_back
        # Shared with the trio thread, under the condition's lock.
        self.condition = threading.Condition()
        self.queue: deque[Batch | Call[Any]] = deque()
        self._closing = False
        # The thread's own: the file's size as last measured, and when.
        self._size = 0
        self._sized_at = 0.0

    def start(self, open_storage: Callable[[], Storage]) -> None:
        """Start the thread, which opens the storage first (``HandBack.opened``)."""
        thread = threading.Thread(target=self._main, args=(open_storage,),
                                  name=f"journal {self.path}", daemon=True)
        thread.start()

    def close(self) -> None:
        """Release every queued batch; the thread commits them, then stops
        (``HandBack.stopped``). Called from the trio thread."""
        with self.condition:
            for item in self.queue:
                if isinstance(item, Batch):
                    item.released = True
            self._closing = True
            self.condition.notify()

    def checkpoint(self, storage: Storage) -> None:
        """Checkpoint the write-ahead log; a failure is logged, not raised.
        On the thread (the trio side queues it as a ``Call``)."""
        try:
            storage.checkpoint()
        except Exception as error:
            log.warning("journal %s: checkpoint failed: %s", self.path, error)
            return
        self._measure(storage)
        self._soon(self._hand_back.checkpointed, self._size)

    # -- on the thread --------------------------------------------------------------

    def _main(self, open_storage: Callable[[], Storage]) -> None:
        try:
            storage = open_storage()
        except BaseException as error:
            self._soon(self._hand_back.opened, error, 0)
            self._soon(self._hand_back.stopped)
            return
        self._measure(storage)
        self._soon(self._hand_back.opened, None, self._size)
        try:
            self._serve(storage)
        except BaseException as error:  # a bug: fail what is left, say so, stop
            log.exception("journal %s: the writer's thread failed", self.path)
            self._soon(self._hand_back.broken, f"the journal {self.path} stopped writing: "
                                               f"{type(error).__name__}: {error}")
        finally:
            try:
                storage.close()
            except Exception:
                log.exception("journal %s: closing failed", self.path)
            self._soon(self._hand_back.stopped)

    def _serve(self, storage: Storage) -> None:
        since_checkpoint = 0
        last_checkpoint = time.monotonic()
        while True:
            wait = max(0.0, last_checkpoint + self._checkpoint_interval - time.monotonic())
            item = self._take(wait if since_checkpoint else None)
            if isinstance(item, Call):
                self._run_call(storage, item)
                continue
            if item is None:  # idle for a while, or closing with nothing left
                if since_checkpoint:
                    self.checkpoint(storage)
                    since_checkpoint, last_checkpoint = 0, time.monotonic()
                if self._closing:
                    return
                continue
            self._commit(storage, item)
            self._soon(self._hand_back.committed, item, self._size)
            if time.monotonic() - self._sized_at >= SIZE_INTERVAL:
                self._measure(storage)
            since_checkpoint += 1
            if (since_checkpoint >= self._checkpoint_every
                    or time.monotonic() - last_checkpoint >= self._checkpoint_interval):
                self.checkpoint(storage)
                since_checkpoint, last_checkpoint = 0, time.monotonic()

    def _measure(self, storage: Storage) -> None:
        self._size = storage.size()
        self._sized_at = time.monotonic()

    def _take(self, timeout: float | None) -> Batch | Call[Any] | None:
        """The next item the thread may take; ``None`` when it waited
        ``timeout`` for nothing, or when closing found the queue empty."""
        with self.condition:
            while True:
                queue = self.queue
                if queue and queue[0].released:
                    return queue.popleft()
                if self._closing and not queue:
                    return None
                if not self.condition.wait(timeout):
                    return None

    def _commit(self, storage: Storage, batch: Batch) -> None:
        if not batch.ops:  # a barrier: nothing to write
            return
        try:
            storage.apply(batch.ops)
        except Exception as error:
            if _is_fault(error):
                batch.failure = self._unavailable(error)
            elif len(batch.writes) == 1:
                batch.errors[0] = error
            else:
                self._commit_one_by_one(storage, batch)
        else:
            batch.committed = len(batch.ops)

    def _commit_one_by_one(self, storage: Storage, batch: Batch) -> None:
        """A write with a bad op failed the transaction: commit each write
        alone, so only the bad one fails."""
        start = 0
        for index, n in enumerate(batch.writes):
            ops, start = batch.ops[start:start + n], start + n
            try:
                storage.apply(ops)
            except Exception as error:
                batch.errors[index] = (
                    JournalUnavailable(self._unavailable(error)) if _is_fault(error) else error)
            else:
                batch.committed += n

    def _unavailable(self, error: Exception) -> str:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        return f"the journal at {self.path} cannot be written: {reason or type(error).__name__}"

    def _run_call(self, storage: Storage, call: Call[Any]) -> None:
        try:
            call.result = call.function(storage)
        except Exception as error:
            call.error = error
        self._soon(call.done.set)

    def _soon(self, function: Callable[..., object], *args: Any) -> None:
        """Hand ``function(*args)`` to the trio thread."""
        try:
            self._token.run_sync_soon(function, *args)
        except trio.RunFinishedError:  # trio is gone: nobody is waiting
            pass


def _is_fault(error: Exception) -> bool:
    """Whether a failed commit is the file's or the disk's fault (try again
    later), rather than a bad op's (never works)."""
    return isinstance(error, (sqlite3.OperationalError, OSError, MemoryError)) or type(error) in (
        sqlite3.DatabaseError, sqlite3.InternalError)
