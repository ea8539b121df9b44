"""The control plane end to end: a real ``fastworker run config/control.toml``
on a free loopback port, and clients under trio and asyncio."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.frame import Framer
from actors.nng import open_request_wire
from actors.pytest_plugin import free_tcp_ports
from examples import tasks
from fastworker import (
    Client,
    QueueFull,
    SyncClient,
    TaskError,
    TaskTimeout,
    UnknownTask,
)
from fastworker.messages import CODEC, StatusQuery
from tests.process.harness import control_plane, env, fastworker_run  # noqa: F401 (fixture)

#: One async slot and no prefetch: a second task waits in the queue.
ONE_SLOT = {"FASTWORKER_CONCURRENCY": "1", "FASTWORKER_PREFETCH": "0"}

CONTROL = "config/control.toml"
TASKS = "examples.tasks,tests.process.control_tasks"


@pytest.fixture
def control_env(env: dict[str, str]) -> dict[str, str]:
    """A control plane's environment: five free ports from its base address."""
    env["FASTWORKER_ADDRESS"] = f"tcp://127.0.0.1:{free_tcp_ports(6)}"
    env["FASTWORKER_TASKS"] = TASKS
    return env


class TestTrioClient:
    async def test_submit_delay_result_map_status(self, control_env: dict[str, str]) -> None:
        """A trio client runs async and sync tasks and reads their status."""
        address = control_env["FASTWORKER_ADDRESS"]
        async with control_plane(control_env), Client(address) as client:
            assert await client.submit(tasks.add, 1, 2) == 3
            task_id = await client.delay(tasks.checksum, b"hello")
            assert await client.result(task_id, timeout=10) == (
                "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
            )
            assert await client.map("examples.tasks.add", [(n, n) for n in range(50)]) == [
                2 * n for n in range(50)
            ]
            record = await client.status(task_id)
            assert record.state == "succeeded"
            assert record.task == "examples.tasks.checksum"
            assert record.attempt == 1
            assert record.queued_at <= record.started_at <= record.finished_at

    async def test_remote_errors_and_timeouts(self, control_env: dict[str, str]) -> None:
        """A task's exception comes back as TaskError with type, message and
        traceback text; a task past its time limit as TaskTimeout; a result
        not ready in time as TimeoutError."""
        address = control_env["FASTWORKER_ADDRESS"]
        async with control_plane(control_env), Client(address) as client:
            with pytest.raises(TaskError) as raised:
                await client.submit(tasks.fail, "on purpose")
            assert raised.value.remote_type == "ValueError"
            assert raised.value.message == "on purpose"
            assert 'raise ValueError(message)' in raised.value.traceback
            task_id = await client.send(tasks.nap, (5,), timeout=0.2)
            with pytest.raises(TaskTimeout, match="ran past its time limit of 0.2 s"):
                await client.result(task_id, timeout=10)
            slow = await client.delay(tasks.nap, 2)
            with pytest.raises(TimeoutError):
                await client.result(slow, timeout=0.1)

    async def test_unknown_task_names_close_matches(self, control_env: dict[str, str]) -> None:
        """An unknown task name is rejected with UnknownTask naming close matches."""
        address = control_env["FASTWORKER_ADDRESS"]
        async with control_plane(control_env), Client(address) as client:
            with pytest.raises(UnknownTask, match="did you mean 'examples.tasks.add'"):
                await client.delay("examples.tasks.ad", 1, 2)


async def test_an_asyncio_client(control_env: dict[str, str]) -> None:
    """The same Client works under asyncio (as in a FastAPI handler)."""

    async def use() -> list[Any]:
        async with Client(control_env["FASTWORKER_ADDRESS"]) as client:
            first = await client.submit(tasks.add, 20, 22)
            ids = await asyncio.gather(*(client.delay(tasks.add, n, 1) for n in range(20)))
            rest = [await client.result(task_id, timeout=10) for task_id in ids]
            return [first, rest]

    async with control_plane(control_env):
        first, rest = await trio.to_thread.run_sync(asyncio.run, use())
    assert first == 42
    assert rest == [n + 1 for n in range(20)]


