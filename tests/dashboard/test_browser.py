"""The dashboard in a real browser: headless Chromium (Debian's ``chromium``,
which ``.ci/run`` installs) driven by Playwright, against a real control
plane process.

Playwright's ``expect`` waits for the page to change by itself: every check
here is of the page updating live, without a reload.

The slots views are checked against a node of stand-ins whose snapshots
have known figures (``harness.loaded_workers``), run by trio in a thread of
this process.

A workflow's page is checked against workflows of known shape: its graph
has one node per step, coloured as the task list colours that state, and
an arrow for each step a step waits for.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from playwright.sync_api import BrowserContext, Locator, Page, expect, sync_playwright

from actors.pytest_plugin import free_tcp_ports
from examples import tasks
from fastworker import SyncClient, TaskError
from fastworker.workflows import group
from tests.dashboard.harness import PATIENCE, loaded_workers, open_stand_ins
from tests.process.workflow_tasks import fails_once, total

CHROMIUM = os.environ.get("FASTWORKER_CHROMIUM", "/usr/bin/chromium")
#: The flags that keep Chromium quiet on a machine with a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
#: Milliseconds Playwright waits for the page to show something.
PATIENCE_MS = 15_000


def launch(playwright: object, user_data: str) -> BrowserContext:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        raise RuntimeError(
            f"no Chromium at {CHROMIUM}: install Debian's chromium (.ci/run does) or set "
            "FASTWORKER_CHROMIUM")
    context = playwright.chromium.launch_persistent_context(  # type: ignore[attr-defined]
        user_data, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
        viewport={"width": 1400, "height": 900})
    return context  # type: ignore[no-any-return]


@contextmanager
def run_control_plane(environ: dict[str, str]) -> Iterator[tuple[str, str]]:
    """``fastworker run config/control.toml`` with ``environ``, its dashboard
    on a port of its choosing (port 0: the URL is read from its log);
    yields (dashboard url, task address). Killed at the end, whatever
    happened."""
    address = f"tcp://127.0.0.1:{free_tcp_ports(6)}"
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("FASTWORKER_") or key == "FASTWORKER_JOURNAL"}
    env.update({
        "FASTWORKER_ADDRESS": address, "FASTWORKER_DASHBOARD": "127.0.0.1:0",
        "FASTWORKER_DISCOVERY_PORT": "0", "FASTWORKER_TASKS": "examples.tasks",
        "PYTHONUNBUFFERED": "1", **environ,
    })
    process = subprocess.Popen(
        [sys.executable, "-m", "fastworker", "run", "config/control.toml"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        seen = []
        url = ""
        for line in process.stdout:  # blocks until the next line: no polling
            seen.append(line)
            if found := re.search(r"dashboard at (http://\S+)", line):
                url = found[1]
            if "node control ready" in line:
                break
        else:
            raise AssertionError("the control plane exited:\n" + "".join(seen))
        assert url, "no 'dashboard at' line:\n" + "".join(seen)
        yield url, address
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


@pytest.fixture
def control_plane() -> Iterator[tuple[str, str]]:
    """A control plane with one executor slot (so that a second task stays
    queued); yields (dashboard url, task address)."""
    with run_control_plane({"FASTWORKER_CONCURRENCY": "1", "FASTWORKER_PREFETCH": "0"}) as found:
        yield found


@pytest.fixture
def workflow_plane() -> Iterator[tuple[str, str]]:
    """A control plane that runs the workflow tests' tasks too."""
    with run_control_plane(
            {"FASTWORKER_TASKS": "examples.tasks,tests.process.workflow_tasks"}) as found:
        yield found


