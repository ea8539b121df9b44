"""One question over a request wire: messages out in a frame, answers back.

The client and a subworker's link both talk to a ``ServeEdge`` this way:
pack the messages into one signed frame, send it on a ``RequestWire``,
unpack the reply frame, and check that it holds one answer per message.
What a missing or bad answer means is the caller's to say.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from actors.errors import FrameError, Unanswered
from actors.frame import Framer
from actors.nng_reqrep import RequestWire

__all__ = ["Requester"]


class Requester:
    """Asks a ServeEdge over ``wire``, framing with ``framer``."""

    __slots__ = ("wire", "framer")

    def __init__(self, wire: RequestWire, framer: Framer) -> None:
        self.wire = wire
        self.framer = framer

    @property
    def name(self) -> str:
        """The wire's name, for messages: ``dialing tcp://127.0.0.1:5555``."""
        return self.wire.name

    async def ask(self, messages: Sequence[Any], *, timeout: float | None) -> list[Any]:
        """Send ``messages`` in one frame; return their answers, in order.

        Raises:
            TimeoutError: no answer within ``timeout`` seconds.
            Unanswered: the server could not send its answers (an empty
                reply: they were too large for one frame).
            FrameError: the answer frame is bad (its tag, version or shape),
                or does not hold one answer per message.
            anyio.ClosedResourceError: the wire is closed.
        """
        reply = await self.wire.request(self.framer.pack(messages), timeout=timeout)
        answers = self.framer.unpack(reply)
        if not answers and messages:
            raise Unanswered(
                f"{self.wire.name} could not send its answer: too large for one frame "
                f"(its max_frame_bytes); its log says more")
        if len(answers) != len(messages):
            raise FrameError(
                f"expected {len(messages)} answer(s) from {self.wire.name}, got {len(answers)}")
        return answers
