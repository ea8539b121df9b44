"""What the operator's commands cost: a status, a purge, a retry of the failed.

Figures, each the median of ``--runs`` runs, each run a fresh control plane
(``config/control.toml``, dashboard off, the journal as ``--journal`` says):

- **status:** ``client.admin.status()`` one at a time, while the control
  plane holds ``--tasks`` queued tasks (it runs nothing: its executor is
  drained first): its round trip, p50;
- **purge:** ``client.admin.purge()`` of those ``--tasks`` queued tasks:
  its round trip, and per task; then the queue is checked empty and every
  task cancelled (a count: none lost, none left);
- **retry:** ``--tasks`` tasks that fail (``examples.tasks.fail``) run on
  the control plane, then ``client.admin.retry(failed=True)`` in batches
  of ``limits.MAX_BULK`` until none is left: the time to queue every retry,
  and per task; each failed task is checked to be retried exactly once.

Run: ``.venv/bin/python benchmarks/admin.py [--tasks 100000] [--runs 3]
[--journal off,on]``. Prints figures only; nothing here is a test.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.pytest_plugin import free_tcp_ports  # noqa: E402
from benchmarks.scheduling import control_env  # noqa: E402
from benchmarks.throughput import ROOT, stop  # noqa: E402
from fastworker import Client  # noqa: E402
from fastworker.limits import MAX_BULK  # noqa: E402

CHUNK = 10_000


def start(env: dict[str, str]) -> subprocess.Popen[str]:
    """The control plane, logging errors only (each failed task is a warning)."""
    return subprocess.Popen(
        [sys.executable, "-m", "fastworker", "run", "control", "--log-level", "ERROR"],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, text=True)


async def purge_run(address: str, count: int, samples: int) -> tuple[float, float]:
    """(status p50, purge seconds) with ``count`` tasks queued."""
    async with Client(address) as client:
        [local] = (await client.admin.status()).workers
        await client.admin.drain(local.worker)  # so that they stay queued
        for start_at in range(0, count, CHUNK):
            await client.delay_many("examples.tasks.add",
                                    [(i, 0) for i in range(min(CHUNK, count - start_at))])
        took = []
        for _ in range(samples):
            began = time.perf_counter()
            status = await client.admin.status()
            took.append(time.perf_counter() - began)
        if sum(status.queued) != count:
            raise SystemExit(f"status: {sum(status.queued):,} queued, {count:,} sent")
        began = time.perf_counter()
        purged = await client.admin.purge()
        purge = time.perf_counter() - began
        after = await client.admin.status()
    if purged != count or sum(after.queued) or after.cancelled_total != count:
        raise SystemExit(f"purge: {purged:,} purged of {count:,}; {sum(after.queued):,} left, "
                         f"{after.cancelled_total:,} cancelled")
    return statistics.median(took), purge


async def retry_run(address: str, count: int) -> float:
    """Seconds to queue a retry of each of ``count`` failed tasks."""
    async with Client(address) as client:
        ids = []
        for start_at in range(0, count, CHUNK):
            ids += await client.delay_many(
                "examples.tasks.fail", [("no",)] * min(CHUNK, count - start_at))
        while (await client.admin.status()).failed_total < count:
            await anyio.sleep(0.1)
        retried: Counter[str] = Counter()
        before = 0.0
        began = time.perf_counter()
        while True:
            report = await client.admin.retry(failed=True, limit=MAX_BULK, before=before)
            before = report.before
            retried.update(old for old, _ in report.retried)
            if report.refused or not report.remaining or not report.retried:
                break
        took = time.perf_counter() - began
    if retried != Counter(ids):
        lost = len(set(ids) - set(retried))
        twice = sum(1 for n in retried.values() if n > 1)
        raise SystemExit(f"retry: {lost:,} not retried, {twice:,} retried twice")
    return took


def run(count: int, journal: str) -> tuple[float, float, float]:
    """(status p50, purge seconds, retry seconds) of one run."""
    address = f"tcp://127.0.0.1:{free_tcp_ports(6)}"
    with tempfile.TemporaryDirectory() as folder:
        env = control_env(address)
        env.update(FASTWORKER_QUEUE_CAPACITY=str(count + 1000),
                   FASTWORKER_JOURNAL="off" if journal == "off" else f"{folder}/queued")
        control = start(env)
        try:
            status, purge = anyio.run(purge_run, address, count, 20, backend="trio")
        finally:
            stop(control)
        env.update(FASTWORKER_JOURNAL="off" if journal == "off" else f"{folder}/failed")
        control = start(env)
        try:
            retry = anyio.run(retry_run, address, count, backend="trio")
        finally:
            stop(control)
    return status, purge, retry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--journal", default="off,on", help="off, on, or off,on")
    args = parser.parse_args()
    for journal in args.journal.split(","):
        runs = [run(args.tasks, journal) for _ in range(args.runs)]
        status, purge, retry = (statistics.median(r[i] for r in runs) for i in range(3))
        print(f"journal {journal}, {args.tasks:,} tasks, median of {args.runs}:")
        print(f"  status with them queued: p50 {status * 1000:,.2f} ms")
        print(f"  purge of them all: {purge:,.2f} s ({purge / args.tasks * 1e6:,.1f} µs a task); "
              "none left, every one cancelled")
        print(f"  retry of them all, failed: {retry:,.2f} s ({retry / args.tasks * 1e6:,.1f} µs "
              "a task); each retried once")


if __name__ == "__main__":
    main()
