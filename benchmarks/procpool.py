"""What a ProcessPool job costs: round trips of a no-op task through the pool.

    .venv/bin/python benchmarks/procpool.py [--runs 5] [--count 5000]

Each run opens a pool, warms its processes up (start-up, ~0.4 s each, is
not counted), then times ``count`` no-op jobs: one at a time through a
pool of 1 (the round-trip cost of a job), and with 4 callers per process
through a pool of one process per CPU (throughput). For reference, the
last line is the floor under any of it: the same number of blocking
``multiprocessing.Connection`` ping-pongs with a spawned process, no trio,
no pickling of a call. Prints the median of several runs (these machines
are shared and noisy).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastworker.executor import ProcessPool  # noqa: E402
from fastworker.payload import pack_call  # noqa: E402
from fastworker.tasks import task  # noqa: E402


@task(name="bench.procpool_noop", isolation="process")
def noop() -> None:
    return None


async def sequential(count: int) -> float:
    """Seconds per job, one job at a time, pool of 1."""
    payload = pack_call((), {})
    async with ProcessPool(1) as pool:
        await pool.run(noop, payload, None)
        start = time.perf_counter()
        for _ in range(count):
            _, error, _ = await pool.run(noop, payload, 10.0)
            assert error is None, error
        return (time.perf_counter() - start) / count


async def concurrent(count: int, size: int) -> float:
    """Jobs per second, ``4 * size`` callers, pool of ``size``."""
    payload = pack_call((), {})
    callers = 4 * size
    async with ProcessPool(size) as pool:
        async with trio.open_nursery() as nursery:  # start every process first
            for _ in range(size):
                nursery.start_soon(pool.run, noop, payload, None)
        assert pool.stats().processes == size

        async def caller(jobs: int) -> None:
            for _ in range(jobs):
                _, error, _ = await pool.run(noop, payload, 10.0)
                assert error is None, error

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(callers):
                nursery.start_soon(caller, count // callers)
        return (count // callers * callers) / (time.perf_counter() - start)


def _echo(conn: Connection) -> None:
    while True:
        try:
            conn.send_bytes(conn.recv_bytes())
        except EOFError:
            return


def ping_pong(count: int) -> float:
    """Seconds per blocking round trip over a multiprocessing Pipe."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_echo, args=(child,))
    process.start()
    child.close()
    parent.send_bytes(b"x")
    parent.recv_bytes()
    start = time.perf_counter()
    for _ in range(count):
        parent.send_bytes(b"x")
        parent.recv_bytes()
    elapsed = (time.perf_counter() - start) / count
    parent.close()
    process.join()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--count", type=int, default=5000)
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    print(f"{'case':52} {'median':>12} {'min':>12} {'max':>12}   ({args.runs} runs, "
          f"{args.count} jobs, {cpus} CPUs)", flush=True)

    def report(name: str, values: list[float], unit: str, scale: float) -> None:
        scaled = [v * scale for v in values]
        print(f"{name:52} {statistics.median(scaled):>9,.1f} {unit} {min(scaled):>9,.1f} {unit} "
              f"{max(scaled):>9,.1f} {unit}", flush=True)

    per_job = [trio.run(sequential, args.count) for _ in range(args.runs)]
    report("pool of 1, one job at a time: per job", per_job, "µs", 1e6)
    report("  same, as tasks/s", [1 / t for t in per_job], "/s", 1)
    rates: list[Any] = [trio.run(concurrent, args.count, cpus) for _ in range(args.runs)]
    report(f"pool of {cpus}, {4 * cpus} callers: tasks/s", rates, "/s", 1)
    floor = [ping_pong(args.count) for _ in range(args.runs)]
    report("reference: blocking Pipe ping-pong: per round trip", floor, "µs", 1e6)


if __name__ == "__main__":
    main()
