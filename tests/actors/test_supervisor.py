"""Supervision: restart strategies, the restart limit, backoff and start failures."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from actors import Actor, Escalation, RestartPolicy, StartError, Topology, open_node
from actors.node import Node
from actors.testing import InjectedCrash, crash_after
from tests.actors.helpers import Note, Recorder


def three(policy: RestartPolicy, crashing: str = "b", *, times: int = 1) -> Topology:
    """Actors a, b, c started in that order; `crashing` crashes on its 2nd note."""
    topology = Topology()
    topology.node = type(topology.node)(supervision=policy)
    for name in "abc":
        kind = crash_after(Recorder, 2, times=times) if name == crashing else Recorder
        topology.add(name, kind)
    return topology


async def crash(node: Node, name: str) -> None:
    await node.refs[name].send(Note(1))
    await node.refs[name].send(Note(2))  # the injected crash


async def restarts(node: Node) -> dict[str, int]:
    return {name: stats.restarts for name, stats in (await node.stats()).items()}


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("one_for_one", {"a": 0, "b": 1, "c": 0}),
        ("one_for_all", {"a": 1, "b": 1, "c": 1}),
        ("rest_for_one", {"a": 0, "b": 1, "c": 1}),
    ],
)
async def test_each_strategy_restarts_what_it_should(
    autojump_clock: object, strategy: str, expected: dict[str, int]
) -> None:
    """one_for_one restarts the crashed actor, one_for_all all of them,
    rest_for_one the crashed one and those started after it."""
    async with open_node(three(RestartPolicy(strategy=strategy))) as node:  # type: ignore[arg-type]
        await crash(node, "b")
        # A call is answered only once the restarted b is running again.
        assert await node.refs["b"].call(Note(3), timeout=60) == 6
        assert await restarts(node) == expected


async def test_a_restarted_actor_keeps_its_inbox(autojump_clock: object) -> None:
    """Messages queued for a crashed actor, even those drained in the same
    batch as the one it crashed on, wait for its next instance."""
    seen: list[Any] = []
    topology = Topology().add("b", crash_after(Recorder, 1), params={"seen": seen})
    async with open_node(topology) as node:
        await node.refs["b"].send_batch([Note(1), Note(2), Note(3)])
        assert await node.refs["b"].call(Note(4), timeout=60) == 8
    assert seen == [2, 3, 4]  # note 1 was the crash


async def test_restarts_back_off_exponentially(autojump_clock: object) -> None:
    """Each restart in the window waits twice as long as the one before, up to the max."""
    policy = RestartPolicy(max_restarts=10, within=1000, backoff_initial=1, backoff_max=3)
    async with open_node(three(policy, times=4)) as node:
        waits = []
        for _ in range(4):
            before = trio.current_time()
            await crash(node, "b")
            await node.refs["b"].call(Note(0), timeout=60)
            waits.append(trio.current_time() - before)
    assert waits == [1, 2, 3, 3]


async def test_too_many_restarts_escalate(autojump_clock: object) -> None:
    """Past max_restarts within the window the node stops with Escalation."""
    policy = RestartPolicy(max_restarts=2, within=60, backoff_initial=0.5)
    with pytest.raises(Escalation) as raised:
        async with open_node(three(policy, times=10)) as node:
            for _ in range(3):
                await crash(node, "b")
                await trio.testing.wait_all_tasks_blocked()
                await trio.sleep(1)  # virtual time: past the backoff
            await trio.sleep_forever()  # ended by the escalation
    assert str(raised.value) == (
        "actor b crashed and the restart limit is reached (2 restarts within 60 s); "
        "last error: InjectedCrash: b: injected crash at message 2"
    )


async def test_restarts_outside_the_window_do_not_count(autojump_clock: object) -> None:
    """The limit counts restarts within `within` seconds only."""
    policy = RestartPolicy(max_restarts=1, within=10, backoff_initial=0)
    async with open_node(three(policy, times=3)) as node:
        for _ in range(3):
            await crash(node, "b")
            await node.refs["b"].call(Note(0), timeout=60)
            await trio.sleep(11)
        assert (await restarts(node))["b"] == 3


async def test_an_actor_that_fails_to_start_stops_the_node() -> None:
    """A failure before ready is a StartError naming the actor and the cause."""

    class Broken(Actor[Any]):
        async def setup(self, nursery: trio.Nursery) -> str | None:
            raise OSError("address in use")

    with pytest.raises(StartError, match="actor broken failed to start: OSError: address in use"):
        async with open_node(Topology().add("ok", Recorder).add("broken", Broken)):
            pass  # pragma: no cover


async def test_a_failed_restart_counts_as_a_crash(autojump_clock: object) -> None:
    """An actor that cannot start again is retried until the restart limit."""
    starts = [0]

    class Flaky(Actor[Any]):
        async def setup(self, nursery: trio.Nursery) -> str | None:
            starts[0] += 1
            if starts[0] > 1:
                raise OSError("still broken")
            return None

        async def handle(self, message: Any) -> None:
            raise InjectedCrash("first crash")

    policy = RestartPolicy(max_restarts=3, within=60, backoff_initial=0.1)
    topology = Topology(node=type(Topology().node)(supervision=policy)).add("flaky", Flaky)
    with pytest.raises(Escalation, match="last error: OSError: still broken"):
        async with open_node(topology) as node:
            await node.refs["flaky"].send(Note(1))
            await trio.sleep_forever()  # ended by the escalation
    assert starts[0] == 4  # the first start and three restarts


async def test_graceful_stop_finishes_queued_work_in_reverse_order() -> None:
    """stop() lets each actor handle what is queued for it, edges of the flow first."""
    seen: list[Any] = []
    topology = (
        Topology()
        .add("front", Recorder, refs={"out": "back"})
        .add("back", Recorder, params={"seen": seen})
    )
    async with open_node(topology) as node:
        assert [c.name for c in node.supervisor.children] == ["back", "front"]
        await node.refs["front"].send_batch([Note(n) for n in range(100)])
    # Leaving the block stopped front first; it forwarded all 100 to back,
    # and back handled them before it stopped.
    assert seen == list(range(100))
    with pytest.raises(trio.BrokenResourceError):
        await node.refs["back"].send(Note(0))


async def test_stop_cancels_what_is_still_running_at_the_deadline(autojump_clock: object) -> None:
    """An actor still busy at the shutdown deadline is cancelled; the node stops."""
    from tests.actors.helpers import Hold

    topology = Topology().add("rec", Recorder)
    async with open_node(topology) as node:
        await node.refs["rec"].send(Hold(trio.Event()))  # never set
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        await node.stop(deadline=7)
        assert trio.current_time() - start == pytest.approx(7)
