"""Workflows run by a real control plane: chains, groups, chords and a
graph, each step run once with its parents' results; a failing step fails
the workflow, naming it, and what had not started never runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from examples.tasks import add, fail, nap
from fastworker import Client, InvalidSubmission, TaskCancelled, TaskError, UnknownTask
from fastworker.client.workflows import start as start_workflow
from fastworker.workflows import Workflow, group
from tests.process.harness import control_plane
from tests.process.workflow_tasks import fails_once, mark, note, pair, total, upto


@pytest.fixture
def workflow_env(control_env: dict[str, str]) -> dict[str, str]:
    control_env["FASTWORKER_TASKS"] = "examples.tasks,tests.process.workflow_tasks"
    return control_env


async def steps_held(client: Client, workflow_id: str) -> dict[str, str]:
    """Each step's task id and state, as the store holds them."""
    page = await client.list_tasks(id=f"{workflow_id}.", limit=500)
    return {record.id: record.state for record in page.records}


async def test_chains_groups_and_chords_pass_results_inside_the_control_plane(
        workflow_env: dict[str, str]) -> None:
    async with control_plane(workflow_env):
        async with Client(workflow_env["FASTWORKER_ADDRESS"]) as client:
            assert await client.run(add.s(1, 2) | add.s(10) | add.s(100), timeout=30) == 113

            fan = await client.start(group(add.s(i, i) for i in range(20)) | total.s())
            assert await client.result(fan, timeout=30) == sum(2 * i for i in range(20))
            held = await steps_held(client, fan)
            assert len(held) == 21 and set(held.values()) == {"succeeded"}
            record = await client.status(fan)
            assert (record.task, record.state) == ("fastworker.workflow", "succeeded")

            middle = add.s(1, 1) | group(add.s(10), add.s(20)) | total.s()
            assert await client.run(middle, timeout=30) == 12 + 22

            wf = Workflow()
            a = wf.add(add.s(1, 0))
            b = wf.add(add.s(2, 0))
            both = wf.add(pair.s("x"), after=[a, b])  # pair([1, 2], "x")
            wf.add(pair.s("end"), after=[both])
            wf.add(pair.si("ignored", 0), after=[a], takes=False)
            last = await client.start(wf)
            assert await client.result(last, timeout=30) == ["ignored", 0]  # the last step's
            assert (await client.status(f"{last}.3")).state == "succeeded"
            assert await client.result(f"{last}.3", timeout=30) == [[[1, 2], "x"], "end"]


async def test_a_failing_step_fails_the_workflow_and_what_follows_never_runs(
        workflow_env: dict[str, str]) -> None:
    async with control_plane(workflow_env):
        async with Client(workflow_env["FASTWORKER_ADDRESS"]) as client:
            flow = await client.start(add.s(1, 1) | fail.si("disk full") | add.s(1))
            with pytest.raises(TaskError) as failed:
                await client.result(flow, timeout=30)
            assert failed.value.remote_type == "WorkflowFailed"
            assert str(failed.value.args[0]).endswith(
                "step 1 (examples.tasks.fail) failed: ValueError: disk full")
            held = await steps_held(client, flow)
            assert held == {f"{flow}.0": "succeeded", f"{flow}.1": "failed"}  # 2 never ran
            assert (await client.status(f"{flow}.2")).state == "unknown"


async def test_a_cancelled_workflow_stops_its_running_step_and_starts_no_other(
        workflow_env: dict[str, str]) -> None:
    async with control_plane(workflow_env):
        async with Client(workflow_env["FASTWORKER_ADDRESS"]) as client:
            flow = await client.start(add.s(1, 1) | nap.si(60) | add.s(1))
            with trio.fail_after(10):
                while (await client.status(f"{flow}.1")).state != "running":
                    await trio.sleep(0.02)  # a condition, polled: the store says when
            assert await client.cancel(flow) == "cancelled"
            with pytest.raises(TaskCancelled):
                await client.result(flow, timeout=30)
            with pytest.raises(TaskCancelled):
                await client.result(f"{flow}.1", timeout=30)
            assert (await client.status(f"{flow}.2")).state == "unknown"  # never started
            assert await client.cancel(flow) == "unknown"  # no longer running


