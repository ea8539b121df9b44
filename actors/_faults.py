"""Scripted network faults, for tests.

This is the fault kit behind ``actors.testing``. Everything here speaks the
``actors.wire.Wire`` Protocol, so an edge, a client or a whole topology can
run over it unchanged, in our tests and in yours:

- ``memory_wire_pair()`` (``actors._memory``) connects two ends through
  bounded memory channels, with the backpressure and close behaviour of a
  real socket.
- ``FaultyWire`` wraps a wire and drops, duplicates, delays or reorders the
  frames sent through it, reproducibly for a given seed, and counts what it
  did in ``FaultStats``.
- ``CuttableWire`` wraps a wire whose link can be cut and restored, by hand,
  for a span of trio time, or with ``with cut(wire): ...``.

Time is always trio time, so a test under ``MockClock(autojump_threshold=0)``
moves through a three-second delay or a ten-second cut at once.

Example::

    a, b = memory_wire_pair(capacity=100)
    async with FaultyWire(a, drop=0.1, delay=(0.0, 3.0), seed=1) as lossy:
        for n in range(100):
            await lossy.send_frame(b"%d" % n)
        await lossy.flush()  # every frame not dropped is now buffered for b
        print(lossy.stats)  # FaultStats(sent=100, dropped=..., delayed=...)
"""

from __future__ import annotations

import contextlib
import heapq
import math
import random
from collections.abc import Iterator
from types import TracebackType
from typing import final

import attrs
import trio

from actors.wire import Received, Wire

__all__ = [
    "CutStats",
    "CuttableWire",
    "FaultStats",
    "FaultyWire",
    "cut",
]


@final
@attrs.frozen(kw_only=True)
class FaultStats:
    """What a ``FaultyWire`` has done so far.

    Once ``FaultyWire.flush`` has returned, the inner wire has been handed
    exactly ``sent - dropped + duplicated`` frames.
    """

    sent: int  #: frames given to ``send_frame``
    dropped: int  #: frames that vanished
    duplicated: int  #: frames sent twice
    delayed: int  #: frame copies held for a delay before going out
    reordered: int  #: frames that went out after the frame sent next


@attrs.frozen
class _Outgoing:
    frame: bytes
    to: object
    delays: tuple[float, ...]  # one per copy to send


@attrs.frozen(order=True)
class _Delayed:
    due: float
    sequence: int  # ties on ``due`` go out in the order they were sent
    frame: bytes = attrs.field(order=False)
    to: object = attrs.field(order=False)


