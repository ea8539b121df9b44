"""How dispatch cost grows with the number of connected subworkers.

In one process: a real PriorityInbox and Dispatcher, and W simulated
subworkers that talk to the Dispatcher exactly as the workers edge would
(``Requests`` of ``Pull`` and ``Report``), with no network and no task
execution: each takes its Assign, and at once reports every job finished
and its slots free again. N jobs are queued first; the clock runs from the
first Pull to the last job reported. What is measured is the control
plane's own cost per job: inbox, placement, credit, forwarding to the store.

    .venv/bin/python benchmarks/dispatch.py [--jobs 200000] [--workers 1,10,50] [--runs 5]

Prints, per W, the median jobs/s and microseconds per job over the runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actors import Actor, ActorContext, NoOptions, Ref, Topology, open_node  # noqa: E402
from actors.requests import Requests  # noqa: E402
from fastworker.dispatcher import Dispatcher  # noqa: E402
from fastworker.inbox import PriorityInbox  # noqa: E402
from fastworker.internal import WorkerJoined  # noqa: E402
from fastworker.messages import (  # noqa: E402
    Assign,
    Outcome,
    Pull,
    Report,
    Running,
    Submit,
)

TASK = "bench.noop"


class Sink(Actor[Any]):
    """Stands in for the ResultStore: counts outcomes, sets an event at N."""

    def __init__(self, options: NoOptions, context: ActorContext, *, expect: int,
                 done: trio.Event) -> None:
        super().__init__(options, context)
        self.expect, self.done, self.seen = expect, done, 0

    async def handle(self, message: Any) -> None:
        await self.handle_batch([message])

    async def handle_batch(self, messages: list[Any]) -> None:
        for message in messages:
            self.seen += len(getattr(message, "outcomes", ()))
        if self.seen >= self.expect:
            self.done.set()


async def worker(dispatcher: Ref[Any], name: str, slots: int, start: trio.Event) -> None:
    """A simulated subworker: offer slots (async ones: its tasks' kind), then
    pull, finish at once, report."""
    await dispatcher.call(Requests((Report(worker=name, credit=(slots, 0, 0)),)))
    await start.wait()
    seq = 0
    while True:
        seq += 1
        [answer] = await dispatcher.call(Requests((Pull(worker=name, wait=30.0, seq=seq),)))
        assert isinstance(answer, Assign)
        if not answer.jobs:
            continue
        ids = tuple(job.id for job in answer.jobs)
        outcomes = tuple(Outcome(id=i, attempt=1, worker=name, value=b"N.") for i in ids)
        await dispatcher.call(Requests((Report(
            worker=name, credit=(len(ids), 0, 0),
            running=(Running(ids=ids, worker=name, started_at=0.0),),
            finished=outcomes,
        ),)))


async def run(jobs: int, workers: int, slots: int) -> float:
    done = trio.Event()
    topology = (
        Topology()
        .add("results", Sink, params={"expect": jobs, "done": done})
        .add("dispatcher", Dispatcher, refs={"inbox": "inbox", "results": "results"})
        .add("inbox", PriorityInbox, refs={"dispatcher": "dispatcher", "results": "results"},
             check_task_names=False, capacity=jobs)
    )
    async with open_node(topology) as node:
        inbox, dispatcher = node.refs["inbox"], node.refs["dispatcher"]
        for start in range(0, jobs, 1000):
            await inbox.call(Requests(tuple(
                Submit(id=f"j{n}", task=TASK, payload=b"") for n in range(start,
                                                                          min(start + 1000, jobs))
            )))
        names = [f"w{n}" for n in range(workers)]
        for name in names:
            await dispatcher.send(WorkerJoined(worker=name, tasks=frozenset({TASK})))
        go = trio.Event()
        async with trio.open_nursery() as nursery:
            for name in names:
                nursery.start_soon(worker, dispatcher, name, slots, go)
            await trio.testing.wait_all_tasks_blocked()
            began = time.perf_counter()
            go.set()
            await done.wait()
            elapsed = time.perf_counter() - began
            nursery.cancel_scope.cancel()
    return jobs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200_000)
    parser.add_argument("--workers", default="1,10,50")
    parser.add_argument("--slots", type=int, default=256, help="slots per simulated worker")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"{args.jobs} jobs per run, {args.slots} slots per worker, median of {args.runs}")
    for workers in (int(w) for w in args.workers.split(",")):
        rates = [trio.run(run, args.jobs, workers, args.slots) for _ in range(args.runs)]
        rate = statistics.median(rates)
        print(f"  {workers:3} subworkers: {rate:>9,.0f} jobs/s, {1e6 / rate:5.1f} us per job  "
              f"(runs: {', '.join(f'{r:,.0f}' for r in rates)})", flush=True)


if __name__ == "__main__":
    import trio.testing  # noqa: F401 (wait_all_tasks_blocked)

    main()