def test_the_dashboard_follows_tasks_live_and_cancels_a_queued_one(
    control_plane: tuple[str, str],
) -> None:
    url, address = control_plane
    with tempfile.TemporaryDirectory() as user_data, sync_playwright() as playwright, \
            SyncClient(address) as client:
        browser = launch(playwright, user_data)
        page: Page = browser.new_page()
        page.set_default_timeout(PATIENCE_MS)
        page.goto(url)
        expect(page.get_by_test_id("live")).to_have_text("live")
        expect(page.get_by_test_id("total-submitted")).to_have_text("0")

        # Counts change as tasks are submitted and finish: no reload.
        done = [client.delay(tasks.add, n, 2) for n in range(3)]
        assert [client.result(task_id, timeout=15) for task_id in done] == [2, 3, 4]
        expect(page.get_by_test_id("total-submitted")).to_have_text("3")
        expect(page.get_by_test_id("total-succeeded")).to_have_text("3")

        # The task list shows them; a task's page shows its arguments and result.
        page.get_by_test_id("nav-tasks").click()
        row = page.locator(f'tr[data-task-id="{done[1]}"]')
        expect(row.get_by_test_id("task-state")).to_have_text("succeeded")
        row.get_by_test_id("task-link").click()
        expect(page.get_by_test_id("task-detail-id")).to_contain_text(done[1])
        expect(page.get_by_test_id("task-detail-state")).to_have_text("succeeded")
        expect(page.get_by_test_id("task-args")).to_contain_text("(1, 2)")
        expect(page.get_by_test_id("task-result")).to_contain_text("3")
        expect(page.get_by_test_id("action-cancel")).to_be_disabled()

        # One task takes the only slot, so the next one waits in the queue;
        # it appears in the list while the list is open.
        page.get_by_test_id("nav-tasks").click()
        client.delay(tasks.nap, 120)
        waiting = client.delay(tasks.add, 40, 2)
        row = page.locator(f'tr[data-task-id="{waiting}"]')
        expect(row.get_by_test_id("task-state")).to_have_text("queued")
        page.get_by_test_id("nav-overview").click()
        expect(page.get_by_test_id("queue-normal")).to_have_text("1")
        expect(page.get_by_test_id("in-flight")).to_have_text("1")

        # Cancel it from its page, confirm, and see the state change.
        page.goto(f"{url}/#/tasks/{waiting}")
        expect(page.get_by_test_id("task-detail-state")).to_have_text("queued")
        page.get_by_test_id("action-cancel").click()
        expect(page.get_by_test_id("confirm-dialog")).to_be_visible()
        page.get_by_test_id("confirm-yes").click()
        expect(page.get_by_test_id("action-result")).to_contain_text("cancelled")
        expect(page.get_by_test_id("task-detail-state")).to_have_text("cancelled")
        assert client.status(waiting).state == "cancelled"
        page.get_by_test_id("nav-overview").click()
        expect(page.get_by_test_id("total-cancelled")).to_have_text("1")
        expect(page.get_by_test_id("queue-normal")).to_have_text("0")

        # Tasks queued with fairness keys: the queue card counts the keys and
        # lists those with the most.
        client.delay_many(tasks.add, [(1, 1), (2, 2)], fair_key="tenant-42")
        client.send(tasks.add, (3, 3), fair_key="tenant-7")
        expect(page.get_by_test_id("queue-fair-keys")).to_have_text("2")
        expect(page.get_by_test_id("queue-fair-top")).to_have_text("tenant-42: 2tenant-7: 1")

        # The bulk actions: purge the three queued tasks of one name, after
        # confirming; retry every failed task.
        page.get_by_test_id("nav-tasks").click()
        page.get_by_test_id("filter-task").select_option(tasks.add.name)
        page.get_by_test_id("action-purge").click()
        expect(page.get_by_test_id("confirm-dialog")).to_contain_text(tasks.add.name)
        page.get_by_test_id("confirm-no").click()
        page.get_by_test_id("nav-overview").click()
        expect(page.get_by_test_id("queue-normal")).to_have_text("3")  # not purged
        page.get_by_test_id("nav-tasks").click()
        page.get_by_test_id("action-purge").click()
        page.get_by_test_id("confirm-yes").click()
        expect(page.get_by_test_id("action-result")).to_have_text("Purged 3 queued tasks")
        page.get_by_test_id("nav-overview").click()
        expect(page.get_by_test_id("queue-normal")).to_have_text("0")
        expect(page.get_by_test_id("total-cancelled")).to_have_text("4")
        browser.close()


@pytest.fixture
def stand_ins() -> Iterator[str]:
    """The dashboard in a node of stand-ins answering with
    ``loaded_workers()``, run by trio in a thread; yields its URL, and
    stops the node at the end."""
    ready = threading.Event()
    found: dict[str, Any] = {}

    async def serve() -> None:
        stop = trio.Event()
        async with open_stand_ins(loaded_workers()) as dash:
            found.update(url=dash.url, stop=stop, token=trio.lowlevel.current_trio_token())
            ready.set()
            await stop.wait()

    def run() -> None:
        try:
            trio.run(serve)
        except BaseException as error:  # handed to the test
            found["error"] = error
        finally:
            ready.set()

    thread = threading.Thread(target=run, name="stand-ins", daemon=True)
    thread.start()
    try:
        assert ready.wait(PATIENCE), "the stand-ins' node did not start"
        if "error" in found:
            raise found["error"]
        yield found["url"]
    finally:
        if "stop" in found:
            trio.from_thread.run_sync(found["stop"].set, trio_token=found["token"])
        thread.join(PATIENCE)


