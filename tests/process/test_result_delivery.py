"""Results that together, or alone, are larger than one frame, and ids the
store dropped, against a real ``fastworker run config/control.toml`` on
free loopback ports.

Nothing here sleeps to wait: results are made final before they are
watched by waiting for each through a second client, and "at once" is a
bound far below the client's poll wait (the old way an unknown id was
found out).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from actors.pytest_plugin import free_tcp_ports
from fastworker import Client, ResultUnknown, TaskError
from tests.process.harness import control_plane, env  # noqa: F401 (fixture)

CONTROL = "config/control.toml"
MIB = 1024 * 1024
#: The frame limit of these control planes: four results of 1 MiB fill one.
FRAME = 4 * MIB
#: Far below the client's poll wait (10 s), after which an id the store
#: did not know used to be found out.
AT_ONCE = 3.0


@pytest.fixture
def control_env(env: dict[str, str]) -> dict[str, str]:  # noqa: F811 (fixture)
    env["FASTWORKER_ADDRESS"] = f"tcp://127.0.0.1:{free_tcp_ports(6)}"
    env["FASTWORKER_TASKS"] = "tests.process.result_tasks"
    env["FASTWORKER_JOURNAL"] = "off"
    env["FASTWORKER_MAX_FRAME_BYTES"] = str(FRAME)
    return env


async def test_results_larger_together_than_a_frame_all_arrive(
    control_env: dict[str, str],
) -> None:
    """24 results of 1 MiB, all final before one client watches them (24
    MiB, six frames' worth), all arrive, in answers the frame limit allows;
    a 5 MiB result, more than any answer can carry, fails with
    ``ResultTooLarge`` naming its size and the limit instead of hanging."""
    address = control_env["FASTWORKER_ADDRESS"]
    async with control_plane(control_env, CONTROL) as node, \
            Client(address, request_timeout=5) as client, \
            Client(address, request_timeout=5) as other:
        ids = [await client.delay("tests.blob", MIB) for _ in range(24)]
        huge = await client.delay("tests.blob", 5 * MIB)
        with trio.fail_after(30):
            for task_id in ids:  # one at a time: each answer carries one
                assert len(await other.result(task_id)) == MIB
            values = await client.results(ids)
            with pytest.raises(TaskError) as raised:
                await client.result(huge)
        assert [len(value) for value in values] == [MIB] * 24
        assert raised.value.remote_type == "ResultTooLarge"
        assert f"the record of task {huge} takes about" in raised.value.message
        assert f"more than one answer can carry ({FRAME - 64 * 1024} bytes" in raised.value.message
        assert "raise FASTWORKER_MAX_FRAME_BYTES" in raised.value.message
    assert "exceeds the limit" not in node.output


async def test_an_evicted_id_is_unknown_at_once(
    control_env: dict[str, str], tmp_path: Path,
) -> None:
    """With ``max_entries = 1``, a result is evicted when the next one ends;
    waiting for it again raises ``ResultUnknown`` naming the bound, at once
    rather than after a poll wait."""
    text = Path(CONTROL).read_text()
    assert "\nmax_entries = 100000\n" in text
    topology = tmp_path / "control.toml"
    topology.write_text(text.replace("\nmax_entries = 100000\n", "\nmax_entries = 1\n"))
    address = control_env["FASTWORKER_ADDRESS"]
    async with control_plane(control_env, str(topology)), Client(address) as client:
        first = await client.delay("tests.blob", 10)
        assert await client.result(first, timeout=10) == bytes(10)
        second = await client.delay("tests.blob", 10)
        assert await client.result(second, timeout=10) == bytes(10)
        with trio.fail_after(AT_ONCE), pytest.raises(ResultUnknown) as raised:
            await client.result(first)
    assert str(raised.value) == (
        f"the result of task {first} is no longer held by the control plane: the store held "
        f"more than max_entries results (docs/results.md#bounds)")
