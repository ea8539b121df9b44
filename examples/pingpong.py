"""Two actors talking through a pair of NNG edges.

``Pinger`` sends ``Ping(n)``; ``Ponger`` answers ``Pong(n)``; each goes
through an edge, so every message crosses a real socket. The same
composition is in ``examples/pingpong.toml`` (run it with
``fastworker run examples/pingpong.toml``); this file builds it in Python::

    python examples/pingpong.py --count 5
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
from pathlib import Path
from typing import Any

import attrs
import trio

if __package__ in (None, ""):  # run as a script: make `examples` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors import Actor, Codec, Topology, open_node
from actors.log import configure

log = logging.getLogger("examples.pingpong")


@attrs.frozen(kw_only=True)
class Ping:
    """Pinger -> Ponger: the n-th ping, stamped with the sender's clock."""

    n: int
    sent_at: float


@attrs.frozen(kw_only=True)
class Pong:
    """Ponger -> Pinger: the answer to ping n, carrying its stamp back."""

    n: int
    sent_at: float


#: What the edges put on the wire.
codec = Codec([Ping, Pong], protocol=1)


@attrs.frozen(kw_only=True)
class PingerOptions:
    """Attributes:
    interval: seconds between a pong and the next ping.
    count: stop after this many pongs (0: never).
    """

    interval: float = attrs.field(default=1.0, validator=attrs.validators.ge(0))
    count: int = attrs.field(default=0, validator=attrs.validators.ge(0))


class Pinger(Actor[Pong]):
    """Pings its ``peer`` and logs each round trip."""

    Options = PingerOptions
    refs_required = ("peer",)

    def __init__(self, options: PingerOptions, context: Any, *, done: trio.Event | None = None):
        super().__init__(options, context)
        self.done = done
        self.round_trips: list[float] = []

    async def setup(self, nursery: trio.Nursery) -> str | None:
        self._nursery = nursery
        nursery.start_soon(self._ping, 1, 0.0)
        return f"pinging every {self.options.interval:g} s"

    async def _ping(self, n: int, delay: float) -> None:
        await trio.sleep(delay)
        await self.refs["peer"].send(Ping(n=n, sent_at=trio.current_time()))

    async def handle(self, message: Pong) -> None:
        round_trip = trio.current_time() - message.sent_at
        self.round_trips.append(round_trip)
        log.info("pong %d after %.3f ms", message.n, round_trip * 1000)
        count = self.options.count
        if count and message.n >= count:
            log.info(
                "done: %d pongs, median round trip %.3f ms",
                count,
                statistics.median(self.round_trips) * 1000,
            )
            if self.done is not None:
                self.done.set()
            return
        self._nursery.start_soon(self._ping, message.n + 1, self.options.interval)


class Ponger(Actor[Ping]):
    """Answers every ping to its ``reply`` ref."""

    refs_required = ("reply",)

    async def handle(self, message: Ping) -> None:
        await self.refs["reply"].send(Pong(n=message.n, sent_at=message.sent_at))


def build(address: str, *, count: int, interval: float, done: trio.Event) -> Topology:
    """The composition of ``pingpong.toml``, in Python."""
    edge = {"address": address, "codec": "examples.pingpong:codec"}
    return (
        Topology(name="pingpong")
        .add("ping", Pinger, refs={"peer": "ping_edge"}, params={"done": done},
             count=count, interval=interval)
        .add("ping_edge", "actors.Edge", refs={"Pong": "ping"}, mode="listen", **edge)
        .add("pong_edge", "actors.Edge", refs={"Ping": "pong"}, mode="dial", **edge)
        .add("pong", Ponger, refs={"reply": "pong_edge"})
    )


async def main(address: str, count: int, interval: float) -> None:
    done = trio.Event()
    async with open_node(build(address, count=count, interval=interval, done=done)):
        await done.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="tcp://127.0.0.1:5600")
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument("--interval", type=float, default=0.0)
    arguments = parser.parse_args()
    configure()
    # Run the importable module's main, not this __main__ copy: the edges'
    # codec is examples.pingpong:codec, and its message classes must be the
    # very classes the actors send.
    from examples import pingpong

    trio.run(pingpong.main, arguments.address, arguments.count, arguments.interval)
