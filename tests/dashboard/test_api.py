"""The dashboard's JSON API, events and metrics, against the shipped control
plane in process (real actors, real HTTP on loopback)."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from actors import ActorStats, Node, StartError, Topology, open_node
from actors.mailbox import MailboxStats
from dashboard import metrics, views
from dashboard.actor import Dashboard, DashboardOptions, parse_address
from examples import tasks
from fastworker import TaskCancelled, TaskError
from fastworker.internal import TaskDetail
from fastworker.journal import JournalStats
from fastworker.messages import StepInfo, TaskRecord, WorkflowState
from fastworker.stats import (
    DispatcherStats,
    InboxStats,
    ResultStoreStats,
    ScheduleInfo,
    SchedulerStats,
)
from fastworker.workflows import group
from tests.dashboard import dash_tasks
from tests.dashboard.harness import (
    PATIENCE,
    Control,
    loaded_workers,
    open_control,
    open_stand_ins,
)
from tests.process.workflow_tasks import fails_once, total


def dashboard_of(control: Control) -> Dashboard:
    [child] = [c for c in control.node.supervisor.children if c.name == "dashboard"]
    assert isinstance(child.instance, Dashboard)
    return child.instance


async def hold_the_only_slot(control: Control, key: str) -> str:
    """Submit ``hold(key)`` and wait until it runs (the executor has one slot)."""
    task_id = await control.client.delay(dash_tasks.hold, key)
    await control.until(lambda s: s["overview"]["in_flight"] == 1)
    return task_id


ONE_SLOT = {"FASTWORKER_CONCURRENCY": "1", "FASTWORKER_PREFETCH": "0"}
#: The tasks of the workflow tests too (``tests.workflow.*``).
WORKFLOW_TASKS = {
    "FASTWORKER_TASKS": "examples.tasks,tests.dashboard.dash_tasks,tests.process.workflow_tasks"}


class TestViews:
    async def test_the_overview_counts_what_was_submitted_and_how_it_ended(self) -> None:
        async with open_control() as control:
            for n in range(3):
                assert await control.client.submit(tasks.add, n, 1) == n + 1
            with pytest.raises(TaskError):
                await control.client.submit(tasks.fail, "boom")
            snapshot = await control.until(
                lambda s: s["overview"]["totals"]["failed"] == 1
                and s["overview"]["totals"]["succeeded"] == 3)
            overview = await control.get("/api/overview")
        seen = snapshot["overview"]
        assert seen["totals"] == {"submitted": 4, "succeeded": 3, "failed": 1, "cancelled": 0}
        assert seen["success_ratio"] == pytest.approx(0.75)
        assert seen["store"]["entries"] == 4
        assert seen["queue"]["capacity"] == 100_000
        assert seen["node"]["name"] == "control"
        assert overview["totals"] == seen["totals"]
        series = overview["series"]
        assert len(series["t"]) == len(series["submitted"]) >= 1
        # The chart's rates add up to what was submitted (each point is a rate
        # over one sample interval).
        assert sum(series["submitted"]) > 0

    async def test_the_chart_keeps_only_its_ring_of_samples(self) -> None:
        async with open_control(dashboard={"samples": 4}) as control:
            seen = 0
            with trio.fail_after(PATIENCE):
                async with aclosing(control.events()) as events:
                    async for snapshot in events:  # noqa: B007 (the last one is checked)
                        seen += 1
                        if seen == 8:
                            break
        assert len(snapshot["overview"]["series"]["t"]) == 4

    async def test_workers_list_the_control_planes_executor_with_its_load(self) -> None:
        async with open_control(environ=ONE_SLOT) as control:
            await hold_the_only_slot(control, "w")
            workers = (await control.get("/api/workers"))["workers"]
            dash_tasks.gate("w").set()
        [local] = workers
        assert (local["kind"], local["health"], local["draining"]) == ("local", "alive", False)
        assert (local["running"], local["prefetched"], local["slots_used"]) == (1, 0, 1)
        held = local["by_kind"]["async"]
        assert (held["slots"], held["running"], held["prefetched"]) == (1, 1, 0)

    async def test_actors_list_every_actor_with_its_mailbox_and_restarts(self) -> None:
        async with open_control() as control:
            actors = await control.get("/api/actors")
        names = {a["name"] for a in actors["actors"]}
        assert {"inbox", "dispatcher", "executor", "results", "registry", "dashboard",
                "submit_normal", "workers", "beacon"} <= names
        inbox = next(a for a in actors["actors"] if a["name"] == "inbox")
        own = next(a for a in actors["actors"] if a["name"] == "dashboard")
        assert own["detail"]["url"] == control.url
        assert inbox["kind"] == "fastworker.PriorityInbox"
        assert inbox["restarts"] == 0 and inbox["mailbox_capacity"] > 0
        assert inbox["detail"]["capacity"] == 100_000


def _info(task: str, next_run: float, **fields: Any) -> ScheduleInfo:
    defaults: dict[str, Any] = dict(
        cron=None, every=None, last_run=0.0, last_id="", runs_total=0, skipped_overlap=0,
        skipped_missed=0, rejected_total=0, failed_total=0)
    return ScheduleInfo(task=task, next_run=next_run, **{**defaults, **fields})


class TestSchedules:
    async def test_the_shipped_control_plane_lists_the_example_schedule(self) -> None:
        """GET /api/schedules: the example heartbeat, every 60 s, next run
        within the next minute, not run yet; the scheduler is an actor."""
        async with open_control() as control:
            now = time.time()
            listed = await control.get("/api/schedules")
            actors = await control.get("/api/actors")
        assert listed["enabled"] is True
        [beat] = [s for s in listed["schedules"] if s["task"] == "examples.tasks.heartbeat"]
        assert (beat["schedule"], beat["every"], beat["cron"]) == ("every 60 s", 60.0, None)
        assert now < beat["next_run"] <= now + 60.0
        assert (beat["last_run"], beat["last_id"], beat["runs"], beat["skipped"]) == (
            None, None, 0, 0)
        [scheduler] = [a for a in actors["actors"] if a["name"] == "scheduler"]
        assert scheduler["kind"] == "fastworker.Scheduler"
        assert scheduler["detail"]["enabled"] is True

    async def test_turned_off_it_lists_none(self) -> None:
        async with open_control(environ={"FASTWORKER_SCHEDULER": "false"}) as control:
            listed = await control.get("/api/schedules")
        assert listed == {"enabled": False, "schedules": []}

    def test_the_view_shows_the_soonest_first_with_its_counts(self) -> None:
        stats = SchedulerStats(enabled=True, schedules=(
            _info("later", 2000.0, every=90.0),
            _info("sooner", 1000.0, cron="*/5 * * * *", last_run=900.0, last_id="ab12",
                  runs_total=3, skipped_overlap=1, skipped_missed=2, rejected_total=1),
        ))
        sample = views.Sample(at=950.0, clock=1.0, stats={"scheduler": ActorStats(
            name="scheduler", kind="fastworker.Scheduler",
            mailbox=MailboxStats(current_depth=0, peak_depth=0, max_depth=1024),
            handled_total=0, batches_total=0, restarts=0, detail=stats)})
        shown = views.schedules(sample)
        assert [s.task for s in shown.schedules] == ["sooner", "later"]
        sooner, later = shown.schedules
        assert (sooner.schedule, sooner.last_run, sooner.last_id) == (
            "cron */5 * * * *", 900.0, "ab12")
        assert (sooner.runs, sooner.skipped, sooner.rejected) == (3, 3, 1)
        assert (later.schedule, later.last_run, later.last_id) == ("every 90 s", None, None)
        empty = views.schedules(views.Sample(at=0.0, clock=0.0, stats={}))
        assert (empty.enabled, empty.schedules) == (False, [])


class TestTasks:
    async def test_the_list_is_newest_first_filtered_and_paginated(self) -> None:
        async with open_control() as control:
            ids = [await control.client.delay(tasks.add, n, 0) for n in range(5)]
            failed = await control.client.delay(tasks.fail, "no")
            await control.settle(*ids, failed)
            everything = await control.get("/api/tasks")
            page = await control.get("/api/tasks", limit=2, offset=1)
            only_failed = await control.get("/api/tasks", state="failed")
            by_name = await control.get("/api/tasks", task="examples.tasks.add", limit=100)
            by_id = await control.get("/api/tasks", id=ids[2][-6:])
        assert [t["id"] for t in everything["tasks"]] == [failed, *reversed(ids)]
        assert everything["total"] == 6
        assert [t["id"] for t in page["tasks"]] == [ids[4], ids[3]]
        assert (page["total"], page["offset"], page["limit"]) == (6, 1, 2)
        [row] = only_failed["tasks"]
        assert (row["id"], row["state"], row["error_type"]) == (failed, "failed", "ValueError")
        assert by_name["total"] == 5
        assert [t["id"] for t in by_id["tasks"]] == [ids[2]]
        assert "examples.tasks.add" in everything["task_names"]
        assert everything["states"] == [
            "scheduled", "queued", "running", "succeeded", "failed", "cancelled", "expired"]

    @pytest.mark.parametrize(("params", "complaint"), [
        ({"state": "sleeping"}, "unknown state 'sleeping'"),
        ({"offset": "-1"}, "offset"),
        ({"limit": "0"}, "limit"),
        ({"limit": "100000"}, "limit between 1 and 500"),
        ({"offset": "abc"}, "Validation failed"),
    ])
    async def test_a_bad_filter_is_a_400_that_says_why(
        self, params: dict[str, str], complaint: str
    ) -> None:
        async with open_control() as control:
            response = await control.http.get("/api/tasks", params=params)
        assert response.status_code == 400
        assert response.json()["status_code"] == 400
        assert complaint in response.text

    async def test_a_tasks_page_shows_arguments_result_and_timeline(self) -> None:
        async with open_control() as control:
            task_id = await control.client.delay(tasks.add, 20, y=22)
            assert await control.client.result(task_id, timeout=PATIENCE) == 42
            page = await control.get(f"/api/tasks/{task_id}")
        assert (page["id"], page["task"], page["state"]) == (task_id, "examples.tasks.add",
                                                             "succeeded")
        assert (page["args"], page["kwargs"], page["result"]) == ("(20,)", "{'y': 22}", "42")
        assert page["error"] is None and page["priority"] == "normal" and page["attempt"] == 1
        assert [e["event"] for e in page["timeline"]] == [
            "queued", "dispatched", "started", "finished"]
        times = [e["at"] for e in page["timeline"]]
        assert times == sorted(times)
        assert page["workers"] == [page["worker"]]
        assert page["actions"] == {"cancel": False, "retry": False}

    async def test_a_failed_tasks_page_has_the_remote_traceback(self) -> None:
        async with open_control() as control:
            task_id = await control.client.delay(tasks.fail, "it broke")
            await control.settle(task_id)
            page = await control.get(f"/api/tasks/{task_id}")
        assert page["state"] == "failed" and page["result"] is None
        assert page["error"]["type"] == "ValueError"
        assert "it broke" in page["error"]["message"]
        assert "Traceback" in page["error"]["traceback"]
        assert page["actions"] == {"cancel": False, "retry": True}

    async def test_an_unknown_task_is_a_404_json_error(self) -> None:
        async with open_control() as control:
            page = await control.http.get("/api/tasks/no-such-task")
            cancel = await control.http.post("/api/tasks/no-such-task/cancel")
            retry = await control.http.post("/api/tasks/no-such-task/retry")
            route = await control.http.get("/api/nothing-here")
        for response in (page, cancel, retry, route):
            assert response.status_code == 404
            assert response.json()["status_code"] == 404
        assert "no task 'no-such-task'" in page.json()["detail"]


class TestActions:
    async def test_cancel_a_queued_task_then_the_running_one(self) -> None:
        async with open_control(environ=ONE_SLOT) as control:
            running = await hold_the_only_slot(control, "c")
            queued = await control.client.delay(tasks.add, 1, 1)
            await control.until(lambda s: s["overview"]["queue"]["normal"] == 1)
            cancelled = await control.http.post(f"/api/tasks/{queued}/cancel")
            again = await control.http.post(f"/api/tasks/{queued}/cancel")
            before = await control.get(f"/api/tasks/{running}")
            stopped = await control.http.post(f"/api/tasks/{running}/cancel")
            with pytest.raises(TaskCancelled, match="interrupted"):
                await control.client.result(running, timeout=PATIENCE)
            done = await control.http.post(f"/api/tasks/{running}/cancel")
            page = await control.get(f"/api/tasks/{queued}")
        assert (cancelled.status_code, cancelled.json()) == (
            200, {"id": queued, "outcome": "cancelled"})
        assert again.json() == {"id": queued, "outcome": "cancelled"}  # idempotent
        assert before["actions"]["cancel"] is True
        assert (stopped.status_code, stopped.json()) == (
            200, {"id": running, "outcome": "interrupted"})
        assert done.status_code == 409
        assert "is cancelled: only a queued, scheduled or running task" in done.json()["detail"]
        assert page["state"] == "cancelled" and page["actions"]["retry"] is True

    async def test_retry_a_failed_task_as_a_new_task_linked_to_it(self) -> None:
        async with open_control() as control:
            failed = await control.client.delay(tasks.fail, "again")
            await control.settle(failed)
            response = await control.http.post(f"/api/tasks/{failed}/retry")
            assert response.status_code == 201
            retry = response.json()
            await control.settle(retry["id"])
            old = await control.get(f"/api/tasks/{failed}")
            new = await control.get(f"/api/tasks/{retry['id']}")
            done = await control.client.delay(tasks.add, 1, 2)
            await control.settle(done)
            not_failed = await control.http.post(f"/api/tasks/{done}/retry")
        assert retry["retry_of"] == failed and retry["id"] != failed
        assert old["retried_as"] == [retry["id"]]
        assert (new["retry_of"], new["task"], new["args"]) == (failed, old["task"], old["args"])
        assert new["state"] == "failed"  # the same arguments fail the same way
        assert not_failed.status_code == 409
        assert "is succeeded" in not_failed.json()["detail"]

    async def test_drain_and_resume_the_control_planes_executor(self) -> None:
        """A drained worker gets no new task (it waits queued) until resumed."""
        async with open_control() as control:
            [local] = (await control.get("/api/workers"))["workers"]
            drained = await control.http.post(f"/api/workers/{local['id']}/drain")
            task_id = await control.client.delay(tasks.add, 2, 2)
            snapshot = await control.until(
                lambda s: s["overview"]["queue"]["normal"] == 1
                and s["workers"]["workers"][0]["draining"])
            resumed = await control.http.post(f"/api/workers/{local['id']}/resume")
            assert await control.client.result(task_id, timeout=PATIENCE) == 4
            unknown = await control.http.post("/api/workers/nobody/drain")
        assert (drained.status_code, drained.json()) == (
            200, {"worker": local["id"], "draining": True})
        assert snapshot["overview"]["totals"]["succeeded"] == 0
        assert resumed.json() == {"worker": local["id"], "draining": False}
        assert unknown.status_code == 404 and "no worker 'nobody'" in unknown.json()["detail"]


class TestWorkflows:
    async def test_a_finished_workflows_page_shows_every_step(self) -> None:
        """GET /api/workflows/{id}: a fan-in that succeeded, each step with
        the steps it waited for, its task id, attempt and times."""
        async with open_control(environ=WORKFLOW_TASKS) as control:
            flow = await control.client.start(group(tasks.add.s(n, n) for n in range(3))
                                              | total.s())
            assert await control.client.result(flow, timeout=PATIENCE) == 6
            page = await control.get(f"/api/workflows/{flow}")
            record = await control.get(f"/api/tasks/{flow}")
        assert (page["id"], page["state"], page["generation"], page["error"]) == (
            flow, "succeeded", 0, None)
        assert page["started_at"] > 0
        assert page["actions"] == {"cancel": False, "retry": False}
        assert [(s["index"], s["task"], s["after"], s["state"], s["id"], s["attempt"], s["error"])
                for s in page["steps"]] == [
            (0, "examples.tasks.add", [], "succeeded", f"{flow}.0", 1, None),
            (1, "examples.tasks.add", [], "succeeded", f"{flow}.1", 1, None),
            (2, "examples.tasks.add", [], "succeeded", f"{flow}.2", 1, None),
            (3, "tests.workflow.total", [0, 1, 2], "succeeded", f"{flow}.3", 1, None)]
        for step in page["steps"]:
            assert page["started_at"] <= step["started_at"] <= step["finished_at"]
        assert record["task"] == "fastworker.workflow"  # the page the task page links to

    async def test_a_failed_workflows_page_names_the_failed_step(self) -> None:
        """A step that failed fails the workflow: its error names the step,
        what followed is skipped (no task id), and it can be retried."""
        async with open_control(environ=WORKFLOW_TASKS) as control:
            flow = await control.client.start(
                tasks.add.s(1, 1) | tasks.fail.si("disk full") | tasks.add.s(1))
            await control.settle(flow)
            page = await control.get(f"/api/workflows/{flow}")
        assert (page["state"], page["generation"]) == ("failed", 0)
        assert page["error"] == "step 1 (examples.tasks.fail) failed: ValueError: disk full"
        assert page["actions"] == {"cancel": False, "retry": True}
        assert [(s["state"], s["id"], s["after"]) for s in page["steps"]] == [
            ("succeeded", f"{flow}.0", []), ("failed", f"{flow}.1", [0]), ("skipped", None, [1])]
        failed, skipped = page["steps"][1:]
        assert failed["error"] == "ValueError: disk full"
        assert (skipped["attempt"], skipped["started_at"], skipped["finished_at"],
                skipped["error"]) == (0, None, None, None)

    async def test_an_unknown_workflow_is_a_404_json_error(self) -> None:
        """An id no workflow has (a plain task's too) is a 404 for the page
        and both actions, saying what is kept."""
        async with open_control(environ=WORKFLOW_TASKS) as control:
            plain = await control.client.delay(tasks.add, 1, 1)
            await control.settle(plain)
            responses = [
                await control.http.get("/api/workflows/nope"),
                await control.http.post("/api/workflows/nope/cancel"),
                await control.http.post("/api/workflows/nope/retry"),
                await control.http.get(f"/api/workflows/{plain}"),
            ]
        for response in responses:
            assert response.status_code == 404
            assert response.json()["status_code"] == 404
        assert responses[0].json()["detail"] == (
            "no workflow 'nope' is kept (unknown, not a workflow, or an ended one let go: "
            "the Workflows actor's max_kept)")

    async def test_cancel_a_running_workflow_then_retry_it(self) -> None:
        """A running workflow can be cancelled, not retried; cancelled, it
        can be retried, not cancelled again; retried, it runs the steps
        that had not succeeded under new ids."""
        async with open_control(environ=WORKFLOW_TASKS) as control:
            flow = await control.client.start(
                dash_tasks.hold.si("wf-cancel") | tasks.add.si(1, 1))
            await control.until(lambda s: s["overview"]["in_flight"] == 1)
            running = await control.get(f"/api/workflows/{flow}")
            early_retry = await control.http.post(f"/api/workflows/{flow}/retry")
            cancelled = await control.http.post(f"/api/workflows/{flow}/cancel")
            with pytest.raises(TaskCancelled):
                await control.client.result(flow, timeout=PATIENCE)
            again = await control.http.post(f"/api/workflows/{flow}/cancel")
            stopped = await control.get(f"/api/workflows/{flow}")
            dash_tasks.gate("wf-cancel").set()
            retried = await control.http.post(f"/api/workflows/{flow}/retry")
            assert await control.client.result(flow, timeout=PATIENCE) == 2
            done = await control.get(f"/api/workflows/{flow}")
        assert running["state"] == "running"
        assert running["actions"] == {"cancel": True, "retry": False}
        assert [s["state"] for s in running["steps"]] == ["running", "waiting"]
        assert early_retry.status_code == 409
        assert early_retry.json()["detail"] == (
            f"the retry of workflow {flow} was refused: workflow {flow} is still running")
        assert (cancelled.status_code, cancelled.json()) == (
            200, {"id": flow, "outcome": "cancelled"})
        assert again.status_code == 409
        assert again.json()["detail"] == (
            f"workflow {flow} is cancelled: only a running workflow can be cancelled")
        assert (stopped["state"], stopped["actions"]) == (
            "cancelled", {"cancel": False, "retry": True})
        assert [s["state"] for s in stopped["steps"]] == ["cancelled", "skipped"]
        assert retried.status_code == 200
        body = retried.json()
        assert (body["id"], body["generation"]) == (flow, 1)
        assert body["state"] in ("running", "succeeded")  # as it was when it answered
        assert (done["state"], done["generation"], done["actions"]) == (
            "succeeded", 1, {"cancel": False, "retry": False})
        assert [(s["id"], s["state"]) for s in done["steps"]] == [
            (f"{flow}.0.1", "succeeded"), (f"{flow}.1.1", "succeeded")]

    async def test_retry_a_failed_workflow_from_its_failed_step(self, tmp_path: Path) -> None:
        """The step that succeeded keeps its result and id; the failed one
        and what follows run again; a succeeded workflow is not retried."""
        marker = tmp_path / "failed-once"
        async with open_control(environ=WORKFLOW_TASKS) as control:
            flow = await control.client.start(
                tasks.add.s(1, 1) | fails_once.s(str(marker)) | tasks.add.s(10))
            await control.settle(flow)
            failed = await control.get(f"/api/workflows/{flow}")
            retried = await control.http.post(f"/api/workflows/{flow}/retry")
            assert await control.client.result(flow, timeout=PATIENCE) == 12
            done = await control.get(f"/api/workflows/{flow}")
            again = await control.http.post(f"/api/workflows/{flow}/retry")
            cancel = await control.http.post(f"/api/workflows/{flow}/cancel")
        assert failed["state"] == "failed" and failed["actions"]["retry"] is True
        assert failed["steps"][1]["error"] == "RuntimeError: the first run fails"
        assert retried.status_code == 200 and retried.json()["generation"] == 1
        assert (done["state"], done["generation"], done["error"]) == ("succeeded", 1, None)
        assert [(s["id"], s["state"]) for s in done["steps"]] == [
            (f"{flow}.0", "succeeded"), (f"{flow}.1.1", "succeeded"),
            (f"{flow}.2.1", "succeeded")]
        assert again.status_code == 409
        assert again.json()["detail"] == (
            f"the retry of workflow {flow} was refused: workflow {flow} succeeded: "
            "nothing to retry")
        assert cancel.status_code == 409
        assert "is succeeded: only a running workflow can be cancelled" in cancel.json()["detail"]

    async def test_without_a_workflows_actor_the_routes_answer_503(self) -> None:
        async with open_stand_ins({}) as dash:
            page = await dash.http.get("/api/workflows/w")
            retry = await dash.http.post("/api/workflows/w/retry")
        assert page.status_code == retry.status_code == 503
        assert "no Workflows actor is wired to the dashboard" in page.json()["detail"]

    def test_the_view_shows_what_a_step_has_not_got_as_null(self) -> None:
        view = views.workflow_view(WorkflowState(
            id="w", state="running", generation=2, started_at=5.0, steps=(
                StepInfo(index=0, task="a", id="w.0.2", state="running", attempt=1,
                         started_at=6.0),
                StepInfo(index=1, task="b", after=(0,)))))
        assert (view.error, view.actions.cancel, view.actions.retry) == (None, True, False)
        first, second = view.steps
        assert (first.id, first.started_at, first.finished_at, first.error) == (
            "w.0.2", 6.0, None, None)
        assert (second.id, second.state, second.after, second.started_at) == (
            None, "waiting", [0], None)


class TestAccess:
    async def test_with_a_token_actions_need_it_and_reads_on_loopback_do_not(self) -> None:
        async with open_control(dashboard={"token": "s3cret"}) as control:
            read = await control.http.get("/api/overview")
            anonymous = await control.http.post("/api/workers/nobody/drain")
            wrong = await control.http.post(
                "/api/workers/nobody/drain", headers={"Authorization": "Bearer nope"})
            right = await control.http.post(
                "/api/workers/nobody/drain", headers={"Authorization": "Bearer s3cret"})
            by_query = await control.http.post("/api/workers/nobody/drain?token=s3cret")
        assert read.status_code == 200
        assert anonymous.status_code == wrong.status_code == 401
        assert "token" in anonymous.json()["detail"]
        assert right.status_code == by_query.status_code == 404  # past the guard

    async def test_with_a_token_workflow_actions_need_it(self) -> None:
        async with open_control(dashboard={"token": "s3cret"}) as control:
            read = await control.http.get("/api/workflows/nope")
            anonymous = [await control.http.post(f"/api/workflows/nope/{action}")
                         for action in ("cancel", "retry")]
            right = [await control.http.post(f"/api/workflows/nope/{action}",
                                              headers={"Authorization": "Bearer s3cret"})
                     for action in ("cancel", "retry")]
        assert read.status_code == 404  # reads on loopback are open
        assert [r.status_code for r in anonymous] == [401, 401]
        assert [r.status_code for r in right] == [404, 404]  # past the guard

    async def test_off_loopback_every_read_needs_the_token(self) -> None:
        async with open_control(dashboard={"token": "s3cret"}) as control:
            dashboard_of(control).open_reads = False  # as when bound off loopback
            anonymous = [await control.http.get(path) for path in
                         ("/api/overview", "/api/tasks", "/metrics", "/api/events")]
            allowed = await control.http.get(
                "/api/overview", headers={"Authorization": "Bearer s3cret"})
            page = await control.http.get("/")
        assert [r.status_code for r in anonymous] == [401, 401, 401, 401]
        assert allowed.status_code == 200
        assert page.status_code == 200  # the page itself asks for the token

    def test_off_loopback_without_a_token_is_a_config_error(self) -> None:
        with pytest.raises(ValueError, match="not loopback: set a token"):
            DashboardOptions(address="0.0.0.0:8080")
        assert DashboardOptions(address="0.0.0.0:8080", token="t").token == "t"
        assert DashboardOptions(address="off").address == "off"

    @pytest.mark.parametrize("address", ["8080", "localhost", "http://:80", "host:port"])
    def test_a_bad_address_says_what_was_expected(self, address: str) -> None:
        with pytest.raises(ValueError, match="expected host:port"):
            parse_address(address)


def _families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _journal_stats(**fields: Any) -> JournalStats:
    defaults: dict[str, Any] = dict(
        path="/var/lib/fastworker.journal", bytes=4096, healthy=True, pending_ops=0,
        pending_writes=0, max_pending_ops=65_536, commits_total=7, ops_total=20,
        failures_total=0, checkpoints_total=0, last_commit_at=1000.0, last_error="")
    return JournalStats(**{**defaults, **fields})


def _sample_with(detail: Any) -> views.Sample:
    return views.Sample(at=1010.0, clock=1.0, stats={"journal": ActorStats(
        name="journal", kind="fastworker.Journal",
        mailbox=MailboxStats(current_depth=0, peak_depth=0, max_depth=1024),
        handled_total=0, batches_total=0, restarts=0, detail=detail)})


class TestJournal:
    async def test_the_overview_and_metrics_show_the_journal(self, tmp_path: Path) -> None:
        """With a journal, the overview shows its file, its commits and its
        health, and /metrics has its lines; a finished task's result is one
        of its commits."""
        path = tmp_path / "fastworker.journal"
        async with open_control(journal=str(path)) as control:
            await control.client.submit(tasks.add, 1, 2)
            snapshot = await control.until(
                lambda s: s["overview"]["journal"]["commits_total"] >= 1)
            overview = await control.get("/api/overview")
            response = await control.http.get("/metrics")
        journal = snapshot["overview"]["journal"]
        assert (journal["enabled"], journal["path"], journal["healthy"]) == (True, str(path), True)
        assert journal["bytes"] > 0 and journal["last_commit_at"] > 0
        assert (journal["failures_total"], journal["last_error"]) == (0, "")
        assert overview["journal"]["enabled"] is True
        families = _families(response.text)
        assert families["fastworker_journal_healthy"].samples[0].value == 1
        assert families["fastworker_journal_bytes"].samples[0].value > 0
        assert families["fastworker_journal_pending_ops"].samples[0].value >= 0
        [commits] = [s.value for s in families["fastworker_journal_commits"].samples
                     if s.name.endswith("_total")]
        assert commits >= 1
        [failures] = [s.value for s in families["fastworker_journal_failures"].samples
                      if s.name.endswith("_total")]
        assert failures == 0

    async def test_without_a_journal_the_overview_says_it_is_off(self) -> None:
        """No journal (or one that is off): the overview says so, and
        /metrics has no journal lines."""
        async with open_control(environ={"FASTWORKER_JOURNAL": "off"}) as control:
            overview = await control.get("/api/overview")
            response = await control.http.get("/metrics")
        assert overview["journal"] == {
            "enabled": False, "path": "", "bytes": 0, "healthy": True, "pending_ops": 0,
            "commits_total": 0, "last_commit_at": None, "failures_total": 0, "last_error": ""}
        assert not [name for name in _families(response.text) if "journal" in name]

    def test_a_failing_journal_shows_why(self) -> None:
        """A journal whose commits fail shows unhealthy, with its last error,
        in the view and in /metrics."""
        sample = _sample_with(_journal_stats(
            healthy=False, pending_ops=12, failures_total=2,
            last_error="database or disk is full"))
        view = views.journal_view(sample)
        text = metrics.render(sample, views.NodeInfo(name="n", version="1", started_at=0.0))
        assert (view.enabled, view.healthy, view.pending_ops, view.failures_total) == (
            True, False, 12, 2)
        assert view.last_error == "database or disk is full"
        families = _families(text.decode())
        assert families["fastworker_journal_healthy"].samples[0].value == 0
        assert families["fastworker_journal_pending_ops"].samples[0].value == 12
        [last_commit] = families["fastworker_journal_last_commit_timestamp_seconds"].samples
        assert last_commit.value == 1000.0

    def test_a_journal_that_is_off_shows_as_off(self) -> None:
        """The Journal actor of a node whose journal is off has no detail."""
        assert views.journal_view(_sample_with(None)).enabled is False
        assert views.journal_view(_sample_with(_journal_stats(last_commit_at=0.0))
                                  ).last_commit_at is None


class TestDuplicateRuns:
    def test_metrics_and_the_task_page_show_duplicate_runs(self) -> None:
        """The store's ``duplicate_runs_total`` is ``fastworker_task_duplicate_runs``
        in /metrics, and a task's page shows its record's ``duplicate_runs``."""
        store = ResultStoreStats(
            entries=1, live_entries=0, bytes=512, waiting_queries=0, finished_total=1,
            succeeded_total=1, failed_total=0, cancelled_total=0, expired_total=0,
            duplicates_total=0, duplicate_runs_total=3, stale_total=0, evicted_ttl=0,
            evicted_lru=0, evicted_bytes=0, queries_total=0, ignored_total=0)
        sample = views.Sample(at=1010.0, clock=1.0, stats={"results": ActorStats(
            name="results", kind="fastworker.ResultStore",
            mailbox=MailboxStats(current_depth=0, peak_depth=0, max_depth=1024),
            handled_total=0, batches_total=0, restarts=0, detail=store)})
        text = metrics.render(sample, views.NodeInfo(name="n", version="1", started_at=0.0))
        page = views.task_view(TaskDetail(
            record=TaskRecord(id="a", state="succeeded", attempt=2, duplicate_runs=1),
            payload=b"", dispatched_at=0.0, dispatched_to="", retry_of="", retried_as=()))
        [total] = [s for s in _families(text.decode())["fastworker_task_duplicate_runs"].samples
                   if s.name.endswith("_total")]
        assert total.value == 3
        assert page.duplicate_runs == 1


class TestWorkerProtocol:
    def test_metrics_show_stale_pulls_jobs_taken_back_and_jobs_too_large(self) -> None:
        """The dispatcher's ``stale_pulls_total``, ``taken_back_total`` and
        ``too_large_total`` are counters in /metrics."""
        dispatcher = DispatcherStats(
            workers=(), held=0, asked=0, assigned_total=9, batches_total=1,
            redelivered_total=0, failed_lost_total=0, late_results_total=0,
            stale_pulls_total=4, taken_back_total=2, too_large_total=1)
        sample = views.Sample(at=1010.0, clock=1.0, stats={"dispatcher": ActorStats(
            name="dispatcher", kind="fastworker.Dispatcher",
            mailbox=MailboxStats(current_depth=0, peak_depth=0, max_depth=1024),
            handled_total=0, batches_total=0, restarts=0, detail=dispatcher)})
        text = metrics.render(sample, views.NodeInfo(name="n", version="1", started_at=0.0))
        families = _families(text.decode())
        totals = {name: [s.value for s in families[name].samples if s.name.endswith("_total")]
                  for name in ("fastworker_stale_pulls", "fastworker_jobs_taken_back",
                               "fastworker_jobs_too_large")}
        assert totals == {"fastworker_stale_pulls": [4], "fastworker_jobs_taken_back": [2],
                          "fastworker_jobs_too_large": [1]}


class TestFairKeys:
    def test_the_overview_and_metrics_show_tasks_queued_per_fairness_key(self) -> None:
        """The inbox's ``fair_keys`` and ``top_fair_keys`` are the queue's
        ``fair_keys`` and ``top_fair_keys`` in the overview, and
        ``fastworker_fair_keys`` and ``fastworker_queue_depth_by_fair_key``
        in /metrics."""
        inbox = InboxStats(
            queued=(0, 0, 51, 0), capacity=100, parked=0, demand=0, accepted_total=51,
            duplicates_total=0, rejected_total={}, dispatched_total=0, cancelled_total=0,
            requeued_total=0, fair_keys=2, top_fair_keys=(("tenant-1", 50), ("tenant-2", 1)))
        sample = views.Sample(at=1010.0, clock=1.0, stats={"inbox": ActorStats(
            name="inbox", kind="fastworker.PriorityInbox",
            mailbox=MailboxStats(current_depth=0, peak_depth=0, max_depth=1024),
            handled_total=0, batches_total=0, restarts=0, detail=inbox)})
        node = views.NodeInfo(name="n", version="1", started_at=0.0)
        queue = views.overview(sample, node, [], 1.0).queue
        assert queue.fair_keys == 2
        assert [(k.key, k.queued) for k in queue.top_fair_keys] == [
            ("tenant-1", 50), ("tenant-2", 1)]
        families = _families(metrics.render(sample, node).decode())
        assert families["fastworker_fair_keys"].samples[0].value == 2
        by_key = {s.labels["fair_key"]: s.value
                  for s in families["fastworker_queue_depth_by_fair_key"].samples}
        assert by_key == {"tenant-1": 50, "tenant-2": 1}


class TestStaleFrames:
    def test_metrics_count_stale_frames_per_serving_edge(self) -> None:
        """A serving edge's ``frames_stale`` is ``fastworker_frames_stale{port}``."""
        from actors.serve import ServeStats

        edge = ServeStats(
            wire="listening on tcp://127.0.0.1:5557", requests=9, replies=4, messages_in=4,
            frames_dropped=0, messages_unrouted=0, in_progress=0, unanswered=0,
            frames_stale=3, stale_by_peer={"tcp://127.0.0.1:40514": 3}, epochs_told=2,
            senders=2, epoch="00000000000000ee", epochs_rotated=0, peers_dropped_slow=0)
        sample = views.Sample(at=1010.0, clock=1.0, stats={"submit_normal": ActorStats(
            name="submit_normal", kind="actors.ServeEdge",
            mailbox=MailboxStats(current_depth=0, peak_depth=0, max_depth=1024),
            handled_total=0, batches_total=0, restarts=0, detail=edge)})
        text = metrics.render(sample, views.NodeInfo(name="n", version="1", started_at=0.0))
        [total] = [s for s in _families(text.decode())["fastworker_frames_stale"].samples
                   if s.name.endswith("_total")]
        assert (total.labels, total.value) == ({"port": "submit_normal"}, 3)


class TestEndpoints:
    async def test_metrics_in_prometheus_text_format(self) -> None:
        async with open_control() as control:
            await control.client.submit(tasks.add, 1, 2)
            await control.until(lambda s: s["overview"]["totals"]["succeeded"] == 1)
            response = await control.http.get("/metrics")
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        families = {f.name: f for f in text_string_to_metric_families(response.text)}
        finished = {s.labels["state"]: s.value
                    for s in families["fastworker_tasks_finished"].samples
                    if s.name.endswith("_total")}
        assert finished == {"succeeded": 1.0, "failed": 0.0, "cancelled": 0.0}
        runs = {(s.labels["task"], s.labels["state"]): s.value
                for s in families["fastworker_task_runs"].samples if s.name.endswith("_total")}
        assert runs == {("examples.tasks.add", "succeeded"): 1.0}
        for family in ("fastworker_task_run_seconds", "fastworker_task_queue_wait_seconds"):
            samples = families[family].samples
            [count] = [s.value for s in samples if s.name.endswith("_count")]
            [inf] = [s.value for s in samples if s.labels.get("le") == "+Inf"]
            assert count == inf == 1.0
            assert {s.labels["task"] for s in samples} == {"examples.tasks.add"}
        depth = {s.labels["priority"] for s in families["fastworker_queue_depth"].samples}
        assert depth == {"critical", "high", "normal", "low"}
        restarts = {s.labels["actor"] for s in families["fastworker_actor_restarts"].samples}
        assert {"inbox", "dashboard"} <= restarts
        [next_run] = families["fastworker_schedule_next_run_timestamp_seconds"].samples
        assert next_run.labels == {"task": "examples.tasks.heartbeat"}
        assert next_run.value > time.time()
        skipped = {s.labels["reason"] for s in families["fastworker_schedule_skipped"].samples
                   if s.name.endswith("_total")}
        assert skipped == {"overlap", "missed"}
        assert families["fastworker_task_retries"].samples[0].value == 0
        assert families["fastworker_results_too_large"].samples[0].value == 0
        stale = {s.labels["port"]: s.value for s in families["fastworker_frames_stale"].samples
                 if s.name.endswith("_total")}
        assert {"submit_normal", "queries", "workers"} <= set(stale)

    async def test_the_openapi_schema_lists_every_api_route(self) -> None:
        async with open_control() as control:
            schema = await control.get("/api/schema/openapi.json")
        assert set(schema["paths"]) >= {
            "/api/overview", "/api/workers", "/api/actors", "/api/tasks",
            "/api/tasks/{task_id}", "/api/tasks/{task_id}/cancel", "/api/tasks/{task_id}/retry",
            "/api/workers/{worker}/drain", "/api/workers/{worker}/resume", "/api/events",
            "/api/schedules", "/metrics", "/api/workflows/{workflow_id}",
            "/api/workflows/{workflow_id}/cancel", "/api/workflows/{workflow_id}/retry"}

    async def test_the_page_and_its_assets_are_served_locally(self) -> None:
        async with open_control() as control:
            page = await control.http.get("/")
            links = re.findall(r'(?:src|href)="([^"#][^"]*)"', page.text)
            assets = ["/" + a.lstrip("./") for a in links]
            served = [await control.http.get(a) for a in assets if a.startswith("/static/")]
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert {"/static/app.js", "/static/app.css"} <= set(assets)
        assert all(r.status_code == 200 for r in served)
        # Nothing from another host: deployments are often offline.
        for text in [page.text, *(r.text for r in served)]:
            assert not re.search(r"""(?:src|href)=["']?(?:https?:)?//""", text)
            assert "@import url(http" not in text

    async def test_open_event_streams_do_not_hold_up_a_stop(self) -> None:
        """A page left open must not delay the node's graceful stop."""
        stopped_in: list[float] = []
        async with open_control() as control:
            async with trio.open_nursery() as nursery:
                streaming = trio.Event()

                async def watch() -> None:
                    async with aclosing(control.events()) as events:
                        async for _ in events:
                            streaming.set()

                nursery.start_soon(watch)
                await streaming.wait()
                start = trio.current_time()
                with trio.fail_after(PATIENCE):
                    await control.node.stop()
                stopped_in.append(trio.current_time() - start)
        assert stopped_in and stopped_in[0] < 10.0


async def test_the_dashboard_can_be_turned_off() -> None:
    async with open_control(environ={"FASTWORKER_DASHBOARD": "off"}) as control:
        assert control.node.ready["dashboard"] == "off"
        assert await control.client.submit(tasks.add, 1, 1) == 2


@asynccontextmanager
async def open_subworker(control: Control, name: str) -> AsyncIterator[Node]:
    """config/sub.toml in the same process, its executor named ``name``
    (4 async slots, 8 threads, a prefetch of 1)."""
    topology = Topology.from_toml("config/sub.toml", environ={
        "FASTWORKER_ADDRESS": control.address, "FASTWORKER_DISCOVERY_PORT": "0",
        "FASTWORKER_TASKS": "examples.tasks", "FASTWORKER_CONCURRENCY": "4"})
    for spec in topology.actors:
        if spec.name == "executor":
            spec.options.update(worker=name, prefetch=1)
        if spec.name == "link":
            spec.options["worker"] = name
    async with open_node(topology) as node:
        yield node


async def test_a_subworker_is_listed_and_can_be_drained_and_resumed() -> None:
    """Drained, a subworker gets no new task (the control plane's executor
    runs it, as for a task no live subworker has); resumed, it gets them again.
    With local = "never" the tasks wait for the subworker's slots rather
    than go to the control plane's executor while its first credit is on
    its way."""
    async with open_control(environ={"FASTWORKER_HEARTBEAT": "0.2",
                                     "FASTWORKER_LOCAL": "never"}) as control:
        async with open_subworker(control, "sub-1"):
            # Listed by the registry, and in the dispatcher's view (its
            # credit known): both halves of what the page shows of it.
            snapshot = await control.until(
                lambda s: any(w["id"] == "sub-1" and w["by_kind"]["async"]["free"] > 0
                              for w in s["workers"]["workers"]))
            first = await control.client.delay(tasks.add, 1, 1)
            await control.settle(first)
            drained = await control.http.post("/api/workers/sub-1/drain")
            await control.until(lambda s: s["workers"]["workers"][1]["draining"])
            second = await control.client.delay(tasks.add, 2, 2)
            await control.settle(second)
            resumed = await control.http.post("/api/workers/sub-1/resume")
            third = await control.client.delay(tasks.add, 3, 3)
            await control.settle(third)
            ran_on = [(await control.get(f"/api/tasks/{t}"))["worker"]
                      for t in (first, second, third)]
        gone = await control.until(
            lambda s: s["workers"]["workers"][1]["health"] in ("left", "lost"))
    [local, sub] = snapshot["workers"]["workers"]
    assert (sub["kind"], sub["health"]) == ("subworker", "alive")
    assert (sub["by_kind"]["async"]["capacity"], sub["by_kind"]["thread"]["capacity"]) == (5, 9)
    assert sub["heartbeat_age"] is not None and sub["tasks"]
    assert drained.json() == {"worker": "sub-1", "draining": True}
    assert resumed.json() == {"worker": "sub-1", "draining": False}
    assert ran_on == ["sub-1", local["id"], "sub-1"]
    left = gone["workers"]["workers"][1]
    assert left["gone_at"] is not None and left["reason"]


async def test_a_port_in_use_fails_the_start_with_what_to_do() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StartError, match=(
                rf"cannot listen on 127.0.0.1:{port} \(Address already in use\); "
                "set FASTWORKER_DASHBOARD")):
            async with open_control(environ={"FASTWORKER_DASHBOARD": f"127.0.0.1:{port}"}):
                pass


