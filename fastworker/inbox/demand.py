"""The dispatcher's standing demand, as the inbox keeps it: the free slots
of its last ``Demand`` (pools of the tasks each runs), less the jobs taken
since, and the jobs taken that the dispatcher had not received when it
wrote that Demand (charged to each new Demand first). Plain bookkeeping,
no trio; it takes no job itself (``Levels.take`` does, against ``budget``).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable

from fastworker.budget import Budget
from fastworker.messages import Job

__all__ = ["StandingDemand"]


class StandingDemand:
    """What the inbox may hand the dispatcher now."""

    __slots__ = ("budget", "_in_flight", "_in_flight_tasks", "_taken_total")

    def __init__(self) -> None:
        #: The free slots left of the last Demand.
        self.budget = Budget()
        # Jobs taken that the dispatcher had not received as of its last
        # Demand, oldest first, and how many per task (charged per task to
        # each Demand, not job by job: thousands may be on their way); and
        # how many were taken, ever.
        self._in_flight: deque[Job] = deque()
        self._in_flight_tasks: Counter[str] = Counter()
        self._taken_total = 0

    def replace(self, pools: Iterable[tuple[int, frozenset[str]]], received: int) -> None:
        """A new Demand: the dispatcher's free slots now, having received
        ``received`` jobs in all; what it had not received is charged to
        them first."""
        in_flight, tasks = self._in_flight, self._in_flight_tasks
        arrived = received - (self._taken_total - len(in_flight))
        for _ in range(min(max(arrived, 0), len(in_flight))):
            task = in_flight.popleft().task
            tasks[task] -= 1
            if not tasks[task]:
                del tasks[task]
        budget = self.budget = Budget(pools)
        for task, n in tasks.items():
            budget.charge(task, n)

    def taken(self, job: Job) -> None:
        """``job`` leaves for the dispatcher (its slot was charged)."""
        self._in_flight.append(job)
        self._in_flight_tasks[job.task] += 1
        self._taken_total += 1

    def held_back(self, jobs: list[Job]) -> None:
        """Jobs taken that never leave after all: not on their way, their
        slots free again."""
        back = {id(job) for job in jobs}
        self._in_flight = deque(job for job in self._in_flight if id(job) not in back)
        self._in_flight_tasks = Counter(job.task for job in self._in_flight)
        self._taken_total -= len(jobs)
        for job in jobs:
            self.budget.refund(job.task)
