"""End-to-end throughput and latency of a control plane, from one client.

Starts ``fastworker run config/control.toml`` on free loopback ports, then:

- throughput: N no-op tasks (async, then sync) queued with ``delay_many``
  and their results collected, first submission to last result;
- latency: sequential ``submit`` round trips (submit-to-result), p50/p99.

    .venv/bin/python benchmarks/throughput.py [--tasks 100000] [--runs 5]

Prints medians over the runs (these machines are shared and noisy).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--latency-samples", type=int, default=2000)
    parser.add_argument("--chunk", type=int, default=10_000)
    args = parser.parse_args()
    address = f"tcp://127.0.0.1:{free_tcp_ports(6)}"
    env = {**os.environ, "FASTWORKER_ADDRESS": address, "FASTWORKER_LOG_LEVEL": "WARNING"}
    server = subprocess.Popen(
        [sys.executable, "-m", "fastworker", "run", "config/control.toml"],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
    )
    try:
        trio.run(latency, address, "examples.noop", 10)  # waits until it answers
        print(f"control plane at {address}; {args.tasks} tasks per run, median of {args.runs}")
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
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
