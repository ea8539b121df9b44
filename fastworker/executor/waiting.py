"""The jobs an executor holds that wait for a slot of their kind: those it
took beyond its free slots (its prefetch), kept per kind of slot, best
first (``Job.priority``, lower is more urgent; then arrival).

A job reaches this only when no slot of its kind is free, so a job that
can start at once never pays for it. Plain bookkeeping, no trio; it never
starts a job (the executor pops them as slots free).
"""

from __future__ import annotations

import heapq
import itertools
from typing import Any

from fastworker.messages import Job
from fastworker.tasks import Task

#: A waiting job: ``[priority, arrival, job, task, kind]``; ``job`` is
#: ``None`` once it was stopped (left in its heap until popped).
_Entry = list[Any]


class Waiting:
    """Per kind of slot (``KINDS`` index), a heap of the jobs that wait."""

    __slots__ = ("counts", "_heaps", "_by_id", "_arrivals")

    def __init__(self) -> None:
        #: Jobs waiting per kind of slot.
        self.counts = [0, 0, 0]
        self._heaps: tuple[list[_Entry], list[_Entry], list[_Entry]] = ([], [], [])
        self._by_id: dict[str, _Entry] = {}  # for a Stop
        self._arrivals = itertools.count()

    def __len__(self) -> int:
        return sum(self.counts)

    def push(self, job: Job, task: Task[Any, Any], kind: int) -> None:
        """Hold ``job`` until a slot of ``kind`` is free."""
        entry = [job.priority, next(self._arrivals), job, task, kind]
        heapq.heappush(self._heaps[kind], entry)
        self._by_id[job.id] = entry  # the same id twice: a Stop reaches the later one
        self.counts[kind] += 1

    def pop(self, kind: int) -> tuple[Job, Task[Any, Any]] | None:
        """The best job waiting for a slot of ``kind`` (``None``: none), no
        longer held."""
        heap = self._heaps[kind]
        while heap:
            entry = heapq.heappop(heap)
            job, task = entry[2], entry[3]
            if job is not None:
                if self._by_id.get(job.id) is entry:
                    del self._by_id[job.id]
                self.counts[kind] -= 1
                return job, task
        return None

    def stop(self, task_id: str) -> Job | None:
        """Stop holding the job of that id; ``None`` if none waits."""
        entry = self._by_id.pop(task_id, None)
        if entry is None:
            return None
        job: Job = entry[2]
        self._drop(entry)
        return job

    def take_all(self) -> list[Job]:
        """Every job waiting, of all kinds, best first; none is held after."""
        entries = sorted(entry for heap in self._heaps for entry in heap if entry[2] is not None)
        for heap in self._heaps:
            heap.clear()
        self._by_id.clear()
        self.counts[:] = [0, 0, 0]
        return [entry[2] for entry in entries]

    def _drop(self, entry: _Entry) -> None:
        kind: int = entry[4]
        entry[2] = entry[3] = None  # skipped when popped
        self.counts[kind] -= 1
        if not self.counts[kind]:
            self._heaps[kind].clear()  # only dropped entries were left
