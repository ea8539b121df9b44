"""``JournalWriter``: the journal for trio, with group commit.

Actors call ``await writer.write(ops)`` once per handled batch of messages
and get a ``Commit``; ``await commit.wait()`` returns once those ops are on
disk, or raises ``JournalUnavailable``. A ``JournalThread``
(``fastworker.journal.thread``) owns the ``JournalFile`` and commits one
batch at a time; while it commits, new writes gather in the next batch (up
to ``max_batch_ops``), so under load one transaction carries many actors'
writes. A *lazy* write (one nobody waits for soon: a task's dispatched
state, its result) may wait up to ``lazy_interval`` for the next write
somebody waits for, and goes in its transaction: a submission then waits
for one commit, not for the commits of earlier moves first. This module is
the trio side: it fills the batches, releases them, and keeps the counts
the thread reports back through ``TrioToken.run_sync_soon``; a commit's
callbacks (``Commit.add_done_callback``) run from that hand-back. Nothing
here blocks the trio thread on the file.

What it must not do: acknowledge a write it did not commit, hold unbounded
work (``max_pending_ops``: ``write`` waits for room, ``write_nowait``
raises ``trio.WouldBlock``), or give up for good when a commit fails (the
next write is tried again: the disk may have room again).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final, TypeVar, final

import attrs
import trio

from actors.log import RateLimitedLog
from fastworker.errors import JournalUnavailable
from fastworker.journal.commit import Batch, Call, Commit, Storage
from fastworker.journal.file import JournalFile, JournalFileStats, Recovered, Synchronous
from fastworker.journal.ops import Op
from fastworker.journal.thread import HandBack, JournalThread

__all__ = [
    "DEFAULT_CHECKPOINT_EVERY",
    "DEFAULT_CHECKPOINT_INTERVAL",
    "DEFAULT_MAX_BATCH_OPS",
    "DEFAULT_MAX_PENDING_OPS",
    "JournalStats",
    "JournalWriter",
]

log = logging.getLogger("fastworker.journal")

#: Ops in one transaction at most (a single bigger write goes alone).
DEFAULT_MAX_BATCH_OPS: Final = 1024
#: Ops written but not yet committed before ``write`` waits for room.
DEFAULT_MAX_PENDING_OPS: Final = 65_536
#: Commits between two checkpoints of the write-ahead log.
DEFAULT_CHECKPOINT_EVERY: Final = 1000
#: Seconds between two checkpoints when there were commits (also when idle).
DEFAULT_CHECKPOINT_INTERVAL: Final = 10.0

T = TypeVar("T")


@attrs.frozen(kw_only=True)
class JournalStats:
    """A snapshot of the writer, for the dashboard and metrics."""

    path: str
    #: The database and its write-ahead log, as last measured (after the
    #: commit before the last one, or at the last checkpoint).
    bytes: int
    #: False since a commit failed, until one succeeds.
    healthy: bool
    #: Ops written and not yet committed (nor failed).
    pending_ops: int
    pending_writes: int
    max_pending_ops: int
    commits_total: int
    ops_total: int
    #: Commits that failed (each failed all of its writes).
    failures_total: int
    checkpoints_total: int
    #: Wall-clock time of the last successful commit (0: none yet).
    last_commit_at: float
    #: Why the last commit failed ("" if none has).
    last_error: str


@final
class JournalWriter:
    """Commits journal ops on a thread of its own, many writes per
    transaction. Open it with ``async with JournalWriter.open(path) as writer``.

    Writes are applied in the order of the ``write`` calls, and a commit
    that returns means every earlier write is committed or failed too.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_batch_ops: int,
        max_pending_ops: int,
        commit_interval: float,
        lazy_interval: float,
        checkpoint_every: int,
        checkpoint_interval: float,
        log_period: float,
    ) -> None:
        if max_batch_ops < 1 or max_pending_ops < 1:
            raise ValueError("max_batch_ops and max_pending_ops must be at least 1")
        if commit_interval < 0 or lazy_interval < 0:
            raise ValueError(f"commit_interval and lazy_interval must be >= 0, got "
                             f"{commit_interval} and {lazy_interval}")
        self.path = path
        self.max_batch_ops = max_batch_ops
        self.max_pending_ops = max_pending_ops
        self.commit_interval = commit_interval
        self.lazy_interval = lazy_interval
        self._opened = trio.Event()
        self._stopped = trio.Event()
        self._thread = JournalThread(
            path, checkpoint_every=checkpoint_every, checkpoint_interval=checkpoint_interval,
            token=trio.lowlevel.current_trio_token(),
            hand_back=HandBack(opened=self._on_opened, committed=self._on_committed,
                               checkpointed=self._on_checkpointed, broken=self._on_broken,
                               stopped=self._stopped.set),
        )
        # The trio thread's own (the queue is shared, under the thread's condition).
        self._unreleased: Batch | None = None  # the last batch, while it waits for its time
        self._timer_at = math.inf  # when the timer wakes next (it sleeps till then)
        self._timer_wake = trio.Event()
        self._room = trio.lowlevel.ParkingLot()
        self._open_error: BaseException | None = None
        self._closed = False
        self._broken: str | None = None
        self._pending_ops = 0
        self._pending_writes = 0
        self._healthy = True
        self._bytes = 0
        self._commits_total = 0
        self._ops_total = 0
        self._failures_total = 0
        self._checkpoints_total = 0
        self._last_commit_at = 0.0
        self._last_error = ""
        self._failed_log = RateLimitedLog(log, what="failed commits", period=log_period,
                                          level=logging.ERROR)

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        path: Path | str,
        *,
        synchronous: Synchronous = "normal",
        max_batch_ops: int = DEFAULT_MAX_BATCH_OPS,
        max_pending_ops: int = DEFAULT_MAX_PENDING_OPS,
        commit_interval: float = 0.0,
        lazy_interval: float = 0.0,
        checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
        checkpoint_interval: float = DEFAULT_CHECKPOINT_INTERVAL,
        log_period: float = 60.0,
        wrap: Callable[[JournalFile], Storage] | None = None,
    ) -> AsyncIterator[JournalWriter]:
        """Open the journal at ``path`` on a new thread; close it on exit,
        after committing what was written (shielded from cancellation: a
        commit under way always finishes).

        Args:
            path: the journal file (see ``JournalFile.open``).
            synchronous: ``normal`` (survives a process crash) or ``full``
                (also a power loss, at several times the cost per commit).
            max_batch_ops: ops in one transaction at most.
            max_pending_ops: ops written and not yet committed before
                ``write`` waits (a single larger write is let through alone).
            commit_interval: seconds a batch stays open for more writes
                after its first, on trio's clock (0: commit as soon as the
                thread is free; writes still gather while it commits).
            lazy_interval: the same for ``lazy`` writes: a batch of only
                lazy writes stays open this long (0: as any write), and goes
                at once (or at its ``commit_interval``) when another write
                joins it, so that lazy writes ride in the transaction of the
                next write somebody waits for.
            checkpoint_every / checkpoint_interval: checkpoint the
                write-ahead log after this many commits, or this many
                seconds (of real time) when there were commits.
            log_period: at most one line about failing commits per period.
            wrap: wraps the opened file (fault injection in tests).

        Raises:
            JournalLocked / JournalCorrupt / JournalError: from opening it.
        """
        writer = cls(Path(path), max_batch_ops=max_batch_ops, max_pending_ops=max_pending_ops,
                     commit_interval=commit_interval, lazy_interval=lazy_interval,
                     checkpoint_every=checkpoint_every,
                     checkpoint_interval=checkpoint_interval, log_period=log_period)

        def open_storage() -> Storage:
            opened = JournalFile.open(path, synchronous=synchronous)
            return opened if wrap is None else wrap(opened)

        await writer._start(open_storage)
        try:
            async with trio.open_nursery() as nursery:
                if commit_interval > 0 or lazy_interval > 0:
                    nursery.start_soon(writer._release_on_time)
                try:
                    yield writer
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await writer._close()

    # -- writing ------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """False from a failed commit until the next one that succeeds."""
        return self._healthy

    async def write(self, ops: Sequence[Op], *, lazy: bool = False) -> Commit:
        """Queue ``ops`` for the next transaction, waiting while more than
        ``max_pending_ops`` are pending: that wait is how a slow disk slows
        acceptance down.

        Args:
            ops: what to write, in order.
            lazy: nobody waits for this write soon (a move the caller does
                not wait on): it may wait up to ``lazy_interval`` for
                another write, to share its transaction. Its place in the
                order is the same as any write's.

        Returns:
            The ``Commit`` to wait on. Writing no ops gives a barrier: it is
            done when every earlier write is.

        Raises:
            trio.ClosedResourceError: the writer is closed.
            trio.BrokenResourceError: its thread stopped (a bug: logged).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._has_room(len(ops)):
            await self._room.park()
        return self._enqueue(ops, lazy)

    def write_nowait(self, ops: Sequence[Op], *, lazy: bool = False) -> Commit:
        """Like ``write``, or raise ``trio.WouldBlock`` when it would wait."""
        if not self._has_room(len(ops)):
            raise trio.WouldBlock
        return self._enqueue(ops, lazy)

    def _has_room(self, n: int) -> bool:
        if self._closed:
            raise trio.ClosedResourceError(f"the journal {self.path} is closed")
        if self._broken is not None:
            raise trio.BrokenResourceError(self._broken)
        return self._pending_ops == 0 or self._pending_ops + n <= self.max_pending_ops

    def _enqueue(self, ops: Sequence[Op], lazy: bool) -> Commit:
        n = len(ops)
        if n == 0 and self._pending_writes == 0:
            done = Batch(released=True)
            done.done.set()
            return Commit(done, 0)
        wait = self.lazy_interval if lazy else self.commit_interval
        with self._thread.condition:
            queue = self._thread.queue
            batch = queue[-1] if queue else None
            if not isinstance(batch, Batch) or (
                batch.ops and len(batch.ops) + n > self.max_batch_ops
            ):
                if self._unreleased is not None:  # it is followed: it goes at once
                    self._unreleased.released = True
                    self._unreleased = None
                    self._thread.condition.notify()
                batch = Batch(released=False)
                queue.append(batch)
            batch.ops.extend(ops)
            batch.writes.append(n)
            if not batch.released:
                if wait == 0 or len(batch.ops) >= self.max_batch_ops:
                    batch.released = True
                else:
                    # A write waits ``wait`` at most: the batch goes at the
                    # earliest time one of its writes allows.
                    due = trio.current_time() + wait
                    if due < batch.due:
                        batch.due = due
                        self._unreleased = batch
                        if due < self._timer_at:
                            self._timer_wake.set()
                if batch.released:
                    self._thread.condition.notify()
        if batch.released and batch is self._unreleased:
            self._unreleased = None
        self._pending_ops += n
        self._pending_writes += 1
        return Commit(batch, len(batch.writes) - 1)

    async def _release_on_time(self) -> None:
        """Hand the last batch to the thread at its ``due`` time."""
        while True:
            self._timer_wake = trio.Event()
            batch = self._unreleased
            if batch is not None and batch.released:
                self._unreleased = batch = None
            self._timer_at = math.inf if batch is None else batch.due
            if trio.current_time() < self._timer_at:
                with trio.move_on_at(self._timer_at):
                    await self._timer_wake.wait()
                continue
            assert batch is not None
            with self._thread.condition:
                batch.released = True
                self._thread.condition.notify()
            self._unreleased = None

    # -- reading and upkeep (on the thread, in order with the writes) --------------

    async def load(self) -> Recovered:
        """Everything the journal holds, for a restart (``JournalFile.load``)."""
        return await self._call(lambda storage: storage.load())

    async def file_stats(self) -> JournalFileStats:
        """The file's size and rows, counted now."""
        return await self._call(lambda storage: storage.stats())

    async def checkpoint(self) -> None:
        """Checkpoint the write-ahead log now (the writer also does it on its own)."""
        await self._call(self._thread.checkpoint)

    def stats(self) -> JournalStats:
        """A snapshot, at once (no file access)."""
        return JournalStats(
            path=str(self.path), bytes=self._bytes, healthy=self._healthy,
            pending_ops=self._pending_ops, pending_writes=self._pending_writes,
            max_pending_ops=self.max_pending_ops, commits_total=self._commits_total,
            ops_total=self._ops_total, failures_total=self._failures_total,
            checkpoints_total=self._checkpoints_total, last_commit_at=self._last_commit_at,
            last_error=self._last_error,
        )

    async def _call(self, function: Callable[[Storage], T]) -> T:
        self._has_room(0)
        call = Call(function)
        with self._thread.condition:
            self._thread.queue.append(call)
            self._thread.condition.notify()
        with trio.CancelScope(shield=True):  # the thread runs it anyway
            await call.done.wait()
        if call.error is not None:
            raise call.error
        return call.result  # type: ignore[return-value]

    # -- starting and stopping the journal's thread -------------------------------

    async def _start(self, open_storage: Callable[[], Storage]) -> None:
        self._thread.start(open_storage)
        with trio.CancelScope(shield=True):  # the thread opens it anyway: wait for it
            await self._opened.wait()
        if self._open_error is not None:
            await self._stopped.wait()
            raise self._open_error

    async def _close(self) -> None:
        self._closed = True
        self._room.unpark_all()
        self._thread.close()
        await self._stopped.wait()

    # -- back on the trio thread (run_sync_soon: these must not raise) --------------

    def _on_opened(self, error: BaseException | None, size: int) -> None:
        self._open_error = error
        self._bytes = size
        self._opened.set()

    def _on_committed(self, batch: Batch, size: int) -> None:
        self._pending_ops -= len(batch.ops)
        self._pending_writes -= len(batch.writes)
        self._bytes = size
        if batch.committed:
            self._commits_total += 1
            self._ops_total += batch.committed
            self._last_commit_at = time.time()
        failure = batch.failure or next(
            (str(e) for e in batch.errors.values() if isinstance(e, JournalUnavailable)), None)
        if failure is not None:
            self._failures_total += 1
            self._last_error = failure
            self._healthy = False
            self._failed_log.event("%s; writes are refused until one succeeds", failure)
        elif not self._healthy:
            self._healthy = True
            log.warning("journal %s: writing again after %d failed commits", self.path,
                        self._failures_total)
        batch.finish()
        self._room.unpark_all()

    def _on_checkpointed(self, size: int) -> None:
        self._checkpoints_total += 1
        self._bytes = size

    def _on_broken(self, reason: str) -> None:
        self._broken = reason
        self._healthy = False
        self._last_error = reason
        with self._thread.condition:
            left = list(self._thread.queue)
            self._thread.queue.clear()
        for item in left:
            if isinstance(item, Batch):
                item.failure = reason
                self._pending_ops -= len(item.ops)
                self._pending_writes -= len(item.writes)
                item.finish()
            else:
                item.error = trio.BrokenResourceError(reason)
                item.done.set()
        self._room.unpark_all()
