"""NNG replies over contexts: the serving end behind ``actors.nng``.

``actors.nng`` opens a rep socket (``open_wire(pattern="rep")``) and hands it
to ``RepContexts``, a pool of contexts that lets one socket serve many
requests at once. Each receive takes a free context, and it stays taken
until that request is answered or discarded, or until its
``Received.reply_to`` is garbage-collected (then nobody can answer it any
more). Replies are bounded per connection (``_Output``): a peer that does
not take them in time is dropped. The requesting end is ``actors.nng_req``.
This module, ``actors.nng_req``, ``actors.nng_io``, ``actors.nng`` and
``actors.nng_wire`` are the only ones that import pynng.

Neither requests nor replies go through pynng's aio callbacks, which
cost a hop through NNG's task thread, the GIL taken from there and a
wake-up of trio per message: a request is taken when the socket's receive
descriptor turns readable (it does while a request waits that no context
asked for), by a free context, without blocking; a reply is handed to NNG
in the caller's own call, on an aio with no callback, which NNG completes
in that call when the connection is free to write (``actors.nng_io``).
Only a reply that has to wait behind another one to the same connection
is waited for, in a worker thread (of the pool's own, so replies stuck
behind a slow peer hold up nothing else). A wake-up that finds nothing to take (another receiver
took it, or NNG left the descriptor readable for a request whose
connection closed) waits on its context through pynng's aio instead, so a
receiver never spins. See
docs/transport.md.
"""

from __future__ import annotations

import functools
import math
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, final

import pynng  # type: ignore[import-untyped]
import trio

from actors.errors import ConfigError, PeerDropped
from actors.nng_io import send_reply, try_receive

__all__ = ["RepContexts"]

#: Dropped pipes remembered, so that later replies to them are dropped too.
_DROPPED_REMEMBERED = 1024


@final
class _Request:
    """A rep wire's ``Received.reply_to``: the context holding one request,
    and the pipe (connection) it came in on, which its reply goes back to."""

    __slots__ = ("__weakref__", "context", "deadline", "pipe")

    def __init__(self, context: Any, pipe: Any) -> None:
        self.context = context
        self.pipe = pipe
        #: When its pipe must have taken its reply (trio time); set at the first wait.
        self.deadline: float | None = None


@final
class _Output:
    """The replies under way to one pipe, for the per-connection bounds.

    NNG writes one message at a time to a pipe; a reply sent while the pipe
    is busy waits inside NNG (its context's send stays pending) until the
    one before is written out. ``queued`` counts the bytes of replies handed
    to NNG whose send has not finished: replies waiting behind a write the
    peer is not taking. While it is at the byte bound, further replies wait
    here, on ``room``, before NNG copies them (and, with ``RepContexts.room``,
    before they are even built).
    """

    __slots__ = ("dropped", "queued", "room")

    def __init__(self) -> None:
        self.queued = 0
        # Made at the first wait: most replies never wait.
        self.room: trio.lowlevel.ParkingLot | None = None
        self.dropped = False

    async def wait(self) -> None:
        """Wait until a reply's send ends, or the pipe is dropped."""
        if self.room is None:
            self.room = trio.lowlevel.ParkingLot()
        await self.room.park()

    def wake(self) -> None:
        if self.room is not None:
            self.room.unpark_all()

    def idle(self) -> bool:
        """No reply is queued for the pipe, nor waiting to be."""
        return not self.queued and (self.room is None or not self.room.statistics().tasks_waiting)


