"""What a workflow adds to its steps: a chord and a chain against the same
tasks run plainly.

Figures, each the median of ``--runs`` runs against one control plane
(``config/control.toml``, dashboard and journal off, the example tasks):

- **chord:** ``group`` of ``--members`` ``add(i, i)`` steps fanned in by
  ``tests.workflow.total``, end to end (``client.run``), against the same
  ``add`` calls by ``map`` and then ``total`` of their results;
- **chain:** ``--length`` steps of ``add(x, 1)``, each taking the result of
  the one before, end to end, against the same calls made one after another
  by the client (``submit``, its result into the next);
- **map:** ``upto(--members) | add.map(1) | total``: the same fan-out and
  fan-in with the list known only when the first step runs;
- **starts:** ``--starts`` workflows of two steps started at once (each
  by its own task of the client), all their results: workflows a second,
  against the same two calls made one after the other by as many tasks;
- the difference per step: what the control plane's Workflows actor adds.

``--journal``: with the journal on (a file in a temporary directory), as a
control plane runs by default: each workflow is written before it is
accepted, and each step as any task.

Run: ``.venv/bin/python benchmarks/workflows.py [--members 1000] [--length 100]
[--runs 5] [--journal]``. Prints figures only; nothing here is a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.pytest_plugin import free_tcp_ports  # noqa: E402
from benchmarks.scheduling import control_env  # noqa: E402
from benchmarks.throughput import start, stop  # noqa: E402
from examples.tasks import add  # noqa: E402
from fastworker import Client  # noqa: E402
from fastworker.workflows import chain, group  # noqa: E402
from tests.process.workflow_tasks import total, upto  # noqa: E402


async def many(client: Client, count: int, *, by_hand: bool = False) -> float:
    """Seconds to start ``count`` two-step workflows at once and have all
    their results (``by_hand``: the same two calls, one after the other)."""
    results: list[float] = []

    async def one(i: int) -> None:
        if by_hand:
            results.append(await client.submit(add, await client.submit(add, i, 1), 1))
        else:
            results.append(await client.run(add.s(i, 1) | add.s(1), timeout=600))

    began = time.perf_counter()
    async with anyio.create_task_group() as group_:
        for i in range(count):
            group_.start_soon(one, i)
    assert sorted(results) == [i + 2 for i in range(count)]
    return time.perf_counter() - began


async def one_run(address: str, members: int, length: int, starts: int) -> tuple[float, ...]:
    """Seconds: chord as a workflow, chord by hand, chain as a workflow,
    chain by hand (each checked against the expected result)."""
    async with Client(address) as client:
        await client.submit(add, 0, 0)  # connected and warm
        began = time.perf_counter()
        assert await client.run(group(add.s(i, i) for i in range(members)) | total.s(),
                                timeout=600) == sum(2 * i for i in range(members))
        chord = time.perf_counter() - began
        began = time.perf_counter()
        values = await client.map(add, [(i, i) for i in range(members)])
        assert await client.submit(total, values) == sum(2 * i for i in range(members))
        chord_plain = time.perf_counter() - began
        began = time.perf_counter()
        assert await client.run(chain(add.s(0, 1), *(add.s(1) for _ in range(length - 1))),
                                timeout=600) == length
        chained = time.perf_counter() - began
        began = time.perf_counter()
        value = 0
        for _ in range(length):
            value = await client.submit(add, value, 1)
        assert value == length
        chain_plain = time.perf_counter() - began
        began = time.perf_counter()
        assert await client.run(upto.s(members) | add.map(1) | total.s(),
                                timeout=600) == sum(i + 1 for i in range(members))
        mapped = time.perf_counter() - began
        started = await many(client, starts)
        started_plain = await many(client, starts, by_hand=True)
    return chord, chord_plain, chained, chain_plain, mapped, started, started_plain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--starts", type=int, default=1000)
    parser.add_argument("--journal", action="store_true", help="with the journal on")
    args = parser.parse_args()
    address = f"tcp://127.0.0.1:{free_tcp_ports(6)}"
    env = control_env(address)
    env["FASTWORKER_TASKS"] = "examples.tasks,tests.process.workflow_tasks"
    with tempfile.TemporaryDirectory() as directory:
        if args.journal:
            env["FASTWORKER_JOURNAL"] = str(Path(directory) / "fastworker.journal")
        control = start("config/control.toml", env)
        try:
            runs = [anyio.run(one_run, address, args.members, args.length, args.starts,
                              backend="trio") for _ in range(args.runs)]
        finally:
            stop(control)
    chord, chord_plain, chained, chain_plain, mapped, started, started_plain = (
        statistics.median(r[i] for r in runs) for i in range(7))
    steps = args.members + 1
    print(f"medians of {args.runs} runs, journal {'on' if args.journal else 'off'}:")
    print(f"  chord of {args.members:,} members: workflow {chord * 1000:,.0f} ms, by hand "
          f"(map, then the fan-in) {chord_plain * 1000:,.0f} ms; "
          f"{(chord - chord_plain) / steps * 1e6:,.0f} µs more a step")
    print(f"  chain of {args.length} steps: workflow {chained * 1000:,.0f} ms, by hand "
          f"(submit, result into the next) {chain_plain * 1000:,.0f} ms; "
          f"{(chained - chain_plain) / args.length * 1e6:,.0f} µs a step "
          f"({chained / args.length * 1e6:,.0f} against {chain_plain / args.length * 1e6:,.0f})")
    print(f"  map over {args.members:,} items: workflow {mapped * 1000:,.0f} ms (the chord "
          f"above: {chord * 1000:,.0f} ms)")
    print(f"  {args.starts:,} two-step workflows started at once: {started * 1000:,.0f} ms, "
          f"{args.starts / started:,.0f} workflows/s; by hand (two submits one after the "
          f"other, {args.starts:,} at once) {started_plain * 1000:,.0f} ms")


if __name__ == "__main__":
    main()
