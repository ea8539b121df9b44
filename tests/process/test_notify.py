"""Completion notifications (``Client.as_completed``, ``Client.on_complete``,
``SyncClient.as_completed``) against a real ``fastworker run
config/control.toml`` on free loopback ports, under trio and asyncio.

Order is made certain with ``tests.gate`` (it holds its slot until a file
exists), never with timing: nothing here sleeps to wait for something.
"""

from __future__ import annotations

import logging
import socket
from contextlib import aclosing
from pathlib import Path
from typing import Any

import anyio
import pytest
import trio
import trio.testing

from actors.pytest_plugin import free_tcp_ports
from examples import tasks
from fastworker import (
    Client,
    ConnectionLost,
    ResultUnknown,
    SyncClient,
    TaskError,
    TaskTimeout,
)
from fastworker.client import Completed
from tests.process.harness import control_plane, env, fastworker_run  # noqa: F401 (fixture)

CONTROL = "config/control.toml"
TASKS = "examples.tasks,tests.process.control_tasks"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def control_env(env: dict[str, str]) -> dict[str, str]:
    """A control plane's environment: free ports from its base address
    (submissions, queries, workers), and a free discovery port."""
    env["FASTWORKER_ADDRESS"] = f"tcp://127.0.0.1:{free_tcp_ports(6)}"
    env["FASTWORKER_DISCOVERY_PORT"] = str(free_udp_port())
    env["FASTWORKER_TASKS"] = TASKS
    return env


def waiting(client: Client) -> set[str]:
    """The ids the client's result poller still waits for."""
    assert client._results is not None
    return set(client._results.waiters)


async def test_as_completed(control_env: dict[str, str], tmp_path: Path) -> None:
    """Results come in completion order, each id once (duplicates too);
    failures come as a Completed whose result() raises what result() would;
    a timeout names how many are pending; leaving early forgets the rest,
    and later calls still work; closing the client ends an iteration in
    ConnectionLost."""
    gate_file = tmp_path / "open"
    address = control_env["FASTWORKER_ADDRESS"]
    async with control_plane(control_env), Client(address) as client:
        # Completion order: the gate cannot finish before the file exists.
        gate = await client.delay("tests.gate", str(gate_file))
        quick = await client.delay(tasks.add, 1, 2)
        seen = []
        async for done in client.as_completed([gate, quick, gate], timeout=10):
            assert isinstance(done, Completed)
            seen.append(done)
            if done.id == quick:
                gate_file.touch()
        assert [done.id for done in seen] == [quick, gate]
        assert [done.record.id for done in seen] == [quick, gate]
        assert seen[0].ok and seen[0].value == 3 and seen[0].result() == 3
        assert seen[0].record.task == "examples.tasks.add"
        assert seen[1].result() == "opened"
        assert not waiting(client)

        # Many at once, each exactly once; failures and time limits as results.
        adds = await client.delay_many(tasks.add, [(n, n) for n in range(20)])
        failed = await client.delay(tasks.fail, "on purpose")
        too_slow = await client.send("tests.gate", (str(tmp_path / "never"),), timeout=0.05)
        found = {done.id: done async for done in client.as_completed([*adds, failed, too_slow])}
        assert sorted(found) == sorted([*adds, failed, too_slow])
        assert [found[task_id].result() for task_id in adds] == [2 * n for n in range(20)]
        assert not found[failed].ok
        with pytest.raises(TaskError, match="on purpose") as raised:
            found[failed].result()
        assert raised.value.remote_type == "ValueError"
        with pytest.raises(TaskError, match="on purpose"):
            found[failed].value
        with pytest.raises(TaskTimeout):
            found[too_slow].result()
        assert not waiting(client)

        # The timeout bounds the whole iteration and says what is pending;
        # what is already in is yielded first.
        held = tmp_path / "held"
        blocked = await client.delay("tests.gate", str(held))
        finished = await client.delay(tasks.add, 2, 2)
        assert await client.result(finished, timeout=10) == 4
        yielded = []
        with pytest.raises(TimeoutError, match=r"^1 of 2 tasks still pending after 0.3 s$"):
            async for done in client.as_completed([blocked, finished], timeout=0.3):
                yielded.append(done.id)
        assert yielded == [finished]
        assert not waiting(client)

        # Leaving early (break, or aclose) forgets the rest at once.
        async for done in client.as_completed([finished, blocked]):
            assert done.id == finished
            break
        assert not waiting(client)
        async with aclosing(client.as_completed([finished, blocked])) as iterator:
            async for done in iterator:
                assert done.id == finished
                break
        assert not waiting(client)

        # ... and later calls still work, for the same ids too.
        held.touch()
        assert await client.result(blocked, timeout=10) == "opened"
        assert [done.id async for done in client.as_completed([blocked, finished])] in (
            [blocked, finished],
            [finished, blocked],
        )
        assert [done async for done in client.as_completed([])] == []
        assert not waiting(client)

        # An id the control plane never saw is yielded at once (not after a
        # poll of an hour), as a Completed whose result() raises ResultUnknown.
        async with Client(address, poll_wait=3600) as patient:
            (done,) = [done async for done in patient.as_completed(["no-such-task"], timeout=10)]
        assert done.id == "no-such-task"
        assert done.record.state == "unknown"
        assert not done.ok
        with pytest.raises(ResultUnknown):
            done.result()

        # A client closed while an iteration waits ends it in ConnectionLost.
        async def iterate(client: Client) -> None:
            with pytest.raises(ConnectionLost, match="the client was closed"):
                async for _ in client.as_completed([blocked]):
                    pass

        async with trio.open_nursery() as nursery:
            async with Client(address) as other:
                nursery.start_soon(iterate, other)
                await trio.testing.wait_all_tasks_blocked()


