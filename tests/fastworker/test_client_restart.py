"""Clients across a restart of the control plane (issue 14).

The poller against real ResultStores through an in-memory port that, like
NNG's request socket, holds a question while no store is there and sends
it again once one is back (under MockClock); then a ``Client`` against
the shipped control plane run in process on free ports, restarted abruptly.
A store seeded with a record before the client asks again stands in for
one that recovered it from the journal.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from actors import Ref, Topology, open_node
from actors.node import Node
from actors.pytest_plugin import free_tcp_ports
from actors.topology import ActorSpec
from examples import tasks
from fastworker import Client, ResultUnknown
from fastworker.client.outcome import task_value
from fastworker.client.poller import LOST_RECHECK, ResultPoller
from fastworker.errors import ConnectionLost
from fastworker.messages import (
    Finished,
    Outcome,
    Queued,
    QueuedEntry,
    Records,
    StatusQuery,
    TaskRecord,
    Watch,
)
from fastworker.payload import pack_value
from fastworker.results import ResultStore
from fastworker.results.records import Report

ADDRESS = "tcp://127.0.0.1:5559"


def queued(*ids: str) -> Queued:
    return Queued(entries=tuple(
        QueuedEntry(id=id, task="examples.tasks.add", priority=2, queued_at=100.0) for id in ids))


def finished(id: str, value: Any) -> Finished:
    return Finished(outcomes=(Outcome(id=id, attempt=1, worker="w1", value=pack_value(value),
                                      started_at=101.0, finished_at=102.0),))


class StorePort:
    """The queries port, in memory: each message is a call to the store
    connected now. While none is, a question waits, and goes to the next
    store connected, as NNG's request socket sends it again on reconnection."""

    name = f"dialing {ADDRESS}"

    def __init__(self) -> None:
        self.store: Ref[Any] | None = None
        self._up = trio.Event()
        self.asked: list[Any] = []

    def connect(self, store: Ref[Any]) -> None:
        self.store = store
        self._up.set()

    def disconnect(self) -> None:
        self.store = None
        self._up = trio.Event()

    async def ask(self, messages: Sequence[Any], timeout: float) -> list[Any]:
        with trio.move_on_after(timeout):
            while True:
                await self._up.wait()
                store = self.store
                assert store is not None
                self.asked.extend(messages)
                try:
                    return [await store.call(message) for message in messages]
                except trio.BrokenResourceError:  # it stopped: sent again to the next one
                    await trio.lowlevel.checkpoint()
        raise ConnectionLost(f"no answer from the control plane at {self.name}")


@asynccontextmanager
async def open_store() -> AsyncIterator[Ref[Any]]:
    async with open_node(Topology().add("results", ResultStore)) as node:
        yield node.refs["results"]


@asynccontextmanager
async def polling(port: StorePort, tasks: int = 2,
                  max_batch: int = 64) -> AsyncIterator[ResultPoller]:
    """A poller on ``port`` with ``tasks`` polling tasks."""
    poller = ResultPoller(port, session="s1", max_batch=max_batch,  # type: ignore[arg-type]
                          poll_wait=10.0, request_timeout=30.0)
    async with trio.open_nursery() as nursery:
        for _ in range(tasks):
            nursery.start_soon(poller.poll_forever)
        nursery.start_soon(poller.check_forever)
        yield poller
        nursery.cancel_scope.cancel()
    poller.close()


class Waiting:
    """``poller.wait(task_id)`` in the background: its record, or the
    exception ``Client.result`` would raise for it, and when."""

    def __init__(self, poller: ResultPoller, task_id: str, nursery: trio.Nursery,
                 timeout: float | None = None) -> None:
        self.record: TaskRecord | None = None
        self.error: BaseException | None = None
        self.done_at: float | None = None
        nursery.start_soon(self._run, poller, task_id, timeout)

    async def _run(self, poller: ResultPoller, task_id: str, timeout: float | None) -> None:
        try:
            self.record = await poller.wait(task_id, timeout)
            task_value(self.record)
        except Exception as error:
            self.error = error
        self.done_at = trio.current_time()