@final
class FaultyWire:
    """A wire that drops, duplicates, delays and reorders the frames sent through it.

    Faults apply to ``send_frame`` only; ``receive_frame`` passes straight
    through. For each frame, in order: it is dropped with probability
    ``drop``; else it is sent twice with probability ``dupe``; else, with
    probability ``reorder``, it is held back and sent after the next frame
    that goes out (one frame is held at a time); each copy then waits
    ``uniform(*delay)`` seconds of trio time. Random delays reorder frames as
    well. Every decision comes from ``random.Random(seed)`` with a fixed
    number of draws per frame, so a seed fixes which frames are dropped,
    duplicated, held and delayed by how long, whatever else is switched on.

    Delayed frames go out from a task the wire owns, so the sender never
    waits for a delay; that is why the wire is used as an async context
    manager. Leaving the block closes the wire and the wire it wraps; frames
    still delayed or held back then are lost, as on a link that goes down.
    Call ``flush`` first to deliver them.

    Args:
        inner: the wire to send through; the FaultyWire owns it from now on.
        drop: probability that a frame vanishes.
        dupe: probability that a frame is sent twice.
        delay: ``(low, high)`` seconds each frame waits, or ``None``.
        reorder: probability that a frame is held back behind the next one.
        seed: seed for the wire's own ``random.Random``.

    Raises:
        ValueError: if a probability is outside [0, 1] or ``delay`` is not
            ``(low, high)`` with ``0 <= low <= high``.

    Example::

        a, b = memory_wire_pair(capacity=1000)
        async with FaultyWire(a, drop=0.3, seed=7) as lossy:
            for n in range(1000):
                await lossy.send_frame(b"%d" % n)
            assert lossy.stats.dropped > 0  # b receives the other frames
    """

    def __init__(
        self,
        inner: Wire,
        *,
        drop: float = 0.0,
        dupe: float = 0.0,
        delay: tuple[float, float] | None = None,
        reorder: float = 0.0,
        seed: int = 0,
    ) -> None:
        for option, value in (("drop", drop), ("dupe", dupe), ("reorder", reorder)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(
                    f"FaultyWire {option}={value!r}: expected a probability between 0 and 1"
                )
        if delay is not None and not (len(delay) == 2 and 0.0 <= delay[0] <= delay[1]):
            raise ValueError(
                f"FaultyWire delay={delay!r}: expected (low, high) seconds "
                "with 0 <= low <= high, or None"
            )
        self._inner = inner
        self._drop = drop
        self._dupe = dupe
        self._delay = delay
        self._reorder = reorder
        self._random = random.Random(seed)
        self._sent = self._dropped = self._duplicated = self._delayed = self._reordered = 0
        self._held: _Outgoing | None = None
        self._queue: list[_Delayed] = []  # a heap, earliest due first
        self._queue_changed = trio.Event()
        self._pending = 0  # delayed copies not yet handed to the inner wire
        self._all_sent = trio.Event()
        self._stack: contextlib.AsyncExitStack | None = None
        self._cancel_scope = trio.CancelScope()  # replaced by the nursery's on entry
        self._closed = False

    async def __aenter__(self) -> FaultyWire:
        if self._stack is not None or self._closed:
            raise RuntimeError("a FaultyWire can be entered only once, and not after aclose")
        self._stack = contextlib.AsyncExitStack()
        nursery = await self._stack.enter_async_context(trio.open_nursery())
        self._cancel_scope = nursery.cancel_scope
        nursery.start_soon(self._send_delayed_frames)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._stack is not None
        try:
            await self.aclose()
        finally:
            # The nursery exits as though the body had finished, and the
            # body's own exception, if any, carries on unchanged instead of
            # arriving wrapped in an ExceptionGroup.
            await self._stack.aclose()

    @property
    def name(self) -> str:
        """The inner wire's name."""
        return self._inner.name

    @property
    def stats(self) -> FaultStats:
        """A snapshot of what the wire has done so far."""
        return FaultStats(
            sent=self._sent,
            dropped=self._dropped,
            duplicated=self._duplicated,
            delayed=self._delayed,
            reordered=self._reordered,
        )

    async def send_frame(self, frame: bytes, *, to: object = None) -> None:
        """Send one frame through the faults to the inner wire.

        Waits as the inner wire's ``send_frame`` does, except for delayed
        frames, which are queued and never make the sender wait.

        Raises:
            RuntimeError: if the wire was not entered with ``async with``.
            trio.ClosedResourceError: if the wire is closed.
        """
        self._check_open()
        self._sent += 1
        random_ = self._random
        # Always five draws a frame, so one fault's choices do not depend on
        # which other faults are switched on.
        dropped = random_.random() < self._drop
        duplicated = random_.random() < self._dupe
        held = random_.random() < self._reorder
        low, high = self._delay or (0.0, 0.0)
        delays = (random_.uniform(low, high), random_.uniform(low, high))
        if dropped:
            self._dropped += 1
            await trio.lowlevel.checkpoint()
            return
        if duplicated:
            self._duplicated += 1
        outgoing = _Outgoing(frame, to, delays if duplicated else delays[:1])
        if held and self._held is None:
            self._held = outgoing
            await trio.lowlevel.checkpoint()
            return
        released, self._held = self._held, None
        await self._emit(outgoing)
        if released is not None:
            self._reordered += 1
            await self._emit(released)

    async def receive_frame(self) -> Received:
        """Wait for the next frame from the inner wire; no faults apply."""
        return await self._inner.receive_frame()

    async def flush(self) -> None:
        """Send the held-back frame now, and wait until every delayed frame is out.

        Raises:
            RuntimeError: if the wire was not entered with ``async with``.
            trio.ClosedResourceError: if the wire is closed, or is closed
                while the flush waits.
        """
        self._check_open()
        released, self._held = self._held, None
        if released is not None:
            await self._emit(released)
        while self._pending and not self._closed:
            await self._all_sent.wait()
        if self._closed:
            raise trio.ClosedResourceError("this FaultyWire was closed before its frames went out")
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        """Close the wire and the inner wire; delayed and held frames are lost."""
        self._closed = True
        self._held = None
        self._all_sent.set()  # wakes a flush waiting in another task, to raise
        try:
            await self._inner.aclose()
        finally:
            # Last: the caller may run inside this scope (``async with``),
            # and closing the inner wire must not be cancelled by it.
            self._cancel_scope.cancel()

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this FaultyWire is closed")
        if self._stack is None:
            raise RuntimeError(
                "a FaultyWire sends from a task it owns; "
                "use it as `async with FaultyWire(inner, ...) as wire:`"
            )

    async def _emit(self, outgoing: _Outgoing) -> None:
        if self._delay is None:
            for _ in outgoing.delays:
                await self._inner.send_frame(outgoing.frame, to=outgoing.to)
            return
        if not self._pending:
            self._all_sent = trio.Event()  # set again once the queue is empty
        now = trio.current_time()
        for seconds in outgoing.delays:
            self._delayed += 1
            self._pending += 1
            item = _Delayed(now + seconds, self._delayed, outgoing.frame, outgoing.to)
            heapq.heappush(self._queue, item)
        self._queue_changed.set()
        await trio.lowlevel.checkpoint()

    async def _send_delayed_frames(self) -> None:
        # One task sends every delayed frame, earliest due first, so frames
        # due at the same moment keep their order and the task count stays
        # at one however many frames are in flight.
        while True:
            while self._queue and self._queue[0].due <= trio.current_time():
                item = heapq.heappop(self._queue)
                # If the link went away under the frame, the frame is lost.
                with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
                    await self._inner.send_frame(item.frame, to=item.to)
                self._pending -= 1
                if not self._pending:
                    self._all_sent.set()
            self._queue_changed = trio.Event()
            with trio.move_on_at(self._queue[0].due if self._queue else math.inf):
                await self._queue_changed.wait()


@final
@attrs.frozen(kw_only=True)
class CutStats:
    """Frames a ``CuttableWire`` lost while cut."""

    sent_lost: int  #: frames sent through the wire while cut
    received_lost: int  #: frames that arrived from the peer while cut


@final
class CuttableWire:
    """A wire whose link can be cut and restored, as a dead network link is.

    While cut, frames sent are lost and the sender is not told, and frames
    arriving from the peer are lost too; after ``restore`` traffic flows
    again. A frame counts as arriving when ``receive_frame`` takes it off the
    inner wire, so keep a receive waiting across the cut (as every inbound
    edge does): a frame the inner wire buffered during the cut and read only
    after ``restore`` gets through. Cutting twice and restoring once leaves
    the link restored.

    Example::

        a, b = memory_wire_pair()
        link = CuttableWire(a)
        with cut(link):
            await link.send_frame(b"lost")  # b never sees it
        await link.send_frame(b"arrives")
        assert link.stats.sent_lost == 1
    """

    def __init__(self, inner: Wire) -> None:
        self._inner = inner
        self._is_cut = False
        self._closed = False
        self._sent_lost = 0
        self._received_lost = 0

    @property
    def name(self) -> str:
        """The inner wire's name."""
        return self._inner.name

    @property
    def is_cut(self) -> bool:
        """Whether the link is cut now."""
        return self._is_cut

    @property
    def stats(self) -> CutStats:
        """A snapshot of the frames lost so far."""
        return CutStats(sent_lost=self._sent_lost, received_lost=self._received_lost)

    def cut(self) -> None:
        """Cut the link: from now on frames are lost both ways."""
        self._is_cut = True

    def restore(self) -> None:
        """Restore the link: frames flow again."""
        self._is_cut = False

    async def cut_for(self, seconds: float) -> None:
        """Cut the link for ``seconds`` of trio time, then restore it.

        The link is restored even if the wait is cancelled.
        """
        self.cut()
        try:
            await trio.sleep(seconds)
        finally:
            self.restore()

    async def send_frame(self, frame: bytes, *, to: object = None) -> None:
        """Send one frame, or lose it silently while the link is cut.

        Raises:
            trio.ClosedResourceError: if the wire is closed.
        """
        if self._closed:
            raise trio.ClosedResourceError("this CuttableWire is closed")
        if self._is_cut:
            self._sent_lost += 1
            await trio.lowlevel.checkpoint()
            return
        await self._inner.send_frame(frame, to=to)

    async def receive_frame(self) -> Received:
        """Wait for the next frame that arrives while the link is up."""
        while True:
            received = await self._inner.receive_frame()
            if not self._is_cut:
                return received
            self._received_lost += 1

    async def aclose(self) -> None:
        """Close the wire and the inner wire."""
        self._closed = True
        await self._inner.aclose()


@contextlib.contextmanager
def cut(wire: CuttableWire) -> Iterator[CuttableWire]:
    """Cut ``wire`` for the duration of a ``with`` block, restoring it on the way out.

    Example::

        with cut(link):
            await client.submit(job)  # lost: the link is down
    """
    wire.cut()
    try:
        yield wire
    finally:
        wire.restore()
