"""``NngWire``: the ``Wire`` over one pynng socket, opened by ``actors.nng.open_wire``.

A wire is driven by its socket's descriptors (``io="poll"``: wait until trio
sees one readable, then call pynng without blocking) or by pynng's aio
(``io="async"``); a rep wire goes through the contexts of
``actors.nng_rep.RepContexts``, which takes requests by the socket's
descriptor and sends most replies without waiting, whatever ``io`` says.
Which patterns send, receive, or go by contexts is said once, here, for
the wire and for ``actors.nng``, which sizes the sockets' queues by it.
This module, ``actors.nng``, ``actors.nng_rep``, ``actors.nng_req`` and
``actors.nng_io`` are the only ones that import pynng. See
docs/transport.md.
"""

from __future__ import annotations

import math
import weakref
from typing import Any, Final, final

import pynng  # type: ignore[import-untyped]
import trio

from actors.errors import ConfigError
from actors.nng_rep import RepContexts
from actors.wire import Received

__all__ = ["NngWire"]

#: The patterns whose wires send frames.
CAN_SEND: Final = frozenset({"push", "pair", "pair1", "bus", "rep"})
#: The patterns whose wires receive frames.
CAN_RECEIVE: Final = frozenset({"pull", "pair", "pair1", "bus", "rep"})
#: The patterns driven by contexts, which have no descriptors and no queues to size.
BY_CONTEXT: Final = frozenset({"rep", "req"})


