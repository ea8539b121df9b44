"""Tests for the fault kit: memory wires, FaultyWire, CuttableWire and cut().

Anything timed runs under pytest-trio's ``autojump_clock``; "nothing more
arrives" is checked by waiting a second of virtual time, never real time.
"""

from __future__ import annotations

import collections
import itertools

import pytest
import trio
import trio.testing

from actors.testing import (
    CutStats,
    CuttableWire,
    FaultStats,
    FaultyWire,
    MemoryWire,
    cut,
    memory_wire_pair,
)
from actors.wire import Received, Wire


def frames(count: int) -> list[bytes]:
    return [b"%d" % n for n in range(count)]


async def receive_all(wire: Wire) -> list[bytes]:
    """Receive until the wire has been quiet for one second of virtual time."""
    received: list[bytes] = []
    while True:
        with trio.move_on_after(1):
            received.append((await wire.receive_frame()).frame)
            continue
        return received


async def send_through(count: int, **faults: object) -> tuple[list[bytes], FaultStats]:
    """Send ``count`` frames through a FaultyWire; return what arrived and the stats."""
    a, b = memory_wire_pair(capacity=2 * count)
    async with FaultyWire(a, **faults) as wire:  # type: ignore[arg-type]
        for frame in frames(count):
            await wire.send_frame(frame)
        await wire.flush()
        received = await receive_all(b)
        return received, wire.stats


class TestMemoryWirePair:
    async def test_frames_go_both_ways_named_by_sender(self) -> None:
        """Each end receives the other's frames, with the sender's name as peer."""
        client, server = memory_wire_pair(names=("client", "server"))
        await client.send_frame(b"ping")
        assert await server.receive_frame() == Received(b"ping", peer="client")
        await server.send_frame(b"pong", to="anything")
        assert await client.receive_frame() == Received(b"pong", peer="server")
        assert (client.name, server.name) == ("client", "server")

    async def test_ends_are_wires(self) -> None:
        """Both ends satisfy the Wire Protocol."""
        a, b = memory_wire_pair()
        assert isinstance(a, MemoryWire) and isinstance(a, Wire) and isinstance(b, Wire)

    async def test_full_direction_makes_sender_wait(self) -> None:
        """A sender waits while its direction is full and resumes once a frame is taken."""
        a, b = memory_wire_pair(capacity=2)
        sent: list[bytes] = []

        async def sender() -> None:
            for frame in frames(3):
                await a.send_frame(frame)
                sent.append(frame)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            await trio.testing.wait_all_tasks_blocked()
            assert sent == [b"0", b"1"]  # the third send is waiting

            assert (await b.receive_frame()).frame == b"0"
            await trio.testing.wait_all_tasks_blocked()
            assert sent == [b"0", b"1", b"2"]
        assert [(await b.receive_frame()).frame for _ in range(2)] == [b"1", b"2"]

    async def test_closed_end_raises_closed_resource_error(self) -> None:
        """After aclose, both calls on that end raise ClosedResourceError."""
        a, _ = memory_wire_pair()
        await a.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await a.send_frame(b"x")
        with pytest.raises(trio.ClosedResourceError):
            await a.receive_frame()

    async def test_waiting_calls_wake_when_their_end_closes(self) -> None:
        """A receive, and a send on a full direction, waiting in other tasks wake on aclose."""
        a, _ = memory_wire_pair(capacity=0)
        errors: list[type[BaseException]] = []

        async def call(method: str) -> None:
            with pytest.raises(trio.ClosedResourceError) as info:
                if method == "send":
                    await a.send_frame(b"x")
                else:
                    await a.receive_frame()
            errors.append(info.type)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, "send")
            nursery.start_soon(call, "receive")
            await trio.testing.wait_all_tasks_blocked()
            await a.aclose()
        assert errors == [trio.ClosedResourceError, trio.ClosedResourceError]

    async def test_peer_is_not_told_of_close(self, autojump_clock: trio.testing.MockClock) -> None:
        """When one end closes, the other keeps waiting and its sends vanish silently."""
        a, b = memory_wire_pair(capacity=1)
        await a.send_frame(b"fills the buffer")

        async def send_one_more() -> None:
            await a.send_frame(b"waits, then vanishes")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_one_more)
            await trio.testing.wait_all_tasks_blocked()
            await b.aclose()  # the waiting send returns quietly

        await a.send_frame(b"vanishes")
        with trio.move_on_after(60) as scope:
            await a.receive_frame()
        assert scope.cancelled_caught


