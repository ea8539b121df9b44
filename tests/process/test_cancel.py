"""Cancelling running tasks, with real processes: an async task on the
control plane's executor is interrupted, a thread task abandoned, a
process-isolated one's process killed, and a task on a subworker stopped
there. The ``tests.hold*`` tasks report to the gate when they start, so
nothing polls."""

from __future__ import annotations

import os

import pytest

from fastworker import Client, TaskCancelled
from tests.process.harness import env  # noqa: F401 (fixture)
from tests.process.test_subworkers import WORKER_TASKS, control_env, fleet  # noqa: F401

__all__ = ["control_env"]


@pytest.mark.parametrize(("task", "how", "said"), [
    ("tests.hold", "interrupted", "function was interrupted"),
    ("tests.hold_thread", "abandoned", "thread, which cannot be stopped"),
    ("tests.hold_process", "terminated", "process was killed"),
])
async def test_a_running_task_on_the_control_plane_is_stopped(
    control_env: dict[str, str], task: str, how: str, said: str  # noqa: F811
) -> None:
    async with fleet(control_env) as f:
        gate = f.gate
        await f.start_control()
        async with Client(f.address) as client:
            task_id = await client.delay(task, gate.port, "victim")
            await gate.wait_started(1)
            [(pid, _)] = gate.started
            outcome = await client.cancel(task_id)
            with pytest.raises(TaskCancelled, match=said) as raised:
                await client.result(task_id, timeout=10)
            again = await client.cancel(task_id)
            # The slot is free again: the next task runs and finishes.
            await gate.open()
            after = await client.delay("tests.pid")
            assert await client.result(after, timeout=10) > 0
            record = await client.status(task_id)
    assert outcome == how
    assert again == "not_queued"
    assert record.state == "cancelled"
    assert "cancelled while running" in raised.value.message
    if how == "terminated":
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_a_task_running_on_a_subworker_is_stopped_there(
    control_env: dict[str, str],  # noqa: F811
) -> None:
    # The next task runs on the subworker only once its slot is back (with
    # the default "fallback", the control plane would take it meanwhile).
    control_env["FASTWORKER_LOCAL"] = "never"
    async with fleet(control_env) as f:
        gate = f.gate
        await f.start_control()
        sub = await f.start_sub(concurrency=1)
        async with Client(f.address) as client:
            task_id = await client.delay("tests.hold", gate.port, "remote")
            await gate.wait_started(1)
            [(pid, _)] = gate.started
            outcome = await client.cancel(task_id)
            with pytest.raises(TaskCancelled, match="interrupted"):
                await client.result(task_id, timeout=10)
            # Its one slot was given back: the next task runs there.
            await gate.open()
            after = await client.delay("tests.pid")
            ran_on = await client.result(after, timeout=10)
    assert pid == sub.process.pid
    assert outcome == "requested"
    assert ran_on == sub.process.pid


async def test_a_client_that_stops_waiting_can_cancel_the_task(
    control_env: dict[str, str],  # noqa: F811
) -> None:
    async with fleet(control_env) as f:
        gate = f.gate
        await f.start_control()
        async with Client(f.address) as client:
            task_id = await client.delay("tests.hold", gate.port, "impatient")
            await gate.wait_started(1)
            with pytest.raises(TimeoutError):
                await client.result(task_id, timeout=0.2, cancel=True)
            # The cancel is answered once the task is interrupted; the store
            # hears of its end from the executor just after, so wait for it.
            with pytest.raises(TaskCancelled):
                await client.result(task_id, timeout=10)
            record = await client.status(task_id)
    assert record.state == "cancelled"
