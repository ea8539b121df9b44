"""Free slots per pool, charged job by job: what a ``Demand`` lets the
inbox hand out, and what the dispatcher holds against it.

A pool is slots of one kind on workers that run the same tasks (the
control plane's threads, one subworker's lanes, ...). A job of task ``t``
takes a slot of the pool that runs ``t`` with the fewest other tasks, so
pools that run more keep their slots for jobs only they can take. Plain
bookkeeping, no trio; it knows nothing of workers or placement.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["Budget"]


class _Pool:
    __slots__ = ("free", "tasks")

    def __init__(self, free: int, tasks: frozenset[str]) -> None:
        self.free = free
        self.tasks = tasks


class Budget:
    """The free slots of some pools, given as ``(free, tasks)`` pairs."""

    __slots__ = ("_pools", "_by_task", "runnable", "total")

    def __init__(self, pools: Iterable[tuple[int, frozenset[str]]] = ()) -> None:
        # The pools with fewer tasks first; those without free slots dropped.
        self._pools = sorted((_Pool(free, tasks) for free, tasks in pools if free > 0),
                             key=lambda pool: len(pool.tasks))
        self._by_task: dict[str, list[_Pool]] = {}
        #: The tasks some pool with free slots runs.
        self.runnable: frozenset[str] = frozenset()
        #: The free slots of all pools.
        self.total = 0
        self._recount()

    def charge(self, task: str, n: int = 1) -> bool:
        """Take a slot for each of ``n`` jobs of ``task``, as far as pools
        that run it have them; ``False`` if they had fewer (the rest not
        taken). When a pool runs out, ``runnable`` is counted again (once
        per pool)."""
        while n > 0:
            pools = self._by_task.get(task)
            if not pools:
                return False
            pool = pools[0]
            taken = pool.free if pool.free < n else n
            pool.free -= taken
            self.total -= taken
            n -= taken
            if not pool.free:
                self._recount()
        return True

    def refund(self, task: str) -> None:
        """Give back a slot taken for ``task`` (the job did not leave)."""
        for pool in self._pools:
            if task in pool.tasks:
                pool.free += 1
                self._recount()
                return

    def _recount(self) -> None:
        by_task: dict[str, list[_Pool]] = {}
        total = 0
        for pool in self._pools:
            if pool.free > 0:
                total += pool.free
                for task in pool.tasks:
                    by_task.setdefault(task, []).append(pool)
        self._by_task = by_task
        self.runnable = frozenset(by_task)
        self.total = total
