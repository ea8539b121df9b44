"""What the journal costs: commits and ops per second by group size, the
bytes a task and a result take on disk, and the time to load 100,000
queued tasks at a restart.

    .venv/bin/python benchmarks/journal.py [--quick]

Group commit: one writer writes ``group`` ops per ``write`` and waits for
each commit, so every commit carries exactly one group; for
``synchronous=normal`` and ``full``. Then the shape the control plane will
have: many concurrent writers of one op each, which the writer gathers into
groups by itself; and a task's whole life (put, dispatched, result: 3 ops).
Last, a submission's commit as the control plane makes it one task at a
time: the task's row waited for, its dispatched state and result sent
(lazy, nobody waits) while it runs, with and without ``lazy_interval``.
Files go to a temporary directory on the same disk as the working
directory (``--dir`` to choose). These machines are shared and noisy: read
the figures as orders of magnitude.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastworker.journal import JournalFile, JournalWriter, PutResult, PutTask, SetState  # noqa: E402
from fastworker.journal.file import Synchronous  # noqa: E402
from fastworker.messages import Job, TaskRecord  # noqa: E402
from fastworker.payload import pack_call, pack_value  # noqa: E402

GROUPS = (1, 16, 64, 256, 1024)
PAYLOAD = pack_call((), {})


def job(n: int) -> Job:
    """A typical no-op task as the inbox would queue it."""
    return Job(id=f"{0x5EED0000_00000000 + n:016x}", task="app.tasks.noop", payload=PAYLOAD,
               priority=2, timeout=None, queued_at=time.time())


def result(n: int) -> TaskRecord:
    now = time.time()
    return TaskRecord(id=f"{0x5EED0000_00000000 + n:016x}", state="succeeded",
                      task="app.tasks.noop", priority=2, attempt=1, worker="control-1",
                      workers=("control-1",), queued_at=now, started_at=now, finished_at=now,
                      value=pack_value(None))


def fresh(directory: Path, name: str) -> Path:
    path = directory / f"{name}.journal"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


async def grouped(path: Path, synchronous: Synchronous, group: int, commits: int) -> tuple[float, float]:
    """(ops/s, commits/s) with one group per commit."""
    async with JournalWriter.open(path, synchronous=synchronous, max_batch_ops=group) as writer:
        await (await writer.write([PutTask(job(-1))])).wait()  # warm up
        n = 0
        start = time.perf_counter()
        for _ in range(commits):
            ops = [PutTask(job(n + i)) for i in range(group)]
            n += group
            await (await writer.write(ops)).wait()
        elapsed = time.perf_counter() - start
        assert writer.stats().commits_total == commits + 1
    return n / elapsed, commits / elapsed


async def concurrent(path: Path, synchronous: Synchronous, writers: int, each: int) -> tuple[float, float]:
    """(ops/s, ops per commit) with ``writers`` tasks writing one op at a time."""
    async with JournalWriter.open(path, synchronous=synchronous) as writer:
        async def one(k: int) -> None:
            for i in range(each):
                await (await writer.write([PutTask(job(k * each + i))])).wait()

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for k in range(writers):
                nursery.start_soon(one, k)
        elapsed = time.perf_counter() - start
        stats = writer.stats()
    return stats.ops_total / elapsed, stats.ops_total / stats.commits_total


async def lifecycle(path: Path, synchronous: Synchronous, tasks: int, group: int) -> float:
    """Tasks/s when each task costs PutTask, SetState(dispatched), PutResult."""
    async with JournalWriter.open(path, synchronous=synchronous) as writer:
        start = time.perf_counter()
        for base in range(0, tasks, group):
            numbers = range(base, base + group)
            await writer.write([PutTask(job(n)) for n in numbers])
            await writer.write([SetState(tuple(job(n).id for n in numbers), "dispatched")])
            commit = await writer.write([PutResult(result(n), time.time()) for n in numbers])
        await commit.wait()
        elapsed = time.perf_counter() - start
    return tasks / elapsed


async def submission(path: Path, lazy_interval: float, tasks: int) -> tuple[float, float]:
    """(p50 seconds of a submission's commit, commits per task), one task at
    a time: its PutTask waited for, then its SetState(dispatched) and
    PutResult written lazily while it "runs", as the inbox and the store do."""
    async with JournalWriter.open(path, lazy_interval=lazy_interval) as writer:
        samples = []
        for n in range(tasks):
            start = time.perf_counter()
            await (await writer.write([PutTask(job(n))])).wait()
            samples.append(time.perf_counter() - start)
            await writer.write([SetState((job(n).id,), "dispatched")], lazy=True)
            await trio.sleep(0.0003)  # the task is dispatched and runs
            await writer.write([PutResult(result(n), time.time())], lazy=True)
            await trio.sleep(0.0005)  # its client hears of it and submits the next
        commits = writer.stats().commits_total
    return statistics.median(samples), commits / tasks


def bytes_per_row(directory: Path, count: int) -> tuple[float, float]:
    """Bytes on disk per queued task and per stored result (after a checkpoint)."""
    path = fresh(directory, "size")
    file = JournalFile.open(path)
    try:
        file.checkpoint()
        empty = file.size()
        for base in range(0, count, 1000):
            file.apply([PutTask(job(n)) for n in range(base, base + 1000)])
        file.checkpoint()
        tasks = file.size()
        # The same tasks end: their rows go, their results come.
        for base in range(0, count, 1000):
            file.apply([PutResult(result(n), time.time()) for n in range(base, base + 1000)])
        file.checkpoint()
        file.checkpoint()
        results = file.size()
    finally:
        file.close()
    return (tasks - empty) / count, (results - empty) / count


def load_time(directory: Path, count: int) -> tuple[float, float, int]:
    """(seconds to open and check, seconds to load) for ``count`` queued tasks, and bytes."""
    path = fresh(directory, "load")
    file = JournalFile.open(path)
    for base in range(0, count, 4096):
        file.apply([PutTask(job(n)) for n in range(base, min(count, base + 4096))])
    file.close()
    start = time.perf_counter()
    file = JournalFile.open(path)
    opened = time.perf_counter() - start
    try:
        start = time.perf_counter()
        recovered = file.load()
        loaded = time.perf_counter() - start
        size = file.size()
    finally:
        file.close()
    assert len(recovered.queued) == count
    return opened, loaded, size


async def main(directory: Path, quick: bool) -> None:
    scale = 4 if quick else 1
    print(f"journal benchmark in {directory} (SQLite, WAL), {os.cpu_count()} CPUs")
    print("one group per commit:")
    for synchronous in ("normal", "full"):
        for group in GROUPS:
            commits = max(50, min(2000, 40_000 // group)) // scale
            ops, per_second = await grouped(fresh(directory, "groups"), synchronous, group, commits)
            print(f"  synchronous={synchronous:6} group {group:5}: {ops:>10,.0f} ops/s "
                  f"{per_second:>8,.0f} commits/s")
    print("concurrent writers of one op each (the writer groups them):")
    for synchronous in ("normal", "full"):
        for writers in (1, 64, 512):
            ops, group = await concurrent(fresh(directory, "concurrent"), synchronous, writers,
                                          max(10, 20_000 // writers // scale))
            print(f"  synchronous={synchronous:6} {writers:4} writers: {ops:>10,.0f} ops/s, "
                  f"{group:,.1f} ops per commit")
    for synchronous in ("normal", "full"):
        rate = await lifecycle(fresh(directory, "life"), synchronous, 50_000 // scale, 256)
        print(f"a task's life (put, dispatched, result; groups of 256), synchronous={synchronous}: "
              f"{rate:,.0f} tasks/s")
    for lazy_interval in (0.0, 0.002):
        p50, commits = await submission(fresh(directory, "submit"), lazy_interval,
                                        4000 // scale)
        print(f"a submission's commit, one task at a time, lazy_interval={lazy_interval * 1000:g} "
              f"ms: p50 {p50 * 1e6:,.0f} us, {commits:.2f} commits per task")
    task_bytes, result_bytes = bytes_per_row(directory, 20_000 // scale)
    print(f"on disk: {task_bytes:,.0f} bytes per queued no-op task, "
          f"{result_bytes:,.0f} bytes per stored result")
    count = 100_000 // scale
    opened, loaded, size = load_time(directory, count)
    print(f"restart with {count:,} queued tasks ({size / 1e6:,.1f} MB): open and quick_check "
          f"{opened * 1000:,.0f} ms, load {loaded * 1000:,.0f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the work")
    parser.add_argument("--dir", type=Path, default=None, help="where the files go")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir or Path.cwd(), prefix="journal-bench-") as tmp:
        trio.run(main, Path(tmp), args.quick)
