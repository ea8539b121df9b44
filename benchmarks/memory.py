"""The control plane's memory per queued task and per stored result.

Figures, each the median of ``--runs`` runs, each run a fresh control plane
(``config/control.toml``, dashboard and journal off):

- **queued:** a control plane that runs nothing (``FASTWORKER_LOCAL=never``
  and no subworker) takes ``--tasks`` no-op tasks; its resident memory
  after, less before, per task;
- **stored:** a control plane alone runs ``--tasks`` no-op tasks and its
  store keeps their results (within its ``max_entries``, 100,000); its
  resident memory after, less before, per record;
- **bulk** (with ``--bulk N``): one ``client.map`` of ``N`` ``add(i, 0)``
  calls against a control plane whose store keeps at most 100,000 records:
  every result is checked against its call (none lost, none unknown, none
  out of place), and the control plane's peak resident memory is printed
  with the time taken.

Run: ``.venv/bin/python benchmarks/memory.py [--tasks 100000] [--runs 3]
[--bulk 1000000]``.
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


def peak_bytes(pid: int) -> int:
    """The process's peak resident set, in bytes (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise SystemExit("no VmHWM in /proc: Linux only")


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


async def bulk_map(address: str, count: int) -> float:
    """Seconds for one ``map`` of ``count`` calls; raises unless every
    result is its call's."""
    async with Client(address) as client:
        started = anyio.current_time()
        results = await client.map("examples.tasks.add", ((i, 0) for i in range(count)))
        took = anyio.current_time() - started
    wrong = sum(1 for i, value in enumerate(results) if value != i)
    if len(results) != count or wrong:
        raise SystemExit(f"bulk map: {len(results):,} results for {count:,} calls, "
                         f"{wrong:,} not their call's")
    return took


def bulk(count: int) -> None:
    address = f"tcp://127.0.0.1:{free_tcp_ports(6)}"
    control = start("config/control.toml", control_env(address))
    try:
        anyio.run(answered, address, backend="trio")
        before = resident_bytes(control.pid)
        took = anyio.run(bulk_map, address, count, backend="trio")
        peak = peak_bytes(control.pid)
    finally:
        stop(control)
    print(f"  bulk: one map of {count:,} add(i, 0) calls, store bound 100,000 records: "
          f"every result back and its call's, in {took:,.1f} s ({count / took:,.0f} tasks/s); "
          f"control plane resident {before / 2**20:,.0f} MiB before, peak {peak / 2**20:,.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--bulk", type=int, default=0, metavar="N",
                        help="also one map of N calls, every result checked")
    args = parser.parse_args()
    queued = [per_task(args.tasks, queued=True) for _ in range(args.runs)]
    stored = [per_task(args.tasks, queued=False) for _ in range(args.runs)]
    print(f"control plane, {args.tasks:,} no-op tasks, median of {args.runs} runs")
    print(f"  queued: {statistics.median(queued):,.0f} bytes per task "
          f"(runs: {', '.join(f'{x:,.0f}' for x in queued)})")
    print(f"  stored: {statistics.median(stored):,.0f} bytes per result record "
          f"(runs: {', '.join(f'{x:,.0f}' for x in stored)})", flush=True)
    if args.bulk:
        bulk(args.bulk)


if __name__ == "__main__":
    main()
