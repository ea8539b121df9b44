"""The inbox's conversation with the journal actor (only with a ``journal`` ref).

Each flush starts one write of what was accepted since the last one: a
``JournalWrite`` called, so it is answered once committed. The answered
writes are settled in the order they were made: their tasks are queued,
told to the store and answered ``Accepted``, or forgotten and answered
``JournalUnavailable``. Every other move (dispatched, released, put back,
held for a retry, cancelled, expired) is sent once per flush with nothing
to wait for. At start the inbox takes back what the journal holds. What is
written and what recovery decides is ``journaled``'s; this part talks.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from actors import ActorContext, ActorCrashed
from actors.log import RateLimitedLog
from fastworker.errors import JournalUnavailable
from fastworker.inbox.admission import Admission
from fastworker.inbox.journaled import Unwritten, Write, restore, task_is_at_most_once
from fastworker.internal import JournalWrite, Recover, RecoveredDispatched
from fastworker.journal.file import Recovered
from fastworker.journal.ops import DropTask, Op, SetState
from fastworker.messages import Finished, Job, Queued

__all__ = ["InboxJournal"]

log = logging.getLogger("fastworker.inbox")


class InboxJournal:
    """Writes the inbox's accepted tasks and moves to the journal.

    Args:
        context: the inbox's context (its name, and its ``journal``,
            ``results`` and ``dispatcher`` refs).
        admission: the inbox's admission, which places written tasks.
        flush: the inbox's flush, called once answered writes are settled.
        on_cancelled: told of each task cancelled while it was written
            (the store hears of it in the next flush).
        key_limit: keys remembered for the next attempts of keyed tasks.
        recovery_grace: the inbox's ``recovery_grace`` option.
    """

    def __init__(
        self,
        context: ActorContext,
        admission: Admission,
        *,
        flush: Callable[[], Awaitable[None]],
        on_cancelled: Callable[[str], None],
        key_limit: int,
        recovery_grace: float,
    ) -> None:
        self._context = context
        self._admission = admission
        self._flush = flush
        self._on_cancelled = on_cancelled
        self._recovery_grace = recovery_grace
        #: Accepted tasks not yet written.
        self.unwritten = Unwritten(key_limit)
        #: What the next flush sends the journal besides the write (nobody waits).
        self.ops: list[Op] = []
        self._writing = 0  # writes under way
        self._settling = False  # a task is settling answered writes
        self._written = trio.Event()  # set when the last write under way ends
        self._nursery: trio.Nursery | None = None
        # A full disk refuses every write: one line a minute, not one per write.
        self._refused_log = RateLimitedLog(log, what="refused writes", period=60.0)

    def key(self, task_id: str) -> str:
        """The key a live task holds ("" if none), for its next ``PutTask``."""
        return self.unwritten.keys.get(task_id, "")

    async def setup(self, nursery: trio.Nursery) -> str:
        """From the inbox's ``setup``: writes run in ``nursery``; take back
        what the journal holds and return what was recovered."""
        self._nursery = nursery
        return await self._recover()

    async def send(self, jobs: list[Job]) -> None:
        """From a flush: start writing what was accepted since the last one
        (answered once committed), and send the journal the other moves,
        ``jobs`` dispatched among them."""
        assert self._nursery is not None
        write = self.unwritten.take()
        if write is not None:
            self._writing += 1
            self._nursery.start_soon(self._write, write)
        ops, self.ops = self.ops, []
        ops.extend(SetState(job.id, "dispatched") for job in jobs)
        if ops:
            # No schedule point unless the mailbox is full: the flush goes
            # on to hand the jobs to the dispatcher without a detour.
            await self._context.refs["journal"].send_batch((JournalWrite(ops=tuple(ops)),))

    async def drain(self) -> None:
        """Wait until every write under way is answered (the journal stops
        after the inbox)."""
        while self._writing:
            self._written = trio.Event()
            await self._written.wait()

    def fail_waiting(self) -> None:
        """The inbox stops: whoever waits on a write gets an answer, never a hang."""
        for answers in self.unwritten.waiting_answers():
            answers.fail(ActorCrashed(
                f"{self._context.name} stopped before the journal wrote these tasks"))

    async def _write(self, write: Write) -> None:
        """Write one flush's accepted tasks, then settle what was answered."""
        try:
            try:
                await self._context.refs["journal"].call(JournalWrite(ops=write.ops()))
            except JournalUnavailable as failure:
                write.error = str(failure)
            except (ActorCrashed, trio.BrokenResourceError) as failure:
                # The journal crashed or stopped: it may have committed them.
                write.error = f"the journal did not answer ({failure})"
                self.ops.extend(DropTask(task.job.id) for task in write.tasks)
            write.done = True
            await self._settle_writes()
        finally:
            self._writing -= 1
            if not self._writing:
                self._written.set()

    async def _settle_writes(self) -> None:
        """In the order they were made, queue the tasks of committed writes,
        tell the store and answer Accepted; forget those of failed writes and
        answer JournalUnavailable. One task at a time does it (the others
        leave it their writes), so the levels keep the written order."""
        unwritten, admission = self.unwritten, self._admission
        if self._settling:
            return
        self._settling = True
        try:
            while done := unwritten.done():
                entries = tuple(task.entry for write in done if write.error is None
                                for task in write.tasks)
                if entries:  # known to the store before anyone hears of them
                    await self._context.refs["results"].send_batch((Queued(entries=entries),))
                for write in done:
                    unwritten.settle(write)
                    if write.error is None:
                        for task_id in admission.place_written(write):
                            # Cancelled while it was written: the store hears of it
                            # after its Queued, the journal drops it after its PutTask.
                            self._on_cancelled(task_id)
                            self.ops.append(DropTask(task_id))
                    else:
                        admission.forget_unwritten(write)
                        self._refused_log.event("%s: refused %d tasks: %s", self._context.name,
                                                len(write.tasks), write.error)
                    admission.answered.extend(write.answer())
        finally:
            self._settling = False
        await self._flush()

    async def _recover(self) -> str:
        """Take back what the journal holds (see ``journaled.restore``); tell
        the store and the journal what it became."""
        refs, name = self._context.refs, self._context.name
        recovered: Recovered = await refs["journal"].call(Recover())
        restored = restore(recovered, task_is_at_most_once, name=name,
                           grace=self._recovery_grace)
        self._admission.take_back(restored)
        for key, task_id in restored.keys.items():
            self.unwritten.remember_key(task_id, key)
        reports: list[Any] = []
        if restored.entries:
            reports.append(Queued(entries=tuple(restored.entries)))
        if restored.failed:
            reports.append(Finished(outcomes=tuple(restored.failed)))
        if reports:
            await refs["results"].send_batch(reports)
        if restored.ops:
            await refs["journal"].send(JournalWrite(ops=tuple(restored.ops)))
        if restored.rerun:
            # A late result of one (its worker outlived the restart) cancels its queued copy.
            await refs["dispatcher"].send(
                RecoveredDispatched(ids=tuple(job.id for job in restored.rerun)))
        summary = recovered.summary()
        failed = len(restored.failed)
        if failed:
            summary += f" ({failed} at-most-once dispatched tasks failed as lost, not run again)"
        log.info("%s: recovered %s", name, summary)
        return summary
