"""One clock per decision, with real processes: a subworker whose wall
clock is an hour off its control plane's (``tests.process.shifted_clock``
shifts ``time.time`` in that process only) expires nothing wrongly, and a
deadline that really passes still expires.

The control plane lacks the test tasks, so that only the subworker runs
them; ``tests.hold`` keeps the subworker's one slot busy until the test's
gate opens (see ``test_subworkers``)."""

from __future__ import annotations

import sys
import time
from contextlib import AsyncExitStack

import pytest
import trio

from fastworker import Client, TaskExpired
from tests.process.harness import env, fastworker_run, run_process  # noqa: F401 (fixture)
from tests.process.test_subworkers import CONTROL, SUB, Gate, control_env  # noqa: F401 (fixture)

HOUR = 3_600.0


@pytest.mark.parametrize("shift", [HOUR, -HOUR], ids=["an_hour_ahead", "an_hour_behind"])
async def test_a_subworker_with_a_shifted_wall_clock_expires_nothing_wrongly(
    control_env: dict[str, str], shift: float,  # noqa: F811 (the fixture)
) -> None:
    """A subworker whose wall clock is an hour ahead of its control plane's
    (or behind) runs all 10 tasks submitted with ``expires=60``; a task
    whose 0.5 s deadline passes while the subworker is busy still expires."""
    async with AsyncExitStack() as stack, trio.open_nursery() as nursery:
        gate = Gate()
        await nursery.start(gate.serve)
        control = await stack.enter_async_context(
            fastworker_run(CONTROL, {**control_env, "FASTWORKER_TASKS": "examples.tasks"}))
        await control.wait_for("node control ready")
        sub = await stack.enter_async_context(run_process(
            [sys.executable, "-m", "tests.process.shifted_clock", str(shift), "run", SUB],
            # One slot, no prefetch: the late task below waits in the queue.
            {**control_env, "FASTWORKER_CONCURRENCY": "1", "FASTWORKER_PREFETCH": "0"},
            f"{SUB} (clock {shift:+.0f} s)"))
        await sub.wait_for("offered")
        async with Client(control_env["FASTWORKER_ADDRESS"]) as client:
            ids = [await client.send("tests.pid", expires=60) for _ in range(10)]
            assert await client.results(ids, timeout=20) == [sub.process.pid] * 10
            # The subworker's records are on its clock: the shift is in effect.
            record = await client.status(ids[0])
            assert abs(record.started_at - (time.time() + shift)) < 60, record

            busy = await client.delay("tests.hold", gate.port, "busy")
            await gate.wait_started(1)
            late = await client.send("tests.pid", expires=0.5)
            with pytest.raises(TaskExpired):
                await client.result(late, timeout=20)
            await gate.open()
            assert await client.result(busy, timeout=10) == sub.process.pid
        nursery.cancel_scope.cancel()