def _kind(slots: int | None, capacity: int, running: int | None, prefetched: int | None,
          free: int) -> dict[str, Any]:
    return {"capacity": capacity, "free": free, "slots": slots, "running": running,
            "prefetched": prefetched}


class TestWhereTasksWait:
    """Per worker, running vs prefetched (handed to it, waiting there for a
    slot) vs free, per kind of slot: from stand-in snapshots with known
    figures (``loaded_workers``), through the API, the event stream and
    /metrics."""

    async def test_the_workers_api_shows_running_prefetched_and_free_per_kind(self) -> None:
        async with open_stand_ins(loaded_workers()) as dash:
            workers = (await dash.get("/api/workers"))["workers"]
            streamed = await dash.until(lambda s: len(s["workers"]["workers"]) == 3)
        # The event stream carries the same figures (each sample has its own time).
        figures = ("id", "running", "prefetched", "free", "by_kind", "slots_used", "slots_total")
        assert [{k: w[k] for k in figures} for w in streamed["workers"]["workers"]] == [
            {k: w[k] for k in figures} for w in workers]
        cp, sub, lost = workers
        assert (cp["id"], cp["kind"], sub["id"], lost["id"]) == ("cp", "local", "sub-1", "sub-2")
        # The control plane's executor: its own snapshot per kind, the
        # dispatcher's credit as what is free.
        assert (cp["running"], cp["prefetched"], cp["free"]) == (11, 2, 261)
        assert cp["by_kind"] == {
            "async": _kind(256, 258, 1, 0, 257),
            "thread": _kind(8, 10, 8, 2, 0),
            "process": _kind(4, 6, 2, 0, 4),
        }
        assert (cp["slots_used"], cp["slots_total"]) == (13, 274)
        # A subworker: held minus started is prefetched; per kind its
        # slots (registered), the most it holds now (slots + its prefetch
        # as it last said) and its free credit are known.
        assert (sub["running"], sub["prefetched"], sub["free"]) == (7, 2, 77)
        assert sub["by_kind"] == {
            "async": _kind(64, 66, None, None, 66),
            "thread": _kind(8, 10, None, None, 1),
            "process": _kind(8, 10, None, None, 10),
        }
        assert (sub["slots_used"], sub["slots_total"]) == (9, 86)
        # A lost one holds nothing and can take nothing.
        assert (lost["health"], lost["running"], lost["prefetched"], lost["free"]) == (
            "lost", 0, 0, 0)
        assert [k["free"] for k in lost["by_kind"].values()] == [0, 0, 0]

    async def test_the_overview_adds_up_the_live_workers(self) -> None:
        async with open_stand_ins(loaded_workers()) as dash:
            fleet = (await dash.get("/api/overview"))["workers"]
        assert (fleet["alive"], fleet["lost"]) == (2, 1)
        assert (fleet["running"], fleet["prefetched"], fleet["free"]) == (18, 4, 338)
        assert (fleet["slots_used"], fleet["slots_total"]) == (22, 360)
        # Running and prefetched per kind are known for the executor only, so
        # for the fleet they are not; slots, capacity and free add up.
        assert fleet["by_kind"] == {
            "async": _kind(320, 324, None, None, 323),
            "thread": _kind(16, 20, None, None, 1),
            "process": _kind(12, 16, None, None, 14),
        }

    async def test_metrics_show_running_prefetched_and_free_slots_per_worker(self) -> None:
        async with open_stand_ins(loaded_workers()) as dash:
            response = await dash.http.get("/metrics")
        families = _families(response.text)
        for name in ("fastworker_worker_running", "fastworker_worker_prefetched",
                     "fastworker_worker_free_slots"):
            assert families[name].type == "gauge"
        running = {s.labels["worker"]: s.value
                   for s in families["fastworker_worker_running"].samples}
        prefetched = {s.labels["worker"]: s.value
                      for s in families["fastworker_worker_prefetched"].samples}
        free = {(s.labels["worker"], s.labels["slot"]): s.value
                for s in families["fastworker_worker_free_slots"].samples}
        assert running == {"cp": 11, "sub-1": 7}  # the lost one is not listed
        assert prefetched == {"cp": 2, "sub-1": 2}
        assert free == {("cp", "async"): 257, ("cp", "thread"): 0, ("cp", "process"): 4,
                        ("sub-1", "async"): 66, ("sub-1", "thread"): 1,
                        ("sub-1", "process"): 10}
        used = {s.labels["worker"]: s.value
                for s in families["fastworker_worker_slots_used"].samples}
        assert used == {"cp": 13, "sub-1": 9}

    def test_without_the_dispatchers_view_the_executors_free_slots_are_what_is_left(
        self,
    ) -> None:
        """Before the Dispatcher lists it, the executor's free slots per kind
        are its slots plus prefetch less what runs and waits; a subworker
        the Dispatcher does not list yet shows only its own count."""
        snapshots = loaded_workers()
        stats = {name: ActorStats(
            name=name, kind="stand-in",
            mailbox=MailboxStats(current_depth=0, peak_depth=0, max_depth=1024),
            handled_total=0, batches_total=0, restarts=0, detail=detail)
            for name, detail in snapshots.items() if name != "dispatcher"}
        cp, sub, _ = views.worker_views(views.Sample(at=1000.0, clock=1.0, stats=stats),
                                        views.NodeInfo(name="n", version="1", started_at=0.0))
        assert {k: v.free for k, v in cp.by_kind.items()} == {
            "async": 257, "thread": 0, "process": 4}
        assert (sub.running, sub.prefetched, sub.free, sub.slots_used) == (0, 0, 0, 9)
