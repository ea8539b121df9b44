"""``fastworker workflow ID`` (and ``--retry``, ``--cancel``) against a
running control plane, as an operator runs it: real processes, workflows
started by a client, exit codes, text and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from examples.tasks import add, nap
from fastworker import Client, TaskCancelled, TaskError
from tests.process.harness import control_plane
from tests.process.harness import fastworker_command as fastworker
from tests.process.workflow_tasks import fails_once, mark


@pytest.fixture
def workflow_env(control_env: dict[str, str]) -> dict[str, str]:
    control_env["FASTWORKER_TASKS"] = "examples.tasks,tests.process.workflow_tasks"
    return control_env


def rows(text: str) -> list[list[str]]:
    """The steps table of ``fastworker workflow``'s text, from its header
    on, each row split on the two spaces between columns."""
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("STEP  "))
    return [[cell.strip() for cell in line.split("  ") if cell.strip()]
            for line in lines[header:] if not line.startswith("(")]


async def test_a_succeeded_workflow_is_shown_step_by_step(
        workflow_env: dict[str, str]) -> None:
    """Its state line, a row per step with the step it waits for, and the
    same as JSON; the workflow is listed among tasks by its task name."""
    async with control_plane(workflow_env):
        async with Client(workflow_env["FASTWORKER_ADDRESS"]) as client:
            flow = await client.start(add.s(1, 2) | add.s(3))
            assert await client.result(flow, timeout=30) == 6

        shown = await fastworker(workflow_env, "workflow", flow)
        assert shown.returncode == 0, shown.stderr
        text = shown.stdout.decode()
        assert text.startswith(f"{flow}  succeeded  retries 0  2 steps: 2 succeeded  started ")
        assert "error:" not in text and "--retry" not in text
        table = rows(text)
        assert table[0] == ["STEP", "TASK", "WAITS FOR", "STATE", "TASK ID", "ATTEMPT",
                            "TOOK"]  # no step has an error: no ERROR column
        assert [row[:6] for row in table[1:]] == [
            ["0", "examples.tasks.add", "-", "succeeded", f"{flow}.0", "1"],
            ["1", "examples.tasks.add", "0", "succeeded", f"{flow}.1", "1"]]
        assert all(row[6].endswith(("ms", " s")) for row in table[1:])

        as_json = await fastworker(workflow_env, "workflow", flow, "--json")
        assert as_json.returncode == 0, as_json.stderr
        data = json.loads(as_json.stdout)
        assert (data["id"], data["state"], data["retries"], data["error"]) == (
            flow, "succeeded", 0, None)
        assert [(s["index"], s["task"], s["after"], s["id"], s["state"], s["attempt"],
                 s["error"]) for s in data["steps"]] == [
            (0, "examples.tasks.add", [], f"{flow}.0", "succeeded", 1, None),
            (1, "examples.tasks.add", [0], f"{flow}.1", "succeeded", 1, None)]
        assert all(s["duration"] >= 0 and s["finished_at"] for s in data["steps"])

        listed = await fastworker(workflow_env, "tasks", "--name", "fastworker.workflow",
                                  "--json")
        assert [(t["id"], t["state"]) for t in json.loads(listed.stdout)["tasks"]] == [
            (flow, "succeeded")]


async def test_a_failed_workflow_is_shown_then_retried_from_its_failed_step(
        workflow_env: dict[str, str], tmp_path: Path) -> None:
    """The failed step's error and the skipped step are shown; ``--retry``
    says which steps run again, the workflow then succeeds without running
    the step that had succeeded, and a second ``--retry`` is refused."""
    runs, marker = tmp_path / "runs.log", tmp_path / "failed-once"
    async with control_plane(workflow_env):
        async with Client(workflow_env["FASTWORKER_ADDRESS"]) as client:
            flow = await client.start(
                mark.si("a", str(runs), 5) | fails_once.s(str(marker)) | add.s(1))
            with pytest.raises(TaskError):
                await client.result(flow, timeout=30)

            shown = await fastworker(workflow_env, "workflow", flow)
            assert shown.returncode == 0, shown.stderr
            lines = shown.stdout.decode().splitlines()
            assert lines[0].startswith(
                f"{flow}  failed  retries 0  3 steps: 1 succeeded, 1 failed, 1 skipped  ")
            assert lines[1] == ("  error: step 1 (tests.workflow.fails_once) failed: "
                                "RuntimeError: the first run fails")
            table = rows(shown.stdout.decode())
            assert table[1][:6] == ["0", "tests.workflow.mark", "-", "succeeded",
                                    f"{flow}.0", "1"]
            assert table[2][:6] == ["1", "tests.workflow.fails_once", "0", "failed",
                                    f"{flow}.1", "1"]
            assert table[2][-1] == "RuntimeError: the first run fails"
            assert table[3] == ["2", "examples.tasks.add", "1", "skipped", "-", "-", "-"]
            assert lines[-1] == (f"(`fastworker task TASK-ID` shows a step's traceback; "
                                 f"`fastworker workflow {flow} --retry` runs it again from "
                                 "where it stopped)")

            retried = await fastworker(workflow_env, "workflow", flow, "--retry")
            assert retried.returncode == 0, retried.stderr
            assert retried.stdout.decode() == (
                f"{flow}: retried (retry 1): steps 1-2 run again; 1 succeeded step keeps "
                "its result\n")
            assert await client.result(flow, timeout=30) == 6

        done = await fastworker(workflow_env, "workflow", flow, "--json")
        assert done.returncode == 0, done.stderr
        data = json.loads(done.stdout)
        assert (data["state"], data["retries"], data["error"]) == ("succeeded", 1, None)
        assert [(s["id"], s["state"]) for s in data["steps"]] == [
            (f"{flow}.0", "succeeded"), (f"{flow}.1.1", "succeeded"),
            (f"{flow}.2.1", "succeeded")]
        assert runs.read_text() == "a\n"  # the step that had succeeded did not run again

        again = await fastworker(workflow_env, "workflow", flow, "--retry")
        assert again.returncode == 1 and again.stdout == b""
        assert again.stderr.decode() == (
            f"fastworker workflow: InvalidSubmission: workflow {flow} succeeded: "
            "nothing to retry\n")
        ended = await fastworker(workflow_env, "workflow", flow, "--cancel")
        assert ended.returncode == 1
        assert ended.stdout.decode() == (
            f"{flow}: not cancelled: the workflow is not running (it ended succeeded)\n")


async def test_a_running_workflow_is_cancelled(workflow_env: dict[str, str]) -> None:
    """``--cancel`` stops its running step and starts no other; the view
    shows the step that was waiting as skipped."""
    async with control_plane(workflow_env):
        async with Client(workflow_env["FASTWORKER_ADDRESS"]) as client:
            flow = await client.start(add.s(1, 1) | nap.si(60) | add.s(1))
            with trio.fail_after(10):
                while (await client.workflow(flow)).steps[1].state != "running":
                    await trio.sleep(0.02)  # a condition, polled: the store says when

            running = await fastworker(workflow_env, "workflow", flow)
            assert running.returncode == 0, running.stderr
            text = running.stdout.decode()
            assert text.startswith(
                f"{flow}  running  retries 0  3 steps: 1 waiting, 1 running, 1 succeeded  ")
            assert rows(text)[3] == ["2", "examples.tasks.add", "1", "waiting", "-", "-", "-"]

            cancelled = await fastworker(workflow_env, "workflow", flow, "--cancel", "--json")
            assert cancelled.returncode == 0, cancelled.stderr
            assert json.loads(cancelled.stdout) == {"id": flow, "outcome": "cancelled"}
            with pytest.raises(TaskCancelled):
                await client.result(flow, timeout=30)

        shown = json.loads((await fastworker(workflow_env, "workflow", flow, "--json")).stdout)
        assert shown["state"] == "cancelled"
        assert [s["state"] for s in shown["steps"]] == ["succeeded", "cancelled", "skipped"]


async def test_an_unknown_workflow_is_exit_1_and_a_task_is_not_cancelled_as_one(
        workflow_env: dict[str, str]) -> None:
    """An id the control plane keeps no workflow of is one line and exit 1,
    for each action; ``--cancel`` leaves a plain task of that id alone."""
    async with control_plane(workflow_env):
        unknown = await fastworker(workflow_env, "workflow", "no-such-flow")
        assert unknown.returncode == 1, unknown.stderr
        assert unknown.stdout.decode() == (
            "no-such-flow: unknown: the control plane keeps no workflow no-such-flow: none "
            "was started there, or it ended and was let go (max_kept); `fastworker task "
            "no-such-flow` shows its record while the store holds it\n")
        as_json = await fastworker(workflow_env, "workflow", "no-such-flow", "--json")
        assert as_json.returncode == 1
        assert json.loads(as_json.stdout) == {
            "id": "no-such-flow", "state": "unknown", "retries": 0, "started_at": None,
            "error": None, "steps": []}

        retried = await fastworker(workflow_env, "workflow", "no-such-flow", "--retry")
        assert retried.returncode == 1 and b"Traceback" not in retried.stderr
        assert retried.stderr.decode() == (
            "fastworker workflow: InvalidSubmission: no workflow no-such-flow is kept here "
            "(never started, or let go: max_kept)\n")

        async with Client(workflow_env["FASTWORKER_ADDRESS"]) as client:
            napping = await client.delay(nap, 60.0)
            not_one = await fastworker(workflow_env, "workflow", napping, "--cancel")
            assert not_one.returncode == 1
            assert not_one.stdout.decode().startswith(f"{napping}: unknown: ")
            assert (await client.status(napping)).state in ("queued", "running")
            assert await client.cancel(napping) in ("cancelled", "interrupted")

        both = await fastworker(workflow_env, "workflow", "x", "--retry", "--cancel")
        assert both.returncode == 2
        assert "not allowed with argument --retry" in both.stderr.decode()

    gone = await fastworker(workflow_env, "workflow", "x")
    assert gone.returncode == 3
    assert "no control plane at" in gone.stderr.decode() and b"Traceback" not in gone.stderr
