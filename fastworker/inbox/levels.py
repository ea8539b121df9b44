"""The four priority levels of queued jobs, and which job leaves next.

Plain data, no trio and no messages: the inbox queues jobs here, takes
them out for the dispatcher's demand and takes cancelled ones out. It
does not decide what is admitted, nor hold anything for later. Priority
is strict, with a starvation guard; within a level, fairness keys take
turns (see ``docs/inbox.md``).
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Callable

from fastworker.budget import Budget
from fastworker.messages import PRIORITIES, Job

__all__ = ["Levels"]

#: Priority levels, 0 (critical) to 3 (low).
LEVELS = len(PRIORITIES)
#: Cancelled jobs a level may hold before its queues are rebuilt without them.
_STALE_MIN = 64


class Levels:
    """Queued jobs by level; within a level, one first-in-first-out queue
    per fairness key (``Job.fair_key``; ``""`` for jobs without one), and
    the keys take turns: round robin, one job per turn.

    Jobs without a key are one key among the others, so a level with no
    keyed jobs is first in first out, as a single queue. A key's queue is
    dropped when it is empty, so the keys held are bounded by the jobs
    queued (and the cancelled ones not yet swept out).

    A job taken out early (``remove``) stays in its key's deque until it
    is reached or the level is rebuilt; only ``jobs`` says what is live.

    Args:
        starvation_limit: jobs taken from higher levels while a lower level
            has jobs waiting, before that level gets one.
    """

    def __init__(self, starvation_limit: int) -> None:
        self.starvation_limit = starvation_limit
        #: The live jobs, by id.
        self.jobs: dict[str, Job] = {}
        #: Per level: the jobs without a key (kept when empty: no allocation
        #: per job), and fairness key -> its queue (dropped when empty).
        self._plain: list[deque[Job]] = [deque() for _ in range(LEVELS)]
        self._queues: list[dict[str, deque[Job]]] = [{} for _ in range(LEVELS)]
        #: Per level: the keys with jobs ("" while ``_plain`` has some), the
        #: one whose turn it is first.
        self._turns: list[deque[str]] = [deque() for _ in range(LEVELS)]
        self._counts = [0] * LEVELS  # live jobs per level
        self._by_task: list[Counter[str]] = [Counter() for _ in range(LEVELS)]  # live, per task
        self._by_key: Counter[str] = Counter()  # live keyed jobs per key, all levels
        self._stale = [0] * LEVELS  # removed jobs still in a level's deques
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

    @property
    def fair_keys(self) -> int:
        """Fairness keys with jobs queued (at any level)."""
        return len(self._by_key)

    def top_fair_keys(self, n: int) -> tuple[tuple[str, int], ...]:
        """The ``n`` fairness keys with the most jobs queued, most first
        (costs a pass over the keys: for snapshots, not per task)."""
        return tuple(heapq.nlargest(n, self._by_key.items(), key=lambda item: item[1]))

    def append(self, job: Job) -> None:
        """Queue ``job`` at the back of its key's queue in its level."""
        level = job.priority
        key = job.fair_key
        self.jobs[job.id] = job
        if key:
            queue = self._queues[level].get(key)
            if queue is None:
                self._queues[level][key] = queue = deque()
                self._turns[level].append(key)
            self._by_key[key] += 1
        else:
            queue = self._plain[level]
            if not queue:
                self._turns[level].append("")
        queue.append(job)
        self._counts[level] += 1
        self._by_task[level][job.task] += 1

    def push_front(self, job: Job) -> bool:
        """Queue ``job`` at the front of its key's queue (it comes back from
        a lost worker; a key with no queue gets the next turn); ``False``
        if it is queued already or its level is unknown."""
        level = job.priority
        if job.id in self.jobs or not 0 <= level < LEVELS:
            return False
        key = job.fair_key
        self.jobs[job.id] = job
        if key:
            queue = self._queues[level].get(key)
            if queue is None:
                self._queues[level][key] = queue = deque()
                self._turns[level].appendleft(key)
            self._by_key[key] += 1
        else:
            queue = self._plain[level]
            if not queue:
                self._turns[level].appendleft("")
        queue.appendleft(job)
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
        self._forget_key(job.fair_key)
        self._stale[level] += 1
        if self._stale[level] > max(_STALE_MIN, self._counts[level]):
            self._rebuild(level)
        return True

    def take(self, budget: Budget, taken: Callable[[Job], object]) -> list[Job]:
        """Take jobs, best first, while a pool of ``budget`` that runs the
        job's task has a free slot (charged as each leaves); jobs of other
        tasks keep their places. ``taken`` is called with each job as it
        leaves, and may queue more."""
        jobs: list[Job] = []
        by_task = self._by_task
        while budget.total > 0 and self.jobs:
            only = budget.runnable
            matching = [sum(by_task[level][name] for name in only) for level in range(LEVELS)]
            if not any(matching):
                break
            counts = self._counts
            while any(matching):
                level = self._next_level(matching)
                # Every job of the level may go: the unfiltered take is quicker.
                job = self._take(level, None if matching[level] == counts[level] else only)
                jobs.append(job)
                matching[level] -= 1
                budget.charge(job.task)
                taken(job)
                if budget.runnable is not only:  # a pool ran out: count again
                    break
        return jobs

    def _take(self, level: int, only: frozenset[str] | None = None) -> Job:
        """Take the next live job of ``level`` that the filter lets through:
        the first of the key whose turn it is; that key goes to the back."""
        queues, turns, live = self._queues[level], self._turns[level], self.jobs
        if only is None and not queues:
            # No keys at this level: first in first out, as a single queue.
            queue = self._plain[level]
            job = queue.popleft()
            while live.get(job.id) is not job:
                self._stale[level] -= 1
                job = queue.popleft()
            if not queue:
                turns.clear()
        elif only is None:
            plain = self._plain[level]
            while True:
                key = turns[0]
                queue = queues[key] if key else plain
                found = None
                while queue:
                    candidate = queue.popleft()
                    if live.get(candidate.id) is candidate:
                        found = candidate
                        break
                    self._stale[level] -= 1
                if not queue:
                    if key:
                        del queues[key]
                    turns.popleft()
                elif len(turns) > 1:
                    turns.rotate(-1)
                if found is not None:
                    job = found
                    break
        else:
            job = self._take_matching(level, only)
        del self.jobs[job.id]
        self._counts[level] -= 1
        self._by_task[level][job.task] -= 1
        if job.fair_key:
            self._forget_key(job.fair_key)
        for lower in range(level + 1, LEVELS):
            self._skipped[lower] = self._skipped[lower] + 1 if self._counts[lower] else 0
        self._skipped[level] = 0
        return job

    def _take_matching(self, level: int, only: frozenset[str]) -> Job:
        """The first live job of a task in ``only``, from the first key in
        turn that has one; that key goes to the back of the turns."""
        queues, turns = self._queues[level], self._turns[level]
        for position, key in enumerate(turns):
            queue = queues[key] if key else self._plain[level]
            for index, job in enumerate(queue):
                if self._is_live(job) and job.task in only:
                    del queue[index]
                    del turns[position]
                    if queue:
                        turns.append(key)
                    elif key:
                        del queues[key]
                    return job
        raise AssertionError("no matching job where one was counted")  # pragma: no cover

    def _rebuild(self, level: int) -> None:
        """Drop the removed jobs from ``level``'s queues, and the keys left empty."""
        self._plain[level] = deque(job for job in self._plain[level] if self._is_live(job))
        queues = self._queues[level]
        for key in list(queues):
            queue = deque(job for job in queues[key] if self._is_live(job))
            if queue:
                queues[key] = queue
            else:
                del queues[key]
        self._turns[level] = deque(
            key for key in self._turns[level] if key in queues or (not key and self._plain[level]))
        self._stale[level] = 0

    def _forget_key(self, key: str) -> None:
        if key:
            left = self._by_key[key] - 1
            if left:
                self._by_key[key] = left
            else:
                del self._by_key[key]

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
