"""The one seam between edges and transports.

An edge actor turns messages into frames and back; a ``Wire`` moves those
frames. ``actors.nng`` implements it over pynng sockets and
``actors.testing.memory_wire_pair`` in memory, so edges and whole topologies
are tested without sockets, and faults are injected by wrapping a wire.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import attrs


@attrs.frozen
class Received:
    """One frame as it came off a wire, and who sent it.

    ``peer`` is a readable name for logs ("tcp://127.0.0.1:53211");
    ``reply_to`` is an opaque handle that ``Wire.send_frame(..., to=...)``
    accepts to answer that same peer, or ``None`` where the transport cannot
    address one peer.
    """

    frame: bytes
    peer: str
    reply_to: object = None


@runtime_checkable
class Wire(Protocol):
    """Moves whole frames between two ends. Bytes in, bytes out; no parsing.

    ``send_frame`` may wait while the transport is full: that is how pressure
    travels across a process boundary. A successful send means only that the
    transport took the frame, never that the peer got it. Both calls raise
    ``trio.ClosedResourceError`` after ``aclose``.
    """

    @property
    def name(self) -> str:
        """The wire's own end, for logs ("listening on tcp://127.0.0.1:5555")."""
        ...

    async def send_frame(self, frame: bytes, *, to: object = None) -> None:
        """Send one frame, to the peer named by ``to`` if given."""
        ...

    async def receive_frame(self) -> Received:
        """Wait for the next frame."""
        ...

    async def aclose(self) -> None:
        """Close the wire; pending and later calls raise ClosedResourceError."""
        ...
