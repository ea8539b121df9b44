"""Admission: the inbox's answer to each Submit, and Submits that wait for room.

A resent id is Accepted again, a Submit with a bad option or an unknown
task is refused, one whose key is held gets the holder's id; the others
are scheduled, queued, parked until room frees, or refused with QueueFull
(the order and the rules are in ``docs/inbox.md``). With a journal, an
accepted task waits unwritten (``journaled``) and is queued or held once
written; admission also takes back what the journal held at start.
Admission does not take jobs out of the queue or talk to other actors: the
inbox sends what it produced (``entries``, ``answered``) at its next flush.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from typing import Literal, TypeAlias, Union

import attrs
import trio

from actors.requests import Answers
from actors.timers import DueHeap, Timer
from fastworker.inbox.held import Held
from fastworker.inbox.journaled import (
    JOURNAL_UNAVAILABLE,
    Restored,
    Unwritten,
    UnwrittenTask,
    Write,
)
from fastworker.inbox.levels import Levels
from fastworker.inbox.names import TaskNames
from fastworker.messages import Accepted, CancelReply, Job, QueuedEntry, Rejected, Submit
from fastworker.submission import check_submit
from fastworker.unique import UniqueKeys

__all__ = ["Admission", "RecentIds"]

#: Where a task the inbox accepted went last.
State: TypeAlias = Literal["scheduled", "queued", "dispatched", "cancelled", "expired"]
#: The answer to one message of a request.
Answer: TypeAlias = Union[Accepted, Rejected, CancelReply]


class RecentIds(OrderedDict[str, State]):
    """The ids the inbox accepted and where each went last, oldest first;
    past ``limit`` the oldest is forgotten. They recognise a resent Submit
    and answer a Cancel of a task that left the queue."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def remember(self, task_id: str, state: State) -> None:
        self[task_id] = state  # an id already there keeps its place
        if len(self) > self.limit:
            self.popitem(last=False)


@attrs.define(eq=False)
class _Parked:
    """A Submit waiting for room, and where its answer goes."""

    submit: Submit
    answers: Answers
    index: int
    since: float
    #: Its place in the line, first come first admitted.
    number: int
    #: Submits with its key that came while it waited (request, index,
    #: their id): they get its answer.
    followers: list[tuple[Answers, int, str]] = attrs.Factory(list)


