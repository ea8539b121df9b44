"""End-to-end throughput and latency of a control plane, from one client.

Starts ``fastworker run config/control.toml`` on free loopback ports (and,
with ``--subworkers``, that many ``config/sub.toml`` subworkers, which then
run every task: the control plane only queues and dispatches), then:

- throughput: N no-op tasks (async, then sync) queued with ``delay_many``
  and their results collected, first submission to last result;
- latency: sequential ``submit`` round trips (submit-to-result), p50/p99.

    .venv/bin/python benchmarks/throughput.py [--tasks 100000] [--runs 5] [--subworkers 0,1,2]

Prints medians over the runs (these machines are shared and noisy).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import threading
import time
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


def measure(args: argparse.Namespace, subworkers: int) -> None:
    address = f"tcp://127.0.0.1:{free_tcp_ports(6)}"
    env = {**os.environ, "FASTWORKER_ADDRESS": address, "FASTWORKER_DISCOVERY_PORT": "0"}
    with contextlib.ExitStack() as stack:
        for file, count, ready in [("config/control.toml", 1, None),
                                   ("config/sub.toml", subworkers, "offered")]:
            for _ in range(count):
                process = start(file, env, ready=ready)
                stack.callback(stop, process)
        trio.run(latency, address, "examples.noop", 10)  # waits until it answers
        where = f"{subworkers} subworkers" if subworkers else "the control plane's own executor"
        print(f"tasks run by {where}; {args.tasks} tasks per run, median of {args.runs}")
        for name, task in [("async no-op", "examples.noop"), ("sync no-op", "examples.noop_sync")]:
            rates = [trio.run(throughput, address, task, args.tasks, args.chunk)
                     for _ in range(args.runs)]
            print(f"  {name:12} throughput {statistics.median(rates):>9,.0f} tasks/s  "
                  f"(runs: {', '.join(f'{r:,.0f}' for r in rates)})", flush=True)
        for name, task in [("async no-op", "examples.noop"), ("sync no-op", "examples.noop_sync")]:
            p50s, p99s = [], []
            for _ in range(args.runs):
                samples = trio.run(latency, address, task, args.latency_samples)
                p50s.append(percentile(samples, 0.50))
                p99s.append(percentile(samples, 0.99))
            print(f"  {name:12} submit round trip p50 {statistics.median(p50s) * 1000:.3f} ms, "
                  f"p99 {statistics.median(p99s) * 1000:.3f} ms", flush=True)


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
    args = parser.parse_args()
    for count in (int(n) for n in args.subworkers.split(",")):
        measure(args, count)


if __name__ == "__main__":
    main()
