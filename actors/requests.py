"""Answering a request of several messages, some of them later.

A ``ServeEdge`` hands an actor one ``Requests`` per request frame, with
``Ref.call``; the answer is a list with one reply per message. An actor
that can answer some messages only later (a Submit waiting for room, a
query waiting for a result, a Pull waiting for jobs) keeps the list in an
``Answers``: the answers known now are ``set``, the missing ones counted
with ``later`` and ``fill``ed when known, and the call's reply goes out
with ``send`` once none is missing.

If the answers of a request cannot be sent (together they make a frame
over the edge's limit), the edge tells the requester so at once (an empty
reply frame) and, when it is wired with an ``Unsent`` route, sends that
actor an ``Unsent`` with the messages and the answers it could not send:
an actor that handed something out in an answer can take it back.
"""

from __future__ import annotations

from typing import Any

import attrs

from actors.mailbox import Reply

__all__ = ["Answers", "Requests", "Unsent"]


@attrs.frozen
class Requests:
    """A ServeEdge -> an actor, with ``Ref.call``: the messages of one request
    frame bound for this actor, from ``peer``. The answer is a list holding
    one reply message per request message, in order; return it from
    ``handle`` or, to answer later, ``defer()`` and set it then."""

    messages: tuple[Any, ...]
    peer: str = ""


@attrs.frozen
class Unsent:
    """A ServeEdge -> the actor wired under ``Unsent`` (a plain message): the
    answers to ``messages`` (one each, in order) from a request of ``peer``
    were not sent, for ``reason``; the requester was told."""

    messages: tuple[Any, ...]
    answers: tuple[Any, ...]
    peer: str = ""
    reason: str = ""


class Answers:
    """The answers to one call, in order, some of them given later.

    Args:
        size: how many answers the call takes.
        single: the call takes one answer, not a list (``send`` sets the
            reply to the first answer).
    """

    __slots__ = ("values", "missing", "single", "reply")

    def __init__(self, size: int, *, single: bool = False) -> None:
        self.values: list[Any] = [None] * size
        #: Answers still to be filled.
        self.missing = 0
        self.single = single
        #: The deferred call's reply slot (``Actor.defer()``), once deferred.
        self.reply: Reply | None = None

    def later(self) -> None:
        """One more answer will be filled later."""
        self.missing += 1

    def fill(self, index: int, value: Any) -> bool:
        """Give a later answer; ``True`` when it was the last one missing."""
        self.values[index] = value
        self.missing -= 1
        return self.missing == 0

    @property
    def result(self) -> Any:
        """The call's answer: the list, or its one answer when ``single``."""
        return self.values[0] if self.single else list(self.values)

    def send(self) -> bool:
        """Set the deferred reply if every answer is known; ``True`` if sent."""
        if self.missing or self.reply is None:
            return False
        reply, self.reply = self.reply, None
        reply.set(self.result)
        return True

    def fail(self, error: BaseException) -> None:
        """Fail the deferred call (the actor stops before it could answer)."""
        if self.reply is not None:
            reply, self.reply = self.reply, None
            reply.fail(error)
