"""``DueHeap``: items that fall due at a time, earliest first.

The inbox keeps its scheduled tasks (``countdown`` / ``eta``) and its
deadlines (``expires``) in these: one timer sleeps until the earliest
``next_at``, and ``pop_due`` hands over what is due. Times are trio's
clock, so tests drive them with ``MockClock``. An item can be taken out
early by key (a cancelled task); it is dropped from the heap lazily.
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import Generic, TypeVar

T = TypeVar("T")


class DueHeap(Generic[T]):
    """Items by key, each due at a time."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str, T]] = []
        self._live: dict[str, tuple[float, int, str, T]] = {}
        self._sequence = itertools.count()

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, key: str) -> bool:
        return key in self._live

    def push(self, at: float, key: str, item: T) -> None:
        """Add ``item`` under ``key``, due at ``at`` (replacing one of the same key)."""
        entry = (at, next(self._sequence), key, item)
        self._live[key] = entry
        heapq.heappush(self._heap, entry)
        if len(self._heap) > 2 * len(self._live) + 64:
            # Items taken out early linger in the heap; drop them now and then.
            self._heap = list(self._live.values())
            heapq.heapify(self._heap)

    def discard(self, key: str) -> T | None:
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
        """The items due at or before ``now``, earliest first."""
        due = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if self._live.get(entry[2]) is entry:
                del self._live[entry[2]]
                due.append(entry[3])
        return due
