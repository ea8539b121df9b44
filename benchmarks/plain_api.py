"""The plain API, the way users write it: one task at a time, against the
floor of the transport, measured in the same run.

Figures, each the median of ``--runs`` runs, against a control plane alone
(``config/control.toml``, dashboard and journal off, async no-op tasks):

- **floor:** a bare pynng Req0/Rep0 echo of 100 bytes, sync, one request
  at a time (round trips/s): what one task at a time cannot beat;
- **sequential, trio / asyncio:** ``task_id = await client.delay(...)``
  then ``await client.result(task_id)``, one task at a time (tasks/s, and
  as a share of the floor);
- **SyncClient:** the same from blocking code;
- **pipelined:** ``await pipe.delay(...)`` in ``async with
  client.pipeline()``, one call at a time (5x the tasks): tasks/s
  accepted, and run with every result back; trio, asyncio, SyncClient;
- **submit:** ``await client.submit(...)`` one at a time: the full task
  round trip, p50 and p99;
- **many producers:** ``--producers`` processes, each sending
  ``client.delay(...)`` one at a time (the web-app pattern), together
  (tasks/s), and the control plane's CPU per task meanwhile; against the
  floor of that pattern: as many processes, each a bare sync pynng Req0,
  one request at a time, to one Python Rep0 echo (round trips/s, and the
  echo's CPU per round trip).

Run: ``.venv/bin/python benchmarks/plain_api.py [--tasks 3000] [--runs 3]
[--producers 8]``. Prints figures only; nothing here is a test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import pynng

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actors.pytest_plugin import free_tcp_ports  # noqa: E402
from benchmarks.scheduling import control_env, ready  # noqa: E402
from benchmarks.throughput import cpu_seconds, latency, percentile, start, stop  # noqa: E402
from fastworker import Client, SyncClient  # noqa: E402

TASK = "examples.noop"
PAYLOAD = b"x" * 100


def floor(count: int) -> float:
    """Round trips/s of a bare sync pynng Req0/Rep0 echo over TCP loopback."""
    address = f"tcp://127.0.0.1:{free_tcp_ports(1)}"
    with pynng.Rep0(listen=address) as rep, pynng.Req0(dial=address) as req:
        def echo() -> None:
            with contextlib.suppress(pynng.Closed):
                while True:
                    rep.send(rep.recv())

        server = threading.Thread(target=echo, daemon=True)
        server.start()
        for _ in range(200):
            req.send(PAYLOAD)
            req.recv()
        started = time.perf_counter()
        for _ in range(count):
            req.send(PAYLOAD)
            req.recv()
        return count / (time.perf_counter() - started)


async def sequential(address: str, count: int) -> float:
    """Tasks/s of ``delay`` then ``result``, one task at a time."""
    async with Client(address) as client:
        for _ in range(100):
            await client.result(await client.delay(TASK))
        started = time.perf_counter()
        for _ in range(count):
            await client.result(await client.delay(TASK))
        return count / (time.perf_counter() - started)


def sequential_sync(address: str, count: int) -> float:
    with SyncClient(address) as client:
        for _ in range(100):
            client.result(client.delay(TASK))
        started = time.perf_counter()
        for _ in range(count):
            client.result(client.delay(TASK))
        return count / (time.perf_counter() - started)


async def pipelined(address: str, count: int) -> tuple[float, float]:
    """Tasks/s of ``await pipe.delay(...)`` one call at a time: accepted
    (the pipeline's block ends once every submission is answered), and run
    (every result back too)."""
    async with Client(address) as client:
        async with client.pipeline() as pipe:
            warm = [await pipe.delay(TASK) for _ in range(200)]
        await client.results(warm)
        started = time.perf_counter()
        async with client.pipeline() as pipe:
            ids = [await pipe.delay(TASK) for _ in range(count)]
        accepted = time.perf_counter() - started
        await client.results(ids)
        return count / accepted, count / (time.perf_counter() - started)


def pipelined_sync(address: str, count: int) -> tuple[float, float]:
    with SyncClient(address) as client:
        with client.pipeline() as pipe:
            warm = [pipe.delay(TASK) for _ in range(200)]
        client.map(TASK, [()] * 10)
        started = time.perf_counter()
        with client.pipeline() as pipe:
            ids = [pipe.delay(TASK) for _ in range(count)]
        accepted = time.perf_counter() - started
        client.results(ids)
        del warm
        return count / accepted, count / (time.perf_counter() - started)


def floor_producer(address: str, count: int) -> None:
    """One process of the many-producers floor: a bare sync Req0, one
    request at a time once stdin says go."""
    with pynng.Req0(dial=address) as req:
        for _ in range(100):
            req.send(PAYLOAD)
            req.recv()
        print("ready", flush=True)
        sys.stdin.readline()
        began = time.time()
        for _ in range(count):
            req.send(PAYLOAD)
            req.recv()
        print(json.dumps({"began": began, "ended": time.time()}), flush=True)


def producer(address: str, count: int) -> None:
    """One producer process: ``delay`` one at a time once stdin says go;
    prints its start and end times as one JSON line."""
    with SyncClient(address) as client:
        client.delay(TASK)  # connected
        print("ready", flush=True)
        sys.stdin.readline()
        began = time.time()
        for _ in range(count):
            client.delay(TASK)
        print(json.dumps({"began": began, "ended": time.time()}), flush=True)


def many(address: str, control_pid: int, producers: int, count: int,
         flag: str = "--produce") -> tuple[float, float]:
    """Tasks/s of ``producers`` processes sending ``count`` each, and the
    CPU seconds per task of ``control_pid`` meanwhile."""
    procs = [subprocess.Popen(
        [sys.executable, __file__, flag, address, "--tasks", str(count)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        for _ in range(producers)]
    for proc in procs:  # each has connected
        assert proc.stdout is not None
        proc.stdout.readline()
    cpu_before = cpu_seconds(control_pid)
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    spans = [json.loads(proc.communicate(timeout=600)[0]) for proc in procs]
    cpu = cpu_seconds(control_pid) - cpu_before
    total = producers * count
    wall = max(s["ended"] for s in spans) - min(s["began"] for s in spans)
    return total / wall, cpu / total


def many_floor(producers: int, count: int) -> tuple[float, float]:
    """Round trips/s of ``producers`` bare Req0 processes against one
    Python Rep0 echo, and the echo's CPU seconds per round trip."""
    address = f"tcp://127.0.0.1:{free_tcp_ports(1)}"
    with pynng.Rep0(listen=address) as rep:
        def echo() -> None:
            with contextlib.suppress(pynng.Closed):
                while True:
                    rep.send(rep.recv())

        threading.Thread(target=echo, daemon=True).start()
        return many(address, os.getpid(), producers, count, "--floor-produce")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=3000, help="tasks per measurement")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--producers", type=int, default=8)
    parser.add_argument("--produce", metavar="ADDRESS", help=argparse.SUPPRESS)
    parser.add_argument("--floor-produce", metavar="ADDRESS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.produce:
        producer(args.produce, args.tasks)
        return
    if args.floor_produce:
        floor_producer(args.floor_produce, args.tasks)
        return
    address = f"tcp://127.0.0.1:{free_tcp_ports(6)}"
    control = start("config/control.toml", control_env(address))
    try:
        anyio.run(ready, address, backend="trio")
        rows: dict[str, list[float]] = {k: [] for k in (
            "floor", "trio", "asyncio", "sync", "pipe_trio", "pipe_trio_run", "pipe_asyncio",
            "pipe_asyncio_run", "pipe_sync", "pipe_sync_run", "p50", "p99", "many", "cpu",
            "many_floor", "floor_cpu")}
        for _ in range(args.runs):
            rows["floor"].append(floor(args.tasks))
            rows["trio"].append(anyio.run(sequential, address, args.tasks, backend="trio"))
            rows["asyncio"].append(anyio.run(sequential, address, args.tasks,
                                             backend="asyncio"))
            rows["sync"].append(sequential_sync(address, args.tasks))
            for key, measure in (("pipe_trio", lambda: anyio.run(
                    pipelined, address, args.tasks * 5, backend="trio")), ("pipe_asyncio",
                    lambda: anyio.run(pipelined, address, args.tasks * 5, backend="asyncio")),
                    ("pipe_sync", lambda: pipelined_sync(address, args.tasks * 5))):
                accepted, ran = measure()
                rows[key].append(accepted)
                rows[key + "_run"].append(ran)
            samples = anyio.run(latency, address, TASK, args.tasks, backend="trio")
            rows["p50"].append(percentile(samples, 0.5) * 1e3)
            rows["p99"].append(percentile(samples, 0.99) * 1e3)
            rate, cpu = many(address, control.pid, args.producers, args.tasks // 2)
            rows["many"].append(rate)
            rows["cpu"].append(cpu * 1e6)
            rate, cpu = many_floor(args.producers, args.tasks // 2)
            rows["many_floor"].append(rate)
            rows["floor_cpu"].append(cpu * 1e6)
    finally:
        stop(control)
    med = {k: statistics.median(v) for k, v in rows.items()}
    runs = {k: ", ".join(f"{x:,.0f}" if x >= 100 else f"{x:.2f}" for x in v)
            for k, v in rows.items()}
    print(f"control plane alone, async no-op tasks ({TASK}), {args.tasks:,} per "
          f"measurement, median of {args.runs} runs", flush=True)
    print(f"  floor: bare pynng req/rep, 100 B, sync: {med['floor']:,.0f} round trips/s "
          f"(runs: {runs['floor']})")
    for key, what in (("trio", "await delay() then result(), trio"),
                      ("asyncio", "await delay() then result(), asyncio"),
                      ("sync", "SyncClient delay() then result()")):
        print(f"  {what}: {med[key]:,.0f} tasks/s, {med[key] / med['floor']:.2f} of the "
              f"floor (runs: {runs[key]})")
    for key, what in (("pipe_trio", "pipelined await pipe.delay(), trio"),
                      ("pipe_asyncio", "pipelined await pipe.delay(), asyncio"),
                      ("pipe_sync", "pipelined pipe.delay(), SyncClient")):
        print(f"  {what}: {med[key]:,.0f} tasks/s accepted, {med[key + '_run']:,.0f} tasks/s "
              f"run with results back (runs: {runs[key]} / {runs[key + '_run']})")
    print(f"  submit() one at a time: p50 {med['p50']:.2f} ms, p99 {med['p99']:.2f} ms "
          f"(runs: {runs['p50']} / {runs['p99']})")
    print(f"  {args.producers} producer processes, delay() one at a time: "
          f"{med['many']:,.0f} tasks/s together, control plane CPU {med['cpu']:.0f} us "
          f"per task (runs: {runs['many']} / {runs['cpu']})")
    print(f"  their floor: {args.producers} bare pynng Req0 processes, one Python Rep0 echo: "
          f"{med['many_floor']:,.0f} round trips/s, echo CPU {med['floor_cpu']:.0f} us per "
          f"round trip; producers at {med['many'] / med['many_floor']:.2f} of it "
          f"(runs: {runs['many_floor']} / {runs['floor_cpu']})", flush=True)


if __name__ == "__main__":
    main()
