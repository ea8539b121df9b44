"""Deadlines: a heap of items that fall due, and one timer that wakes for them.

An actor that holds things until a time (scheduled tasks, parked queries,
time limits) keeps them in a ``DueHeap`` and runs one ``Timer`` in its
nursery: the timer sleeps until the earliest ``next_at`` and calls back
with the time; ``arm`` wakes it earlier when something sooner arrives.
Times are trio's clock, so tests drive them with ``MockClock``.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Awaitable, Callable, Hashable, Iterator
from typing import Any, Generic, NoReturn, TypeVar

import trio

__all__ = ["DueHeap", "Timer"]

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class DueHeap(Generic[K, T]):
    """Items by key, each due at a time, earliest first.

    An item can be taken out before it is due (``discard``); it leaves the
    heap lazily, and the heap is rebuilt when such leftovers outnumber the
    live items.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, K, T]] = []
        self._live: dict[K, tuple[float, int, K, T]] = {}
        self._sequence = itertools.count()

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, key: object) -> bool:
        return key in self._live

    def push(self, at: float, key: K, item: T) -> None:
        """Add ``item`` under ``key``, due at ``at`` (replacing one of the same key)."""
        entry = (at, next(self._sequence), key, item)
        self._live[key] = entry
        heapq.heappush(self._heap, entry)
        if len(self._heap) > 2 * len(self._live) + 64:
            self._heap = list(self._live.values())
            heapq.heapify(self._heap)

    def values(self) -> Iterator[T]:
        """Every item, in no particular order (do not change the heap meanwhile)."""
        return (entry[3] for entry in self._live.values())

    def discard(self, key: K) -> T | None:
        """Take out the item of ``key`` before it is due; ``None`` if there is none."""
        entry = self._live.pop(key, None)
        return None if entry is None else entry[3]

    @property
    def next_at(self) -> float:
        """When the earliest item is due (``inf`` when empty)."""
        heap = self._heap
        while heap and self._live.get(heap[0][2]) is not heap[0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else math.inf

    def pop_due(self, now: float) -> list[T]:
        """Take out the items due at or before ``now``, earliest first."""
        due = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if self._live.get(entry[2]) is entry:
                del self._live[entry[2]]
                due.append(entry[3])
        return due

    def pop_all(self) -> list[T]:
        """Take out every item, earliest first (on stop: answer them all)."""
        items = [entry[3] for entry in sorted(self._live.values())]
        self._live.clear()
        self._heap.clear()
        return items


class Timer:
    """One task that sleeps until ``next_at()`` and then awaits ``fire(now)``.

    ``next_at`` is asked again after every wake-up, so whatever ``fire``
    pushed or popped is seen; ``arm(at)`` moves a sleeping timer earlier.
    Start it with ``nursery.start(timer.run)``; it runs until cancelled.

    Args:
        next_at: the earliest time anything is due (``math.inf``: nothing).
        fire: called with trio's current time once that time has come (or
            earlier after an ``arm``); it must cope with nothing being due.
    """

    def __init__(self, next_at: Callable[[], float],
                 fire: Callable[[float], Awaitable[None] | None]) -> None:
        self._next_at = next_at
        self._fire = fire
        self._scope: trio.CancelScope | None = None

    def arm(self, at: float) -> None:
        """Wake at ``at`` if that is earlier than the timer would."""
        scope = self._scope
        if scope is not None and at < scope.deadline:
            scope.deadline = at

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
                  ) -> NoReturn:
        task_status.started()
        while True:
            with trio.CancelScope(deadline=self._next_at()) as self._scope:
                await trio.sleep_forever()
            self._scope = None
            result = self._fire(trio.current_time())
            if result is not None:
                await result
