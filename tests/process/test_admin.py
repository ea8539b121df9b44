"""``fastworker task``, ``submit`` and ``cancel`` against a running control
plane, as an operator runs them: real processes, exit codes, text and JSON."""

from __future__ import annotations

import json

from fastworker import Client
from tests.process.harness import control_plane
from tests.process.harness import fastworker_command as fastworker


async def test_submit_wait_task_and_cancel(control_env: dict[str, str]) -> None:
    address = control_env["FASTWORKER_ADDRESS"]
    async with control_plane(control_env):
        done = await fastworker(control_env, "submit", "examples.tasks.add", "[1, 2]",
                                "--wait", "--json")
        assert done.returncode == 0, done.stderr
        record = json.loads(done.stdout)
        assert (record["task"], record["state"], record["value"]) == (
            "examples.tasks.add", "succeeded", "3")

        shown = await fastworker(control_env, "task", record["id"])
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.decode().startswith(f"{record['id']}  examples.tasks.add  succeeded")

        queued = await fastworker(control_env, "submit", "examples.tasks.add", "[2, 3]")
        assert queued.returncode == 0 and queued.stdout.decode().strip()

        failed = await fastworker(control_env, "submit", "examples.tasks.fail", '"disk full"',
                                  "--wait")
        assert failed.returncode == 1
        text = failed.stdout.decode()
        assert "failed" in text and "error: ValueError: disk full" in text
        assert "Traceback" in text  # the task's own, from its record

        async with Client(address) as client:
            napping = await client.delay("examples.tasks.nap", 60.0)
            await client.delay("examples.tasks.add", 0, 0)  # the nap has started by now
        cancelled = await fastworker(control_env, "cancel", napping, record["id"], "--json")
        outcomes = [json.loads(line) for line in cancelled.stdout.decode().splitlines()]
        assert [o["id"] for o in outcomes] == [napping, record["id"]]
        assert outcomes[1]["outcome"] == "not_queued"  # it had finished
        assert outcomes[0]["outcome"] in ("interrupted", "cancelled")
        assert cancelled.returncode == 1  # not every one was cancelled

        listed = await fastworker(control_env, "tasks", "--state", "failed", "--json")
        assert listed.returncode == 0, listed.stderr
        page = json.loads(listed.stdout)
        assert page["total"] == 1 and page["tasks"][0]["task"] == "examples.tasks.fail"
        table = await fastworker(control_env, "tasks", "--name", "examples.tasks.add",
                                 "--limit", "2")
        lines = table.stdout.decode().splitlines()
        assert len(lines) == 3 and lines[-1].startswith("(1-2 of ")
        assert all("examples.tasks.add" in line for line in lines[:2])
        refused = await fastworker(control_env, "tasks", "--state", "sleeping")
        assert refused.returncode == 2 and "invalid choice" in refused.stderr.decode()


async def test_what_an_operator_gets_wrong_is_said_with_its_exit_code(
        control_env: dict[str, str]) -> None:
    async with control_plane(control_env):
        unknown = await fastworker(control_env, "task", "no-such-task")
        assert unknown.returncode == 1
        assert "has no record of task no-such-task" in unknown.stdout.decode()

        refused = await fastworker(control_env, "submit", "examples.tasks.nope")
        assert refused.returncode == 1
        assert "UnknownTask" in refused.stderr.decode() and b"Traceback" not in refused.stderr

        bad = await fastworker(control_env, "submit", "examples.tasks.add", "[1,")
        assert bad.returncode == 2 and "arguments must be JSON" in bad.stderr.decode()

    undialable = await fastworker(control_env, "task", "x", "--address", "foo")
    assert undialable.returncode == 2 and b"Traceback" not in undialable.stderr
    huge = await fastworker(control_env, "submit", "t", "9" * 5000)
    assert huge.returncode == 2 and "arguments must be JSON" in huge.stderr.decode()

    gone = await fastworker(control_env, "task", "x")
    assert gone.returncode == 3
    assert "no control plane at" in gone.stderr.decode() and b"Traceback" not in gone.stderr
