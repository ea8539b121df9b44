"""Request/reply over NNG contexts: a ``rep`` wire answering a ``RequestWire``.

Two figures, each for a client under trio and under asyncio:

- latency: 1,000 sequential round trips of a 100 B request answered by a
  100 B reply (after 100 untimed ones); p50 and p99 of each round trip.
- throughput: ``--in-flight`` (8) requests in flight at once, each task
  sending its next request as soon as its reply arrives; requests/s over
  ``--seconds`` after ``--warm-up`` seconds.

Each run is independent: this process (trio) opens a fresh rep listener with
``--in-flight`` contexts and as many serving tasks that echo each request,
then runs the client as a separate process (this script with ``--client``),
which reports its figures as one JSON line. The table shows the median of
``--runs`` runs. Server and client are separate processes on TCP loopback,
as a control plane and a web app would be.

Run: ``.venv/bin/python benchmarks/reqrep.py`` (about 40 s). Prints figures
only; nothing here is a test.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

import anyio
import trio

from actors.nng import NngWire, open_request_wire, open_wire

FRAME = b"r" * 100
MAX_FRAME = 1 << 16
LIBRARIES = ["trio", "asyncio"]


async def serve(wire: NngWire) -> None:
    while True:
        received = await wire.receive_frame()
        await wire.send_frame(received.frame, to=received.reply_to)


async def client_latency(address: str, count: int) -> dict[str, float]:
    wire = await open_request_wire(address, recv_max_size=MAX_FRAME, contexts=1)
    try:
        for _ in range(100):  # connect, warm up
            await wire.request(FRAME)
        times = []
        for _ in range(count):
            start = time.perf_counter()
            await wire.request(FRAME)
            times.append(time.perf_counter() - start)
    finally:
        await wire.aclose()
    cuts = statistics.quantiles(times, n=100)
    return {"p50_ms": cuts[49] * 1e3, "p99_ms": cuts[98] * 1e3}


async def client_throughput(
    address: str, in_flight: int, warm_up: float, seconds: float
) -> dict[str, float]:
    wire = await open_request_wire(address, recv_max_size=MAX_FRAME, contexts=in_flight)
    done = 0
    try:
        await wire.request(FRAME)  # connected
        start = time.perf_counter() + warm_up
        stop = start + seconds
        counted_at_start = 0

        async def keep_asking() -> None:
            nonlocal done, counted_at_start
            while (now := time.perf_counter()) < stop:
                await wire.request(FRAME)
                done += 1
                if now < start:
                    counted_at_start = done

        async with anyio.create_task_group() as tasks:
            for _ in range(in_flight):
                tasks.start_soon(keep_asking)
    finally:
        await wire.aclose()
    return {"requests_per_s": (done - counted_at_start) / seconds}


async def one_run(library: str, case: str, arguments: argparse.Namespace) -> dict[str, float]:
    """Serve one client process; return what it measured."""
    server = await open_wire(
        "tcp://127.0.0.1:0",
        pattern="rep",
        mode="listen",
        recv_max_size=MAX_FRAME,
        contexts=arguments.in_flight,
    )
    address = server.name.rpartition(" ")[2]
    command = [sys.executable, __file__, "--client", address, "--library", library,
               "--case", case, "--in-flight", str(arguments.in_flight),
               "--warm-up", str(arguments.warm_up), "--seconds", str(arguments.seconds),
               "--count", str(arguments.count)]  # fmt: skip
    try:
        async with trio.open_nursery() as nursery:
            for _ in range(arguments.in_flight):
                nursery.start_soon(serve, server)
            with trio.fail_after(60):
                finished = await trio.run_process(command, capture_stdout=True)
            nursery.cancel_scope.cancel()
    finally:
        await server.aclose()
    result: dict[str, float] = json.loads(finished.stdout.decode().strip().splitlines()[-1])
    return result


async def main(arguments: argparse.Namespace) -> None:
    print(f"rep wire <- RequestWire, tcp://127.0.0.1, server (trio) and client in separate "
          f"processes; {len(FRAME)} B requests and replies; median of {arguments.runs} runs\n"
          f"latency: {arguments.count:,} sequential requests; throughput: "
          f"{arguments.in_flight} in flight, {arguments.seconds} s after {arguments.warm_up} s "
          f"warm-up\n")  # fmt: skip
    header = f"{'client':<8} {'p50 ms':>7} {'p99 ms':>7} {'req/s':>8}  runs (req/s)"
    print(header)
    print("-" * len(header))
    for library in LIBRARIES:
        latencies = [await one_run(library, "latency", arguments) for _ in range(arguments.runs)]
        rates = [await one_run(library, "throughput", arguments) for _ in range(arguments.runs)]
        p50 = statistics.median(r["p50_ms"] for r in latencies)
        p99 = statistics.median(r["p99_ms"] for r in latencies)
        rate = statistics.median(r["requests_per_s"] for r in rates)
        spread = " ".join(f"{r['requests_per_s']:,.0f}" for r in rates)
        print(f"{library:<8} {p50:>7.3f} {p99:>7.3f} {rate:>8,.0f}  {spread}")


def run_client(arguments: argparse.Namespace) -> None:
    """The client process: measure, print one JSON line."""
    measure: Callable[[], Awaitable[dict[str, float]]]
    if arguments.case == "latency":
        measure = functools.partial(client_latency, arguments.client, arguments.count)
    else:
        measure = functools.partial(
            client_throughput,
            arguments.client,
            arguments.in_flight,
            arguments.warm_up,
            arguments.seconds,
        )
    print(json.dumps(anyio.run(measure, backend=arguments.library)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--count", type=int, default=1000, help="sequential requests timed")
    parser.add_argument("--in-flight", type=int, default=8, help="requests at once (throughput)")
    parser.add_argument("--warm-up", type=float, default=1.0, help="untimed start (throughput)")
    parser.add_argument("--seconds", type=float, default=1.0, help="timed part (throughput)")
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--library", default="trio", choices=LIBRARIES, help=argparse.SUPPRESS)
    parser.add_argument("--case", default="latency", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.client:
        run_client(arguments)
    else:
        trio.run(main, arguments)
