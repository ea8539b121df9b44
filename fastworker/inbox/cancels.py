"""Cancelling tasks that wait in the inbox: one (``Cancel``) or all that
match (an operator's ``PurgeQueued``). A queued or held task is taken out
at once; an accepted one still being written is marked, and dropped once
written. Each is remembered as cancelled (a resent Cancel is answered the
same), told to the store at the next flush, and dropped from the journal.
"""

from __future__ import annotations

from fastworker.inbox.admission import RecentIds
from fastworker.inbox.held import Held
from fastworker.inbox.journal import InboxJournal
from fastworker.inbox.levels import Levels
from fastworker.internal import PurgeQueued
from fastworker.journal.ops import DropTask
from fastworker.limits import MAX_ID_LENGTH
from fastworker.messages import CancelReply, Job

__all__ = ["Cancels"]


class Cancels:
    """The inbox's cancelling: what it takes out, and what the store and
    the journal must hear of.

    Attributes:
        journal: the inbox's journal, or ``None`` (set by the inbox once it
            knows whether the journal keeps anything).
        ids: tasks cancelled since the last flush (the store hears of them).
        total: tasks cancelled in all.
    """

    def __init__(self, levels: Levels, held: Held, recent: RecentIds) -> None:
        self._levels, self._held, self._recent = levels, held, recent
        self.journal: InboxJournal | None = None
        self.ids: list[str] = []
        self.total = 0

    def cancel(self, task_id: str) -> CancelReply:
        if len(task_id) > MAX_ID_LENGTH:  # a Submit with such an id is refused
            return CancelReply(id=task_id, outcome="unknown")
        journal = self.journal
        if self.drop(task_id):
            self._recent.remember(task_id, "cancelled")
            self.ids.append(task_id)
            self.total += 1
            if journal is not None:
                journal.ops.append(DropTask(task_id))
            return CancelReply(id=task_id, outcome="cancelled")
        if journal is not None and journal.unwritten.cancel(task_id):
            # The store hears of it, and the journal drops it, once it is written.
            self._recent.remember(task_id, "cancelled")
            self.total += 1
            return CancelReply(id=task_id, outcome="cancelled")
        state = self._recent.get(task_id)
        if state == "cancelled":
            return CancelReply(id=task_id, outcome="cancelled")  # a resent Cancel
        if state is not None:
            return CancelReply(id=task_id, outcome="not_queued")
        return CancelReply(id=task_id, outcome="unknown")

    def purge(self, query: PurgeQueued) -> int:
        """Cancel every queued (and with ``scheduled`` held) task ``query``
        matches, the accepted ones not yet written too; how many. Tasks a
        subworker may still run (recovered, in the recovery grace) stay."""
        journal = self.journal
        running = frozenset() if journal is None else journal.in_grace

        def matches(job: Job, held: bool) -> bool:
            return ((query.scheduled or not held) and job.id not in running
                    and (query.level is None or job.priority == query.level)
                    and (query.task is None or job.task == query.task))

        ids = [job.id for job in self._levels.jobs.values() if matches(job, False)]
        if query.scheduled:
            ids.extend(job.id for job in self._held.jobs() if matches(job, True))
        for task_id in ids:
            self.cancel(task_id)
        if journal is not None:
            for task_id in journal.unwritten.purge(matches):
                self._recent.remember(task_id, "cancelled")
                self.total += 1
                ids.append(task_id)
        return len(ids)

    def drop(self, task_id: str) -> bool:
        """Take a queued or held task out; ``False`` if it is neither."""
        return self._held.cancel(task_id) or self._levels.remove(task_id)