async def test_a_bad_workflow_is_refused_and_the_control_plane_runs_on(
        workflow_env: dict[str, str]) -> None:
    async with control_plane(workflow_env):
        async with Client(workflow_env["FASTWORKER_ADDRESS"]) as client:
            with pytest.raises(InvalidSubmission,
                               match="step 1: timeout 0.0 is not a number of seconds > 0"):
                await client.start(add.s(1, 1) | add.s(2).set(timeout=0))
            with pytest.raises(InvalidSubmission, match="ends in one step"):
                await client.start(group(add.s(1, 1), add.s(2, 2)))
            taken = await client.delay(add, 1, 1)
            queries = client._queries  # the id is chosen here, not by start()
            assert queries is not None
            with pytest.raises(InvalidSubmission, match="already a task's"):
                await start_workflow(queries, add.s(1, 2), taken)
            with pytest.raises(InvalidSubmission, match="has no '.'"):
                await start_workflow(queries, add.s(1, 2), "my.flow")
            assert await client.run(add.s(1, 2) | add.s(3), timeout=30) == 6  # still up


async def test_a_failed_workflow_is_retried_from_its_failed_step(
        workflow_env: dict[str, str], tmp_path: Path) -> None:
    """A retry runs the failed step and what follows it again under new ids;
    the steps that succeeded keep their results and do not run again; the
    workflow's id and result stay. ``client.workflow`` shows every step."""
    runs, marker = tmp_path / "runs.log", tmp_path / "failed-once"
    flow = (mark.si("a", str(runs), 5) | fails_once.s(str(marker)) | add.s(1))
    async with control_plane(workflow_env):
        async with Client(workflow_env["FASTWORKER_ADDRESS"]) as client:
            first = await client.start(flow)
            with pytest.raises(TaskError, match="step 1 .* failed: RuntimeError: the first run"):
                await client.result(first, timeout=30)
            state = await client.workflow(first)
            assert (state.state, state.generation) == ("failed", 0)
            assert [(s.index, s.id, s.state) for s in state.steps] == [
                (0, f"{first}.0", "succeeded"), (1, f"{first}.1", "failed"),
                (2, "", "skipped")]
            assert state.steps[1].error == "RuntimeError: the first run fails"

            assert await client.retry_workflow(first) == first
            assert await client.result(first, timeout=30) == 6
            state = await client.workflow(first)
            assert (state.state, state.generation) == ("succeeded", 1)
            assert [(s.id, s.state) for s in state.steps] == [
                (f"{first}.0", "succeeded"), (f"{first}.1.1", "succeeded"),
                (f"{first}.2.1", "succeeded")]
            assert runs.read_text().split() == ["a"]  # the step that succeeded ran once
            with pytest.raises(InvalidSubmission, match="succeeded: nothing to retry"):
                await client.retry_workflow(first)
            with pytest.raises(InvalidSubmission, match="no workflow nope is kept"):
                await client.retry_workflow("nope")
            assert (await client.workflow("nope")).state == "unknown"


async def test_keep_going_runs_the_other_branches_and_an_error_handler_hears_of_the_failure(
        workflow_env: dict[str, str], tmp_path: Path) -> None:
    """With keep_going a failed step skips only what waits for it; the
    workflow still fails, naming it, and its error handler gets what failed."""
    runs, noted = tmp_path / "runs.log", tmp_path / "noted.json"
    wf = Workflow()
    broken = wf.add(fail.si("branch a"))
    after_broken = wf.add(mark.si("after-a", str(runs), 0), after=[broken])
    other = wf.add(mark.si("b", str(runs), 1, 0.2))
    after_other = wf.add(mark.si("b2", str(runs), 2), after=[other])
    wf.add(total.s(), after=[after_broken, after_other])
    async with control_plane(workflow_env):
        async with Client(workflow_env["FASTWORKER_ADDRESS"]) as client:
            flow = await client.start(wf, keep_going=True, on_error=note.s(str(noted)))
            with pytest.raises(TaskError, match=r"step 0 \(examples.tasks.fail\) failed: "
                                                r"ValueError: branch a"):
                await client.result(flow, timeout=30)
            state = await client.workflow(flow)
            assert [step.state for step in state.steps] == [
                "failed", "skipped", "succeeded", "succeeded", "skipped"]
            assert runs.read_text().split() == ["b", "b2"]
            assert await client.result(f"{flow}.error", timeout=30) is None
            assert json.loads(noted.read_text()) == {
                "workflow": flow, "step": 0, "task": "examples.tasks.fail",
                "error": "ValueError: branch a"}

            stopping = await client.start(add.s(1, 2) | nap.si(60) | add.s(3), time_limit=1)
            with pytest.raises(TaskError, match="TimeLimitExceeded: the workflow ran past its "
                                                "time limit of 1 s"):
                await client.result(stopping, timeout=30)
            with pytest.raises(TaskCancelled):
                await client.result(f"{stopping}.1", timeout=30)
            assert (await client.status(f"{stopping}.2")).state == "unknown"
            with pytest.raises(InvalidSubmission, match="time_limit -1 is not a number"):
                await client.start(add.s(1, 2), time_limit=-1)