def expect_worker_row(page: Page, worker: str, counts: tuple[str, str, str],
                      kinds: tuple[str, str, str]) -> Locator:
    """The workers view's row of ``worker`` shows these running,
    prefetched and free counts, and per kind of slot these lines."""
    row = page.locator(f'tr[data-worker-id="{worker}"]')
    for name, text in zip(("running", "prefetched", "free"), counts, strict=True):
        expect(row.get_by_test_id(f"worker-{name}")).to_have_text(text)
    for kind, text in zip(("async", "thread", "process"), kinds, strict=True):
        expect(row.get_by_test_id(f"worker-kind-{kind}")).to_have_text(text)
    return row


def test_workers_show_running_prefetched_and_free_per_kind_of_slot(stand_ins: str) -> None:
    """The Workers view shows, per worker, what runs, what waits there for
    a slot and what it can still take, and per kind of slot what is free of
    the most it holds; the overview adds up the live workers."""
    with tempfile.TemporaryDirectory() as user_data, sync_playwright() as playwright:
        browser = launch(playwright, user_data)
        page: Page = browser.new_page()
        page.set_default_timeout(PATIENCE_MS)
        page.goto(f"{stand_ins}/#/workers")
        local = expect_worker_row(page, "cp", ("11", "2", "261"),
                                  ("257 free / 258", "0 free / 10", "4 free / 6"))
        expect(local.locator(".kind-line").nth(1)).to_have_attribute(
            "title", "thread: 8 running, 2 prefetched, 0 free; 8 slots + 2 prefetch")
        sub = expect_worker_row(page, "sub-1", ("7", "2", "77"),
                                ("66 free / 66", "1 free / 10", "10 free / 10"))
        expect(sub.locator(".kind-line").nth(1)).to_have_attribute(
            "title", "thread: 9 held (running or prefetched), 1 free; 8 slots + 2 prefetch")
        lost = page.locator('tr[data-worker-id="sub-2"]')
        expect(lost.get_by_test_id("worker-running")).to_have_text("0")
        expect(lost.get_by_test_id("worker-free")).to_have_text("0")
        expect(lost.locator(".kind-line")).to_have_count(0)  # it holds nothing now

        page.get_by_test_id("nav-overview").click()
        expect(page.get_by_test_id("slots-running")).to_have_text("18")
        expect(page.get_by_test_id("slots-prefetched")).to_have_text("4")
        expect(page.get_by_test_id("slots-free")).to_have_text("338")
        expect(page.get_by_test_id("fleet-kind-async")).to_have_text("323 free / 324")
        expect(page.get_by_test_id("fleet-kind-thread")).to_have_text("1 free / 20")
        expect(page.get_by_test_id("fleet-kind-process")).to_have_text("14 free / 16")
        browser.close()


#: Each workflow node's index, state, class and rect's stroke colour; each
#: state's badge dot colour in the steps table; and the colours by name.
_GRAPH_COLOURS = """() => {
  const resolve = (value) => {
    const probe = document.createElement('div');
    probe.style.color = value;
    document.body.append(probe);
    const colour = getComputedStyle(probe).color;
    probe.remove();
    return colour;
  };
  const badges = {};
  for (const b of document.querySelectorAll('[data-testid="workflow-step-state"]')) {
    badges[b.textContent] = getComputedStyle(b, '::before').backgroundColor;
  }
  return {
    nodes: [...document.querySelectorAll('[data-testid="workflow-node"]')].map((n) => ({
      index: n.dataset.index, state: n.dataset.state, cls: n.getAttribute('class'),
      label: n.querySelector('text').textContent,
      stroke: getComputedStyle(n.querySelector('rect')).stroke})),
    badges, green: resolve('var(--green)'), red: resolve('var(--red)'),
  };
}"""


