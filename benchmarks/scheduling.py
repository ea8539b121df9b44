"""How work is handed to workers: priorities under load, and capacity with subworkers.

Starts ``fastworker run config/control.toml`` on free loopback ports (and,
with ``--subworkers``, that many ``config/sub.toml`` subworkers), then:

- priority: ``--low`` low-priority sync tasks of ``--low-seconds`` each
  fill every slot and queue behind them, then ``--critical`` critical ones
  of 10 ms are sent. Printed: the time from sending the critical tasks to
  their last result, against the time one low task runs (what priority
  should cost: a slot must free first) and the time the low backlog
  takes on the slots (what a first-in-first-out queue behind the priority
  inbox costs);
- capacity: ``--tasks`` sync tasks of 5 ms, sent at once, first
  submission to last result, in tasks/s: adding a subworker must not
  lower it.

    .venv/bin/python benchmarks/scheduling.py [--subworkers 0,1] [--runs 3]

Prints medians over the runs (these machines are shared and noisy).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actors.pytest_plugin import free_tcp_ports  # noqa: E402
from benchmarks.throughput import start, stop  # noqa: E402
from fastworker import Client  # noqa: E402

#: A sync task that blocks its worker for the seconds it is given.
BUSY = "examples.tasks.busy"


def control_env(address: str) -> dict[str, str]:
    """The environment of a control plane measured alone: no discovery,
    dashboard or journal, the example tasks."""
    return {**os.environ, "FASTWORKER_ADDRESS": address, "FASTWORKER_DISCOVERY_PORT": "0",
            "FASTWORKER_DASHBOARD": "off", "FASTWORKER_JOURNAL": "off",
            "FASTWORKER_TASKS": "examples.tasks"}


async def ready(address: str) -> None:
    """Wait until the control plane answers."""
    async with Client(address) as client:
        await client.submit("examples.noop")


async def priority_wait(address: str, low: int, low_seconds: float, critical: int) -> float:
    """Seconds from sending critical tasks behind a low backlog to their
    last result."""
    async with Client(address) as client:
        backlog = await client.delay_many(BUSY, [(low_seconds,)] * low, priority="low")
        await trio.sleep(0.2)  # the backlog reaches the workers first, as it would
        sent = time.perf_counter()
        urgent = await client.delay_many(BUSY, [(0.01,)] * critical, priority="critical")
        await client.results(urgent)
        waited = time.perf_counter() - sent
        await client.results(backlog)
    return waited


async def capacity(address: str, tasks: int) -> float:
    """Tasks/s of 5 ms sync tasks, all sent at once."""
    async with Client(address, max_batch=1024) as client:
        started = time.perf_counter()
        ids = await client.delay_many(BUSY, [(0.005,)] * tasks)
        await client.results(ids)
        return tasks / (time.perf_counter() - started)


def measure(args: argparse.Namespace, subworkers: int) -> None:
    address = f"tcp://127.0.0.1:{free_tcp_ports(6)}"
    env = control_env(address)
    with contextlib.ExitStack() as stack:
        stack.callback(stop, start("config/control.toml", env))
        for _ in range(subworkers):
            stack.callback(stop, start("config/sub.toml", env, ready="registered with"))
        trio.run(ready, address)
        where = f"plus {subworkers} subworker(s)" if subworkers else "alone"
        print(f"control plane {where}; median of {args.runs} runs", flush=True)
        waits = [trio.run(priority_wait, address, args.low, args.low_seconds, args.critical)
                 for _ in range(args.runs)]
        # The shipped configs' 8 pool processes each: subworkers first, the
        # control plane's executor when they have no room (local =
        # "fallback"), so with subworkers all of them run the backlog.
        slots = 8 * (subworkers + 1)
        print(f"  priority: {args.critical} critical tasks sent behind {args.low} low ones of "
              f"{args.low_seconds:g} s were done {statistics.median(waits):.2f} s later "
              f"(runs: {', '.join(f'{w:.2f}' for w in waits)}); one low task runs "
              f"{args.low_seconds:g} s, the backlog about "
              f"{args.low * args.low_seconds / slots:.1f} s on {slots} slots", flush=True)
        rates = [trio.run(capacity, address, args.tasks) for _ in range(args.runs)]
        print(f"  capacity: {statistics.median(rates):,.0f} tasks/s of 5 ms sync tasks "
              f"(runs: {', '.join(f'{r:,.0f}' for r in rates)})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subworkers", default="0,1",
                        help="comma-separated counts of subworkers to measure with")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--low", type=int, default=40)
    parser.add_argument("--low-seconds", type=float, default=0.5)
    parser.add_argument("--critical", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=2000)
    args = parser.parse_args()
    for count in (int(n) for n in args.subworkers.split(",")):
        measure(args, count)


if __name__ == "__main__":
    main()