@final
class RepContexts:
    """The contexts of one rep socket, and which of them hold a request.

    Trio only (the rep side is an ``NngWire``). ``closed_error`` makes the
    exception raised once the pool is closed.

    Replies are bounded per pipe: a reply goes to NNG only while fewer
    than ``peer_bytes`` of replies wait there for that pipe (so at most
    ``peer_bytes`` plus one reply wait, besides the one being written), and
    a reply that the pipe has not taken within ``reply_timeout`` seconds of
    its first wait (NNG gives a pipe a reply once the one before is written
    out) drops that pipe: it is closed, which frees every reply
    queued for it, and the reply raises ``PeerDropped`` (``peer_name(pipe)``
    names the peer). A peer that never reads is so dropped by the reply
    after the one queued behind its stuck write; a peer with one request
    only holds that one reply until it goes. The time bound of a send is
    NNG's own (each context's send timeout), so a reply that finds room at
    once costs no timer.
    """

    def __init__(
        self,
        socket: Any,
        count: int,
        *,
        name: str,
        closed_error: Callable[[], Exception],
        reply_timeout: float = math.inf,
        peer_bytes: int = 2**62,
        peer_name: Callable[[Any], str] = repr,
    ) -> None:
        self._socket = socket
        self._contexts = [socket.new_context() for _ in range(count)]
        self._free = list(self._contexts)
        # Readable while a request waits that no context has taken; trio
        # lets one task at a time wait on it.
        self._recv_fd = socket.recv_fd
        self._recv_wait = trio.Lock()
        # Threads for replies that wait behind another to their connection
        # (one per context at most), apart from trio's own: replies stuck
        # behind a slow peer must not hold up other work that needs a thread.
        self._send_threads = trio.CapacityLimiter(max(1, count))
        self._waiting = trio.lowlevel.ParkingLot()
        # context -> a weak reference to the _Request that holds it
        self._held: dict[Any, weakref.ref[_Request]] = {}
        self._trio_token = trio.lowlevel.current_trio_token()
        self._name = name
        self._closed_error = closed_error
        self._closed = False
        self._reply_timeout = reply_timeout
        # NNG bounds each context's sends (-1: never).
        self._send_timeout_ms = (
            -1 if math.isinf(reply_timeout) else min(2**31 - 1, max(1, round(reply_timeout * 1000)))
        )
        for context in self._contexts:
            self._set_send_timeout(context, self._send_timeout_ms)
        self._peer_bytes = peer_bytes
        self._peer_name = peer_name
        # pipe id -> the replies under way to it; only while some are.
        self._outputs: dict[int, _Output] = {}
        # Pipes dropped lately: a reply to one of their requests, taken
        # after its output was forgotten, is dropped too (NNG would hold it
        # until its send timed out). Ids are not reused within a socket.
        self._dropped: OrderedDict[int, None] = OrderedDict()

    async def receive(self) -> tuple[Any, _Request]:
        """Wait for a free context, then for a request on it.

        Returns the pynng message and the handle to answer it with.
        Raises pynng.Closed if the socket closes while waiting.
        """
        woken = False
        while True:
            while not self._free:
                if self._closed:
                    raise self._closed_error()
                await self._waiting.park()
            if self._closed:
                raise self._closed_error()
            context = self._free.pop()
            try:
                message = try_receive(self._socket, context)
                if message is None and woken:
                    # Readable, yet nothing to take: another receiver took
                    # it, or NNG left the descriptor readable for a request
                    # whose connection closed (it does not clear it then).
                    # Wait on this context instead, so as never to spin.
                    message = await context.arecv_msg()
            except BaseException:
                self._release(context)
                raise
            if message is not None:
                break
            self._free.append(context)  # no await since the pop: still free
            await self._wait_readable()
            woken = True
        request = _Request(context, message.pipe)
        self._held[context] = weakref.ref(request, functools.partial(self._orphaned, context))
        return message, request

    async def _wait_readable(self) -> None:
        """Wait until a request may wait for a context (the socket's
        receive descriptor is readable)."""
        async with self._recv_wait:
            if self._closed:  # the descriptor may be gone
                raise self._closed_error()
            try:
                await trio.lowlevel.wait_readable(self._recv_fd)
            except trio.ClosedResourceError:
                raise self._closed_error() from None

    async def room(self, reply_to: object) -> bool:
        """Wait until the connection of ``reply_to`` has room for a reply.

        Room: fewer than ``peer_bytes`` of replies wait for that connection
        inside NNG. Call it before building a large reply, so that replies
        to a peer that does not read wait here unbuilt. The wait counts
        towards the reply's ``reply_timeout``.

        Returns False when the reply cannot be sent (its connection has
        gone or was dropped): discard the request. Raises ConfigError if
        ``reply_to`` is not an unanswered request of this pool; PeerDropped
        if the time ran out (the peer is dropped: discard the request).
        """
        request = self._check(reply_to)
        if request.pipe is None or request.pipe.id in self._dropped:
            return False
        output = self._outputs.get(request.pipe.id)
        if output is None:  # nothing under way to it: the common case, no timer
            return True
        try:
            return await self._wait_room(output, request)
        finally:
            self._forget(request.pipe, output)

    async def reply(self, frame: bytes, reply_to: object) -> None:
        """Answer the request behind ``reply_to``; its context is free again after.

        Waits for room as ``room`` does. A cancelled or failed reply is
        dropped (never leaked), and so is a reply to a peer already dropped.
        Raises ConfigError if ``reply_to`` is not a request of this pool
        still unanswered; pynng.Closed if the socket closed; PeerDropped if
        this reply found its peer too slow (see the class docstring).
        """
        request = self._check(reply_to)
        context = self._claim(request)
        try:
            if request.pipe is not None:  # None: the connection went meanwhile
                await self._bounded_send(context, frame, request)
        finally:
            self._release(context)

    async def _bounded_send(self, context: Any, frame: bytes, request: _Request) -> None:
        """Send ``frame`` within the bounds. The time bound of the send itself
        is NNG's: each context's send timeout is ``reply_timeout``, so the
        common case (room at once) costs no timer here."""
        pipe = request.pipe
        output = self._output(pipe)
        size = len(frame)
        shortened = False
        try:
            if not await self._wait_room(output, request):
                return
            if request.deadline is not None:  # it waited: the rest of its time only
                shortened = True
                left = request.deadline - trio.current_time()
                self._set_send_timeout(context, max(1, int(left * 1000)))
            # No checkpoint since the room was seen: the count is ours.
            output.queued += size
            try:
                await send_reply(context, frame, self._send_threads)
            except pynng.Timeout:
                if not output.dropped and pipe.id not in self._dropped:  # once per pipe
                    raise self._drop(pipe, output, f"a reply of {size} bytes") from None
            finally:
                output.queued -= size
                output.wake()
        finally:
            if shortened:
                self._set_send_timeout(context, self._send_timeout_ms)
            self._forget(pipe, output)

    async def _wait_room(self, output: _Output, request: _Request) -> bool:
        """Wait until ``output`` has room, within the request's time; False
        if its pipe was dropped. Raises PeerDropped if the time ran out."""
        if output.queued < self._peer_bytes or output.dropped:
            return not output.dropped
        with trio.move_on_at(self._deadline(request)):
            while output.queued >= self._peer_bytes and not output.dropped:
                await output.wait()
            return not output.dropped
        if output.dropped or request.pipe.id in self._dropped:  # once per pipe
            return False
        raise self._drop(request.pipe, output, "a reply")

    def _set_send_timeout(self, context: Any, ms: int) -> None:
        pynng.nng.lib.nng_ctx_set_ms(context.context, b"send-timeout", ms)

    def _deadline(self, request: _Request) -> float:
        """When the reply to ``request`` must be taken by its pipe; set at the first wait."""
        if request.deadline is None:
            request.deadline = trio.current_time() + self._reply_timeout
        return request.deadline

    def _output(self, pipe: Any) -> _Output:
        output = self._outputs.get(pipe.id)
        if output is None:
            output = self._outputs[pipe.id] = _Output()
            output.dropped = pipe.id in self._dropped
        return output

    def _forget(self, pipe: Any, output: _Output) -> None:
        """Stop tracking ``pipe`` once no reply is queued for it or waiting."""
        if output.idle() and self._outputs.get(pipe.id) is output:
            del self._outputs[pipe.id]

    def _drop(self, pipe: Any, output: _Output, what: str) -> PeerDropped:
        """Close a pipe that took no reply in time; the error that says so."""
        output.dropped = True
        output.wake()
        self._dropped[pipe.id] = None
        if len(self._dropped) > _DROPPED_REMEMBERED:
            self._dropped.popitem(last=False)
        peer = self._peer_name(pipe)
        try:
            pipe.close()  # NNG frees the replies queued for it
        except pynng.NNGException:  # it closed by itself meanwhile
            pass
        return PeerDropped(
            f"dropped peer {peer}: {what} to it could not be sent within "
            f"{self._reply_timeout:g} s, behind {output.queued} bytes of replies it has "
            "not read; closed its connection"
        )

    def discard(self, reply_to: object) -> None:
        """Free the context behind ``reply_to`` without answering."""
        self._release(self._claim(self._check(reply_to)))

    def close(self) -> None:
        """Wake every waiting receiver; ``close_contexts`` must follow."""
        self._closed = True
        self._waiting.unpark_all()
        trio.lowlevel.notify_closing(self._recv_fd)

    def close_contexts(self) -> None:
        """Close the contexts (blocking, before the socket): their waits end in pynng.Closed."""
        for context in self._contexts:
            try:
                context.close()
            except pynng.NNGException:  # already gone with the socket
                pass

    def _check(self, reply_to: object) -> _Request:
        """``reply_to`` as an unanswered request of this pool, or ConfigError."""
        held = None
        if isinstance(reply_to, _Request):
            held = self._held.get(reply_to.context)
        if held is None or held() is not reply_to:
            raise ConfigError(
                f"{self._name}: to= takes the reply_to of a request received on this rep "
                f"wire and not answered yet, got {reply_to!r}"
            )
        assert isinstance(reply_to, _Request)
        return reply_to

    def _claim(self, request: _Request) -> Any:
        # Dropping the weak reference first means its callback will not run.
        del self._held[request.context]
        return request.context

    def _release(self, context: Any) -> None:
        if not self._closed:
            self._free.append(context)
            self._waiting.unpark()

    def _orphaned(self, context: Any, held: weakref.ref[_Request]) -> None:
        # A weakref callback runs wherever the last reference went, maybe in
        # another thread or in the middle of this pool's code: defer to trio.
        try:
            self._trio_token.run_sync_soon(self._reclaim, context, held)
        except trio.RunFinishedError:
            pass

    def _reclaim(self, context: Any, held: weakref.ref[_Request]) -> None:
        if self._held.get(context) is held:
            del self._held[context]
            self._release(context)
