"""A public test kit for actors and topologies: in-memory wires, scripted
network faults, and actors that crash on cue. Our tests use it, and so can
yours (docs/actors.md, "Testing under faults").

- ``memory_wire_pair``, ``FaultyWire``, ``CuttableWire``, ``cut``: wires
  (see ``actors._faults``).
- ``crash_after(cls, n)``: a subclass of an actor that raises
  ``InjectedCrash`` on its n-th message, to exercise supervision.
- ``RawRequests``: stamped request frames made by hand, for tests that send
  raw frames to a serving edge (and replay them).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, final

from actors._faults import CutStats as CutStats
from actors._faults import CuttableWire as CuttableWire
from actors._faults import FaultStats as FaultStats
from actors._faults import FaultyWire as FaultyWire
from actors._faults import cut as cut
from actors._memory import MemoryWire as MemoryWire
from actors._memory import memory_wire_pair as memory_wire_pair
from actors.actor import Actor
from actors.errors import FrameError, StaleFrame
from actors.frame import Framer
from actors.freshness import Stamper

A = TypeVar("A", bound=type[Actor[Any]])

__all__ = [
    "CutStats",
    "CuttableWire",
    "FaultStats",
    "FaultyWire",
    "InjectedCrash",
    "MemoryWire",
    "RawRequests",
    "crash_after",
    "cut",
    "memory_wire_pair",
]


class InjectedCrash(Exception):
    """Raised by an actor made with ``crash_after``, on cue."""


def crash_after(cls: A, n: int, *, times: int = 1) -> A:
    """A subclass of the actor class ``cls`` that crashes on its ``n``-th
    message.

    Each instance counts the messages it is given (in ``handle_batch``,
    so calls answered by ``handle`` alone do not count); the one that takes
    it to ``n`` is not handled and ``InjectedCrash`` is raised instead. Only
    the first ``times`` instances to get there crash, so a restarted actor
    can be made to crash again (``times=2``) or to recover (``times=1``).

    Example::

        topology.add("worker", crash_after(Worker, 3, times=2))
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    remaining = [times]

    class Crashing(cls):  # type: ignore[valid-type, misc]
        _handled = 0

        async def handle_batch(self, messages: list[Any]) -> None:
            if remaining[0] > 0 and self._handled + len(messages) >= n:
                before = n - 1 - self._handled
                if before:
                    await super().handle_batch(messages[:before])
                self._handled = n
                remaining[0] -= 1
                self.put_back(messages[before + 1 :])
                raise InjectedCrash(f"{self.name}: injected crash at message {n}")
            self._handled += len(messages)
            await super().handle_batch(messages)

    Crashing.__name__ = Crashing.__qualname__ = f"{cls.__name__}CrashingAfter{n}"
    Crashing.__module__ = cls.__module__
    return Crashing  # type: ignore[return-value]


@final
class RawRequests:
    """Request frames for a ``ServeEdge``, stamped by hand, and the raw
    exchange around them: what a test needs to capture a frame and send it
    again.

    Args:
        framer: packs and unpacks (its secret signs).
        ask: sends one request frame and returns the reply frame (a
            ``RequestWire.request``, or a send and receive on a memory wire).

    Example::

        raw = RawRequests(framer, functools.partial(wire.request, timeout=5))
        frame, answers = await raw.send([Ping()])   # the epoch is learnt here
        with pytest.raises(StaleFrame):
            await raw.resend(frame)                  # a replay is refused
    """

    def __init__(self, framer: Framer, ask: Callable[[bytes], Awaitable[bytes]]) -> None:
        self.framer = framer
        self.stamper = Stamper()
        self._ask = ask

    def frame(self, messages: Sequence[object]) -> bytes:
        """A frame of ``messages`` with the next stamp for the epoch learnt."""
        return self.framer.pack(messages, stamp=self.stamper.next())

    async def learn_epoch(self) -> int:
        """Ask with no epoch; learn the server's from its refusal."""
        try:
            await self.resend(self.frame(()))
        except StaleFrame as refusal:
            self.stamper.learn(refusal.epoch)
            return refusal.epoch
        raise FrameError("a request stamped for no epoch was accepted")

    async def send(self, messages: Sequence[object]) -> tuple[bytes, list[object]]:
        """Send ``messages`` in a fresh frame (learning the epoch first if
        refused); return the frame that was answered and the answers."""
        for _ in range(2):
            frame = self.frame(messages)
            try:
                return frame, await self.resend(frame)
            except StaleFrame as refusal:
                self.stamper.learn(refusal.epoch)
        raise FrameError("refused twice as stale")

    async def resend(self, frame: bytes) -> list[object]:
        """Send ``frame`` as it is; the answers.

        Raises:
            StaleFrame: the server refused it (a replay, or another epoch).
        """
        return self.framer.unpack(await self._ask(frame))
