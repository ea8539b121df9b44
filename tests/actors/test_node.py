"""Nodes under stop and under faults: in-flight work on a graceful stop, and
topologies over lossy, cut and crashing parts from actors.testing."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from actors import Actor, Edge, Node, Topology, open_node
from actors.testing import CuttableWire, FaultyWire, crash_after, cut, memory_wire_pair
from tests.actors.helpers import Hold, Note, Recorder

CODEC = "tests.actors.helpers:codec"


class Jobs(Actor[Note]):
    """Starts a job of `value` seconds per note; drain() waits for them."""

    def __init__(self, options: Any, context: Any, *, finished: list[int]) -> None:
        super().__init__(options, context)
        self.finished = finished
        self.running = 0
        self.idle = trio.Event()

    async def setup(self, nursery: trio.Nursery) -> str | None:
        self.nursery = nursery
        return None

    async def handle(self, message: Note) -> None:
        self.running += 1
        self.nursery.start_soon(self._job, message.value)

    async def _job(self, seconds: int) -> None:
        await trio.sleep(seconds)
        self.finished.append(seconds)
        self.running -= 1
        if not self.running:
            self.idle.set()

    async def drain(self) -> None:
        if self.running:
            await self.idle.wait()


class Collector(Recorder):
    """A Recorder whose drain goes on serving its inbox until it has seen
    ``wanted`` values (as the worker link waits for its last results)."""

    def __init__(self, options: Any, context: Any, *, seen: list[Any], wanted: int) -> None:
        super().__init__(options, context, seen=seen)
        self.wanted = wanted

    async def drain(self) -> None:
        await self.serve_until(lambda: len(self.seen) >= self.wanted)


async def test_serve_until_serves_what_came_behind_the_stop_request(
    autojump_clock: object,
) -> None:
    """Messages queued behind the stop request, and taken with it in one
    batch, are served by ``serve_until`` first, in order: the drain ends
    at once, not at the shutdown deadline with them unhandled."""
    seen: list[Any] = []
    topology = Topology().add("rec", Collector, params={"seen": seen, "wanted": 3})
    async with trio.open_nursery() as nursery:
        node: Node = await nursery.start(Node(topology).run)
        ref = node.refs["rec"]
        gate = trio.Event()
        await ref.send(Hold(gate))
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(node.stop)
        await trio.testing.wait_all_tasks_blocked()  # the stop request is queued
        await ref.send_batch([Note(1), Note(2)])
        released_at = trio.current_time()
        gate.set()
        await node.stopped.wait()
    assert seen == ["held", 1, 2]
    assert trio.current_time() == released_at


async def test_graceful_stop_lets_in_flight_work_finish(autojump_clock: object) -> None:
    """Work an actor started before the stop finishes within the deadline."""
    finished: list[int] = []
    topology = Topology().add("jobs", Jobs, params={"finished": finished})
    async with open_node(topology) as node:
        await node.refs["jobs"].send_batch([Note(3), Note(1), Note(2)])
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
    assert finished == [1, 2, 3]
    assert trio.current_time() - start == 3


def edge_pair(wire_a: Any, wire_b: Any, seen: list[Any]) -> Topology:
    return (
        Topology()
        .add("edge_a", Edge, params={"wire": wire_a}, codec=CODEC)
        .add("edge_b", Edge, refs={"Note": "rec"}, params={"wire": wire_b}, codec=CODEC)
        .add("rec", Recorder, params={"seen": seen})
    )


async def test_a_lossy_wire_loses_exactly_what_it_says(autojump_clock: object) -> None:
    """Over a FaultyWire that drops and delays, the receiver gets every frame
    that was not dropped, and the counts agree."""
    a, b = memory_wire_pair(capacity=1000)
    seen: list[Any] = []
    async with FaultyWire(a, drop=0.25, delay=(0, 0.5), seed=7) as lossy:
        async with open_node(edge_pair(lossy, b, seen)) as node:
            for n in range(200):
                await node.refs["edge_a"].send(Note(n))
                await trio.testing.wait_all_tasks_blocked()  # one note per frame
            await lossy.flush()
            await trio.testing.wait_all_tasks_blocked()
        stats = lossy.stats
    assert stats.sent == 200 and 0 < stats.dropped < 200
    assert len(seen) == 200 - stats.dropped
    assert len(set(seen)) == len(seen)


async def test_a_cut_link_loses_frames_until_restored() -> None:
    """While an edge's link is cut frames vanish silently; after restore they flow."""
    a, b = memory_wire_pair()
    link = CuttableWire(a)
    seen: list[Any] = []
    async with open_node(edge_pair(link, b, seen)) as node:
        with cut(link):
            await node.refs["edge_a"].send(Note(1))
            await trio.testing.wait_all_tasks_blocked()
        await node.refs["edge_a"].send(Note(2))
        await trio.testing.wait_all_tasks_blocked()
    assert seen == [2]
    assert link.stats.sent_lost == 1


async def test_crash_after_crashes_the_given_number_of_times(autojump_clock: object) -> None:
    """crash_after(cls, n, times=k) crashes k instances on their n-th message, then recovers."""
    seen: list[Any] = []
    topology = Topology().add("rec", crash_after(Recorder, 2, times=2), params={"seen": seen})
    async with open_node(topology) as node:
        for n in range(6):
            await node.refs["rec"].send(Note(n))
            await trio.testing.wait_all_tasks_blocked()
            await trio.sleep(1)  # past any restart backoff
        stats = (await node.stats())["rec"]
    assert stats.restarts == 2
    assert seen == [0, 2, 4, 5]  # notes 1 and 3 were the crashes


class Reporter(Jobs):
    """Jobs that, when done, report to `out` (which may have stopped already)."""

    refs_required = ("out",)

    async def _job(self, seconds: int) -> None:
        await super()._job(seconds)
        await self.refs["out"].send(Note(seconds))


async def test_work_finishing_during_a_stop_may_send_to_an_actor_already_stopped(
    autojump_clock: object, caplog: pytest.LogCaptureFixture
) -> None:
    """In a cycle one actor stops before the other; the later one finishing its
    in-flight work and sending to the earlier one does not crash it."""
    finished: list[int] = []
    seen: list[Any] = []
    topology = (
        Topology()
        .add("rec", Recorder, refs={"out": "jobs"}, params={"seen": seen})
        .add("jobs", Reporter, refs={"out": "rec"}, params={"finished": finished})
    )
    async with open_node(topology) as node:
        assert [c.name for c in node.supervisor.children] == ["jobs", "rec"]
        await node.refs["jobs"].send(Note(2))
        await trio.testing.wait_all_tasks_blocked()
    assert finished == [2]
    assert "crashed" not in caplog.text
    assert "actor rec stopped with 1 message left in its inbox" in caplog.text


async def test_a_stop_past_its_deadline_cancels_cleanly(autojump_clock: object) -> None:
    """Actors still busy at the deadline are cancelled, then the node stops
    without an error."""
    finished: list[int] = []
    topology = Topology().add("jobs", Jobs, params={"finished": finished})
    async with open_node(topology) as node:
        await node.refs["jobs"].send(Note(100))
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        await node.stop(deadline=5)
        assert trio.current_time() - start == 5
    assert finished == []
