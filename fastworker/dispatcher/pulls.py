"""The Dispatcher's answers to subworkers' Pulls, and the acknowledgement
of what they carried.

A subworker keeps one Pull waiting (parked here until jobs are placed for
it, or its wait is over). Pulls are numbered: every copy of Pull N gets the
same answer, a copy older than the newest seen (one the network delayed or
repeated) gets no jobs, and Pull N+1, or a Report saying ``assigned = N``,
acknowledges the jobs of the answer to Pull N. An answer with jobs not
acknowledged within ``ack_timeout`` is overdue: ``Subworkers.take_back``
queues its jobs again. Nothing here places jobs or sends messages; it only
fills the answers of the workers edge's requests.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from actors.log import RateLimitedLog
from actors.requests import Answers
from actors.timers import DueHeap, Timer
from fastworker.dispatcher.outgoing import Outgoing
from fastworker.dispatcher.placement import WorkerAccount, job_bytes
from fastworker.messages import Assign, Finished, Job, Outcome, Pull, RemoteError

__all__ = ["Pulls"]

log = logging.getLogger("fastworker.dispatcher")


@attrs.define(eq=False)
class _ParkedPull:
    """A worker's Pull waiting for jobs: the answer of its request that it
    fills, and its sequence number."""

    worker: WorkerAccount
    answers: Answers
    index: int
    seq: int


class Pulls:
    """Parked Pulls, and the Assigns not yet acknowledged.

    ``timer`` answers parked Pulls whose wait is over and ``ack_timer``
    finds overdue Assigns; the Dispatcher runs both in its nursery.

    Args:
        name: the Dispatcher's name, for log lines.
        counts: the Dispatcher's counters; this adds ``stale_pulls`` and
            ``too_large``.
        out: where the outcomes of jobs too large to send go.
        pull_wait_max: the longest a Pull is parked, in seconds.
        ack_timeout: seconds an Assign with jobs may go unacknowledged.
        max_assign_bytes: about the most bytes of jobs one Assign carries
            (a worker's own ``max_assign_bytes``, if it has one, instead).
        max_job_bytes: the most bytes one job may take; a job larger fails
            (``JobTooLarge``; a worker's own ``max_job_bytes`` likewise).
        on_overdue: awaited by ``ack_timer`` when Assigns fall overdue (they
            wait in ``overdue``).
    """

    def __init__(self, name: str, counts: Counter[str], out: Outgoing, *, pull_wait_max: float,
                 ack_timeout: float, max_assign_bytes: int, max_job_bytes: int,
                 on_overdue: Callable[[], Awaitable[None]] | None) -> None:
        self._name = name
        self._counts = counts
        self._out = out
        self._pull_wait_max = pull_wait_max
        self.ack_timeout = ack_timeout
        self.max_assign_bytes = max_assign_bytes
        self.max_job_bytes = max_job_bytes
        self._on_overdue = on_overdue
        #: Parked Pulls by worker name, due when their wait is over.
        self._parked: DueHeap[str, _ParkedPull] = DueHeap()
        self.timer = Timer(lambda: self._parked.next_at, self._expire)
        #: Workers whose last Assign with jobs is not yet acknowledged, due
        #: ``ack_timeout`` after it was made.
        self._unacknowledged: DueHeap[str, WorkerAccount] = DueHeap()
        self.ack_timer = Timer(lambda: self._unacknowledged.next_at, self._overdue)
        #: Workers whose last Assign fell overdue, by name, with the number
        #: of the Pull it answered, until ``take_back`` (an acknowledgement
        #: that arrives before it still counts).
        self.overdue: dict[str, tuple[WorkerAccount, int]] = {}
        self._stale_log = RateLimitedLog(log, what="stale Pulls", period=60.0,
                                         level=logging.INFO)
        self._too_large_log = RateLimitedLog(log, what="jobs too large", period=60.0)

    def is_parked(self, worker: WorkerAccount) -> bool:
        """Whether the worker has a Pull parked."""
        return worker.name in self._parked

    def pull(self, worker: WorkerAccount, pull: Pull, answers: Answers, index: int, *,
             may_wait: bool) -> Assign | None:
        """The answer to a subworker's Pull, or ``None`` when it is parked.

        Every copy of Pull N gets the same jobs, and only Pull N+1 (or a
        Report saying ``assigned = N``) tells that the worker has them: a
        copy older than the newest Pull seen is stale and gets nothing, or
        its jobs would go to a request nobody waits on any more.
        """
        seq = pull.seq
        if seq < worker.pull_seen:
            self._counts["stale_pulls"] += 1
            self._stale_log.event(
                "%s: stale Pull %d from worker %s (its newest is %d): a delayed copy, answered "
                "with no jobs", self._name, seq, worker.name, worker.pull_seen)
            return Assign(jobs=(), sent_at=time.time())
        if seq == worker.pull_seq:
            # Its answer was lost on the way: the same again, stamped anew
            # (the deadlines' time left is counted from now).
            return attrs.evolve(worker.last_assign, sent_at=time.time())
        if seq == worker.pull_seen:
            # A copy of the parked Pull: whichever answer the worker reads,
            # the other copies get the same one, so the parked copy is
            # answered now and this one like a resend.
            self.answer(worker)
            return attrs.evolve(worker.last_assign, sent_at=time.time())
        # A new Pull: the worker has the answer to the one before.
        self.acknowledged(worker)
        worker.pull_seen = seq
        if (worker.outbox or worker.cancel or worker.give_back or worker.health == "draining"
                or not may_wait):
            return self.take_outbox(worker, seq)
        self._park(worker, pull, answers, index)
        return None

    def acknowledged(self, worker: WorkerAccount) -> None:
        """The worker has the jobs of its last Assign."""
        self._unacknowledged.discard(worker.name)
        self.overdue.pop(worker.name, None)

    # -- parked Pulls --------------------------------------------------------------

    def _park(self, worker: WorkerAccount, pull: Pull, answers: Answers, index: int) -> None:
        # An older Pull still parked is one the worker no longer waits on
        # (it has sent a newer one): sent home with nothing, its jobs kept.
        self.answer(worker, Assign(jobs=(), sent_at=time.time()))
        answers.later()
        wait = pull.wait if pull.wait >= 0.0 else 0.0  # NaN, from a signed peer, is 0 too
        deadline = trio.current_time() + min(wait, self._pull_wait_max)
        self._parked.push(deadline, worker.name, _ParkedPull(worker, answers, index, pull.seq))
        self.timer.arm(deadline)

    def answer(self, worker: WorkerAccount, value: Any = None) -> None:
        """Answer the worker's parked Pull, if it has one: with ``value``, or
        else with its outbox."""
        parked = self._parked.discard(worker.name)
        if parked is not None:
            self._fill(parked, value)

    def _expire(self, now: float) -> None:
        """Answer the parked Pulls whose wait is over (with nothing, usually)."""
        for parked in self._parked.pop_due(now):
            self._fill(parked, None)

    def _fill(self, parked: _ParkedPull, value: Any) -> None:
        if value is None:
            value = self.take_outbox(parked.worker, parked.seq)
        parked.answers.fill(parked.index, value)
        parked.answers.send()  # unless its request is still being handled

    def take_outbox(self, worker: WorkerAccount, seq: int) -> Assign:
        """The answer to the worker's Pull ``seq``: what of its outbox fits
        one frame, and the tasks to stop."""
        limit = worker.max_job_bytes or self.max_job_bytes
        jobs, too_large = worker.take_outbox(worker.max_assign_bytes or self.max_assign_bytes,
                                             limit)
        if too_large:
            self._fail_too_large(worker, too_large, limit)
        cancel, worker.cancel = worker.cancel, []
        give_back, worker.give_back = worker.give_back, False
        worker.pull_seq = seq
        # Stamped with this clock: the subworker keeps the deadlines' time
        # left, not our clock (fastworker.deadlines).
        worker.last_assign = Assign(jobs=tuple(jobs), cancel=tuple(cancel), sent_at=time.time(),
                                    give_back=give_back)
        if jobs:
            due = trio.current_time() + self.ack_timeout
            self._unacknowledged.push(due, worker.name, worker)
            self.ack_timer.arm(due)
        return worker.last_assign

    def _fail_too_large(self, worker: WorkerAccount, jobs: list[Job], limit: int) -> None:
        """Jobs alone larger than an answer to the worker's Pull may be: it
        could never take them (its frame limit would drop the answer, and
        them with it, each time), so they fail, their credit given back."""
        now = time.time()
        outcomes = []
        for job in jobs:
            worker.held.pop(job.id, None)
            size = job_bytes(job)
            outcomes.append(Outcome(
                id=job.id, attempt=job.attempt, worker=worker.name, started_at=now,
                finished_at=now, error=RemoteError(
                    type="JobTooLarge", kind="error",
                    message=f"task {job.task}'s job is about {size} bytes, more than the "
                    f"{limit} bytes a job sent to worker {worker.name} may take (its "
                    "max_frame_bytes, or the workers port's, less room for the frame); not "
                    "sent. Pass less data, or raise FASTWORKER_MAX_FRAME_BYTES on both")))
            self._too_large_log.event(
                "%s: failed task %s (%s): its job is about %d bytes, more than the %d bytes a "
                "job sent to worker %s may take", self._name, job.id, job.task, size,
                limit, worker.name)
        for job in jobs:
            worker.give(job)
        self._counts["too_large"] += len(jobs)
        self._out.results.append(Finished(outcomes=tuple(outcomes)))

    # -- Assigns not acknowledged ----------------------------------------------------

    async def _overdue(self, now: float) -> None:
        """The ack timer's callback: Assigns unacknowledged past the bound
        wait in ``overdue`` for ``take_back``, which the Dispatcher runs once
        it has handled what arrived before (an acknowledgement among it
        takes the worker out again)."""
        due = self._unacknowledged.pop_due(now)
        if due:
            for worker in due:
                self.overdue[worker.name] = (worker, worker.pull_seq)
            if self._on_overdue is not None:
                await self._on_overdue()