async def test_the_fastapi_example(control_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """examples/fastapi_app.py submits from FastAPI handlers and reads results."""
    from fastapi.testclient import TestClient

    monkeypatch.setenv("FASTWORKER_ADDRESS", control_env["FASTWORKER_ADDRESS"])
    from examples.fastapi_app import app

    def use() -> tuple[Any, Any, Any]:
        with TestClient(app) as http:
            task_id = http.post("/add", params={"x": 1, "y": 2}).json()["task_id"]
            result = http.get(f"/result/{task_id}").json()
            checksum = http.post("/checksum", params={"data": "hello"}).json()
            # An id never submitted: 404, naming it (the control plane
            # says so at once: tests/fastworker/test_never_seen.py).
            unknown = http.get("/result/no-such-task", params={"wait": 60})
            return result, checksum, unknown

    async with control_plane(control_env):
        result, checksum, unknown = await trio.to_thread.run_sync(use)
    assert result == {"state": "succeeded", "value": 3}
    assert checksum["sha256"].startswith("2cf24dba")
    assert unknown.status_code == 404
    assert "has no record of task no-such-task" in unknown.json()["detail"]


async def test_the_sync_client(control_env: dict[str, str]) -> None:
    """SyncClient gives the same calls to blocking code."""

    def use() -> tuple[Any, list[Any]]:
        with SyncClient(control_env["FASTWORKER_ADDRESS"]) as client:
            ids = client.delay_many(tasks.add, [(n, 1) for n in range(3)])
            return client.submit(tasks.add, 2, 3), [client.result(i, timeout=10) for i in ids]

    async with control_plane(control_env):
        assert await trio.to_thread.run_sync(use) == (5, [1, 2, 3])


async def test_priority_order(control_env: dict[str, str], tmp_path: Path) -> None:
    """With the only executor slot busy, a later critical task runs before
    earlier low ones."""
    gate_file = tmp_path / "open"
    address = control_env["FASTWORKER_ADDRESS"]
    async with control_plane({**control_env, **ONE_SLOT}), Client(address) as client:
        gate = await client.delay("tests.gate", str(gate_file))
        lows = [await client.delay("tests.order", f"low{n}", priority="low") for n in range(3)]
        critical = await client.delay("tests.order", "critical", priority="critical")
        gate_file.touch()
        assert await client.result(gate, timeout=10) == "opened"
        ran = [await client.result(i, timeout=10) for i in [critical, *lows]]
    assert sorted(ran, key=lambda item: item[1])[0][0] == "critical"
    assert [label for label, _ in sorted(ran, key=lambda item: item[1])] == [
        "critical", "low0", "low1", "low2"
    ]


async def test_queue_full(control_env: dict[str, str], tmp_path: Path) -> None:
    """A full queue answers QueueFull once the submission's wait runs out;
    cancelling a queued task makes room."""
    gate_file = tmp_path / "open"
    address = control_env["FASTWORKER_ADDRESS"]
    settings = {**ONE_SLOT, "FASTWORKER_QUEUE_CAPACITY": "2"}
    async with control_plane({**control_env, **settings}), Client(address) as client:
        await client.delay("tests.gate", str(gate_file))
        queued = [await client.delay("tests.order", f"q{n}") for n in range(2)]
        with pytest.raises(QueueFull, match="queue full"):
            await client.send("tests.order", ("late",), queue_wait=0.2)
        assert await client.cancel(queued[0]) == "cancelled"
        assert (await client.status(queued[0])).state == "cancelled"
        assert await client.send("tests.order", ("fits",), queue_wait=0) 
        gate_file.touch()


@pytest.mark.parametrize("offset", [0, 1, 2, 3, 4], ids=["critical", "high", "normal", "low", "queries"])
async def test_bad_frames_on_each_port_are_dropped_and_counted(
    control_env: dict[str, str], offset: int
) -> None:
    """Malformed, unsigned and forged frames on any port are dropped with a
    log line naming the peer; the control plane keeps serving."""
    from actors.edge import offset_address

    control_env["FASTWORKER_SECRET"] = "s3cret"
    address = control_env["FASTWORKER_ADDRESS"]
    port = offset_address(address, offset)
    async with control_plane(control_env) as node:
        wire = await open_request_wire(port, recv_max_size=1 << 20, contexts=3)
        try:
            for frame in (
                b"not a frame at all",
                Framer(CODEC).pack([StatusQuery(ids=("x",))]),
                Framer(CODEC, secret=b"forged").pack([StatusQuery(ids=("x",))]),
            ):
                with pytest.raises(TimeoutError):
                    await wire.request(frame, timeout=0.3)
        finally:
            await wire.aclose()
        line = await node.wait_for("dropped frame from tcp://127.0.0.1:")
        assert line.endswith("not a frame (magic b'no') (1 dropped in the last 60 s)")
        async with Client(address, secret="s3cret") as client:
            assert await client.submit(tasks.add, 1, 1) == 2


async def test_a_client_reconnects_after_a_control_plane_restart(
    control_env: dict[str, str], host_secret: bytes,
) -> None:
    """A client keeps working across a control-plane restart on the same address."""
    address = control_env["FASTWORKER_ADDRESS"]
    async with Client(address, request_timeout=10) as client:
        async with control_plane(control_env):
            assert await client.submit(tasks.add, 1, 1) == 2
        async with control_plane(control_env):
            assert await client.submit(tasks.add, 2, 2) == 4


async def test_a_call_in_flight_when_the_control_plane_dies_fails_clearly(
    control_env: dict[str, str],
) -> None:
    """A result waited for when the control plane is killed ends in
    ConnectionLost naming the address, not in a hang."""
    from fastworker import ConnectionLost

    address = control_env["FASTWORKER_ADDRESS"]
    async with fastworker_run(CONTROL, control_env) as node:
        await node.wait_for("node control ready")
        async with Client(address, request_timeout=1, poll_wait=0.5) as client:
            task_id = await client.delay(tasks.nap, 30)
            node.process.kill()
            with pytest.raises(ConnectionLost, match="no answer from the control plane at"):
                await client.result(task_id, timeout=20)


async def test_listening_off_loopback_needs_a_secret(control_env: dict[str, str], tmp_path: Path) -> None:
    """Off loopback the control plane refuses to start without a secret (exit 2,
    saying how to set one), and starts with one from FASTWORKER_SECRET_FILE."""
    from tests.process.harness import run_to_exit, text_lines

    port = control_env["FASTWORKER_ADDRESS"].rsplit(":", 1)[1]
    control_env["FASTWORKER_ADDRESS"] = f"tcp://0.0.0.0:{port}"
    refused = await run_to_exit(CONTROL, "--check", env=control_env)
    assert refused.returncode == 2
    assert text_lines(refused.stderr)[0] == (
        f"{CONTROL}: $.actors.submit_critical: refusing to listen on tcp://0.0.0.0:{port} "
        "without a shared secret or mutual TLS: set a secret (FASTWORKER_SECRET, or the "
        "edge's `secret` / `secret_file` option), use mutual TLS (a tls+tcp:// address with a "
        "client CA: FASTWORKER_TLS_CA, or the edge's `tls.ca_file`), or listen on a loopback "
        f"address such as tcp://127.0.0.1:{port}"
    )
    secret_file = tmp_path / "secret"
    secret_file.write_text("s3cret\n")
    control_env["FASTWORKER_SECRET_FILE"] = str(secret_file)
    async with control_plane(control_env):
        async with Client(f"tcp://127.0.0.1:{port}", secret="s3cret") as client:
            assert await client.submit(tasks.add, 3, 4) == 7


async def test_sigterm_lets_a_running_task_finish(control_env: dict[str, str]) -> None:
    """A graceful stop waits for the task in flight; nothing crashes; exit 0."""
    import signal

    address = control_env["FASTWORKER_ADDRESS"]
    async with fastworker_run(CONTROL, control_env) as node:
        await node.wait_for("node control ready")
        async with Client(address) as client:
            await client.delay(tasks.nap, 0.5)
        node.send_signal(signal.SIGTERM)
        assert await node.wait_exit() == 0, node.tail
    assert "crashed" not in node.output
    assert "node control stopped" in node.output


async def test_a_task_module_that_fails_to_import_stops_start_up(
    control_env: dict[str, str],
) -> None:
    """The module's own error (and its frames, not fastworker's) is reported; exit 2."""
    from tests.process.harness import run_to_exit

    control_env["FASTWORKER_TASKS"] = "examples.tasks,tests.process.broken_tasks"
    result = await run_to_exit(CONTROL, env=control_env)
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 2
    assert lines[0] == (
        f"{CONTROL}: $.node.imports: cannot import 'tests.process.broken_tasks': "
        "KeyError: 'retires'"
    )
    assert 'broken_tasks.py", line 11, in <module>' in lines[1]
    assert not any("actors/" in line or "importlib" in line for line in lines)


async def test_a_failed_task_is_logged_with_its_name_id_and_error(
    control_env: dict[str, str],
) -> None:
    """The node that ran a task logs its failure at WARNING: the task's
    name and id, where it ran, and the error's last line; with a full ISO
    8601 time."""
    address = control_env["FASTWORKER_ADDRESS"]
    async with control_plane(control_env) as node, Client(address) as client:
        task_id = await client.delay("examples.tasks.fail", "disk full")
        with pytest.raises(TaskError):
            await client.result(task_id, timeout=10)
        line = await node.wait_for(f"task examples.tasks.fail[{task_id}] failed on ")
    iso = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d "
    assert re.match(iso + "WARNING fastworker.tasks: ", line), line
    assert line.endswith(": ValueError: disk full"), line


async def test_json_logs_are_one_object_per_line(control_env: dict[str, str]) -> None:
    """FASTWORKER_LOG_FORMAT=json: every line the node writes is one JSON
    object with time, level, logger and message."""
    control_env["FASTWORKER_LOG_FORMAT"] = "json"
    address = control_env["FASTWORKER_ADDRESS"]
    async with control_plane(control_env) as node, Client(address) as client:
        task_id = await client.delay("examples.tasks.fail", "disk full")
        with pytest.raises(TaskError):
            await client.result(task_id, timeout=10)
        await node.wait_for(f"task examples.tasks.fail[{task_id}] failed on ")
        # A task's own line, from the executor's pool process, is JSON too.
        assert await client.submit("tests.log_warning", "hello") == "hello"
        await node.wait_for("from the task: hello")
    entries = [json.loads(line) for line in node.lines if line.strip()]
    assert all(set(entry) == {"time", "level", "logger", "message"} for entry in entries)
    (failure,) = [e for e in entries if task_id in e["message"]]
    assert (failure["level"], failure["logger"]) == ("WARNING", "fastworker.tasks")
    assert failure["message"].endswith("ValueError: disk full")
    assert any(e["message"].startswith("node control ready") for e in entries)
    (own,) = [e for e in entries if e["logger"] == "tests.tasks"]
    assert (own["level"], own["message"]) == ("WARNING", "from the task: hello")
