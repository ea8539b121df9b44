"""In-memory wires, for tests: ``memory_wire_pair()`` connects two ends
through bounded memory channels, with the backpressure and close behaviour
of a real socket. Part of ``actors.testing``."""

from __future__ import annotations

import contextlib
from typing import final

import trio

from actors.wire import Received

__all__ = ["MemoryWire", "memory_wire_pair"]


@final
class MemoryWire:
    """One end of a pair of wires connected in memory; see ``memory_wire_pair``.

    It behaves as an NNG socket does towards its peer: a full direction makes
    ``send_frame`` wait, and when the peer closes its end nobody is told. This
    end's receives keep waiting and its sends are silently dropped.
    """

    def __init__(
        self,
        name: str,
        peer_name: str,
        outgoing: trio.MemorySendChannel[Received],
        incoming: trio.MemoryReceiveChannel[Received],
    ) -> None:
        self._name = name
        self._peer_name = peer_name
        # Each end sends on its own clone of the channel, so closing it wakes
        # this end's blocked senders; the pair still holds the original open,
        # so the peer never sees EndOfChannel and keeps waiting instead.
        self._outgoing = outgoing.clone()
        self._incoming = incoming

    @property
    def name(self) -> str:
        """This end's name, as the peer sees it in ``Received.peer``."""
        return self._name

    async def send_frame(self, frame: bytes, *, to: object = None) -> None:
        """Send one frame to the other end, waiting while that direction is full.

        ``to`` is accepted and ignored: a memory wire has exactly one peer. A
        frame sent after the peer closed its end is dropped without a word.

        Raises:
            trio.ClosedResourceError: if this end is closed, or is closed
                while the send waits.
        """
        # The peer has gone: like a real link, nobody tells the sender.
        with contextlib.suppress(trio.BrokenResourceError):
            await self._outgoing.send(Received(frame, peer=self._name))

    async def receive_frame(self) -> Received:
        """Wait for the next frame from the other end.

        Raises:
            trio.ClosedResourceError: if this end is closed, or is closed
                while the receive waits.
        """
        return await self._incoming.receive()

    async def aclose(self) -> None:
        """Close this end. The other end is not told (see the class docstring)."""
        self._outgoing.close()
        self._incoming.close()
        await trio.lowlevel.checkpoint()


def memory_wire_pair(
    capacity: int = 64, *, names: tuple[str, str] = ("a", "b")
) -> tuple[MemoryWire, MemoryWire]:
    """Open two wires connected to each other in memory.

    Each direction is a trio memory channel holding up to ``capacity``
    frames; past that, ``send_frame`` waits, which is how backpressure shows
    up on a real transport.

    Args:
        capacity: frames buffered per direction (0 makes every send wait for
            a receive).
        names: the two ends' names; each end's frames arrive with
            ``Received.peer`` set to the sender's name.

    Returns:
        The two ends, in the order of ``names``.

    Example::

        client, server = memory_wire_pair(names=("client", "server"))
        await client.send_frame(b"ping")
        received = await server.receive_frame()
        assert received.frame == b"ping" and received.peer == "client"
    """
    a_to_b_send, a_to_b_receive = trio.open_memory_channel[Received](capacity)
    b_to_a_send, b_to_a_receive = trio.open_memory_channel[Received](capacity)
    a = MemoryWire(names[0], names[1], a_to_b_send, b_to_a_receive)
    b = MemoryWire(names[1], names[0], b_to_a_send, a_to_b_receive)
    return a, b
