"""Retries and unique keys from the client, through the shipped control
plane in process (real time, short backoffs; the actors' own tests use
MockClock)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from fastworker import InvalidSubmission, TaskError, TaskTimeout
from tests.dashboard.harness import PATIENCE, open_control
from tests.fastworker import lifecycle_tasks as life

TASKS = {"FASTWORKER_TASKS": "examples.tasks,tests.dashboard.dash_tasks,"
                             "tests.fastworker.lifecycle_tasks"}


async def test_a_task_that_fails_twice_succeeds_on_its_third_attempt() -> None:
    async with open_control(environ=TASKS) as control:
        task_id = await control.client.delay(life.flaky, "third", 2)
        value = await control.client.result(task_id, timeout=PATIENCE)
        record = await control.client.status(task_id)
        page = await control.get(f"/api/tasks/{task_id}")
    assert value == 3 and life.RUNS["third"] == 3
    assert (record.state, record.attempt) == ("succeeded", 3)
    assert [(a.attempt, a.error.type, a.error.message) for a in record.attempts] == [
        (1, "ConnectionError", "run 1 of third failed"),
        (2, "ConnectionError", "run 2 of third failed")]
    assert [a["attempt"] for a in page["attempts"]] == [1, 2]
    assert "run 2 of third failed" in page["attempts"][1]["error"]["message"]


async def test_when_retries_run_out_the_task_fails_with_the_last_error() -> None:
    async with open_control(environ=TASKS) as control:
        task_id = await control.client.send(life.flaky, ("out", 10), retries=1)
        with pytest.raises(TaskError, match="run 2 of out failed"):
            await control.client.result(task_id, timeout=PATIENCE)
        record = await control.client.status(task_id)
    assert (record.state, record.attempt, len(record.attempts)) == ("failed", 2, 1)
    assert life.RUNS["out"] == 2


async def test_an_exception_not_worth_a_retry_fails_at_once() -> None:
    async with open_control(environ=TASKS) as control:
        task_id = await control.client.delay(life.picky, "picky")
        with pytest.raises(TaskError, match="not worth a retry"):
            await control.client.result(task_id, timeout=PATIENCE)
        record = await control.client.status(task_id)
    assert (record.state, record.attempt, record.attempts) == ("failed", 1, ())
    assert life.RUNS["picky"] == 1


async def test_concurrent_submissions_with_one_key_run_the_task_once() -> None:
    """Twenty clients submit at once with the same key: all get the first
    task's id and it runs once. Once it has ended the key is free again."""
    async with open_control(environ=TASKS) as control:
        ids: list[str] = []

        async def submit() -> None:
            ids.append(await control.client.send(life.held, ("once",), key="report:7"))

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(submit)
        await control.until(lambda s: s["overview"]["in_flight"] == 1)
        while_running = await control.client.send(life.held, ("once",), key="report:7")
        life.gate("once").set()
        value = await control.client.result(ids[0], timeout=PATIENCE)
        after = await control.client.send(life.held, ("once",), key="report:7")
        second = await control.client.result(after, timeout=PATIENCE)
    assert len(ids) == 20 and len(set(ids)) == 1
    assert while_running == ids[0]
    assert value == 1 and after != ids[0] and second == 2


@pytest.mark.parametrize(("options", "complaint"), [
    ({"retries": -1}, "retries must be a whole number"),
    ({"key": ""}, "key must be a non-empty string"),
])
async def test_bad_lifecycle_options_are_refused_by_the_client(
    options: dict[str, object], complaint: str
) -> None:
    async with open_control(environ=TASKS) as control:
        with pytest.raises(InvalidSubmission, match=complaint):
            await control.client.send(life.flaky, ("x", 0), **options)  # type: ignore[arg-type]


async def test_a_process_isolated_task_is_killed_at_its_time_limit(tmp_path: Path) -> None:
    """A sync task spinning in a process (SIGTERM ignored) fails with
    TaskTimeout at its limit, its process is gone, and the next task of
    its kind runs in a new process."""
    async with open_control(environ=TASKS) as control:
        first = tmp_path / "first.pid"
        task_id = await control.client.delay(life.stuck, str(first))
        with pytest.raises(TaskTimeout, match="time limit of 0.5 s"):
            await control.client.result(task_id, timeout=PATIENCE)
        pid = int(first.read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        second = tmp_path / "second.pid"
        again = await control.client.delay(life.stuck, str(second))
        with pytest.raises(TaskTimeout):
            await control.client.result(again, timeout=PATIENCE)
        record = await control.client.status(again)
    assert int(second.read_text()) != pid
    assert pid != os.getpid()
    assert (record.state, record.error.kind if record.error else None) == ("failed", "timeout")
