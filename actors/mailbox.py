"""Mailboxes: how one actor reaches another.

``open_mailbox(capacity)`` returns a ``Ref`` (the sending side, handed to
other actors when a topology is wired) and an ``Inbox`` (the receiving side,
owned by one actor). The inbox is a bounded trio memory channel: when it is
full, ``Ref.send`` waits, and that wait is how pressure travels back toward
whoever produces work. ``Inbox.receive_batch`` takes one message with a
task switch, then drains what is already queued with ``receive_nowait``, so a
busy actor pays the switch once per batch instead of once per message.

A request that wants an answer travels inside a ``Call`` together with a
fresh one-shot ``Reply``. Each call has its own reply slot, so a reply that
arrives after its caller gave up lands in a slot nobody reads and can never
be mistaken for the answer to a later call.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Generic, TypeVar, final

import attrs
import trio

from actors.errors import CallTimeout

M = TypeVar("M")

#: Default number of messages a mailbox holds before senders wait.
DEFAULT_CAPACITY = 1024


@final
class Reply:
    """A one-shot slot for the answer to one ``Call``.

    ``set`` and ``fail`` may be called once; later calls are ignored, as is
    a reply whose caller has already given up.
    """

    __slots__ = ("_event", "_value", "_error")

    def __init__(self) -> None:
        self._event = trio.Event()
        self._value: Any = None
        self._error: BaseException | None = None

    @property
    def done(self) -> bool:
        """Whether a value or an error has been delivered."""
        return self._event.is_set()

    def set(self, value: Any) -> None:
        """Deliver the answer."""
        if not self._event.is_set():
            self._value = value
            self._event.set()

    def fail(self, error: BaseException) -> None:
        """Deliver an error; the caller's ``call`` raises it."""
        if not self._event.is_set():
            self._error = error
            self._event.set()

    async def wait(self) -> Any:
        """Wait for the answer and return it, or raise the delivered error."""
        await self._event.wait()
        if self._error is not None:
            raise self._error
        return self._value


@attrs.frozen
class Call(Generic[M]):
    """A message that wants an answer: the actor handling ``message`` puts
    its return value into ``reply``."""

    message: M
    reply: Reply


@attrs.frozen
class MailboxStats:
    """What a mailbox holds now, the most it has held, and its bound."""

    current_depth: int
    peak_depth: int
    max_depth: int


@final
class Ref(Generic[M]):
    """The sending side of an actor's mailbox; copy it freely.

    ``send`` waits while the mailbox is full: that is how pressure reaches
    the client. ``send_nowait`` raises ``trio.WouldBlock`` instead. Both raise
    ``trio.BrokenResourceError`` once the actor has stopped for good.
    """

    __slots__ = ("name", "_sender")

    def __init__(self, name: str, sender: trio.MemorySendChannel[Any]) -> None:
        self.name = name
        self._sender = sender

    def __repr__(self) -> str:
        return f"<Ref {self.name}>"

    async def send(self, message: M) -> None:
        """Put ``message`` in the mailbox, waiting while it is full."""
        await self._sender.send(message)

    def send_nowait(self, message: M) -> None:
        """Put ``message`` in the mailbox, or raise ``trio.WouldBlock``."""
        self._sender.send_nowait(message)

    async def send_batch(self, messages: Iterable[M]) -> None:
        """Send several messages, paying a wait only when the mailbox is full."""
        sender = self._sender
        for message in messages:
            try:
                sender.send_nowait(message)
            except trio.WouldBlock:
                await sender.send(message)

    async def call(self, message: M, timeout: float | None = None) -> Any:
        """Send ``message`` and wait for the actor's answer.

        Args:
            message: the request.
            timeout: seconds to wait for the answer, counting the time spent
                waiting for room in the mailbox; ``None`` waits forever.

        Returns:
            What the actor's handler returned for this message.

        Raises:
            CallTimeout: no answer in time. A late answer is discarded.
            trio.BrokenResourceError: the actor has stopped for good.
        """
        reply = Reply()
        with trio.move_on_after(math.inf if timeout is None else timeout) as scope:
            await self._sender.send(Call(message, reply))
            return await reply.wait()
        assert scope.cancelled_caught
        raise CallTimeout(
            f"{self.name} did not answer {type(message).__name__} within {timeout} s"
        )


@final
class Inbox(Generic[M]):
    """The receiving side of a mailbox, owned by exactly one actor.

    It outlives the actor instances that read it: a restarted actor keeps
    its inbox, so refs stay valid and queued messages wait for it.
    """

    __slots__ = ("name", "capacity", "_receiver", "_peak")

    def __init__(
        self, name: str, capacity: int, receiver: trio.MemoryReceiveChannel[Any]
    ) -> None:
        self.name = name
        self.capacity = capacity
        self._receiver = receiver
        self._peak = 0

    async def receive(self) -> M:
        """Wait for one message."""
        message: M = await self._receiver.receive()
        self._note_depth()
        return message

    async def receive_batch(self, max_messages: int, *, settle: bool = False) -> list[M]:
        """Wait for one message, then take what is already queued.

        Args:
            max_messages: the most to return.
            settle: after the first message, yield once so that tasks ready
                to send get to add theirs before the drain. Costs a
                scheduling round per batch; pays where a batch costs far
                more than a message (an edge sends one frame per batch).

        Returns:
            Between 1 and ``max_messages`` messages, in arrival order.
        """
        receiver = self._receiver
        batch: list[M] = [await receiver.receive()]
        if settle and max_messages > 1:
            await trio.lowlevel.cancel_shielded_checkpoint()
        self._note_depth()
        while len(batch) < max_messages:
            try:
                batch.append(receiver.receive_nowait())
            except trio.WouldBlock:
                break
        return batch

    def _note_depth(self) -> None:
        # Called just after one message was taken; a sender that was waiting
        # has already refilled its slot, hence the cap.
        depth = min(self._receiver.statistics().current_buffer_used + 1, self.capacity)
        if depth > self._peak:
            self._peak = depth

    def receive_nowait(self) -> M:
        """Take one queued message, or raise ``trio.WouldBlock``."""
        message: M = self._receiver.receive_nowait()
        return message

    def stats(self) -> MailboxStats:
        """Depth now, the peak seen, and the bound."""
        current = self._receiver.statistics().current_buffer_used
        return MailboxStats(
            current_depth=current,
            peak_depth=max(self._peak, current),
            max_depth=self.capacity,
        )

    def close(self) -> None:
        """Stop for good: later sends raise ``trio.BrokenResourceError``."""
        self._receiver.close()


def open_mailbox(
    capacity: int = DEFAULT_CAPACITY, *, name: str = "actor"
) -> tuple[Ref[Any], Inbox[Any]]:
    """Make a bounded mailbox and return its two sides, sender first.

    Args:
        capacity: how many messages it holds before ``Ref.send`` waits.
            Must be at least 1: an unbuffered mailbox would turn every send
            into a rendezvous and defeat batching.
        name: the owning actor's name, for errors and logs.
    """
    if capacity < 1:
        raise ValueError(f"mailbox capacity must be at least 1, got {capacity}")
    sender, receiver = trio.open_memory_channel[Any](capacity)
    return Ref(name, sender), Inbox(name, capacity, receiver)