async def test_a_map_runs_a_step_per_item_of_a_list_known_only_when_it_runs(
        workflow_env: dict[str, str]) -> None:
    """``upto.s(n) | add.map(10) | total.s()``: add runs once per item (each
    item its first argument), total gets their results as one list; an
    empty list maps to an empty list; a member that fails fails the step,
    naming the item."""
    async with control_plane(workflow_env):
        async with Client(workflow_env["FASTWORKER_ADDRESS"]) as client:
            flow = await client.start(upto.s(5) | add.map(10) | total.s())
            assert await client.result(flow, timeout=30) == sum(i + 10 for i in range(5))
            assert await client.result(f"{flow}.1", timeout=30) == [10, 11, 12, 13, 14]
            assert await client.result(f"{flow}.1.m3", timeout=30) == 13
            state = await client.workflow(flow)
            assert [step.state for step in state.steps] == ["succeeded"] * 3
            mapped = state.steps[1]
            assert 0 < mapped.started_at <= mapped.finished_at  # its own record, timed

            assert await client.run(upto.s(0) | add.map(1) | total.s(), timeout=30) == 0
            assert await client.run(upto.s(3) | add.map(1), timeout=30) == [1, 2, 3]

            broken = await client.start(pair.si("a", "b") | fail.map() | total.s())
            with pytest.raises(TaskError, match=r"step 1 \(examples.tasks.fail\) failed: "
                                                r"item \d: ValueError: [ab]"):
                await client.result(broken, timeout=30)
            with pytest.raises(InvalidSubmission, match="follows one step"):
                await client.start(group(add.s(1, 1), add.s(2, 2)) | add.map())


async def test_a_periodic_workflow_is_started_by_the_scheduler(
        workflow_env: dict[str, str]) -> None:
    """``periodic(name, workflow, every=...)`` starts the workflow on its
    schedule, each run a workflow of its own id; runs do not overlap."""
    environ = {**workflow_env, "FASTWORKER_TASKS": workflow_env["FASTWORKER_TASKS"]
               + ",tests.process.periodic_workflow_tasks"}
    async with control_plane(environ):
        async with Client(environ["FASTWORKER_ADDRESS"]) as client:
            with trio.fail_after(30):
                while len(done := (await client.list_tasks(
                        task="fastworker.workflow", state="succeeded")).records) < 2:
                    await trio.sleep(0.05)  # a condition, polled: the scheduler runs it
            for record in done:
                assert await client.result(record.id, timeout=5) == 6
                assert len((await client.workflow(record.id)).steps) == 3
            with pytest.raises(TaskError, match="is a periodic workflow"):
                await client.submit("tests.workflow.every_moment")


async def test_a_workflow_naming_an_unknown_task_is_refused_before_any_step_runs(
        workflow_env: dict[str, str], tmp_path: Path) -> None:
    runs = tmp_path / "runs.log"
    async with control_plane(workflow_env):
        async with Client(workflow_env["FASTWORKER_ADDRESS"]) as client:
            from fastworker.workflows import Signature
            with pytest.raises(UnknownTask, match="unknown task 'tests.workflow.mrak'; did "
                                                  "you mean 'tests.workflow.mark'"):
                await client.start(mark.si("first", str(runs), 1)
                                   | Signature("tests.workflow.mrak"))
            with pytest.raises(UnknownTask, match="unknown task 'nope'"):
                await client.start(add.s(1, 2), on_error=Signature("nope"))
            assert not runs.exists()  # the first step never ran


async def test_steps_the_queue_has_no_room_for_wait_for_room(
        workflow_env: dict[str, str]) -> None:
    """A queue of 4: a group of 20 steps does not fail for want of room;
    the steps the queue refused go in as room frees up."""
    environ = {**workflow_env, "FASTWORKER_QUEUE_CAPACITY": "4",
               "FASTWORKER_CONCURRENCY": "2", "FASTWORKER_PREFETCH": "1"}
    async with control_plane(environ):
        async with Client(environ["FASTWORKER_ADDRESS"]) as client:
            flow = group(add.s(i, i) for i in range(20)) | total.s()
            assert await client.run(flow, timeout=60) == sum(2 * i for i in range(20))
