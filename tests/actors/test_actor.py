"""The actor base: batches, calls, snapshots and readiness."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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


class CallRuns(Recorder):
    """A Recorder that answers runs of calls together (``runs`` notes their sizes)."""

    def __init__(self, options: Any, context: Any, *, runs: list[int], **params: Any) -> None:
        super().__init__(options, context, **params)
        self.runs = runs

    async def handle_calls(self, calls: list[Any]) -> None:
        self.runs.append(len(calls))
        for call in calls:
            if isinstance(call.message, Boom):
                raise RuntimeError("boom in a run")
        for call in calls:
            call.reply.set(call.message.value * 3)


@asynccontextmanager
async def held_busy(runs: list[int]) -> AsyncIterator[tuple[Any, trio.Event]]:
    """A running CallRuns actor and the gate that holds it busy: calls made
    before the gate is set queue up together."""
    async with open_node(Topology().add("runs", CallRuns, params={"runs": runs})) as node:
        gate = trio.Event()
        ref = node.refs["runs"]
        await ref.send(Hold(gate))
        await trio.testing.wait_all_tasks_blocked()
        yield ref, gate


async def test_calls_that_came_together_are_answered_as_one_run() -> None:
    """An actor that overrides handle_calls gets the calls queued together at
    once; a stats request is still answered on its own."""
    runs: list[int] = []
    async with held_busy(runs) as (ref, gate):
        answers: dict[int, int] = {}

        async def ask(n: int) -> None:
            answers[n] = await ref.call(Note(n), timeout=5)

        async with trio.open_nursery() as nursery:
            for n in range(5):
                nursery.start_soon(ask, n)
            await trio.testing.wait_all_tasks_blocked()
            gate.set()
        stats = await ref.call(GetStats(), timeout=5)  # answered on its own, never in a run
    assert answers == {n: n * 3 for n in range(5)}
    assert runs == [5]
    assert stats.name == "runs"


async def test_a_run_of_calls_that_crashes_fails_each_of_its_callers() -> None:
    """Every caller of a run that crashed gets ActorCrashed; a later call is
    answered by the restarted actor (alone, so by ``handle``)."""
    runs: list[int] = []
    async with held_busy(runs) as (ref, gate):
        outcomes: dict[str, Any] = {}

        async def ask(name: str, message: Any) -> None:
            try:
                outcomes[name] = await ref.call(message, timeout=5)
            except ActorCrashed as crashed:
                outcomes[name] = str(crashed)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, "first", Note(1))
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(ask, "boom", Boom())
            await trio.testing.wait_all_tasks_blocked()
            gate.set()
        assert await ref.call(Note(7), timeout=5) == 14
    crashed = "runs crashed handling 2 calls: RuntimeError: boom in a run"
    assert outcomes == {"first": crashed, "boom": crashed}