class Admission:
    """Decides Submits, and queues or schedules those it accepts.

    Args:
        levels: where accepted jobs are queued.
        held: where delayed jobs and deadlines are kept.
        recent: the ids accepted so far.
        names: the known task names (``None``: names are not checked).
        capacity: jobs queued before Submits wait or are refused.
        scheduled_capacity: delayed jobs held at once.
        parked_max: Submits that may wait for room at once.
        key_limit: keys held before the store is asked about all holders.
    """

    def __init__(self, levels: Levels, held: Held, recent: RecentIds, names: TaskNames | None,
                 *, capacity: int, scheduled_capacity: int, parked_max: int,
                 key_limit: int) -> None:
        self.levels = levels
        self.held = held
        self.recent = recent
        self.names = names
        self.capacity = capacity
        self.scheduled_capacity = scheduled_capacity
        self.parked_max = parked_max
        self.keys = UniqueKeys(limit=key_limit)
        self.parked: OrderedDict[int, _Parked] = OrderedDict()  # first come first
        #: The keyed ones among them, by id: each holds its key while it waits.
        self.parked_holders: dict[str, _Parked] = {}
        self._waits: DueHeap[int, _Parked] = DueHeap()  # the same, by the end of their wait
        self._numbers = itertools.count(1)
        #: Refuses parked Submits whose wait is over; started by the inbox.
        self.timer = Timer(lambda: self._waits.next_at, self._refuse_waited)
        # What the inbox's next flush sends: what was queued or scheduled,
        # and the requests whose last answer came from a parked Submit.
        self.entries: list[QueuedEntry] = []
        self.answered: list[Answers] = []
        #: With a journal: accepted tasks wait here until written (the inbox sets it).
        self.unwritten: Unwritten | None = None
        self.accepted_total = 0
        self.duplicates_total = 0
        self.rejected_total: dict[str, int] = {}

    def decide(self, submit: Submit, answers: Answers, index: int) -> Answer | None:
        """The answer to one Submit, or ``None`` once it is parked (its
        answer goes to ``answers`` at ``index`` later)."""
        unwritten = self.unwritten
        if unwritten is not None and unwritten.wait(submit.id, submit.id, answers, index):
            self.duplicates_total += 1
            return None  # answered as its first Submit, once that is written (or not)
        if submit.id in self.levels.jobs or submit.id in self.recent:
            self.duplicates_total += 1
            return Accepted(id=submit.id)
        problem = check_submit(submit)
        if problem is not None:
            return self.reject(submit.id, "InvalidSubmission", problem)
        names = self.names
        if names is not None and not names.knows(submit.task):
            return self.reject(submit.id, "UnknownTask", names.unknown(submit.task))
        if not submit.key:
            return self._when_written(self._place(submit, answers, index), submit, answers, index)
        holder = self.keys.holder(submit.key)
        if holder is not None:
            if unwritten is not None and unwritten.wait(holder, submit.id, answers, index):
                return None
            parked = self.parked_holders.get(holder)
            if parked is not None:  # answered as the holder is, once it is
                parked.followers.append((answers, index, submit.id))
                return None
            return Accepted(id=holder)  # the task already holding the key
        self.keys.claim(submit.key, submit.id)
        answer = self._place(submit, answers, index)
        if isinstance(answer, Rejected):
            self.keys.release(submit.key, submit.id)
        return self._when_written(answer, submit, answers, index)

    def _when_written(self, answer: Answer | None, submit: Submit, answers: Answers,
                      index: int) -> Answer | None:
        """With a journal, an Accepted waits for its task to be written."""
        unwritten = self.unwritten
        if (unwritten is not None and isinstance(answer, Accepted)
                and unwritten.wait(submit.id, submit.id, answers, index)):
            return None
        return answer

    def reject(self, task_id: str, error: str, message: str) -> Rejected:
        self.rejected_total[error] = self.rejected_total.get(error, 0) + 1
        return Rejected(id=task_id, error=error, message=message)

    def admit(self) -> None:
        """Queue parked Submits, first come first, while there is room."""
        parked_line, jobs, unwritten = self.parked, self.levels.jobs, self.unwritten
        while parked_line and self.queued() < self.capacity:
            _, parked = parked_line.popitem(last=False)
            self._waits.discard(parked.number)
            submit = parked.submit
            if unwritten is not None and unwritten.wait(
                    submit.id, submit.id, parked.answers, parked.index):
                self.duplicates_total += 1  # its twin got in first, and is being written
                self._followers_wait(parked, unwritten)
                continue
            if submit.id in jobs or submit.id in self.recent:
                self.duplicates_total += 1  # its twin got in first
                answer: Answer = Accepted(id=submit.id)
            else:
                answer = self._enqueue(submit)
                if unwritten is not None:
                    # Answered once written (Accepted), or not (JournalUnavailable).
                    unwritten.wait(submit.id, submit.id, parked.answers, parked.index)
                    self._followers_wait(parked, unwritten)
                    continue
            self._finish(parked, answer, at_once=False)

    def place_written(self, write: Write) -> list[str]:
        """Queue or hold the tasks of a committed write; return the ids of
        those cancelled meanwhile (not placed)."""
        now, wall = trio.current_time(), time.time()
        cancelled = []
        for task in write.tasks:
            job = task.job
            if task.cancelled:
                cancelled.append(job.id)
                continue
            if task.at is None:
                self.levels.append(job)
            else:
                self.held.hold(job, task.at)
            if job.expires_at is not None:  # it may have passed while it was written
                self.held.expire(job.id, now + job.expires_at - wall)
        return cancelled

    def forget_unwritten(self, write: Write) -> None:
        """The tasks of a failed write were not accepted after all: forget
        their ids, keys and deadlines, and count them refused."""
        for task in write.tasks:
            task_id = task.job.id
            if task.key:
                self.keys.release(task.key, task_id)
            self.recent.pop(task_id, None)
            self.held.forget_deadline(task_id)
            self.accepted_total -= 1
            self.rejected_total[JOURNAL_UNAVAILABLE] = (
                self.rejected_total.get(JOURNAL_UNAVAILABLE, 0) + 1)

    def take_back(self, restored: Restored) -> None:
        """Queue and hold what the journal held at start (``journaled.restore``):
        the next attempts of dispatched tasks at the front of their levels."""
        levels, held, recent = self.levels, self.held, self.recent
        now, wall = trio.current_time(), time.time()
        for job in restored.queued:
            levels.append(job)
            recent.remember(job.id, "queued")
        for job, at in restored.held:
            held.hold(job, at)
            recent.remember(job.id, "scheduled")
        if restored.rerun_at is None:
            for job in reversed(restored.rerun):
                levels.push_front(job)
                recent.remember(job.id, "queued")
        else:
            for job in restored.rerun:
                held.hold(job, restored.rerun_at)
                recent.remember(job.id, "scheduled")
        for job in (*restored.queued, *(job for job, _ in restored.held), *restored.rerun):
            if job.expires_at is not None:
                held.expire(job.id, now + job.expires_at - wall)
        for outcome in restored.failed:
            recent.remember(outcome.id, "dispatched")
        for job in restored.waiting_once:
            recent.remember(job.id, "dispatched")
        for key, task_id in restored.keys.items():
            self.keys.claim(key, task_id)

    def queued(self) -> int:
        """Tasks queued in the levels, or accepted for them and not yet written."""
        unwritten = self.unwritten
        return len(self.levels.jobs) + (0 if unwritten is None else unwritten.queued)

    def stop(self, now: float) -> None:
        """Refuse every parked Submit: the inbox stops, their callers must not hang."""
        for parked in self.parked.values():
            message = f"the inbox stopped after {_seconds(now - parked.since)} s of waiting"
            self._finish(parked, self._queue_full(parked.submit, message), at_once=True)
        self.parked.clear()
        self._waits.pop_all()

    def _place(self, submit: Submit, answers: Answers, index: int) -> Answer | None:
        """Schedule, queue or park a valid Submit, or refuse it for room."""
        if submit.delay > 0:
            return self._schedule(submit)
        self.admit()  # room freed by a Cancel goes to those waiting first
        if submit.id in self.recent:  # a resent copy whose parked twin was just admitted
            self.duplicates_total += 1
            return Accepted(id=submit.id)
        if self.queued() < self.capacity:
            return self._enqueue(submit)
        if submit.queue_wait > 0 and len(self.parked) < self.parked_max:
            self._park(submit, answers, index)
            return None
        if submit.queue_wait > 0:
            return self._queue_full(submit, f"{self.parked_max} submissions already wait for room")
        return self._queue_full(submit, "pass queue_wait to wait for room")

    def _queue_full(self, submit: Submit, why: str) -> Rejected:
        return self.reject(submit.id, "QueueFull", f"queue full (capacity {self.capacity}); {why}")

    def _job(self, submit: Submit, now: float) -> Job:
        """The job of an accepted Submit; its deadline, if any, starts now."""
        expires_at = None
        if submit.expires_in is not None:
            expires_at = now + submit.expires_in
            self.held.expire(submit.id, trio.current_time() + submit.expires_in)
        return Job(id=submit.id, task=submit.task, payload=submit.payload,
                   priority=submit.priority, timeout=submit.timeout, queued_at=now,
                   expires_at=expires_at, retries=submit.retries, fair_key=submit.fair_key)

    def _schedule(self, submit: Submit) -> Accepted | Rejected:
        """Hold a Submit with a delay until its time."""
        capacity = self.scheduled_capacity
        held = len(self.held) + (0 if self.unwritten is None else self.unwritten.scheduled)
        if held >= capacity:
            return self.reject(submit.id, "QueueFull",
                               f"{capacity} scheduled tasks already wait (scheduled_capacity)")
        now = time.time()
        job = self._job(submit, now)
        at = trio.current_time() + submit.delay
        entry = QueuedEntry(id=job.id, task=job.task, priority=job.priority, queued_at=now,
                            payload=job.payload, retry_of=submit.retry_of,
                            scheduled_for=now + submit.delay)
        if self.unwritten is not None:
            self.unwritten.add(UnwrittenTask(job, entry, submit.key, at, now + submit.delay))
        else:
            self.held.hold(job, at)
            self.entries.append(entry)
        self.recent.remember(job.id, "scheduled")
        self.accepted_total += 1
        return Accepted(id=job.id)

    def _enqueue(self, submit: Submit) -> Accepted:
        now = time.time()
        job = self._job(submit, now)
        entry = QueuedEntry(id=job.id, task=job.task, priority=job.priority, queued_at=now,
                            payload=job.payload, retry_of=submit.retry_of)
        if self.unwritten is not None:
            self.unwritten.add(UnwrittenTask(job, entry, submit.key))
        else:
            self.levels.append(job)
            self.entries.append(entry)
        self.recent.remember(job.id, "queued")
        self.accepted_total += 1
        return Accepted(id=job.id)

    def _park(self, submit: Submit, answers: Answers, index: int) -> None:
        now = trio.current_time()
        parked = _Parked(submit, answers, index, since=now, number=next(self._numbers))
        self.parked[parked.number] = parked
        if submit.key:
            self.parked_holders[submit.id] = parked
        self._waits.push(now + submit.queue_wait, parked.number, parked)
        self.timer.arm(now + submit.queue_wait)

    def _refuse_waited(self, now: float) -> None:
        """Refuse the parked Submits whose wait is over (the timer's call)."""
        for parked in self._waits.pop_due(now):
            del self.parked[parked.number]
            waited = f"waited {_seconds(parked.submit.queue_wait)} s"
            self._finish(parked, self._queue_full(parked.submit, waited), at_once=True)

    def _finish(self, parked: _Parked, answer: Answer, *, at_once: bool) -> None:
        """Give a parked Submit its answer; once its request has all of its
        answers, reply at once or (when what was queued must reach the
        store first) at the next flush."""
        submit = parked.submit
        if isinstance(answer, Rejected) and submit.key:
            self.keys.release(submit.key, submit.id)
        self._unpark(parked)
        self._deliver(parked.answers, parked.index, answer, at_once=at_once)
        for answers, index, follower_id in parked.followers:
            followed = (self.reject(follower_id, answer.error, answer.message)
                        if isinstance(answer, Rejected) else answer)
            self._deliver(answers, index, followed, at_once=at_once)

    def _deliver(self, answers: Answers, index: int, answer: Answer, *, at_once: bool) -> None:
        if answers.fill(index, answer) and answers.reply is not None:
            if at_once:
                answers.send()
            else:
                self.answered.append(answers)

    def _unpark(self, parked: _Parked) -> None:
        if self.parked_holders.get(parked.submit.id) is parked:
            del self.parked_holders[parked.submit.id]

    def _followers_wait(self, parked: _Parked, unwritten: Unwritten) -> None:
        """With a journal: those following ``parked`` are answered once its
        task is written (accepted as it), or not."""
        self._unpark(parked)
        for answers, index, follower_id in parked.followers:
            unwritten.wait(parked.submit.id, follower_id, answers, index)


def _seconds(value: float) -> str:
    """``2.0``, ``0.25``, ``1.333``: seconds for people."""
    text = f"{value:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text