@final
class NngWire:
    """A ``Wire`` over one pynng socket. Make one with ``actors.nng.open_wire``.

    Any number of tasks may send and receive at once. With ``io="async"`` a
    send that NNG has started is never cancelled (pynng leaks the frame if it
    is): a cancelled ``send_frame`` returns once NNG takes the frame or the
    wire closes. With ``io="poll"`` every wait is cancellable.

    A rep wire holds each request in one of its contexts until it is answered
    (``send_frame(reply, to=received.reply_to)``) or discarded (``discard``),
    or until nothing references its ``reply_to`` any more. Every wait is
    cancellable: a cancelled reply is dropped, never leaked. Its replies are
    bounded per connection (``reply_timeout``, ``peer_reply_bytes``): a
    peer that does not take them is dropped, and the reply that found it
    so raises ``PeerDropped``.
    """

    def __init__(
        self,
        socket: Any,
        *,
        name: str,
        address: str,
        pattern: str,
        io: str,
        contexts: int = 0,
        reply_timeout: float = math.inf,
        peer_reply_bytes: int = 2**62,
    ) -> None:
        self._socket = socket
        self._name = name
        self._scheme = address.partition("://")[0]
        self._pattern = pattern
        self._poll = io == "poll" and pattern not in BY_CONTEXT
        self._closed = False
        self._rep = (
            RepContexts(
                socket,
                contexts,
                name=name,
                closed_error=self._closed_error,
                reply_timeout=reply_timeout,
                peer_bytes=peer_reply_bytes,
                peer_name=self._peer,
            )
            if pattern == "rep"
            else None
        )
        # NNG's descriptors turn *readable* when the socket can receive, and
        # when it can send: send_fd never reports writable.
        self._recv_fd = socket.recv_fd if self._poll and pattern in CAN_RECEIVE else -1
        self._send_fd = socket.send_fd if self._poll and pattern in CAN_SEND else -1
        # trio lets one task at a time wait on a descriptor.
        self._recv_wait = trio.Lock()
        self._send_wait = trio.Lock()
        self._peers: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()

    @property
    def name(self) -> str:
        """``listening on tcp://127.0.0.1:40123`` (the real port) or ``dialing ...``."""
        return self._name

    async def send_frame(self, frame: bytes, *, to: object = None) -> None:
        """Hand one frame to NNG; waits while no peer can take it.

        Args:
            frame: the bytes to send.
            to: a ``Received.reply_to`` from this pair1 wire, to answer that
                peer only; frames to a peer that has gone are dropped. A rep
                wire requires it: the request to answer, once.

        Raises:
            trio.ClosedResourceError: the wire is closed, before or while waiting.
            ConfigError: this pattern cannot send, or ``to`` is not a pair1
                peer or an unanswered request of this rep wire.
            PeerDropped: rep only: the reply was not taken within the wire's
                ``reply_timeout``, so its peer's connection was closed.
        """
        self._check(CAN_SEND, "send")
        if self._rep is not None:
            await trio.lowlevel.checkpoint_if_cancelled()
            try:
                await self._rep.reply(frame, to)
            except pynng.Closed:
                raise self._closed_error() from None
            await trio.lowlevel.cancel_shielded_checkpoint()  # most replies never wait
            return
        if to is not None and (self._pattern != "pair1" or not isinstance(to, pynng.Pipe)):
            raise ConfigError(f"{self._name}: to= takes a pair1 Received.reply_to, got {to!r}")
        message = frame if to is None else pynng.Message(frame, to)
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            if not self._poll:
                with trio.CancelScope(shield=True):
                    await (self._socket.asend if to is None else self._socket.asend_msg)(message)
                await trio.lowlevel.checkpoint_if_cancelled()
                return
            send = self._socket.send if to is None else self._socket.send_msg
            while True:
                try:
                    send(message, block=False)
                    break
                except pynng.TryAgain:
                    await self._wait(self._send_wait, self._send_fd)
        except pynng.Closed:
            raise self._closed_error() from None
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def receive_frame(self) -> Received:
        """Wait for the next frame from any peer.

        Raises:
            trio.ClosedResourceError: the wire is closed, before or while waiting.
            ConfigError: this pattern cannot receive.
        """
        self._check(CAN_RECEIVE, "receive")
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            if self._rep is not None:
                message, request = await self._rep.receive()
                await trio.lowlevel.cancel_shielded_checkpoint()  # a waiting one is taken at once
                return Received(message.bytes, self._peer(message.pipe), request)
            if self._poll:
                while True:
                    try:
                        message = self._socket.recv_msg(block=False)
                        break
                    except pynng.TryAgain:
                        await self._wait(self._recv_wait, self._recv_fd)
                await trio.lowlevel.cancel_shielded_checkpoint()
            else:
                message = await self._socket.arecv_msg()
        except pynng.Closed:
            raise self._closed_error() from None
        pipe = message.pipe
        return Received(message.bytes, self._peer(pipe), pipe if self._pattern == "pair1" else None)

    async def reply_room(self, reply_to: object) -> bool:
        """Rep only: wait until the connection of ``reply_to`` has room for a reply.

        Call it before building a large reply: replies to a peer that does
        not read then wait unbuilt. The wait counts towards the reply's
        ``reply_timeout``. False: the connection has gone or was dropped;
        discard the request.

        Raises:
            ConfigError: not a rep wire, or ``reply_to`` is not an unanswered
                request of this one.
            PeerDropped: the time ran out and the peer was dropped; discard
                the request.
        """
        if self._rep is None:
            raise ConfigError(f"{self._name}: only a rep wire has replies to make room for")
        return await self._rep.room(reply_to)

    async def discard(self, reply_to: object) -> None:
        """Rep only: free the request behind ``reply_to`` without answering it.

        Its client gets no reply: it resends after its ``resend_time``, or
        gives up at its timeout.

        Raises:
            ConfigError: not a rep wire, or ``reply_to`` is not an unanswered
                request of this one.
        """
        if self._rep is None:
            raise ConfigError(f"{self._name}: only a rep wire can discard a request")
        self._rep.discard(reply_to)
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        """Close the socket; tasks waiting in send or receive wake with ClosedResourceError."""
        if not self._closed:
            self._closed = True
            for fd in (self._recv_fd, self._send_fd):
                if fd >= 0:
                    trio.lowlevel.notify_closing(fd)
            if self._rep is not None:
                self._rep.close()
            # nng_close waits for the socket's pipes to wind down.
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._close)
        await trio.lowlevel.checkpoint()

    def _close(self) -> None:
        if self._rep is not None:  # contexts first: after the socket, closing one raises
            self._rep.close_contexts()
        self._socket.close()

    def _check(self, can: frozenset[str], verb: str) -> None:
        if self._closed:
            raise self._closed_error()
        if self._pattern not in can:
            raise ConfigError(f"{self._name}: a {self._pattern} wire cannot {verb} frames")

    def _closed_error(self) -> trio.ClosedResourceError:
        return trio.ClosedResourceError(f"wire {self._name} is closed")

    async def _wait(self, lock: trio.Lock, fd: int) -> None:
        async with lock:
            if self._closed:  # the descriptor may already be gone
                raise self._closed_error()
            await trio.lowlevel.wait_readable(fd)

    def _peer(self, pipe: Any) -> str:
        peer = None if pipe is None else self._peers.get(pipe)
        if peer is None:
            try:
                remote = str(pipe.remote_address)  # inproc names come with their scheme
                peer = remote if "://" in remote else f"{self._scheme}://{remote}"
                self._peers[pipe] = peer
            except (AttributeError, pynng.NNGException):  # no pipe, or it closed meanwhile
                peer = f"{self._scheme}://(unknown peer)"
        return peer
