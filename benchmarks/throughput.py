"""End-to-end throughput and latency of a control plane, from one client.

Starts ``fastworker run config/control.toml`` on free loopback ports (and,
with ``--subworkers``, that many ``config/sub.toml`` subworkers, which run
the tasks first: the control plane's own executor takes those they have no
room for, ``local = "fallback"``; ``FASTWORKER_LOCAL=never`` in the
environment measures the control plane only queueing and dispatching), then:

- throughput: N no-op tasks (async, then sync) queued with ``delay_many``
  and their results collected, first submission to last result;
- latency: sequential ``submit`` round trips (submit-to-result), p50/p99;
- the control plane's CPU time per task during the throughput runs (less
  disturbed by other load on a shared machine than the rates are).

    .venv/bin/python benchmarks/throughput.py [--tasks 100000] [--runs 5] [--subworkers 0,1,2]
        [--dashboard off,idle,watched] [--journal off,on] [--isolation thread,process]

``--journal off,on`` measures without and with the journal (a file in a
fresh temporary directory, ``FASTWORKER_JOURNAL``), in the same run, and
prints the journal's size per task afterwards.

``--isolation thread,process`` measures sync tasks run on the executors'
worker threads (FASTWORKER_ISOLATION=thread: cheap, but a crash of one
takes its process down) and in their process pools (as shipped: a crash
fails only its task), in the same run.

``--dashboard`` measures the control plane with its dashboard turned off,
on with nobody watching (as shipped), or watched: a stand-in for an open
page follows the event stream and fetches the task list every second.

Prints medians over the runs (these machines are shared and noisy).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actors.pytest_plugin import free_tcp_ports  # noqa: E402
from fastworker import Client  # noqa: E402


async def throughput(address: str, task: str, count: int, chunk: int) -> float:
    async with Client(address, max_batch=1024, contexts=8) as client:
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for i in range(0, count, chunk):

                async def run(size: int) -> None:
                    ids = await client.delay_many(task, [()] * size)
                    await client.results(ids, timeout=120)

                nursery.start_soon(run, min(chunk, count - i))
        return count / (time.perf_counter() - start)


async def latency(address: str, task: str, count: int) -> list[float]:
    async with Client(address) as client:
        for _ in range(50):  # warm up connections and caches
            await client.submit(task)
        samples = []
        for _ in range(count):
            start = time.perf_counter()
            await client.submit(task)
            samples.append(time.perf_counter() - start)
        return samples


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds(pid: int) -> float:
    """CPU time so far of a process's live children (its executor's pool
    processes), which ``cpu_seconds`` does not count."""
    total = 0.0
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in children.read_text().split():
            with contextlib.suppress(OSError):
                total += cpu_seconds(int(child))
    return total


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start(file: str, env: dict[str, str], *, ready: str | None = None) -> subprocess.Popen[str]:
    """``fastworker run FILE``; with ``ready``, wait for that log line."""
    process = subprocess.Popen(
        [sys.executable, "-m", "fastworker", "run", file, "--log-level",
         "INFO" if ready else "WARNING"],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, text=True,
        stderr=subprocess.PIPE if ready else None,
    )
    if ready:
        assert process.stderr is not None
        for line in process.stderr:
            if ready in line:
                break
        else:
            raise SystemExit(f"{file} exited before it was ready")
        # Keep reading, or a full pipe would block it.
        threading.Thread(target=process.stderr.read, daemon=True).start()
    return process


class Watcher:
    """What an open dashboard page asks for: the event stream, and the task
    list once a second."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.events = 0
        self.pages = 0
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self._stream, daemon=True),
                        threading.Thread(target=self._pages, daemon=True)]
        for thread in self.threads:
            thread.start()

    def _stream(self) -> None:
        with urllib.request.urlopen(f"{self.url}/api/events") as response:
            for line in response:
                if line.startswith(b"event:"):
                    self.events += 1
                if self.stopped.is_set():
                    return

    def _pages(self) -> None:
        while not self.stopped.wait(1.0):
            with urllib.request.urlopen(f"{self.url}/api/tasks?limit=50") as response:
                response.read()
            self.pages += 1

    def stop(self) -> None:
        self.stopped.set()


