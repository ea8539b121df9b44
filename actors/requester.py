"""One question over a request wire: messages out in a frame, answers back.

The client and a subworker's link both talk to a ``ServeEdge`` this way:
pack the messages into one signed frame, stamped for freshness
(``actors.freshness``), send it on a ``RequestWire``, unpack the reply
frame, and check that it holds one answer per message. A refusal (the
server restarted, or saw that stamp already: an NNG resend) re-stamps the
same messages with a new sequence and the server's current epoch and sends
them again. What a missing or bad answer means is the caller's to say.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import anyio

from actors.errors import FrameError, StaleFrame, Unanswered
from actors.frame import Framer
from actors.freshness import Stamper
from actors.nng_req import RequestWire

__all__ = ["MAX_RESENDS", "Requester"]

#: Refusals in a row after which a question fails: one is a server that
#: restarted (or a resent frame), more mean its epoch keeps changing.
MAX_RESENDS: Final = 3


class Requester:
    """Asks a ServeEdge over ``wire``, framing with ``framer``."""

    __slots__ = ("_now", "framer", "stamper", "wire")

    def __init__(self, wire: RequestWire, framer: Framer) -> None:
        self.wire = wire
        self.framer = framer
        self.stamper = Stamper()
        # The wire's event-loop clock: anyio's asks sniffio on every call.
        self._now = getattr(wire, "now", anyio.current_time)

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
                does not hold one answer per message, or the server refused
                the request as stale ``MAX_RESENDS + 1`` times in a row.
            anyio.ClosedResourceError: the wire is closed.
        """
        wire, now = self.wire, self._now
        deadline = None if timeout is None else now() + timeout
        stamper = self.stamper
        for _ in range(MAX_RESENDS + 1):
            stamp = stamper.next()
            frame = self.framer.pack(messages, stamp=stamp)
            left = None if deadline is None else max(0.0, deadline - now())
            reply = await wire.request(frame, timeout=left)
            try:
                answers = self.framer.unpack(reply)
            except StaleFrame as refusal:
                if (refusal.sender, refusal.seq) != stamp[1:]:
                    raise FrameError(
                        f"{self.wire.name} refused request {refusal.sender:x}:{refusal.seq}, "
                        f"not the one sent ({stamp[1]:x}:{stamp[2]})") from None
                stamper.learn(refusal.epoch)
                continue
            if not answers and messages:
                raise Unanswered(
                    f"{self.wire.name} could not send its answer: too large for one frame "
                    f"(its max_frame_bytes); its log says more")
            if len(answers) != len(messages):
                raise FrameError(
                    f"expected {len(messages)} answer(s) from {self.wire.name}, "
                    f"got {len(answers)}")
            return answers
        raise FrameError(
            f"{self.wire.name} refused the request as stale {MAX_RESENDS + 1} times in a row "
            f"(its epoch keeps changing: its log says why)")
