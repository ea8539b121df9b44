"""The dashboard in a real browser: headless Chromium (Debian's ``chromium``,
which ``.ci/run`` installs) driven by Playwright, against a real control
plane process.

Playwright's ``expect`` waits for the page to change by itself: every check
here is of the page updating live, without a reload.

The slots views are checked against a node of stand-ins whose snapshots
have known figures (``harness.loaded_workers``), run by trio in a thread of
this process.
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
from pathlib import Path
from typing import Any

import pytest
import trio
from playwright.sync_api import BrowserContext, Locator, Page, expect, sync_playwright

from actors.pytest_plugin import free_tcp_ports
from examples import tasks
from fastworker import SyncClient
from tests.dashboard.harness import PATIENCE, loaded_workers, open_stand_ins

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


@pytest.fixture
def control_plane() -> Iterator[tuple[str, str]]:
    """``fastworker run config/control.toml`` with one executor slot (so that
    a second task stays queued), its dashboard on a port of its choosing
    (port 0: the URL is read from its log); yields (dashboard url, task
    address). Killed at the end, whatever happened."""
    address = f"tcp://127.0.0.1:{free_tcp_ports(6)}"
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("FASTWORKER_") or key == "FASTWORKER_JOURNAL"}
    env.update({
        "FASTWORKER_ADDRESS": address, "FASTWORKER_DASHBOARD": "127.0.0.1:0",
        "FASTWORKER_DISCOVERY_PORT": "0", "FASTWORKER_CONCURRENCY": "1", "FASTWORKER_PREFETCH": "0",
        "FASTWORKER_TASKS": "examples.tasks", "PYTHONUNBUFFERED": "1",
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
