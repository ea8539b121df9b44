"""A subworker across a control-plane restart (issue 14), with real
processes: a task that finishes while the control plane is gone, or after a
new one took its place, is delivered to the new one and kept, and is not
run again.

The fleet and the ``tests.hold`` gate are test_subworkers.py's; the gate
here also says when a held task has ended."""

from __future__ import annotations

import signal
from typing import Any

import pytest
import trio

from fastworker import Client
from tests.process.harness import env  # noqa: F401 (fixture)
from tests.process.test_subworkers import (  # noqa: F401 (fixture)
    Fleet,
    Gate,
    control_env,
    fleet,
    registered,
)


class EndingGate(Gate):
    """A Gate that also counts the held tasks that have ended (closed their
    connection: the task returns right after)."""

    def __init__(self) -> None:
        super().__init__()
        self.ended = 0
        self._ended = trio.Event()

    async def _handle(self, stream: trio.SocketStream) -> None:
        try:
            await super()._handle(stream)
        finally:
            self.ended += 1
            self._ended.set()

    async def wait_ended(self, count: int) -> None:
        with trio.fail_after(20):
            while self.ended < count:
                self._ended = trio.Event()
                await self._ended.wait()


async def journal_written(address: str) -> None:
    """Until the control plane's journal has committed what it was sent:
    the task's dispatch is written after it is handed out, so a kill before
    that commit would bring the task back as queued, not as dispatched.
    (The journal answers a snapshot after the writes sent before it.)"""
    async with Client(address) as client:
        with trio.fail_after(10):
            while (journal := (await client.admin.status()).journal).pending_ops:
                await trio.sleep(0.02)  # a condition, polled: the journal says when
    assert journal.healthy


async def killed_while_a_task_runs(f: Fleet, label: str) -> tuple[EndingGate, Any, str, str]:
    """Start a control plane and a subworker, have the subworker run a held
    task ``label``, and kill the control plane (-9) meanwhile: the gate, the
    subworker, its id, and the task's id."""
    gate = f.gate
    assert isinstance(gate, EndingGate)
    first = await f.start_control()
    sub, sub_id = await f.start_registered_sub()
    async with Client(f.address) as client:
        task_id = await client.delay("tests.hold", gate.port, label)
    await gate.wait_started(1)
    assert gate.started == [(sub.process.pid, label)]
    await journal_written(f.address)
    assert await first.stop(signal.SIGKILL) == -signal.SIGKILL
    return gate, sub, sub_id, task_id


@pytest.mark.parametrize("journal", ["off", "on"])
@pytest.mark.parametrize("ends", ["while_down", "after_restart"])
async def test_a_result_finished_across_a_restart_reaches_the_new_control_plane(
    control_env: dict[str, str], ends: str, journal: str,  # noqa: F811 (the fixture)
) -> None:
    """A subworker runs a held task; the control plane is killed (-9); the
    task ends while none runs, or after a new one (no journal: it never
    heard of the task) started on the same ports and the subworker
    registered again. Either way its result is delivered as a late one:
    the new control plane's store keeps it (``succeeded``, attempt 1, that
    worker), and the task ran once: with the journal on, the copy the new
    control plane holds for its recovery grace is cancelled by that result,
    or adopted when the subworker registers again still holding the task."""
    # With the journal on, the new control plane brings the task back as
    # dispatched and holds it for recovery_grace: the late result cancels it.
    if journal == "off":
        control_env["FASTWORKER_JOURNAL"] = "off"
    async with fleet(control_env, EndingGate) as f:
        gate, sub, sub_id, task_id = await killed_while_a_task_runs(f, "across")
        if ends == "while_down":
            await gate.open()
            await gate.wait_ended(1)
        second = await f.start_control()
        if journal == "on":  # it knew the task: handed out when the first one died
            assert any("inbox: recovered 0 queued, 0 scheduled, 1 dispatched" in line
                       for line in second.lines), second.tail
        assert await registered(second) == sub_id
        if ends == "after_restart":
            await gate.open()
        # Delivered before or after it registers again (a Report in flight
        # when the control plane died is answered UnknownWorker, its results
        # taken); a task it still held when it registered again was adopted.
        late = f"result for task {task_id} (attempt 1) from worker {sub_id}"
        if not any(late in line for line in second.lines):
            await second.wait_for(late)
        async with Client(f.address) as client:
            with trio.fail_after(10):
                while (record := await client.status(task_id)).state != "succeeded":
                    await trio.sleep(0.02)  # a condition, polled: the store says when
            value = await client.result(task_id, timeout=10)
        assert (value, record.attempt, record.worker) == (sub.process.pid, 1, sub_id)
        assert gate.started == [(sub.process.pid, "across")]
        assert "dropped" not in sub.output


async def test_a_task_running_past_the_recovery_grace_is_adopted_not_run_again(
    control_env: dict[str, str],  # noqa: F811 (the fixture)
) -> None:
    """A subworker runs a held task; the control plane is killed (-9) and a
    new one starts on the same journal; the subworker registers again and
    says it holds the task, so the new control plane adopts it: when the
    recovery grace is over it does not run the task again, and the task
    ends once, on that subworker, with its result delivered."""
    async with fleet(control_env, EndingGate) as f:
        gate, sub, sub_id, task_id = await killed_while_a_task_runs(f, "long")
        second = await f.start_control()
        assert await registered(second) == sub_id
        await second.wait_for(f"dispatcher: worker {sub_id} still holds 1 tasks it had before "
                              "it registered again")
        # Past the grace, the copy would have run by now: it was kept back.
        over = await second.wait_for("inbox: recovery grace over")
        assert "of 1 tasks that were dispatched, 0 run again, 1 still run on the subworkers " \
               "that had them, 0 at-most-once failed as lost, 0 ended meanwhile" in over, over
        async with Client(f.address) as client:
            running = await client.status(task_id)
            await gate.open()
            value = await client.result(task_id, timeout=10)
            record = await client.status(task_id)
        assert (running.state, running.worker, running.attempt) == ("running", sub_id, 1)
        assert (value, record.state, record.attempt) == (sub.process.pid, "succeeded", 1)
        assert gate.started == [(sub.process.pid, "long")]
        await gate.wait_ended(1)
        assert await second.stop() == 0, second.tail
        assert "dropped" not in sub.output
