"""The actor base: batches, calls, snapshots and readiness."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from actors import Actor, ActorCrashed, GetStats, Topology, open_node
from tests.actors.helpers import Boom, Hold, Note, Recorder


async def test_a_busy_actor_handles_its_inbox_in_batches() -> None:
    """Messages queued while the actor is busy are handed over as one batch."""
    seen: list[Any] = []
    batches: list[int] = []
    topology = Topology().add("rec", Recorder, params={"seen": seen, "batches": batches})
    async with open_node(topology) as node:
        gate = trio.Event()
        ref = node.refs["rec"]
        await ref.send(Hold(gate))
        await trio.testing.wait_all_tasks_blocked()
        for n in range(50):
            await ref.send(Note(n))
        gate.set()
        assert await ref.call(Note(99)) == 198  # everything before it was handled
    assert seen == ["held", *range(50), 99]
    assert batches[:2] == [1, 50]
    stats = await_stats_from(node)
    assert stats.handled_total == 53  # hold, 50 notes, the call, and the stop request


def await_stats_from(node: Any) -> Any:
    # After the node stopped, the last instance still holds its context.
    return node.supervisor.children[0].instance.stats()


async def test_call_returns_what_handle_returned() -> None:
    """Ref.call answers with handle's return value."""
    async with open_node(Topology().add("rec", Recorder)) as node:
        assert await node.refs["rec"].call(Note(21), timeout=5) == 42


async def test_a_call_that_crashes_the_actor_fails_the_caller() -> None:
    """The caller of a message that crashes the actor gets ActorCrashed, not a hang."""
    async with open_node(Topology().add("rec", Recorder)) as node:
        with pytest.raises(ActorCrashed, match="rec crashed handling Boom: RuntimeError: boom"):
            await node.refs["rec"].call(Boom(), timeout=5)


async def test_every_actor_answers_get_stats() -> None:
    """GetStats is answered with a snapshot of the mailbox, counts and restarts."""
    async with open_node(Topology().add("rec", Recorder, mailbox=16)) as node:
        await node.refs["rec"].send(Note(1))
        stats = await node.refs["rec"].call(GetStats(), timeout=5)
    assert stats.name == "rec"
    assert stats.kind == "tests.actors.helpers:Recorder"
    assert stats.mailbox.max_depth == 16
    assert stats.handled_total == 2
    assert stats.restarts == 0


async def test_started_means_ready(autojump_clock: object) -> None:
    """An actor is started only after its setup finished; what setup returns
    is what the node reports for it."""
    order: list[str] = []

    class Slow(Actor[Any]):
        async def setup(self, nursery: trio.Nursery) -> str | None:
            await trio.sleep(1)
            order.append("setup done")
            return "listening on nothing"

    class Eager(Actor[Any]):
        refs_required = ("slow",)

        async def setup(self, nursery: trio.Nursery) -> str | None:
            order.append("eager setup")
            return None

    topology = Topology().add("eager", Eager, refs={"slow": "slow"}).add("slow", Slow)
    async with open_node(topology) as node:
        assert order == ["setup done", "eager setup"]  # what it refers to starts first
        assert node.ready == {"slow": "listening on nothing", "eager": None}


async def test_unhandled_message_crashes_with_a_clear_error() -> None:
    """An actor that does not override handle says which message it could not handle."""

    class Mute(Actor[Any]):
        pass

    async with open_node(Topology().add("mute", Mute)) as node:
        with pytest.raises(ActorCrashed, match="Mute does not handle Note"):
            await node.refs["mute"].call(Note(1), timeout=5)


async def test_a_deferred_call_is_answered_later_without_blocking_the_inbox() -> None:
    """defer() parks a call; the actor goes on handling messages, and the
    caller gets the answer whenever the actor sets it."""
    from actors import Reply

    class Parker(Actor[Any]):
        parked: list[Reply] = []

        async def handle(self, message: Any) -> Any:
            if message == "park":
                self.parked.append(self.defer())
                return "ignored"
            if message == "release":
                self.parked.pop().set("released")
            return "handled"

    async with open_node(Topology().add("p", Parker)) as node:
        async with trio.open_nursery() as nursery:
            answers: list[str] = []

            async def park() -> None:
                answers.append(await node.refs["p"].call("park", timeout=5))

            nursery.start_soon(park)
            await trio.testing.wait_all_tasks_blocked()
            assert await node.refs["p"].call("other", timeout=5) == "handled"
            assert answers == []
            await node.refs["p"].call("release", timeout=5)
        assert answers == ["released"]


async def test_defer_outside_a_call_is_an_error() -> None:
    """defer() while handling a plain message raises, which crashes the actor."""

    class Wrong(Actor[Any]):
        async def handle(self, message: Any) -> Any:
            self.defer()

    seen: list[str] = []

    class Probe(Wrong):
        async def handle(self, message: Any) -> Any:
            try:
                self.defer()
            except RuntimeError as error:
                seen.append(str(error))

    async with open_node(Topology().add("w", Probe)) as node:
        await node.refs["w"].send("plain")
        await trio.testing.wait_all_tasks_blocked()
    assert seen == ["w: defer() outside the handling of a call"]
