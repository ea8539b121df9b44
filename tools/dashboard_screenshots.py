"""Screenshots of the dashboard under load, for docs/dashboard.md.

Starts a control plane (``config/control.toml``) and two subworkers on free
loopback ports, submits a steady mix of tasks (some fail, some sleep) for
``--seconds``, then photographs each view in headless Chromium::

    .venv/bin/python tools/dashboard_screenshots.py --out docs/images

Needs Debian's ``chromium`` (``/usr/bin/chromium``).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere

from actors.pytest_plugin import free_tcp_ports  # noqa: E402
from examples import tasks  # noqa: E402
from fastworker import SyncClient  # noqa: E402

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def start(file: str, env: dict[str, str], ready: str) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-m", "fastworker", "run", file], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        if ready in line:
            break
    threading.Thread(target=process.stdout.read, daemon=True).start()  # keep the pipe drained
    return process


def load(address: str, stop: threading.Event) -> None:
    """A few hundred tasks a second in waves, a few of them failing."""
    rng = random.Random(7)
    with SyncClient(address) as client:
        tick = 0
        while not stop.is_set():
            tick += 1
            wave = 40 + int(30 * (1 + (tick % 40) / 10))
            client.delay_many(tasks.add, [(i, tick) for i in range(wave)])
            if rng.random() < 0.35:
                client.delay(tasks.fail, f"order {tick} has no customer")
            if rng.random() < 0.5:
                client.delay(tasks.nap, rng.uniform(0.5, 3.0))
            client.delay(tasks.checksum, os.urandom(64))
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/images")
    parser.add_argument("--seconds", type=float, default=45.0)
    options = parser.parse_args()
    address = f"tcp://127.0.0.1:{free_tcp_ports(6)}"
    port = free_tcp_ports(1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTWORKER_")}
    env.update(FASTWORKER_ADDRESS=address, FASTWORKER_DASHBOARD=f"127.0.0.1:{port}",
               FASTWORKER_DISCOVERY_PORT="0", PYTHONUNBUFFERED="1",
               FASTWORKER_JOURNAL="off")  # pictures of a fresh control plane, every time
    processes = [start("config/control.toml", env, "node control ready")]
    stop = threading.Event()
    try:
        for n in range(2):
            processes.append(start("config/sub.toml", {**env, "FASTWORKER_CONCURRENCY": "64"},
                                   "registered with"))
        loader = threading.Thread(target=load, args=(address, stop))
        loader.start()
        time.sleep(options.seconds)
        url = f"http://127.0.0.1:{port}"
        out = Path(options.out)
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as data, sync_playwright() as playwright:
            browser = playwright.chromium.launch_persistent_context(
                data, executable_path="/usr/bin/chromium", headless=True, args=ARGS,
                viewport={"width": 1400, "height": 900}, color_scheme="dark")
            page = browser.new_page()
            for name, route in [("overview", "#/"), ("workers", "#/workers"),
                                ("tasks", "#/tasks"), ("actors", "#/actors")]:
                page.goto(f"{url}/{route}")
                page.get_by_test_id("live").filter(has_text="live").wait_for()
                time.sleep(2.5)  # let the chart and tables fill from the stream
                page.screenshot(path=str(out / f"dashboard-{name}.png"))
            page.goto(f"{url}/#/tasks?state=failed")
            page.locator("tr[data-task-id] a").first.click()
            page.get_by_test_id("task-error").wait_for()
            time.sleep(1)
            page.screenshot(path=str(out / "dashboard-task.png"))
            browser.close()
    finally:
        stop.set()
        for process in reversed(processes):
            process.kill()
            process.wait()
    print(f"screenshots in {options.out}")


if __name__ == "__main__":
    main()
