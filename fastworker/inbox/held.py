"""Jobs held for a later time, and the deadlines of jobs that may expire.

A Submit with a delay (``countdown`` / ``eta``) and a failed attempt
waiting for its retry are held here until their time; a job with
``expires_in`` keeps its deadline here while it is queued or held. One
``Timer`` wakes the inbox for both. Times are trio's clock. Nothing here
queues or drops a job: the inbox does, with what ``due`` hands back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from actors.timers import DueHeap, Timer
from fastworker.messages import Job

__all__ = ["Held"]


class Held:
    """Held jobs by id, and deadlines by task id.

    Args:
        fire: called with trio's time when a held job or a deadline may be
            due (it asks ``due``); the inbox starts the timer with
            ``nursery.start(held.timer.run)``.
    """

    def __init__(self, fire: Callable[[float], Awaitable[None]]) -> None:
        self._jobs: DueHeap[str, Job] = DueHeap()
        self._deadlines: DueHeap[str, str] = DueHeap()
        self.timer = Timer(self.next_at, fire)

    def __len__(self) -> int:
        """Jobs held (deadlines not counted)."""
        return len(self._jobs)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._jobs

    def jobs(self) -> list[Job]:
        """Every held job, in no particular order."""
        return list(self._jobs.values())

    def hold(self, job: Job, at: float) -> None:
        """Hold ``job`` until ``at``."""
        self._jobs.push(at, job.id, job)
        self.timer.arm(at)

    def expire(self, task_id: str, at: float) -> None:
        """Drop the task at ``at`` if it is still queued or held then."""
        self._deadlines.push(at, task_id, task_id)
        self.timer.arm(at)

    def forget_deadline(self, task_id: str) -> None:
        """The task was handed out: the executor checks its deadline from here."""
        self._deadlines.discard(task_id)

    def take(self, task_id: str) -> Job | None:
        """Take a held job out (its deadline stays); ``None`` if not held."""
        return self._jobs.discard(task_id)

    def cancel(self, task_id: str) -> bool:
        """Forget the task's deadline and take it out if it is held;
        ``True`` if it was."""
        self._deadlines.discard(task_id)
        return self._jobs.discard(task_id) is not None

    def next_at(self) -> float:
        """When the next held job or deadline is due (``inf``: none)."""
        return min(self._jobs.next_at, self._deadlines.next_at)

    def due(self, now: float) -> tuple[list[Job], list[str]]:
        """The held jobs whose time came, and the tasks past their deadline,
        earliest first; both are forgotten here."""
        return self._jobs.pop_due(now), self._deadlines.pop_due(now)