def measure(args: argparse.Namespace, subworkers: int, dashboard: str, journal: str,
            isolation: str) -> None:
    address = f"tcp://127.0.0.1:{free_tcp_ports(6)}"
    port = free_tcp_ports(1)
    env = {**os.environ, "FASTWORKER_ADDRESS": address, "FASTWORKER_DISCOVERY_PORT": "0",
           "FASTWORKER_DASHBOARD": "off" if dashboard == "off" else f"127.0.0.1:{port}",
           "FASTWORKER_ISOLATION": isolation, "FASTWORKER_TASKS": "examples.tasks"}
    with contextlib.ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        journal_file = directory / "fastworker.journal"
        env["FASTWORKER_JOURNAL"] = str(journal_file) if journal == "on" else "off"
        control = start("config/control.toml", env)
        stack.callback(stop, control)
        for _ in range(subworkers):
            stack.callback(stop, start("config/sub.toml", env, ready="offered"))
        trio.run(latency, address, "examples.noop", 10)  # waits until it answers
        if dashboard == "watched":
            watcher = Watcher(f"http://127.0.0.1:{port}")
            stack.callback(watcher.stop)
        where = (f"{subworkers} subworkers (local = {env.get('FASTWORKER_LOCAL', 'fallback')})"
                 if subworkers else "the control plane's own executor")
        sync = "on worker threads" if isolation == "thread" else "in its process pool"
        print(f"tasks run by {where}, sync ones {sync}, dashboard {dashboard}, "
              f"journal {journal}; "
              f"{args.tasks} tasks per run, median of {args.runs}")
        for name, task in [("async no-op", "examples.noop"), ("sync no-op", "examples.noop_sync")]:
            rates, costs, pool_costs = [], [], []
            for _ in range(args.runs):
                before = cpu_seconds(control.pid)
                pool_before = children_cpu_seconds(control.pid)
                rates.append(trio.run(throughput, address, task, args.tasks, args.chunk))
                costs.append((cpu_seconds(control.pid) - before) / args.tasks * 1e6)
                pool_costs.append(
                    (children_cpu_seconds(control.pid) - pool_before) / args.tasks * 1e6)
            print(f"  {name:12} throughput {statistics.median(rates):>9,.0f} tasks/s  "
                  f"(runs: {', '.join(f'{r:,.0f}' for r in rates)}); control plane CPU "
                  f"{statistics.median(costs):.1f} us/task, its pool processes "
                  f"{statistics.median(pool_costs):.1f} us/task", flush=True)
        for name, task in [("async no-op", "examples.noop"), ("sync no-op", "examples.noop_sync")]:
            p50s, p99s = [], []
            for _ in range(args.runs):
                samples = trio.run(latency, address, task, args.latency_samples)
                p50s.append(percentile(samples, 0.50))
                p99s.append(percentile(samples, 0.99))
            print(f"  {name:12} submit round trip p50 {statistics.median(p50s) * 1000:.3f} ms, "
                  f"p99 {statistics.median(p99s) * 1000:.3f} ms", flush=True)
        if dashboard == "watched":
            print(f"  (the page saw {watcher.events} snapshots and fetched "
                  f"{watcher.pages} task lists)")
        if journal == "on":
            size = sum(f.stat().st_size for f in directory.iterdir())
            print(f"  journal: {size / 1e6:.1f} MB on disk for the results the store keeps")


def stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--latency-samples", type=int, default=2000)
    parser.add_argument("--chunk", type=int, default=10_000)
    parser.add_argument("--subworkers", default="0,1,2",
                        help="comma-separated counts of subworkers to measure with")
    parser.add_argument("--dashboard", default="idle",
                        help="comma-separated: off, idle (on, nobody watching), watched")
    parser.add_argument("--journal", default="off",
                        help="comma-separated: off, on (a journal in a temporary directory)")
    parser.add_argument("--isolation", default="process",
                        help="comma-separated: thread, process (where sync tasks run)")
    args = parser.parse_args()
    for count in (int(n) for n in args.subworkers.split(",")):
        for dashboard in args.dashboard.split(","):
            for journal in args.journal.split(","):
                for isolation in args.isolation.split(","):
                    measure(args, count, dashboard, journal, isolation)


if __name__ == "__main__":
    main()