class TestPollerAcrossARestart:
    """The poller sees the store's epoch change and asks the new store again."""

    async def test_a_restart_delivers_what_the_new_store_knows_and_fails_what_it_lost(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """After a restart every awaited id is watched again: a result the new
        store has (its journal kept it) arrives, a task it holds is still
        waited for and arrives when it ends, and a task it has no record of
        fails at once with ResultUnknown saying the restart lost it."""
        port = StorePort()
        async with polling(port) as poller, trio.open_nursery() as nursery:
            async with open_store() as old:
                port.connect(old)
                await old.send(queued("kept", "held", "lost"))
                waiting = {id: Waiting(poller, id, nursery) for id in ("kept", "held", "lost")}
                await trio.testing.wait_all_tasks_blocked()
                first_epoch = poller.epoch
                assert first_epoch and poller.restarts == 0
                port.disconnect()
            # The old store answered its parked Watch on the way out; the next
            # poll waits for a store, as a request waits for NNG to redial.
            async with open_store() as new:
                # What the journal would have kept, there before the client asks.
                await new.send(queued("kept", "held"))
                await new.send(finished("kept", 42))
                port.connect(new)
                restarted_at = trio.current_time()
                await trio.sleep(2 * LOST_RECHECK)
                assert poller.restarts == 1 and poller.epoch not in ("", first_epoch)
                kept = waiting["kept"]
                assert kept.record is not None and kept.error is None
                assert task_value(kept.record) == 42
                lost = waiting["lost"]
                assert isinstance(lost.error, ResultUnknown)
                assert str(lost.error) == (
                    f"the control plane at {ADDRESS} restarted while this client waited for "
                    "task lost, and has no record of it: the task was lost with the restart "
                    "(its journal is off) or its result had expired. Submit it again; to keep "
                    "tasks across a restart, run the control plane with its journal on "
                    "(docs/durability.md)"
                )
                # Asked twice, LOST_RECHECK apart, and no later.
                assert lost.done_at == restarted_at + LOST_RECHECK
                held = waiting["held"]
                assert held.done_at is None
                await new.send(finished("held", "late"))
                await trio.testing.wait_all_tasks_blocked()
                assert held.record is not None and task_value(held.record) == "late"
                assert poller.waiters == {}
        # Every id awaited was watched again at the new store, and checked.
        watched_after = [m for m in port.asked if isinstance(m, Watch) and m.ids]
        assert {"kept", "held", "lost"} <= set(watched_after[-1].ids)
        checked = [m.ids for m in port.asked if isinstance(m, StatusQuery)]
        assert {"held", "lost"} <= set(checked[0]) and checked[1:] == [("lost",)]

    async def test_a_task_the_new_store_learns_of_late_is_not_called_lost(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An id the new store does not know when first asked, but knows
        LOST_RECHECK later (its control plane was still recovering), is
        waited for, not failed."""
        port = StorePort()
        async with polling(port) as poller, trio.open_nursery() as nursery:
            async with open_store() as old:
                port.connect(old)
                await old.send(queued("slow"))
                waiting = Waiting(poller, "slow", nursery)
                await trio.testing.wait_all_tasks_blocked()
                port.disconnect()
            async with open_store() as new:
                port.connect(new)
                await trio.sleep(LOST_RECHECK / 2)
                await new.send(queued("slow"))
                await trio.sleep(LOST_RECHECK)
                assert waiting.done_at is None and poller.restarts == 1
                await new.send(finished("slow", 7))
                await trio.testing.wait_all_tasks_blocked()
                assert waiting.record is not None and task_value(waiting.record) == 7

    async def test_the_same_store_is_not_a_restart(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Polls that come back from the same store, waited out or not, never
        look like a restart: nothing is asked again."""
        port = StorePort()
        async with polling(port) as poller, trio.open_nursery() as nursery:
            async with open_store() as store:
                port.connect(store)
                await store.send(queued("a", "b"))
                first = Waiting(poller, "a", nursery)
                Waiting(poller, "b", nursery)
                await trio.sleep(35)  # several polls wait out
                await store.send(finished("a", 1))
                await trio.testing.wait_all_tasks_blocked()
                assert first.record is not None and task_value(first.record) == 1
                assert poller.restarts == 0 and first.error is None
                # Each id went to the store once: nothing was watched again.
                assert sum(len(m.ids) for m in port.asked if isinstance(m, Watch)) == 2
                port.disconnect()  # lets the store stop while a poll waits
                nursery.cancel_scope.cancel()


def test_records_carry_an_epoch_that_equality_ignores() -> None:
    """Two answers with the same records are equal whatever store sent them."""
    assert Records(records=(), epoch="a1") == Records(records=())
    assert Watch(session="s").epoch == ""


async def test_each_store_has_its_own_epoch_in_every_answer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Every kind of answer names the store's epoch; a new store has another;
    a Watch naming another epoch is answered at once, not parked."""
    async with open_store() as first:
        answers = [
            await first.call(StatusQuery(ids=("x",))),
            await first.call(Watch(session="s", ids=("x",), wait=0)),
            await first.call(Watch(session="s", wait=2)),
        ]
        epochs = {answer.epoch for answer in answers}
        assert len(epochs) == 1 and "" not in epochs
        (epoch,) = epochs
    async with open_store() as second:
        start = trio.current_time()
        answer = await second.call(Watch(session="s", ids=("x",), wait=60, epoch=epoch))
        assert answer.epoch not in ("", epoch)
        assert trio.current_time() == start and not answer.waited_out
        parked = await second.call(Watch(session="s", wait=5, epoch=answer.epoch))
        assert parked.waited_out and trio.current_time() == start + 5


# -- the shipped control plane, in process -----------------------------------


def seeded_store(*reports: Report) -> type[ResultStore]:
    """A ResultStore that holds ``reports`` before it answers anything, as a
    store that recovered them from its journal does."""

    class SeededStore(ResultStore):
        async def setup(self, nursery: trio.Nursery) -> str | None:
            ready = await super().setup(nursery)
            self._take_reports(list(reports))
            return ready

    return SeededStore


def control_plane(address: str, store: type[ResultStore] | None = None) -> Topology:
    topology = Topology.from_toml(
        "config/control.toml",
        environ={"FASTWORKER_ADDRESS": address, "FASTWORKER_TASKS": "examples.tasks",
                 "FASTWORKER_DISCOVERY_PORT": "0", "FASTWORKER_DASHBOARD": "off",
                 # The restart tests here are of a control plane without a journal.
                 "FASTWORKER_JOURNAL": "off"},
    )
    if store is not None:
        for index, spec in enumerate(topology.actors):
            if spec.name == "results":
                topology.actors[index] = ActorSpec(name=spec.name, kind=store,
                                                   options=spec.options, refs=spec.refs,
                                                   mailbox=spec.mailbox)
    return topology


@asynccontextmanager
async def crashing(topology: Topology) -> AsyncIterator[Node]:
    """Run ``topology``; leaving the block cancels it at once, as a crash
    does (no parked query is answered, no socket says goodbye)."""
    async with trio.open_nursery() as nursery:
        node: Node = await nursery.start(Node(topology).run)
        yield node
        nursery.cancel_scope.cancel()


@pytest.mark.usefixtures("host_secret")  # each client opens before its control plane
class TestClientAcrossARestart:
    """A Client against the shipped control plane, crashed and started again
    on the same ports."""

    async def test_a_task_lost_in_the_restart_fails_at_once_and_the_client_goes_on(
        self,
    ) -> None:
        """Journal off: the waiting result() raises ResultUnknown saying the
        restart lost the task within a few seconds of the restart, not after
        a poll's wait; the same client then submits and gets results."""
        address = f"tcp://127.0.0.1:{free_tcp_ports(6)}"
        async with Client(address, request_timeout=10) as client, trio.open_nursery() as nursery:
            outcome: dict[str, Any] = {}

            async def wait_for(task_id: str) -> None:
                try:
                    outcome["value"] = await client.result(task_id, timeout=30)
                except Exception as error:
                    outcome["error"] = error
                outcome["at"] = trio.current_time()

            async with crashing(control_plane(address)):
                assert await client.submit(tasks.add, 1, 1) == 2
                task_id = await client.send(tasks.add, (1, 2), countdown=3600)
                nursery.start_soon(wait_for, task_id)
                poller = client._results
                assert poller is not None
                with trio.fail_after(5):
                    while task_id not in poller.waiters or poller.new_ids:
                        await trio.sleep(0.01)
            async with crashing(control_plane(address)):
                restarted_at = trio.current_time()
                with trio.fail_after(5):
                    while "at" not in outcome:
                        await trio.sleep(0.01)
                error = outcome.get("error")
                assert isinstance(error, ResultUnknown), outcome
                assert str(error).startswith(
                    f"the control plane at tcp://127.0.0.1:{int(address.rsplit(':', 1)[1]) + 4} "
                    f"restarted while this client waited for task {task_id}, and has no record "
                    "of it: the task was lost with the restart")
                assert outcome["at"] - restarted_at < 4
                with trio.fail_after(10):
                    assert await client.submit(tasks.add, 2, 3) == 5
                    later = await client.delay(tasks.add, 20, 22)
                    assert await client.result(later, timeout=10) == 42
                assert client._results is not None and client._results.restarts == 1

    async def test_a_result_the_new_store_recovered_reaches_the_waiting_client(
        self,
    ) -> None:
        """Journal on (a store seeded as recovery would): the client waiting
        across the restart gets the task's value as if nothing happened."""
        address = f"tcp://127.0.0.1:{free_tcp_ports(6)}"
        async with Client(address, request_timeout=10) as client:
            async with crashing(control_plane(address)):
                assert await client.submit(tasks.add, 1, 1) == 2
                task_id = await client.send(tasks.add, (20, 22), countdown=3600)
            store = seeded_store(
                Queued(entries=(QueuedEntry(id=task_id, task="examples.tasks.add",
                                            priority=2, queued_at=100.0),)),
                finished(task_id, 42),
            )
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    # The client waits while the control plane is down, and after.
                    got: list[Any] = []

                    async def wait_for() -> None:
                        got.append(await client.result(task_id, timeout=30))

                    nursery.start_soon(wait_for)
                    await trio.sleep(0.5)  # a poll waits for the control plane meanwhile
                    async with crashing(control_plane(address, store)):
                        while not got:
                            await trio.sleep(0.01)
            assert got == [42]
            assert client._results is not None and client._results.restarts == 1


def waiting(client: Client) -> set[str]:
    assert client._results is not None
    return set(client._results.waiters)


@pytest.mark.parametrize("ids", [300])
async def test_many_awaited_ids_are_watched_again_in_batches(
    ids: int, autojump_clock: trio.testing.MockClock
) -> None:
    """More ids than one poll carries are all watched again after a restart,
    a batch per poll, and those lost are all told so."""
    port = StorePort()
    names = [f"t{n}" for n in range(ids)]
    async with polling(port, max_batch=8) as poller, trio.open_nursery() as nursery:
        async with open_store() as old:
            port.connect(old)
            await old.send(queued(*names))
            waiting_on = [Waiting(poller, name, nursery) for name in names]
            await trio.testing.wait_all_tasks_blocked()
            port.disconnect()
        async with open_store() as new:
            await new.send(queued(*names[::2]))  # the even ones were kept
            port.connect(new)
            await trio.sleep(2 * LOST_RECHECK)
            lost = [w for w in waiting_on if isinstance(w.error, ResultUnknown)]
            assert len(lost) == ids // 2
            assert set(poller.waiters) == set(names[::2])
            watches = [m for m in port.asked if isinstance(m, Watch) and m.epoch == poller.epoch]
            assert {id for m in watches for id in m.ids} == set(names)
            assert max(len(m.ids) for m in watches) == 8 * 8
            port.disconnect()
            nursery.cancel_scope.cancel()