def test_a_workflows_page_draws_its_graph_and_retries_it_from_its_failure(
    workflow_plane: tuple[str, str], tmp_path: Path,
) -> None:
    """From the workflow's task page to its graph: one node per step in its
    state's colour, an arrow per "waits for"; a failed workflow is retried
    from its failure with a click, and the page follows it to its end."""
    url, address = workflow_plane
    marker = tmp_path / "failed-once"
    with tempfile.TemporaryDirectory() as user_data, sync_playwright() as playwright, \
            SyncClient(address) as client:
        # 0 fans out to 1, 2 (fails its first run) and 3, which fan in to 4.
        flow = client.start(tasks.add.s(1, 1) | group(
            tasks.add.s(1), fails_once.s(str(marker)), tasks.add.s(3)) | total.s())
        with pytest.raises(TaskError, match="step 2 .* failed: RuntimeError"):
            client.result(flow, timeout=15)
        browser = launch(playwright, user_data)
        page: Page = browser.new_page()
        page.set_default_timeout(PATIENCE_MS)
        page.goto(f"{url}/#/tasks/{flow}")
        page.get_by_test_id("workflow-link").click()
        expect(page.get_by_test_id("workflow-state")).to_have_text("failed")
        expect(page.get_by_test_id("workflow-error")).to_have_text(
            "step 2 (tests.workflow.fails_once) failed: RuntimeError: the first run fails")
        expect(page.get_by_test_id("workflow-generation")).to_have_text("none")
        expect(page.get_by_test_id("workflow-cancel")).to_be_disabled()
        expect(page.get_by_test_id("workflow-retry")).to_be_enabled()
        expect(page.get_by_test_id("workflow-node")).to_have_count(5)
        expect(page.get_by_test_id("workflow-step")).to_have_count(5)

        drawn = page.evaluate(_GRAPH_COLOURS)
        states = ["succeeded", "succeeded", "failed", "succeeded", "skipped"]
        assert [(n["index"], n["state"]) for n in drawn["nodes"]] == [
            (str(i), state) for i, state in enumerate(states)]
        assert all(f"s-{n['state']}" in n["cls"].split() for n in drawn["nodes"])
        assert [n["label"] for n in drawn["nodes"]] == [
            "0 · add", "1 · add", "2 · fails_once", "3 · add", "4 · total"]
        # The colours of the task list's badges: green succeeded, red failed.
        strokes = {n["state"]: n["stroke"] for n in drawn["nodes"]}
        assert strokes == {state: drawn["badges"][state] for state in set(states)}
        assert (strokes["succeeded"], strokes["failed"]) == (drawn["green"], drawn["red"])
        edges = page.get_by_test_id("workflow-edge").evaluate_all(
            "edges => edges.map((e) => [e.dataset.from, e.dataset.to])")
        assert sorted(map(tuple, edges)) == [
            ("0", "1"), ("0", "2"), ("0", "3"), ("1", "4"), ("2", "4"), ("3", "4")]
        skipped = page.locator('[data-testid="workflow-step"][data-step="4"]')
        expect(skipped.get_by_test_id("workflow-step-link")).to_have_count(0)  # it never ran
        expect(skipped.locator("td").nth(3)).to_have_text("1-3")  # waits for, as ranges

        # Retry from the failure: the failed step and the one after it run again.
        page.get_by_test_id("workflow-retry").click()
        expect(page.get_by_test_id("confirm-dialog")).to_contain_text("Retry this workflow")
        page.get_by_test_id("confirm-yes").click()
        expect(page.get_by_test_id("action-result")).to_contain_text("retried from its failure")
        expect(page.get_by_test_id("workflow-state")).to_have_text("succeeded")
        expect(page.get_by_test_id("workflow-generation")).to_have_text("retried 1 time")
        expect(page.get_by_test_id("workflow-error")).to_have_count(0)
        expect(page.get_by_test_id("workflow-retry")).to_be_disabled()
        expect(page.locator('[data-testid="workflow-node"].s-succeeded')).to_have_count(5)
        assert client.result(flow, timeout=15) == 3 + 2 + 5

        # A node is a link to its step's task page: the step's latest run.
        page.locator('[data-testid="workflow-node"][data-index="2"]').click()
        expect(page.get_by_test_id("task-detail-id")).to_have_text(f"{flow}.2.1")
        expect(page.get_by_test_id("task-detail-state")).to_have_text("succeeded")
        browser.close()


def test_a_workflow_of_hundreds_of_steps_is_drawn_compact(
    workflow_plane: tuple[str, str],
) -> None:
    """A fan-in of 300 steps still draws every node and arrow, smaller
    (compact), the layer of 300 wrapped into columns side by side."""
    url, address = workflow_plane
    with tempfile.TemporaryDirectory() as user_data, sync_playwright() as playwright, \
            SyncClient(address) as client:
        flow = client.start(group(tasks.add.s(n, 0) for n in range(300)) | total.s())
        assert client.result(flow, timeout=30) == sum(range(300))
        browser = launch(playwright, user_data)
        page: Page = browser.new_page()
        page.set_default_timeout(PATIENCE_MS)
        page.goto(f"{url}/#/workflows/{flow}")
        expect(page.get_by_test_id("workflow-state")).to_have_text("succeeded")
        expect(page.get_by_test_id("workflow-graph")).to_have_class(re.compile(r"\bcompact\b"))
        expect(page.locator('[data-testid="workflow-node"].s-succeeded')).to_have_count(301)
        expect(page.get_by_test_id("workflow-edge")).to_have_count(300)
        expect(page.get_by_test_id("workflow-step")).to_have_count(301)
        # The fan-in is drawn to the right of every step it waits for.
        boxes = page.get_by_test_id("workflow-node").evaluate_all(
            "nodes => nodes.map((n) => n.getBBox().x + n.transform.baseVal[0].matrix.e)")
        assert boxes[300] > max(boxes[:300])
        browser.close()
