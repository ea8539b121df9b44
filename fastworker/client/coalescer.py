"""Coalescing: concurrent calls on one port share request frames.

Every ``delay`` (and every status or cancel question) puts its message on
its port's queue and waits on a ``Slot``; a few flusher tasks per port take
everything queued, up to ``max_batch``, and send it as one frame, so a
thousand concurrent calls cost a handful of round trips. Each caller gets
the answer at its message's position. Nothing here knows what the
messages mean.
"""

from __future__ import annotations

import math
from typing import Any, final

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from fastworker.client.connection import Port
from fastworker.client.slot import Slot
from fastworker.errors import ConnectionLost

__all__ = ["Coalescer"]

_Queued = tuple[Any, Slot[Any]]


@final
class Coalescer:
    """Sends the messages queued for one port in request frames, a batch per
    frame; run ``flush_forever`` in as many tasks as frames may be in flight.

    Args:
        port: where the frames go.
        timeout: how long one frame may go unanswered.
        max_batch: the most messages in one frame.
    """

    def __init__(self, port: Port, *, timeout: float, max_batch: int) -> None:
        self._port = port
        self._timeout = timeout
        self._max_batch = max_batch
        send, receive = anyio.create_memory_object_stream[_Queued](math.inf)
        self._send: MemoryObjectSendStream[_Queued] = send
        self._receive: MemoryObjectReceiveStream[_Queued] = receive

    def put(self, message: Any) -> Slot[Any]:
        """Queue ``message``; its answer comes to the slot returned."""
        slot: Slot[Any] = Slot()
        self._send.send_nowait((message, slot))
        return slot

    async def ask(self, message: Any) -> Any:
        """Queue ``message`` and return its answer.

        Raises:
            ConnectionLost: its frame was not answered, or the client closed.
        """
        return await self.put(message).wait()

    def close(self) -> None:
        """Fail what is still queued, and close the queue."""
        while True:
            try:
                _, slot = self._receive.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
            slot.fail(ConnectionLost("the client was closed"))
        self._send.close()
        self._receive.close()

    async def flush_forever(self) -> None:
        """Send what is queued, a batch at a time, until cancelled."""
        receive = self._receive
        limit = self._max_batch
        while True:
            batch = [await receive.receive()]
            while len(batch) < limit:
                try:
                    batch.append(receive.receive_nowait())
                except anyio.WouldBlock:
                    break
            await self._send_batch(batch)

    async def _send_batch(self, batch: list[_Queued]) -> None:
        try:
            replies = await self._port.ask([message for message, _ in batch], self._timeout)
        except ConnectionLost as error:
            for _, slot in batch:
                slot.fail(error)
            return
        for (_, slot), reply in zip(batch, replies):
            slot.set(reply)
