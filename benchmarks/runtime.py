"""What the actor runtime costs: messages per second through actors in one
process, and through a pair of NNG edges over TCP loopback.

    .venv/bin/python benchmarks/runtime.py [--runs 5] [--count 200000]

Prints the median of several runs (these machines are shared and noisy).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors import Actor, Codec, Topology, open_node  # noqa: E402
from actors.pytest_plugin import free_tcp_port  # noqa: E402


@attrs.frozen
class Item:
    n: int


codec = Codec([Item], protocol=1)


class Forward(Actor[Item]):
    refs_required = ("out",)

    async def handle_batch(self, messages: list[Item]) -> None:
        await self.refs["out"].send_batch(messages)


class Count(Actor[Item]):
    def __init__(self, options: Any, context: Any, *, target: int, done: trio.Event) -> None:
        super().__init__(options, context)
        self.target, self.done, self.count = target, done, 0

    async def handle_batch(self, messages: list[Item]) -> None:
        self.count += len(messages)
        if self.count >= self.target:
            self.done.set()


class CountEach(Count):
    """The same counter through the per-message path (handle)."""

    async def handle_batch(self, messages: list[Item]) -> None:
        for message in messages:
            await self.handle(message)

    async def handle(self, message: Item) -> None:
        self.count += 1
        if self.count >= self.target:
            self.done.set()


async def through(topology_for: Any, count: int, chunk: int) -> float:
    done = trio.Event()
    topology = topology_for(count, done)
    items = [Item(n) for n in range(count)]
    async with open_node(topology) as node:
        start = time.perf_counter()
        entry = node.refs["entry"]
        if chunk == 1:
            for item in items:
                await entry.send(item)
        else:
            for i in range(0, count, chunk):
                await entry.send_batch(items[i : i + chunk])
        await done.wait()
        elapsed = time.perf_counter() - start
    return count / elapsed


def local(counter: type[Count]) -> Any:
    def build(count: int, done: trio.Event) -> Topology:
        return (
            Topology()
            .add("entry", Forward, refs={"out": "sink"})
            .add("sink", counter, params={"target": count, "done": done})
        )

    return build


def edges(io: str) -> Any:
    def build(count: int, done: trio.Event) -> Topology:
        address = f"tcp://127.0.0.1:{free_tcp_port()}"
        edge = {"address": address, "codec": f"{__name__}:codec", "io": io}
        return (
            Topology()
            .add("entry", "actors.Edge", mode="dial", **edge)
            .add("in", "actors.Edge", refs={"Item": "sink"}, mode="listen", **edge)
            .add("sink", Count, params={"target": count, "done": done})
        )

    return build


CASES = [
    ("2 actors, send() each, handle_batch", local(Count), 1),
    ("2 actors, send() each, handle per message", local(CountEach), 1),
    ("2 actors, send_batch(100)", local(Count), 100),
    ("edge pair over tcp, io=poll, send() each", edges("poll"), 1),
    ("edge pair over tcp, io=async, send() each", edges("async"), 1),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--count", type=int, default=200_000)
    args = parser.parse_args()
    print(f"{'case':48} {'median msg/s':>14} {'min':>10} {'max':>10}   ({args.runs} runs, "
          f"{args.count} messages)", flush=True)
    for name, build, chunk in CASES:
        rates = [trio.run(through, build, args.count, chunk) for _ in range(args.runs)]
        print(
            f"{name:48} {statistics.median(rates):>14,.0f} {min(rates):>10,.0f} "
            f"{max(rates):>10,.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