class TestFaultyWire:
    async def test_without_faults_frames_pass_unchanged(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """With no faults, every frame arrives once, in order, and the stats say so."""
        received, stats = await send_through(100)
        assert received == frames(100)
        assert stats == FaultStats(sent=100, dropped=0, duplicated=0, delayed=0, reordered=0)

    async def test_drop_loses_the_counted_frames_deterministically(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """drop=0.3 loses exactly the counted frames, the same ones for the same seed."""
        received, stats = await send_through(1000, drop=0.3, seed=7)
        assert stats.sent == 1000
        assert len(received) == stats.sent - stats.dropped
        assert 200 < stats.dropped < 400
        assert received == sorted(received, key=int)  # drop alone keeps order
        assert set(received) < set(frames(1000))

        assert await send_through(1000, drop=0.3, seed=7) == (received, stats)
        assert (await send_through(1000, drop=0.3, seed=8))[0] != received

    async def test_dupe_sends_the_counted_frames_twice(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """dupe=0.2 sends exactly the counted frames twice, back to back."""
        received, stats = await send_through(1000, dupe=0.2, seed=3)
        counts = collections.Counter(received)
        assert len(received) == stats.sent + stats.duplicated
        assert sorted(counts) == sorted(frames(1000))
        assert sum(1 for seen in counts.values() if seen == 2) == stats.duplicated > 0
        assert list(dict.fromkeys(received)) == frames(1000)
        assert await send_through(1000, dupe=0.2, seed=3) == (received, stats)

    async def test_delay_holds_frames_without_blocking_sender(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Each frame arrives between low and high seconds later; the sender never waits."""
        a, b = memory_wire_pair(capacity=0)  # the receiver's pace sets the sending pace
        arrivals: dict[bytes, float] = {}

        async def receiver() -> None:
            for _ in range(100):
                received = await b.receive_frame()
                arrivals[received.frame] = trio.current_time()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receiver)
            async with FaultyWire(a, delay=(1.0, 3.0), seed=5) as wire:
                start = trio.current_time()
                for frame in frames(100):
                    await wire.send_frame(frame)
                assert trio.current_time() == start  # no send waited for its delay
                await wire.flush()
                assert wire.stats == FaultStats(
                    sent=100, dropped=0, duplicated=0, delayed=100, reordered=0
                )

        assert sorted(arrivals) == sorted(frames(100))
        assert all(1.0 <= arrived - start <= 3.0 for arrived in arrivals.values())
        assert list(arrivals) != frames(100)  # random delays reorder frames too

    async def test_flush_waits_for_delayed_frames(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """flush returns once the last delayed frame has gone out, not before."""
        a, b = memory_wire_pair()
        async with FaultyWire(a, delay=(2.0, 2.0)) as wire:
            start = trio.current_time()
            await wire.send_frame(b"x")
            await wire.flush()
            assert trio.current_time() - start == 2.0
            assert (await b.receive_frame()).frame == b"x"

    async def test_reorder_swaps_frames_but_keeps_content(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Each reordered frame arrives right after its successor; nothing is lost or added."""
        received, stats = await send_through(1000, reorder=0.3, seed=11)
        assert sorted(received, key=int) == frames(1000)
        assert received != frames(1000)
        descents = sum(1 for x, y in itertools.pairwise(received) if int(x) > int(y))
        assert descents == stats.reordered > 0
        assert await send_through(1000, reorder=0.3, seed=11) == (received, stats)

    async def test_faults_combine_and_account(self, autojump_clock: trio.testing.MockClock) -> None:
        """With every fault on, the frames that arrive are sent - dropped + duplicated."""
        faults = {"drop": 0.2, "dupe": 0.2, "reorder": 0.2, "delay": (0.0, 0.5), "seed": 13}
        received, stats = await send_through(500, **faults)
        assert len(received) == stats.sent - stats.dropped + stats.duplicated
        assert stats.delayed == len(received)
        assert min(stats.dropped, stats.duplicated, stats.reordered) > 0
        assert await send_through(500, **faults) == (received, stats)

    async def test_a_seed_fixes_drops_whatever_else_is_on(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Turning on another fault does not change which frames a seed drops."""
        dropped_alone, _ = await send_through(300, drop=0.3, seed=2)
        with_dupes, _ = await send_through(300, drop=0.3, dupe=0.5, seed=2)
        assert list(dict.fromkeys(with_dupes)) == dropped_alone

    async def test_body_exception_is_not_wrapped(self) -> None:
        """An exception raised inside the block comes out as itself."""
        a, _ = memory_wire_pair()
        with pytest.raises(KeyError):
            async with FaultyWire(a):
                raise KeyError("boom")

    async def test_outer_cancellation_leaves_the_block_cleanly(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A cancel scope around the block cancels it, frames in flight and all."""
        a, _ = memory_wire_pair()
        start = trio.current_time()
        with trio.move_on_after(1) as scope:
            async with FaultyWire(a, delay=(5.0, 5.0)) as wire:
                await wire.send_frame(b"in flight")
                await trio.sleep(10)
        assert scope.cancelled_caught
        assert trio.current_time() - start == 1.0
        with pytest.raises(trio.ClosedResourceError):
            await a.send_frame(b"x")

    async def test_leaving_the_block_closes_both_wires(self) -> None:
        """After the block, the FaultyWire and the wire it wraps are closed."""
        a, _ = memory_wire_pair()
        async with FaultyWire(a) as wire:
            pass
        with pytest.raises(trio.ClosedResourceError):
            await wire.send_frame(b"x")
        with pytest.raises(trio.ClosedResourceError):
            await a.send_frame(b"x")

    async def test_frames_still_delayed_at_close_are_lost(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Closing the wire loses the frames still waiting out their delay."""
        a, b = memory_wire_pair()
        async with FaultyWire(a, delay=(5.0, 5.0)) as wire:
            await wire.send_frame(b"lost")
        with trio.move_on_after(60) as scope:
            await b.receive_frame()
        assert scope.cancelled_caught

    async def test_sending_outside_the_block_is_refused(self) -> None:
        """send_frame before entering says how to use the wire."""
        a, _ = memory_wire_pair()
        with pytest.raises(RuntimeError) as info:
            await FaultyWire(a).send_frame(b"x")
        assert str(info.value) == (
            "a FaultyWire sends from a task it owns; "
            "use it as `async with FaultyWire(inner, ...) as wire:`"
        )

    @pytest.mark.parametrize(
        ("faults", "message"),
        [
            ({"drop": 1.5}, "FaultyWire drop=1.5: expected a probability between 0 and 1"),
            ({"dupe": -0.1}, "FaultyWire dupe=-0.1: expected a probability between 0 and 1"),
            ({"reorder": 2}, "FaultyWire reorder=2: expected a probability between 0 and 1"),
            (
                {"delay": (3.0, 1.0)},
                (
                    "FaultyWire delay=(3.0, 1.0): expected (low, high) seconds "
                    "with 0 <= low <= high, or None"
                ),
            ),
        ],
        ids=["drop", "dupe", "reorder", "delay"],
    )
    def test_bad_options_are_refused(self, faults: dict[str, object], message: str) -> None:
        """An impossible option fails at construction, naming the option and the value."""
        a, _ = memory_wire_pair()
        with pytest.raises(ValueError) as info:
            FaultyWire(a, **faults)  # type: ignore[arg-type]
        assert str(info.value) == message


class TestCuttableWire:
    async def test_cut_loses_frames_both_ways_and_restore_resumes(self) -> None:
        """While cut, frames are lost in both directions; after restore they flow."""
        a, b = memory_wire_pair()
        link = CuttableWire(a)
        received: list[bytes] = []

        async def receiver() -> None:
            while True:
                received.append((await link.receive_frame()).frame)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receiver)
            await trio.testing.wait_all_tasks_blocked()

            link.cut()
            assert link.is_cut
            await link.send_frame(b"lost outgoing")
            await b.send_frame(b"lost incoming")
            await trio.testing.wait_all_tasks_blocked()
            assert received == []
            assert link.stats == CutStats(sent_lost=1, received_lost=1)

            link.restore()
            await link.send_frame(b"outgoing")
            await b.send_frame(b"incoming")
            await trio.testing.wait_all_tasks_blocked()
            assert received == [b"incoming"]
            assert (await b.receive_frame()).frame == b"outgoing"
            nursery.cancel_scope.cancel()

    async def test_cut_for_restores_after_virtual_time(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """cut_for(5) loses what is sent in the first five seconds, then lets it through."""
        a, b = memory_wire_pair()
        link = CuttableWire(a)
        async with trio.open_nursery() as nursery:
            start = trio.current_time()
            nursery.start_soon(link.cut_for, 5.0)
            await trio.sleep(1)
            await link.send_frame(b"lost")
            await trio.sleep(5)
            assert not link.is_cut
            await link.send_frame(b"arrives")
        assert trio.current_time() - start == 6.0
        assert (await b.receive_frame()).frame == b"arrives"
        assert link.stats == CutStats(sent_lost=1, received_lost=0)

    async def test_cut_context_restores_even_on_error(self) -> None:
        """cut() cuts inside the block and restores on the way out, whatever happens."""
        a, _ = memory_wire_pair()
        link = CuttableWire(a)
        with pytest.raises(KeyError), cut(link) as same:
            assert same is link and link.is_cut
            raise KeyError("boom")
        assert not link.is_cut

    async def test_closed_link_raises(self) -> None:
        """A closed CuttableWire refuses to send, even while cut, and closes its inner wire."""
        a, _ = memory_wire_pair()
        link = CuttableWire(a)
        link.cut()
        await link.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await link.send_frame(b"x")
        with pytest.raises(trio.ClosedResourceError):
            await a.receive_frame()
