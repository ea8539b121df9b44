"""The four priority levels of queued jobs, and which job leaves next.

Plain data, no trio and no messages: the inbox queues jobs here, takes
them out for the dispatcher's demand and takes cancelled ones out. It
does not decide what is admitted, nor hold anything for later. Priority
is strict, with a starvation guard (see ``docs/inbox.md``).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable

from fastworker.messages import PRIORITIES, Job

__all__ = ["Levels"]

#: Priority levels, 0 (critical) to 3 (low).
LEVELS = len(PRIORITIES)
#: Cancelled jobs a level may hold before its queue is rebuilt without them.
_STALE_MIN = 64


class Levels:
    """Queued jobs by level, first in first out within a level.

    A job taken out early (``remove``) stays in its level's deque until it
    is reached or the deque is rebuilt; only ``jobs`` says what is live.

    Args:
        starvation_limit: jobs taken from higher levels while a lower level
            has jobs waiting, before that level gets one.
    """

    def __init__(self, starvation_limit: int) -> None:
        self.starvation_limit = starvation_limit
        #: The live jobs, by id.
        self.jobs: dict[str, Job] = {}
        self._queues: list[deque[Job]] = [deque() for _ in range(LEVELS)]
        self._counts = [0] * LEVELS  # live jobs per level
        self._by_task: list[Counter[str]] = [Counter() for _ in range(LEVELS)]  # live, per task
        self._stale = [0] * LEVELS  # removed jobs still in a level's deque
        self._skipped = [0] * LEVELS  # jobs taken from above while this level waited

    def __len__(self) -> int:
        return len(self.jobs)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self.jobs

    @property
    def counts(self) -> tuple[int, int, int, int]:
        """Live jobs per level, critical first."""
        counts = self._counts
        return (counts[0], counts[1], counts[2], counts[3])

    def append(self, job: Job) -> None:
        """Queue ``job`` at the back of its level."""
        level = job.priority
        self.jobs[job.id] = job
        self._queues[level].append(job)
        self._counts[level] += 1
        self._by_task[level][job.task] += 1

    def push_front(self, job: Job) -> bool:
        """Queue ``job`` at the front of its level (it comes back from a lost
        worker); ``False`` if it is queued already or its level is unknown."""
        level = job.priority
        if job.id in self.jobs or not 0 <= level < LEVELS:
            return False
        self.jobs[job.id] = job
        self._queues[level].appendleft(job)
        self._counts[level] += 1
        self._by_task[level][job.task] += 1
        return True

    def remove(self, task_id: str) -> bool:
        """Take a queued job out (cancelled, expired); ``False`` if it is not queued."""
        job = self.jobs.pop(task_id, None)
        if job is None:
            return False
        level = job.priority
        self._counts[level] -= 1
        self._by_task[level][job.task] -= 1
        self._stale[level] += 1
        if self._stale[level] > max(_STALE_MIN, self._counts[level]):
            self._queues[level] = deque(j for j in self._queues[level] if self._is_live(j))
            self._stale[level] = 0
        return True

    def take(self, n: int, only: frozenset[str] | None,
             taken: Callable[[Job], object]) -> list[Job]:
        """Take up to ``n`` jobs, best first, of the tasks in ``only``
        (``None``: any); jobs of other tasks keep their places. ``taken``
        is called with each job as it leaves, and may queue more."""
        jobs: list[Job] = []
        if only is None:
            while n > 0 and self.jobs:
                job = self._take(self._next_level(self._counts))
                jobs.append(job)
                n -= 1
                taken(job)
            return jobs
        matching = [sum(self._by_task[level][name] for name in only) for level in range(LEVELS)]
        while n > 0 and any(matching):
            level = self._next_level(matching)
            job = self._take(level, only)
            jobs.append(job)
            matching[level] -= 1
            n -= 1
            taken(job)
        return jobs

    def _take(self, level: int, only: frozenset[str] | None = None) -> Job:
        """Take the first live job of ``level`` that the filter lets through."""
        queue = self._queues[level]
        job = queue.popleft()
        while not self._is_live(job):
            self._stale[level] -= 1
            job = queue.popleft()
        if only is not None and job.task not in only:
            queue.appendleft(job)
            for index, job in enumerate(queue):
                if self._is_live(job) and job.task in only:
                    del queue[index]
                    break
            else:  # pragma: no cover - take() counted one
                raise AssertionError("no matching job where one was counted")
        del self.jobs[job.id]
        self._counts[level] -= 1
        self._by_task[level][job.task] -= 1
        for lower in range(level + 1, LEVELS):
            self._skipped[lower] = self._skipped[lower] + 1 if self._counts[lower] else 0
        self._skipped[level] = 0
        return job

    def _next_level(self, counts: list[int]) -> int:
        """The highest level with jobs, unless a level below it has waited
        ``starvation_limit`` jobs: then the highest such level."""
        top = -1
        for level in range(LEVELS):
            if not counts[level]:
                self._skipped[level] = 0
            elif top < 0:
                top = level
            elif self._skipped[level] >= self.starvation_limit:
                return level
        return top

    def _is_live(self, job: Job) -> bool:
        return self.jobs.get(job.id) is job
