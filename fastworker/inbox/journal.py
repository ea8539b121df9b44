"""The inbox's conversation with the journal actor (only with a ``journal`` ref).

Each flush starts one write of what was accepted since the last one: a
``JournalWrite`` called, so it is answered once committed. The answered
writes are settled in the order they were made: their tasks are queued,
told to the store and answered ``Accepted``, or forgotten and answered
``JournalUnavailable``. Every other move (dispatched, released, put back,
held for a retry, cancelled, expired) is sent once per flush with nothing
to wait for, except that an at-most-once job leaves for the dispatcher
only once its ``dispatched`` is committed (a crash must not bring it back
as queued after it started). At start the inbox takes back what the
journal holds, holds the copies of dispatched tasks for the recovery
grace, and keeps back those a subworker still runs (``adopt``). What is
written and what recovery decides is ``journaled``'s; this part talks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import trio

from actors import ActorContext, ActorCrashed
from actors.log import RateLimitedLog
from fastworker.errors import JournalUnavailable
from fastworker.inbox.admission import Admission
from fastworker.inbox.journaled import (
    Unwritten,
    Write,
    lost_at_most_once,
    restore,
    task_is_at_most_once,
)
from fastworker.internal import Adopted, JournalWrite, Recover, RecoveredDispatched
from fastworker.journal.file import Recovered
from fastworker.journal.ops import DropTask, Op, SetState
from fastworker.messages import Finished, Job, JobBatch, Outcome, Queued

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
        hold_back: given at-most-once jobs whose ``dispatched`` could not
            be written (they did not leave: the inbox holds them a while).
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
        hold_back: Callable[[list[Job]], Awaitable[None]],
        key_limit: int,
        recovery_grace: float,
    ) -> None:
        self._context = context
        self._admission = admission
        self._flush = flush
        self._on_cancelled = on_cancelled
        self._hold_back = hold_back
        #: Task name -> at-most-once, from this process's registry or a subworker.
        self._once: dict[str, bool] = {}
        #: Copies of recovered tasks that a subworker still runs (the
        #: dispatcher said so: ``Adopted``), by id: not to be run again.
        self.adopted: dict[str, Job] = {}
        #: Recovered dispatched at-most-once jobs waiting out the grace, by id:
        #: adopted if a subworker runs them, else failed as lost when it ends.
        self.waiting_once: dict[str, Job] = {}
        #: Their ids (and, of them, those adopted): never run again.
        self.once_ids: frozenset[str] = frozenset()
        self.adopted_once: set[str] = set()
        #: Outcomes of adopted at-most-once tasks whose worker went (the
        #: inbox's next flush sends them to the store).
        self.lost: list[Outcome] = []
        #: While the recovery grace runs: when it ends, and the ids it holds.
        self._grace: tuple[float, frozenset[str]] | None = None
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
        return await self._recover(nursery)

    def advertise_once(self, names: Iterable[str]) -> None:
        """These tasks (a subworker's) are at-most-once too."""
        for name in names:
            self._once[name] = True

    def is_once(self, name: str) -> bool:
        """Whether the task ``name`` is at-most-once (this registry's, or a subworker's)."""
        once = self._once.get(name)
        if once is None:
            once = self._once[name] = task_is_at_most_once(name)
        return once

    async def send(self, jobs: list[Job]) -> list[Job]:
        """From a flush: start writing what was accepted since the last one
        (answered once committed), and send the journal the other moves,
        ``jobs`` dispatched among them. Return the jobs to hand the
        dispatcher now: the at-most-once ones go once their ``dispatched``
        is committed."""
        assert self._nursery is not None
        write = self.unwritten.take()
        if write is not None:
            self._writing += 1
            self._nursery.start_soon(self._write, write)
        ops, self.ops = self.ops, []
        is_once = self.is_once
        once = [job for job in jobs if is_once(job.task)]
        if once:
            jobs = [job for job in jobs if not is_once(job.task)]
        if jobs:
            ops.append(SetState(tuple([job.id for job in jobs]), "dispatched"))
        if ops:
            # No schedule point unless the mailbox is full: the flush goes
            # on to hand the jobs to the dispatcher without a detour.
            await self._context.refs["journal"].send_batch((JournalWrite(ops=tuple(ops)),))
        if once:  # after the ops above, which may concern the same tasks
            self._writing += 1
            self._nursery.start_soon(self._dispatch_once, once)
        return jobs

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

    async def _dispatch_once(self, jobs: list[Job]) -> None:
        """Write that at-most-once ``jobs`` are dispatched, then hand them to
        the dispatcher; if it cannot be written, they do not leave."""
        refs = self._context.refs
        try:
            try:
                await refs["journal"].call(JournalWrite(ops=(
                    SetState(tuple([job.id for job in jobs]), "dispatched", once=True),)))
            except (JournalUnavailable, ActorCrashed, trio.BrokenResourceError) as failure:
                self._refused_log.event("%s: held back %d at-most-once jobs: %s",
                                        self._context.name, len(jobs), failure)
                await self._hold_back(jobs)
            else:
                await refs["dispatcher"].send(JobBatch(jobs=tuple(jobs)))
        finally:
            self._writing -= 1
            if not self._writing:
                self._written.set()

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

    def adopt(self, message: Adopted) -> None:
        """Recovered tasks a subworker still runs: keep their copies from
        running (``running``), forget them (``ended``), or queue them
        (``again``, each after its delay; an at-most-once task whose worker
        went without ending it fails with ``WorkerLost`` instead)."""
        admission = self._admission
        levels, held, recent = admission.levels, admission.held, admission.recent
        adopted = self.adopted
        if message.state == "running":
            for task_id in message.ids:
                job = held.take(task_id) or self.waiting_once.pop(task_id, None)
                if job is None and task_id in levels:
                    job = levels.jobs[task_id]
                    levels.remove(task_id)
                if job is None:
                    continue  # its copy left already: a result will cancel it
                held.forget_deadline(task_id)
                adopted[task_id] = job
                if task_id in self.once_ids:
                    self.adopted_once.add(task_id)
                recent.remember(task_id, "dispatched")
                self.ops.append(SetState((task_id,), "dispatched"))
        elif message.state == "ended":
            for task_id in message.ids:
                adopted.pop(task_id, None)
                self.adopted_once.discard(task_id)
        else:
            delays = message.delays or (0.0,) * len(message.ids)
            now, wall = trio.current_time(), time.time()
            for task_id, delay in zip(message.ids, delays):
                job = adopted.pop(task_id, None)
                if job is None:
                    continue
                if delay <= 0 and (task_id in self.adopted_once
                                   or self.is_once(job.task)):
                    self.lost.append(lost_at_most_once(job, self._context.name))
                    continue
                if delay > 0:
                    held.hold(job, now + delay)
                    recent.remember(task_id, "scheduled")
                    self.ops.append(SetState((task_id,), "scheduled", wall + delay))
                else:
                    levels.push_front(job)
                    recent.remember(task_id, "queued")
                    self.ops.append(SetState((task_id,), "queued"))
                if job.expires_at is not None:
                    held.expire(task_id, now + job.expires_at - wall)

    @property
    def in_grace(self) -> frozenset[str]:
        """The recovered tasks that were dispatched when the control plane
        stopped and wait out the recovery grace (a subworker may still run
        them)."""
        return frozenset() if self._grace is None else self._grace[1]

    async def grace_over(self, now: float) -> None:
        """Once the recovery grace is over (the inbox calls this when held
        jobs are released; a timer of its own calls it too): fail the
        at-most-once tasks no subworker adopted, and say in one line what
        became of the tasks it held: run again, adopted by the subworkers
        that still run them, failed as lost, or ended (their results came)."""
        if self._grace is None or now < self._grace[0]:
            return
        ids = self._grace[1]
        self._grace = None
        lost, self.waiting_once = list(self.waiting_once.values()), {}
        if lost:
            name = self._context.name
            await self._context.refs["results"].send(
                Finished(outcomes=tuple(lost_at_most_once(job, name) for job in lost)))
        levels, held = self._admission.levels, self._admission.held
        again = sum(1 for task_id in ids if task_id in levels or task_id in held)
        adopted = sum(1 for task_id in ids if task_id in self.adopted)
        log.info("%s: recovery grace over: of %d tasks that were dispatched, %d run again, %d "
                 "still run on the subworkers that had them, %d at-most-once failed as lost, "
                 "%d ended meanwhile", self._context.name, len(ids), again, adopted, len(lost),
                 len(ids) - again - adopted - len(lost))

    async def _grace_timer(self, at: float) -> None:
        await trio.sleep_until(at)
        await self.grace_over(at)

    async def _recover(self, nursery: trio.Nursery) -> str:
        """Take back what the journal holds (see ``journaled.restore``); tell
        the store and the journal what it became."""
        refs, name = self._context.refs, self._context.name
        recovered: Recovered = await refs["journal"].call(Recover())
        restored = restore(recovered, self.is_once, name=name,
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
        dispatched = (*restored.rerun, *restored.waiting_once)
        if dispatched:
            # A subworker that still holds one adopts it; a late result of
            # one (its worker outlived the restart) cancels its copy.
            ids = tuple(job.id for job in dispatched)
            await refs["dispatcher"].send(RecoveredDispatched(ids=ids))
            self.waiting_once = {job.id: job for job in restored.waiting_once}
            self.once_ids = frozenset(self.waiting_once)
            if restored.rerun_at is not None:
                self._grace = (restored.rerun_at, frozenset(ids))
                nursery.start_soon(self._grace_timer, restored.rerun_at)
        summary = recovered.summary()
        failed, waiting = len(restored.failed), len(restored.waiting_once)
        if failed:
            summary += f" ({failed} at-most-once dispatched tasks failed as lost, not run again)"
        if waiting:
            summary += (f" ({waiting} at-most-once dispatched tasks wait for the subworkers that "
                        "may still run them, or fail as lost when the grace is over)")
        log.info("%s: recovered %s", name, summary)
        return summary
