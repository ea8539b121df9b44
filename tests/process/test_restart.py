"""A client across a restart of a real ``fastworker run config/control.toml``
(killed with SIGKILL, started again on the same ports), with the journal off and on.

The task waited for holds its slot with ``tests.gate`` until a file exists,
so it is certainly running when the control plane dies; nothing here sleeps
to wait for something.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from actors.pytest_plugin import free_tcp_ports
from examples import tasks
from fastworker import Client, ResultUnknown
from tests.process.harness import env, fastworker_run  # noqa: F401 (fixture)

CONTROL = "config/control.toml"
TASKS = "examples.tasks,tests.process.control_tasks"
#: The longest a waiting client may take to hear of a restart.
NOTICE = 5.0
#: The shipped control plane's recovery_grace: a task the journal brought
#: back as dispatched runs again only after it (no subworker adopted it).
RECOVERY_GRACE = 5.0


@pytest.fixture
def control_env(env: dict[str, str]) -> dict[str, str]:  # noqa: F811 (the fixture)
    env["FASTWORKER_ADDRESS"] = f"tcp://127.0.0.1:{free_tcp_ports(6)}"
    env["FASTWORKER_TASKS"] = TASKS
    return env


@pytest.mark.parametrize("journal", ["off", "on"])
async def test_a_client_waiting_across_a_restart(
    journal: str, control_env: dict[str, str], tmp_path: Path,
    host_secret: bytes,  # the client opens before the control plane
) -> None:
    """A result() waits on a running task when the control plane is killed.
    Journal off: it raises ResultUnknown saying the restart lost the task,
    within a few seconds of the new control plane being ready (not after
    its own timeout). Journal on: the task runs again and the same call
    returns its value. Either way the same client object then submits and
    gets results."""
    control_env["FASTWORKER_JOURNAL"] = "off" if journal == "off" else str(tmp_path / "journal")
    gate = tmp_path / "open"
    address = control_env["FASTWORKER_ADDRESS"]
    queries = f"tcp://127.0.0.1:{int(address.rsplit(':', 1)[1]) + 4}"
    outcome: dict[str, Any] = {}
    async with Client(address) as client, trio.open_nursery() as nursery:

        async def wait_for(task_id: str) -> None:
            try:
                outcome["value"] = await client.result(task_id, timeout=60)
            except Exception as error:
                outcome["error"] = error
            outcome["at"] = trio.current_time()

        async with fastworker_run(CONTROL, control_env) as first:
            await first.wait_for("node control ready")
            with trio.fail_after(10):
                assert await client.submit(tasks.add, 1, 1) == 2
                gated = await client.delay("tests.gate", str(gate))
                while (await client.status(gated)).state != "running":
                    await trio.sleep(0.01)
            nursery.start_soon(wait_for, gated)
            await trio.testing.wait_all_tasks_blocked()
            first.process.kill()
            await first.wait_exit()
        assert "at" not in outcome

        async with fastworker_run(CONTROL, control_env) as second:
            await second.wait_for("node control ready")
            ready_at = trio.current_time()
            # With the journal, the task runs again at once if its dispatch
            # was not yet written when the first was killed, else after the
            # recovery grace.
            notice = NOTICE + (RECOVERY_GRACE if journal == "on" else 0.0)
            if journal == "on":
                gate.touch()  # the task, run again, may finish now
            with trio.fail_after(notice):
                while "at" not in outcome:
                    await trio.sleep(0.01)
            assert client._results is not None and client._results.restarts == 1
            if journal == "on":
                assert outcome == {"value": "opened", "at": outcome["at"]}
            else:
                assert_lost(outcome, gated, queries)
            assert outcome["at"] - ready_at < notice

            with trio.fail_after(10):
                assert await client.submit(tasks.add, 2, 3) == 5
                later = await client.delay(tasks.add, 20, 22)
                assert await client.result(later, timeout=10) == 42
            assert await second.stop() == 0, second.tail


def assert_lost(outcome: dict[str, Any], gated: str, queries: str) -> None:
    """The waiter of ``gated`` got ResultUnknown saying the restart lost it."""
    error = outcome.get("error")
    assert isinstance(error, ResultUnknown), outcome
    assert str(error) == (
        f"the control plane at {queries} restarted while this client waited for task "
        f"{gated}, and has no record of it: the task was lost with the restart (its "
        "journal is off) or its result had expired. Submit it again; to keep tasks "
        "across a restart, run the control plane with its journal on "
        "(docs/durability.md)"
    )
