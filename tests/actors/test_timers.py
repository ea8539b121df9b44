"""DueHeap and Timer: items that fall due, and the one timer that wakes for them."""

from __future__ import annotations

import math

import trio
import trio.testing

from actors import DueHeap, Timer


class TestDueHeap:
    def test_items_come_out_earliest_first_once_due(self) -> None:
        """pop_due hands over what is due at that time, earliest first, and nothing else."""
        heap: DueHeap[str, int] = DueHeap()
        heap.push(3.0, "c", 3)
        heap.push(1.0, "a", 1)
        heap.push(2.0, "b", 2)
        assert heap.next_at == 1.0
        assert heap.pop_due(2.5) == [1, 2]
        assert len(heap) == 1 and "c" in heap
        assert heap.next_at == 3.0

    def test_a_discarded_item_never_falls_due(self) -> None:
        """An item taken out early is gone: not due, not counted, not next."""
        heap: DueHeap[str, int] = DueHeap()
        heap.push(1.0, "a", 1)
        heap.push(2.0, "b", 2)
        assert heap.discard("a") == 1
        assert heap.discard("a") is None
        assert heap.next_at == 2.0
        assert heap.pop_due(10.0) == [2]
        assert heap.next_at == math.inf

    def test_pushing_a_key_again_replaces_its_item(self) -> None:
        """The same key pushed twice is one item, due at the later push's time."""
        heap: DueHeap[str, str] = DueHeap()
        heap.push(1.0, "a", "first")
        heap.push(5.0, "a", "second")
        assert len(heap) == 1
        assert heap.pop_due(2.0) == []
        assert heap.pop_due(5.0) == ["second"]

    def test_leftovers_are_compacted(self) -> None:
        """Many discarded items do not make the heap grow without bound."""
        heap: DueHeap[int, int] = DueHeap()
        for n in range(10_000):
            heap.push(float(n), n, n)
            heap.discard(n)
        assert len(heap) == 0
        assert len(heap._heap) <= 64 + 1

    def test_pop_all_empties_it_in_order(self) -> None:
        """pop_all takes every item, earliest first."""
        heap: DueHeap[str, int] = DueHeap()
        heap.push(2.0, "b", 2)
        heap.push(1.0, "a", 1)
        assert heap.pop_all() == [1, 2]
        assert len(heap) == 0 and heap.next_at == math.inf


async def test_timer_fires_at_each_due_time(autojump_clock: trio.testing.MockClock) -> None:
    """The timer wakes at the earliest due time and again for the next one."""
    heap: DueHeap[str, str] = DueHeap()
    fired: list[tuple[float, list[str]]] = []

    def fire(now: float) -> None:
        fired.append((now, heap.pop_due(now)))

    timer = Timer(lambda: heap.next_at, fire)
    heap.push(5.0, "a", "a")
    heap.push(7.0, "b", "b")
    async with trio.open_nursery() as nursery:
        await nursery.start(timer.run)
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert fired == [(5.0, ["a"]), (7.0, ["b"])]


async def test_arm_wakes_a_sleeping_timer_earlier(autojump_clock: trio.testing.MockClock) -> None:
    """An item due sooner than the timer's sleep fires at its own time once armed."""
    heap: DueHeap[str, str] = DueHeap()
    fired: list[tuple[float, list[str]]] = []

    async def fire(now: float) -> None:
        fired.append((now, heap.pop_due(now)))

    timer = Timer(lambda: heap.next_at, fire)
    heap.push(100.0, "late", "late")
    async with trio.open_nursery() as nursery:
        await nursery.start(timer.run)
        await trio.sleep(1)
        heap.push(3.0, "soon", "soon")
        timer.arm(3.0)
        timer.arm(50.0)  # later than planned: changes nothing
        await trio.sleep(200)
        nursery.cancel_scope.cancel()
    assert fired == [(3.0, ["soon"]), (100.0, ["late"])]
