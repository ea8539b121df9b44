"""What the Executor costs: no-op tasks per second through one executor.

    .venv/bin/python benchmarks/executor.py [--runs 5] [--count 100000] [--prefetch N]
        [--only SUBSTRING]

A stand-in dispatcher answers every ``Credit`` with an ``Assign`` of that
many jobs (its credit for the jobs' kind of slot), and a stand-in store
counts outcomes, so the figure is the executor's own cost per job
(unpickling arguments, running, pickling the value, reporting) with
nothing else in the way. For reference, the last
line runs the same sync no-op through ``trio.to_thread.run_sync`` per call,
64 at once. Prints the median of several runs (these machines are shared
and noisy).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors import Actor, Topology, open_node  # noqa: E402
from fastworker.executor import Executor  # noqa: E402
from fastworker.messages import Assign, Credit, Finished, Job  # noqa: E402
from fastworker.payload import pack_call  # noqa: E402
from fastworker.tasks import TaskRegistry, task, task_kind  # noqa: E402


@task(name="bench.noop")
def noop() -> None:
    return None


@task(name="bench.async_noop")
async def async_noop() -> None:
    return None


class Feeder(Actor[Credit]):
    """Stand-in dispatcher: assigns as many jobs as each Credit allows."""

    refs_required = ("executor",)

    def __init__(self, options: Any, context: Any, *, jobs: list[Job], kind: int) -> None:
        super().__init__(options, context)
        self.jobs, self.sent, self.kind = jobs, 0, kind

    async def handle_batch(self, messages: list[Credit]) -> None:
        n = min(sum(m.slots[self.kind] for m in messages), len(self.jobs) - self.sent)
        if n > 0:
            batch = tuple(self.jobs[self.sent : self.sent + n])
            self.sent += n
            await self.refs["executor"].send(Assign(jobs=batch))


class Sink(Actor[Any]):
    """Stand-in store: counts outcomes, sets ``done`` at ``target``."""

    def __init__(self, options: Any, context: Any, *, target: int, done: trio.Event) -> None:
        super().__init__(options, context)
        self.target, self.done, self.count = target, done, 0

    async def handle_batch(self, messages: list[Any]) -> None:
        for message in messages:
            if isinstance(message, Finished):
                self.count += len(message.outcomes)
        if self.count >= self.target:
            self.done.set()


async def through_executor(task_name: str, count: int, registry: TaskRegistry,
                           **options: Any) -> float:
    payload = pack_call((), {})
    jobs = [
        Job(id=str(n), task=task_name, payload=payload, priority=2, timeout=None)
        for n in range(count)
    ]
    done = trio.Event()
    found = registry.get(task_name)
    assert found is not None
    kind = task_kind(found, options.get("isolation", "thread"))
    topology = (
        Topology(name="bench")
        .add("dispatcher", Feeder, refs={"executor": "executor"},
             params={"jobs": jobs, "kind": kind})
        .add("results", Sink, params={"target": count, "done": done})
        .add(
            "executor",
            Executor,
            refs={"dispatcher": "dispatcher", "results": "results"},
            params={"registry": registry},
            **options,
        )
    )
    start = time.perf_counter()
    async with open_node(topology):
        await done.wait()
        elapsed = time.perf_counter() - start
    return count / elapsed


async def through_to_thread(count: int) -> float:
    slots = trio.Semaphore(64)

    async def one() -> None:
        try:
            await trio.to_thread.run_sync(noop.fn)
        finally:
            slots.release()

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(count):
            await slots.acquire()
            nursery.start_soon(one)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--prefetch", type=int, default=None,
                        help="the executor's prefetch (default: its own default)")
    parser.add_argument("--only", default="", help="run only the cases whose name has this")
    args = parser.parse_args()
    extra: dict[str, Any] = {} if args.prefetch is None else {"prefetch": args.prefetch}
    registry = TaskRegistry()
    registry.register(noop)
    registry.register(async_noop)
    cases: list[tuple[str, Any]] = [
        ("executor, async no-op (64 lanes)", lambda: trio.run(
            partial(through_executor, "bench.async_noop", args.count, registry, **extra))),
        ("executor, sync no-op (8 threads)", lambda: trio.run(
            partial(through_executor, "bench.noop", args.count, registry, **extra))),
        ("executor, sync no-op, isolation=process (2 proc)", lambda: trio.run(
            partial(through_executor, "bench.noop", args.count // 4, registry,
                    isolation="process", processes=2, **extra))),
        ("executor, sync no-op, isolation=process (4 proc)", lambda: trio.run(
            partial(through_executor, "bench.noop", args.count // 4, registry,
                    isolation="process", processes=4, **extra))),
        ("reference: trio.to_thread.run_sync per call", lambda: trio.run(
            through_to_thread, args.count // 4)),
    ]
    print(f"{'case':48} {'median tasks/s':>14} {'min':>10} {'max':>10}   ({args.runs} runs, "
          f"{args.count} tasks)", flush=True)
    for name, run in cases:
        if args.only not in name:
            continue
        rates = [run() for _ in range(args.runs)]
        print(
            f"{name:48} {statistics.median(rates):>14,.0f} {min(rates):>10,.0f} "
            f"{max(rates):>10,.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
