"""What the inbox journals, and what it takes back from the journal at start.

Only with a ``journal`` ref (see ``docs/durability.md``). An accepted task
is *unwritten* until its ``PutTask`` is committed: it is not queued, not
held and not told to the store, and its Submit (and any resent Submit of
its id, or of its key) waits for the commit. Once committed it is placed
and answered ``Accepted``; if the commit fails it is forgotten and answered
``Rejected(JournalUnavailable)``, so nothing the journal does not hold is
ever acknowledged or dispatched. Every other move (dispatched, released,
put back, held for a retry, cancelled, expired) is sent with nothing to
wait for, once per flush. ``restore`` turns a ``Recovered`` back into
queued and held jobs. Nothing here talks to other actors: the inbox does.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator

import attrs
import trio

from actors.requests import Answers
from fastworker import tasks
from fastworker.journal.file import Recovered
from fastworker.journal.ops import Op, PutTask
from fastworker.messages import Accepted, Job, Outcome, QueuedEntry, Rejected, RemoteError

__all__ = [
    "JOURNAL_UNAVAILABLE",
    "Restored",
    "Unwritten",
    "UnwrittenTask",
    "Write",
    "lost_at_most_once",
    "restore",
    "task_is_at_most_once",
]

#: The error a Submit gets when its task could not be written.
JOURNAL_UNAVAILABLE = "JournalUnavailable"


@attrs.define(eq=False)
class UnwrittenTask:
    """An accepted task whose ``PutTask`` is not committed yet."""

    job: Job
    entry: QueuedEntry
    key: str
    #: Trio time it is held until; ``None``: queued at once.
    at: float | None = None
    #: The same, wall-clock seconds, for the journal (0: queued).
    due_at: float = 0.0
    #: Cancelled before it was written: written, then dropped at once.
    cancelled: bool = False


@attrs.define(eq=False)
class Write:
    """One flush's accepted tasks: one ``JournalWrite``, and the answers that
    wait for it (request, index, the Submit's id, the id to accept)."""

    tasks: list[UnwrittenTask] = attrs.Factory(list)
    waiting: list[tuple[Answers, int, str, str]] = attrs.Factory(list)
    #: The journal answered: committed (``error`` None) or not (why).
    done: bool = False
    error: str | None = None

    def ops(self) -> tuple[Op, ...]:
        return tuple(PutTask(t.job, "queued" if t.at is None else "scheduled", t.due_at, t.key)
                     for t in self.tasks)

    def answer(self) -> Iterator[Answers]:
        """Fill the waiting answers (``Accepted``, or ``Rejected`` with the
        write's error); yield each request that has all of its answers now."""
        error = self.error
        for answers, index, submit_id, accepted_id in self.waiting:
            value: Accepted | Rejected = (
                Accepted(id=accepted_id) if error is None else
                Rejected(id=submit_id, error=JOURNAL_UNAVAILABLE, message=error))
            if answers.fill(index, value):
                yield answers


class Unwritten:
    """Accepted tasks not yet written, by id; the next write gathers them."""

    def __init__(self, key_limit: int) -> None:
        self.next = Write()
        self.by_id: dict[str, Write] = {}
        #: Of them, how many go to a level, how many are held.
        self.queued = 0
        self.scheduled = 0
        #: Writes under way, in the order they were made (settled in that
        #: order too, so that tasks queue in the order they were written).
        self.writes: deque[Write] = deque()
        #: The key of each keyed live task, so that a ``PutTask`` of its next
        #: attempt keeps it (oldest forgotten past ``key_limit``).
        self.keys: OrderedDict[str, str] = OrderedDict()
        self._key_limit = key_limit

    def add(self, task: UnwrittenTask) -> None:
        self.next.tasks.append(task)
        self.by_id[task.job.id] = self.next
        if task.at is None:
            self.queued += 1
        else:
            self.scheduled += 1

    def wait(self, task_id: str, submit_id: str, answers: Answers, index: int) -> bool:
        """If ``task_id`` is unwritten, answer the Submit at ``index`` once it
        is written (accepted as ``task_id``) or not; ``True`` if it waits."""
        write = self.by_id.get(task_id)
        if write is None:
            return False
        write.waiting.append((answers, index, submit_id, task_id))
        return True

    def cancel(self, task_id: str) -> bool:
        """Cancel an unwritten task; ``False`` if it is not one."""
        write = self.by_id.get(task_id)
        if write is None:
            return False
        for task in write.tasks:
            if task.job.id == task_id and not task.cancelled:
                task.cancelled = True
                return True
        return False

    def purge(self, matches: Callable[[Job, bool], bool]) -> list[str]:
        """Cancel the unwritten tasks ``matches(job, held_for_later)``
        accepts; their ids."""
        purged = []
        for write in {id(w): w for w in self.by_id.values()}.values():
            for task in write.tasks:
                if not task.cancelled and matches(task.job, task.at is not None):
                    task.cancelled = True
                    purged.append(task.job.id)
        return purged

    def take(self) -> Write | None:
        """The write to make now, if anything was accepted since the last."""
        write = self.next
        if not write.tasks:
            return None
        self.next = Write()
        self.writes.append(write)
        return write

    def done(self) -> list[Write]:
        """The first writes under way that the journal answered, up to the
        first it has not: the ones to ``settle`` next, in this order."""
        done = []
        for write in self.writes:
            if not write.done:
                break
            done.append(write)
        return done

    def settle(self, write: Write) -> None:
        """``write``, the first under way, is committed or failed: its tasks
        are no longer unwritten."""
        first = self.writes.popleft()
        assert first is write, "writes are settled in the order they were made"
        written = write.error is None
        for task in write.tasks:
            if self.by_id.get(task.job.id) is write:
                del self.by_id[task.job.id]
            if task.at is None:
                self.queued -= 1
            else:
                self.scheduled -= 1
            if written and task.key and not task.cancelled:
                self.remember_key(task.job.id, task.key)

    def remember_key(self, task_id: str, key: str) -> None:
        self.keys[task_id] = key
        if len(self.keys) > self._key_limit:
            self.keys.popitem(last=False)

    def waiting_answers(self) -> Iterator[Answers]:
        """Every request still waiting on a write (to fail when the inbox stops)."""
        for write in (self.next, *self.writes):
            for answers, *_ in write.waiting:
                yield answers


@attrs.frozen(kw_only=True)
class Restored:
    """What ``restore`` decided, for the inbox to place and tell.

    Attributes:
        queued: jobs to append to their levels, in order.
        held: jobs to hold, with their trio-clock time.
        rerun: dispatched jobs to run again as their next attempt, in order:
            at the front of their levels, or held until ``rerun_at``.
        rerun_at: with a recovery grace, when (trio clock) they are queued.
        waiting_once: with a recovery grace, dispatched at-most-once jobs
            that wait it out: adopted if a subworker still runs them, else
            failed with ``WorkerLost`` when it ends.
        failed: ``Finished`` outcomes of dispatched at-most-once jobs (without
            a grace).
        entries: what the store is told (``Queued``), for every task.
        ops: what the journal is sent (the next attempts' ``PutTask``).
        keys: key -> id of the live tasks holding one.
    """

    queued: list[Job]
    held: list[tuple[Job, float]]
    rerun: list[Job]
    rerun_at: float | None
    waiting_once: list[Job]
    failed: list[Outcome]
    entries: list[QueuedEntry]
    ops: list[Op]
    keys: dict[str, str]


def restore(recovered: Recovered, at_most_once: Callable[[str], bool],
            *, name: str, grace: float = 0.0) -> Restored:
    """Decide what each recovered task becomes (see ``docs/durability.md``):
    queued ones queue again, scheduled ones are held again on trio's clock
    (a due time past is due now), dispatched ones run again as their next
    attempt (after ``grace`` seconds, if any) with one more loss (the
    dispatcher fails a task lost ``poison_after`` times as poison), except
    at-most-once tasks (marked so when dispatched, or so in
    ``at_most_once``), which never run again: they wait out the grace (a
    subworker that still runs one adopts it), or without one fail with
    ``WorkerLost`` at once. ``name`` is the inbox's, for the error's message."""
    now, wall = trio.current_time(), time.time()
    entries: list[QueuedEntry] = []
    held: list[tuple[Job, float]] = []
    rerun: list[Job] = []
    failed: list[Outcome] = []
    waiting_once: list[Job] = []
    ops: list[Op] = []
    for put in recovered.queued:
        entries.append(_entry(put.job))
    for put in recovered.scheduled:
        held.append((put.job, now + max(put.due_at - wall, 0.0)))
        entries.append(_entry(put.job, scheduled_for=put.due_at))
    rerun_at = now + grace if grace > 0 else None
    for put in recovered.dispatched:
        job = put.job
        entries.append(_entry(job, scheduled_for=wall + grace if grace > 0 else 0.0))
        if job.id in recovered.once or at_most_once(job.task):
            if rerun_at is None:
                failed.append(lost_at_most_once(job, name))
            else:
                waiting_once.append(job)
            continue
        # The restart counts as a lost worker: a task that brings the
        # control plane down fails as poison once the dispatcher sees it.
        job = attrs.evolve(job, attempt=job.attempt + 1, losses=job.losses + 1)
        rerun.append(job)
        if rerun_at is None:
            ops.append(PutTask(job, "queued", key=put.key))
        else:
            ops.append(PutTask(job, "scheduled", due_at=wall + grace, key=put.key))
    return Restored(queued=[put.job for put in recovered.queued], held=held, rerun=rerun,
                    rerun_at=rerun_at, waiting_once=waiting_once, failed=failed,
                    entries=entries, ops=ops, keys=dict(recovered.keys))


def lost_at_most_once(job: Job, name: str) -> Outcome:
    """The outcome of an at-most-once task that was dispatched when the
    control plane stopped, and that no subworker says it runs: ``WorkerLost``."""
    wall = time.time()
    return Outcome(
        id=job.id, attempt=job.attempt, worker=name, started_at=wall, finished_at=wall,
        error=RemoteError(
            type="WorkerLost", kind="error",
            message=f"the control plane stopped while at-most-once task {job.task} was "
                    "dispatched, and no worker said it still runs it; it may or may not have "
                    "run, and is not run again"))


def _entry(job: Job, *, scheduled_for: float = 0.0) -> QueuedEntry:
    return QueuedEntry(id=job.id, task=job.task, priority=job.priority, queued_at=job.queued_at,
                       payload=job.payload, scheduled_for=scheduled_for)


def task_is_at_most_once(name: str) -> bool:
    """Whether the task ``name`` of this process's registry is
    ``at_most_once`` (an unknown task is not: it runs again)."""

    task = tasks.default_registry().get(name)
    return task is not None and task.at_most_once