async def test_on_complete_and_a_lost_connection(
    control_env: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Sync and async callbacks get the task's final record; one that raises
    is logged and neither stops the others nor the client. When the control
    plane dies, as_completed ends in ConnectionLost naming the address (not
    in a hang), and a pending callback is logged as not called."""
    gate_file = tmp_path / "open"
    address = control_env["FASTWORKER_ADDRESS"]
    called: dict[str, Completed] = {}
    sync_called, async_called, raised, late_called = (trio.Event() for _ in range(4))

    def on_sync(done: Completed) -> None:
        called["sync"] = done
        sync_called.set()

    async def on_async(done: Completed) -> None:
        await trio.lowlevel.checkpoint()
        called["async"] = done
        async_called.set()

    def on_raise(done: Completed) -> None:
        raised.set()
        raise RuntimeError(f"callback for {done.id} failed")

    def on_late(done: Completed) -> None:
        called["late"] = done
        late_called.set()

    caplog.set_level(logging.WARNING, logger="fastworker.client")
    async with fastworker_run(CONTROL, control_env) as node:
        await node.wait_for("node control ready")
        async with Client(address) as client:
            gate = await client.delay("tests.gate", str(gate_file))
            added = await client.delay(tasks.add, 1, 2)
            client.on_complete(gate, on_raise)
            client.on_complete(gate, on_sync)
            failed = await client.delay(tasks.fail, "on purpose")
            client.on_complete(failed, on_async)
            with trio.fail_after(10):
                await async_called.wait()
                assert not sync_called.is_set()  # the gate is still closed
                gate_file.touch()
                await sync_called.wait()
                await raised.wait()
                # A callback for a task final long ago is called too.
                assert await client.result(added, timeout=10) == 3
                client.on_complete(added, on_late)
                await late_called.wait()
            assert await client.submit(tasks.add, 2, 2) == 4
            assert not waiting(client)

        async with Client(address, request_timeout=0.2, poll_wait=0.1) as client:
            napping = await client.delay(tasks.nap, 30)
            client.on_complete(napping, lambda done: pytest.fail("called without a result"))
            node.process.kill()
            with pytest.raises(ConnectionLost, match="no answer from the control plane at"):
                async for _ in client.as_completed([napping], timeout=10):
                    pass
            await trio.testing.wait_all_tasks_blocked()
            assert not waiting(client)

    assert called["sync"].id == gate
    assert called["sync"].record.state == "succeeded"
    assert called["sync"].result() == "opened"
    assert called["async"].id == failed
    assert called["async"].record.task == "examples.tasks.fail"
    with pytest.raises(TaskError, match="on purpose"):
        called["async"].result()
    assert called["late"].value == 3
    raised_log, lost_log = [r for r in caplog.records if r.name == "fastworker.client"]
    assert raised_log.levelname == "ERROR"
    assert raised_log.getMessage() == f"on_complete callback for task {gate} raised"
    assert raised_log.exc_info is not None
    assert f"callback for {gate} failed" in str(raised_log.exc_info[1])
    assert lost_log.levelname == "WARNING"
    assert lost_log.getMessage().startswith(
        f"on_complete callback for task {napping} not called: no answer from the control plane"
    )


async def test_asyncio_and_sync_clients(control_env: dict[str, str], tmp_path: Path) -> None:
    """The same calls work under asyncio, and SyncClient.as_completed blocks."""
    gate_file = tmp_path / "open"

    async def use() -> tuple[list[Any], Completed, Completed]:
        import asyncio

        async with Client(control_env["FASTWORKER_ADDRESS"]) as client:
            gate = await client.delay("tests.gate", str(gate_file))
            quick = await client.delay(tasks.add, 20, 22)
            callbacks: list[Completed] = []
            both_called = asyncio.Event()

            def note(done: Completed) -> None:
                callbacks.append(done)
                if len(callbacks) == 2:
                    both_called.set()

            async def on_done(done: Completed) -> None:
                await asyncio.sleep(0)  # a checkpoint: an async callback is awaited
                note(done)

            client.on_complete(gate, on_done)
            client.on_complete(quick, note)
            order = []
            async for done in client.as_completed([gate, quick], timeout=10):
                order.append((done.id == gate, done.result()))
                gate_file.touch()
            async for done in client.as_completed([gate]):
                break
            held = tmp_path / "held"
            with pytest.raises(TimeoutError, match="1 of 1 tasks still pending"):
                async for done in client.as_completed(
                    [await client.delay("tests.gate", str(held))], timeout=0.1
                ):
                    pass
            held.touch()  # lets the control plane stop at once
            with anyio.fail_after(10):
                await both_called.wait()
            assert not waiting(client)
            by_id = {done.id: done for done in callbacks}
            return order, by_id[gate], by_id[quick]

    def use_sync() -> list[Any]:
        """SyncClient.as_completed is a blocking iterator with the same rules."""
        gate_file = tmp_path / "open_sync"
        with SyncClient(control_env["FASTWORKER_ADDRESS"]) as client:
            gate = client.delay("tests.gate", str(gate_file))
            adds = client.delay_many(tasks.add, [(n, 1) for n in range(3)])
            seen = []
            for done in client.as_completed([gate, *adds], timeout=10):
                seen.append(done.result())
                if len(seen) == 3:
                    gate_file.touch()
            held = tmp_path / "held_sync"
            never = client.delay("tests.gate", str(held))
            for done in client.as_completed([adds[0], never]):
                assert done.id == adds[0]
                break
            assert not waiting(client._client)
            with pytest.raises(TimeoutError, match="1 of 2 tasks still pending"):
                list(client.as_completed([never, adds[1]], timeout=0.1))
            assert not waiting(client._client)
            held.touch()  # lets the control plane stop at once
            return seen

    async with control_plane(control_env):
        order, gate_done, quick_done = await trio.to_thread.run_sync(
            lambda: anyio.run(use, backend="asyncio")
        )
        seen = await trio.to_thread.run_sync(use_sync)
    assert order == [(False, 42), (True, "opened")]
    assert gate_done.result() == "opened"
    assert quick_done.value == 42
    assert sorted(seen[:3]) == [1, 2, 3]
    assert seen[3] == "opened"
