"""What the dashboard costs the control plane, piece by piece.

Runs ``config/control.toml`` in this process with a store of ``--tasks``
finished no-op tasks, then times, on the node's own thread while nothing
else runs:

- one sample: ``GetStats`` of every actor, the views, and the snapshot's
  JSON, which the dashboard does once a second whether or not anyone looks;
- what an open page adds each second: a page of 50 tasks over HTTP (and a
  filtered one, which scans the store);
- a task's page and ``/metrics`` over HTTP.

    .venv/bin/python benchmarks/dashboard.py [--tasks 100000] [--repeat 200]

End-to-end throughput with the dashboard off, idle and watched is
``benchmarks/throughput.py --dashboard off,idle,watched``; on a shared
machine its noise is larger than these costs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actors import Topology, open_node  # noqa: E402
from actors.pytest_plugin import free_tcp_ports  # noqa: E402
from dashboard.actor import Dashboard  # noqa: E402
from fastworker import Client  # noqa: E402


async def timed(what: str, repeat: int, call: Callable[[], Awaitable[Any]]) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - start)
    median = statistics.median(samples) * 1e6
    print(f"  {what:58} {median:>9,.0f} us", flush=True)
    return median


async def main(tasks: int, repeat: int) -> None:
    address = f"tcp://127.0.0.1:{free_tcp_ports(6)}"
    port = free_tcp_ports(1)
    topology = Topology.from_toml("config/control.toml", environ={
        "FASTWORKER_ADDRESS": address, "FASTWORKER_DISCOVERY_PORT": "0",
        "FASTWORKER_DASHBOARD": f"127.0.0.1:{port}", "FASTWORKER_TASKS": "examples.tasks",
        "FASTWORKER_JOURNAL": "off"})  # the dashboard's own cost, as measured before the journal
    async with open_node(topology) as node:
        [child] = [c for c in node.supervisor.children if c.name == "dashboard"]
        dashboard = child.instance
        assert isinstance(dashboard, Dashboard)
        async with Client(address, max_batch=1024) as client:
            for start in range(0, tasks, 10_000):
                ids = await client.delay_many("examples.noop", [()] * min(10_000, tasks - start))
                await client.results(ids, timeout=300)
            some_id = ids[-1]
        print(f"a control plane holding {tasks:,} task records; median of {repeat} calls")
        sample = await timed("one sample (GetStats of 13 actors, views, JSON)", repeat,
                             dashboard._take_sample)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            page = await timed("GET /api/tasks?limit=50 (newest first)", repeat,
                               lambda: http.get("/api/tasks", params={"limit": 50}))
            await timed("GET /api/tasks?state=failed (scans every record)", max(repeat // 10, 3),
                        lambda: http.get("/api/tasks", params={"state": "failed"}))
            await timed("GET /api/tasks/{id}", repeat, lambda: http.get(f"/api/tasks/{some_id}"))
            await timed("GET /api/overview", repeat, lambda: http.get("/api/overview"))
            await timed("GET /metrics", repeat, lambda: http.get("/metrics"))
        size = len(dashboard._snapshot_json)
        print(f"  snapshot event: {size:,} bytes")
        print(f"nobody watching: one sample a second = {sample / 1e4:.3f}% of one core")
        print(f"a page open: + one task page a second = {(sample + page) / 1e4:.3f}% of one core "
              "in all (the HTTP client's share included)")
        await node.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    trio.run(main, args.tasks, args.repeat)
