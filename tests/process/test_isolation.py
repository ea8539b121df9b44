"""A sync task that crashes its process, with the shipped configs: on the
control plane alone it fails with ``WorkerProcessDied`` while its
neighbours (async, and sync in other pool processes) finish and the
control plane keeps accepting; on a subworker it is poison after the first
death and the subworker survives. With ``FASTWORKER_ISOLATION=thread``
(the opt-in) the same crash takes its worker down, as
``test_subworkers``' poison test shows.

Neighbours hold on the gate until the crash has been reported, so they are
in flight when it happens; nothing polls or sleeps."""

from __future__ import annotations

from collections import Counter

import pytest

from fastworker import Client, TaskError
from tests.process.harness import env  # noqa: F401 (fixture)
from tests.process.test_subworkers import WORKER_TASKS, control_env, fleet  # noqa: F401

__all__ = ["control_env"]

CRASH_TASKS = f"{WORKER_TASKS},tests.fastworker.crash_tasks"


async def test_a_crashing_task_on_the_control_plane_alone_fails_alone(
    control_env: dict[str, str],  # noqa: F811
) -> None:
    """Eight neighbours in flight (four async, four sync) while three tasks
    crash their processes, one by one: all eight finish, once each."""
    async with fleet(control_env) as f:
        gate = f.gate
        control = await f.start_control(FASTWORKER_TASKS=CRASH_TASKS)
        async with Client(f.address) as client:
            neighbours = {
                await client.delay(task, gate.port, f"{task}-{n}"): f"{task}-{n}"
                for n in range(4) for task in ("tests.hold", "tests.hold_sync")
            }
            await gate.wait_started(len(neighbours))
            for how, said in (("exit", "exit code 1"), ("segfault", "killed by signal SIGSEGV")):
                crash = await client.delay("tests.crash.once", how)
                with pytest.raises(TaskError) as raised:
                    await client.result(crash, timeout=20)
                assert raised.value.remote_type == "WorkerProcessDied", raised.value.message
                assert f"died running task tests.crash.once: {said}" in (
                    raised.value.message)
            retried = await client.delay("tests.crash.retried", "abort")
            with pytest.raises(TaskError) as poisoned:
                await client.result(retried, timeout=20)
            await gate.open()
            ids = list(neighbours)
            pids = await client.results(ids, timeout=20)
            # Still accepting: a new submission runs, on the same process.
            assert await client.submit("tests.pid") == control.process.pid
            records = {task_id: await client.status(task_id) for task_id in ids}
        # Each neighbour ran once (none lost, none twice, none unexpected),
        # the async ones in the control plane, the sync ones in its pool.
        labels = Counter(label for _, label in gate.started)
        assert labels == Counter(neighbours.values()), labels
        for task_id, pid in zip(ids, pids, strict=True):
            in_control = neighbours[task_id].startswith("tests.hold-")
            assert (pid == control.process.pid) == in_control, neighbours[task_id]
            assert records[task_id].state == "succeeded" and records[task_id].attempt == 1
        assert control.process.poll() is None
    assert poisoned.value.remote_type == "PoisonTask"
    assert "killed by signal SIGABRT" in poisoned.value.message
    assert "failed as poison (poison_after = 1)" in poisoned.value.message


async def test_a_crashing_task_on_a_subworker_is_poison_at_once_and_the_subworker_survives(
    control_env: dict[str, str],  # noqa: F811
) -> None:
    """A crash task with retries left fails as PoisonTask after its first
    death, not after killing workers; the subworker's neighbours finish."""
    # The control plane lacks the crash tasks: only the subworker runs them.
    async with fleet(control_env) as f:
        gate = f.gate
        control = await f.start_control(FASTWORKER_TASKS=WORKER_TASKS)
        sub = await f.start_sub(concurrency=8, FASTWORKER_TASKS=CRASH_TASKS)
        async with Client(f.address) as client:
            neighbours = [await client.delay("tests.hold_sync", gate.port, f"n{n}")
                          for n in range(3)]
            await gate.wait_started(3)
            crash = await client.delay("tests.crash.retried", "exit")
            with pytest.raises(TaskError) as raised:
                await client.result(crash, timeout=20)
            await gate.open()
            pids = await client.results(neighbours, timeout=20)
            after = await client.submit("tests.pid")
        assert raised.value.remote_type == "PoisonTask", raised.value.message
        assert "exit code 1" in raised.value.message
        assert "died running it 1 time" in raised.value.message
        assert sub.process.poll() is None and after == sub.process.pid
        assert sorted(label for _, label in gate.started) == ["n0", "n1", "n2"]
        assert sub.process.pid not in pids  # the sync neighbours ran in its pool
        assert not any(" lost: " in line for line in control.lines)
