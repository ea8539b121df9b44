"""The control plane's memory per queued task and per stored result.

Figures, each the median of ``--runs`` runs, each run a fresh control plane
(``config/control.toml``, dashboard and journal off):

- **queued:** a control plane that runs nothing (``FASTWORKER_LOCAL=never``
  and no subworker) takes ``--tasks`` no-op tasks; its resident memory
  after, less before, per task;
- **stored:** a control plane alone runs ``--tasks`` no-op tasks and its
  store keeps their results (within its ``max_entries``, 100,000); its
  resident memory after, less before, per record.

Run: ``.venv/bin/python benchmarks/memory.py [--tasks 100000] [--runs 3]``.
Prints figures only; nothing here is a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actors.pytest_plugin import free_tcp_ports  # noqa: E402
from benchmarks.scheduling import control_env  # noqa: E402
from benchmarks.throughput import start, stop  # noqa: E402
from fastworker import Client  # noqa: E402

TASK = "examples.noop"
CHUNK = 10_000


def resident_bytes(pid: int) -> int:
    """The process's resident set, in bytes (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise SystemExit("no VmRSS in /proc: Linux only")


async def answered(address: str) -> None:
    """Wait until the control plane answers a query (nothing is run)."""
    async with Client(address) as client:
        await client.status("0")


async def submit(address: str, count: int, wait: bool) -> None:
    """Submit ``count`` no-op tasks a chunk at a time; with ``wait``, take
    their results too."""
    async with Client(address) as client:
        for start_at in range(0, count, CHUNK):
            calls = [()] * min(CHUNK, count - start_at)
            if wait:
                await client.map(TASK, calls)
            else:
                await client.delay_many(TASK, calls)


def per_task(count: int, *, queued: bool) -> float:
    """Resident bytes per queued task (``queued``) or per stored record."""
    address = f"tcp://127.0.0.1:{free_tcp_ports(6)}"
    env = control_env(address)
    if queued:
        env.update(FASTWORKER_LOCAL="never", FASTWORKER_QUEUE_CAPACITY=str(count + 1000))
    control = start("config/control.toml", env)
    try:
        anyio.run(answered, address, backend="trio")
        anyio.run(submit, address, 2000, not queued, backend="trio")  # warm up
        before = resident_bytes(control.pid)
        anyio.run(submit, address, count, not queued, backend="trio")
        return (resident_bytes(control.pid) - before) / count
    finally:
        stop(control)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    queued = [per_task(args.tasks, queued=True) for _ in range(args.runs)]
    stored = [per_task(args.tasks, queued=False) for _ in range(args.runs)]
    print(f"control plane, {args.tasks:,} no-op tasks, median of {args.runs} runs")
    print(f"  queued: {statistics.median(queued):,.0f} bytes per task "
          f"(runs: {', '.join(f'{x:,.0f}' for x in queued)})")
    print(f"  stored: {statistics.median(stored):,.0f} bytes per result record "
          f"(runs: {', '.join(f'{x:,.0f}' for x in stored)})")


if __name__ == "__main__":
    main()
