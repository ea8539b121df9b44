"""NNG requests over contexts: the requesting end behind ``actors.nng``.

``actors.nng.open_request_wire`` makes a Req0 socket (``req_socket``: with
NNG's resend time and tick) and wraps it in a ``RequestWire``: one request
in flight on the socket itself, driven by its descriptors, and more on a
pool of contexts, one each, driven by pynng's aio. It runs under asyncio (a
FastAPI handler's client) and trio alike.

The socket's own request is the fast path, and the only one a caller that
sends one request at a time ever takes: it is sent without blocking, and
its reply taken once the socket's receive descriptor turns readable,
waited for by the event loop's own primitive (``_Trio``, ``_Asyncio``,
chosen once when the wire opens). One given up (cancelled, timed out) is
ended inside NNG at once (``actors.nng_io.give_up``), so NNG does not
resend it. An aio request costs a hop through NNG's task thread and the
GIL taken from there for its send and again for its reply, and anyio's
per-call checks of the event loop on top. The serving end is
``actors.nng_rep``.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, final

import anyio
import pynng  # type: ignore[import-untyped]
import sniffio
import trio

from actors.errors import NotConnected
from actors.nng_io import give_up, receive_now, send_message

__all__ = ["RequestWire", "req_socket"]

T = TypeVar("T")


async def _cancellable(operation: Callable[[], Awaitable[T]]) -> T:
    """Await a pynng call so that cancelling it is seen as the canceller's own.

    Under asyncio, pynng swallows the CancelledError it is cancelled with and
    raises a new, bare one once NNG has cancelled: anyio's cancel scopes (so
    ``anyio.fail_after``) do not recognise that one as theirs and let it
    escape as if the whole task were cancelled. So under asyncio the call
    runs in a task of its own that only this function cancels, and the
    caller gets the original CancelledError. (pynng's trio path is right.)
    """
    if sniffio.current_async_library() != "asyncio":
        return await operation()
    inner = asyncio.ensure_future(operation())
    # Whatever it ends with once we were cancelled is of no interest.
    inner.add_done_callback(lambda done: done.cancelled() or done.exception())
    try:
        return await asyncio.shield(inner)
    except asyncio.CancelledError:
        inner.cancel()  # pynng cancels the NNG operation and waits for it
        with anyio.CancelScope(shield=True):
            await asyncio.wait([inner])
        raise


class _Trio:
    """Waiting on a descriptor, and the clock, under trio."""

    __slots__ = ()

    @staticmethod
    def now() -> float:
        return trio.current_time()

    @staticmethod
    async def wait_readable(fd: int, deadline: float) -> bool:
        """Wait until ``fd`` is readable (True) or ``deadline`` passes (False).

        Raises:
            anyio.ClosedResourceError: the descriptor is being closed.
        """
        with trio.move_on_at(deadline):
            try:
                await trio.lowlevel.wait_readable(fd)
            except trio.ClosedResourceError:
                raise anyio.ClosedResourceError() from None
            return True
        return False

    @staticmethod
    def closing(fd: int) -> None:
        """Wake the tasks waiting on ``fd``, before it is closed."""
        trio.lowlevel.notify_closing(fd)


class _Asyncio:
    """Waiting on a descriptor, and the clock, under asyncio."""

    __slots__ = ("_loop", "_waiting")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._waiting: dict[int, asyncio.Future[bool]] = {}

    def now(self) -> float:
        return self._loop.time()

    async def wait_readable(self, fd: int, deadline: float) -> bool:
        """Wait until ``fd`` is readable (True) or ``deadline`` passes (False).

        Raises:
            anyio.ClosedResourceError: the descriptor is being closed.
        """
        loop = self._loop
        future: asyncio.Future[bool] = loop.create_future()

        def ready(value: bool) -> None:
            if not future.done():
                future.set_result(value)

        loop.add_reader(fd, ready, True)
        timer = None if math.isinf(deadline) else loop.call_at(deadline, ready, False)
        self._waiting[fd] = future
        try:
            return await future
        finally:
            del self._waiting[fd]
            loop.remove_reader(fd)
            if timer is not None:
                timer.cancel()

    def closing(self, fd: int) -> None:
        """Wake the task waiting on ``fd``, before it is closed."""
        future = self._waiting.get(fd)
        if future is not None and not future.done():
            future.set_exception(anyio.ClosedResourceError())


def _event_loop() -> _Trio | _Asyncio | None:
    """The waiting primitives of the running event loop; None where the
    descriptors cannot be waited on (an asyncio loop without
    ``add_reader``: the aio path serves it)."""
    if sniffio.current_async_library() == "trio":
        return _Trio()
    loop = asyncio.get_running_loop()
    try:
        loop.remove_reader(-1)
    except NotImplementedError:
        return None
    except (ValueError, OSError):
        pass
    return _Asyncio()


class _Req0(pynng.Req0):  # type: ignore[misc]
    """Req0 plus NNG's resend tick (how often it looks for requests to resend)."""

    resend_tick = pynng.nng.MsOption("req:resend-tick")


def req_socket(*, resend_ms: int, **options: Any) -> Any:
    """A pynng Req0 socket resending after ``resend_ms`` (``options`` go to pynng).

    NNG looks for requests to resend once per tick (1 s by default); a tick of
    at most ``resend_ms`` resends between one and two ``resend_ms`` late.
    """
    # Set before any context is made: each context copies the resend time.
    socket = _Req0(resend_time=resend_ms, **options)
    socket.resend_tick = min(1000, resend_ms)
    return socket


@final
class _Connected:
    """A flag NNG's thread sets when a connection is made (one assignment)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = False

    def set(self, _pipe: Any) -> None:
        self.value = True


@final
class RequestWire:
    """Sends request frames to a rep listener; each gets exactly one reply frame.

    Make one with ``actors.nng.open_request_wire``, and use it on the event
    loop it was opened on (asyncio or trio). Up to ``contexts`` requests
    are in flight at once: the first on the socket itself, the others on
    contexts; more wait for a free context. Any number of tasks may call
    ``request`` at once.
    """

    def __init__(self, socket: Any, *, name: str, contexts: int,
                 connect_timeout: float | None = None) -> None:
        self._socket = socket
        self._name = name
        self._connect_timeout = connect_timeout
        # Whether a connection was ever made: until then a request waits
        # for one at most connect_timeout (nothing may listen there). Set
        # from NNG's thread; the socket holds the flag, not the wire (no
        # cycle to keep the wire's contexts alive past its close).
        self._ever = _Connected()
        socket.add_post_pipe_connect_cb(self._ever.set)
        if socket.pipes:  # connected before the callback was in place
            self._ever.value = True
        self._loop = _event_loop()
        # The socket's own request, driven by its descriptors: free or not.
        self._direct = self._loop is not None
        self._send_fd = socket.send_fd if self._direct else -1
        self._recv_fd = socket.recv_fd if self._direct else -1
        # Set when the socket's request ends, for callers waiting for it
        # (a wire of one context has no other).
        self._direct_done: anyio.Event | None = None
        # NNG copies the socket's resend time into a context when it is made.
        count = contexts - 1 if self._direct else contexts
        self._contexts = [socket.new_context() for _ in range(count)]
        self._free = list(self._contexts)
        self._slots = anyio.Semaphore(max(1, count))
        self._closed = False

    @property
    def connected(self) -> bool:
        """Whether the wire has ever had a connection to its server."""
        return self._ever.value

    def _not_connected(self) -> NotConnected:
        return NotConnected(
            f"{self._name}: nothing accepted a connection within "
            f"{self._connect_timeout:g} s; the request was not sent")

    def now(self) -> float:
        """The event loop's clock (seconds), for deadlines."""
        return self._loop.now() if self._loop is not None else anyio.current_time()

    @property
    def name(self) -> str:
        """``dialing tcp://127.0.0.1:5555``."""
        return self._name

    async def request(self, frame: bytes, *, timeout: float | None = None) -> bytes:
        """Send ``frame`` on a free context and return the reply frame.

        Waits for a free context if all are busy. The request is sent again
        (same request, same reply awaited) whenever the connection it went
        out on drops, and after each ``resend_time`` without a reply: the
        server may see it more than once. Cancelling leaks nothing and frees
        the context; a reply arriving later is dropped by NNG.

        Args:
            frame: the request.
            timeout: seconds for the whole request, waiting for a context
                included; ``None`` waits for ever.

        Raises:
            TimeoutError: no reply within ``timeout`` (the builtin, which
                asyncio and trio callers alike can catch).
            NotConnected: (a ``TimeoutError``) the wire has never been
                connected and none came within its ``connect_timeout``;
                the request was not sent.
            anyio.ClosedResourceError: the wire is closed, before or while waiting.
        """
        loop = self._loop
        # Counted from here, whatever the request waits for first.
        connect_by = (math.inf if self._ever.value or self._connect_timeout is None
                      else self.now() + self._connect_timeout)
        if loop is not None and not self._contexts and not self._direct:
            # One request in flight at most, on the socket: wait for it.
            began = loop.now()
            await self._wait_direct(loop, timeout, connect_by)
            if timeout is not None:  # the rest of the time is the request's
                timeout = max(0.0, timeout - (loop.now() - began))
        if self._direct and loop is not None:
            if self._closed:
                raise self._closed_error()
            self._direct = False  # taken
            try:
                return await self._request_direct(loop, frame, timeout, connect_by)
            finally:
                self._direct = True
                if self._direct_done is not None:
                    self._direct_done.set()
                    self._direct_done = None
        try:
            with anyio.fail_after(timeout):
                await self._take_slot(connect_by)
                try:
                    context = self._free.pop()
                    try:
                        await self._send_connected(context, frame, connect_by)
                        message = await _cancellable(functools.partial(self._receive, context))
                    except pynng.Closed:
                        raise self._closed_error() from None
                    finally:
                        self._free.append(context)
                finally:
                    self._slots.release()
        except NotConnected:
            raise
        except TimeoutError:
            if timeout is None:
                raise
            raise TimeoutError(f"{self._name}: no reply within {timeout:g} s") from None
        return bytes(message.bytes)

    async def _request_direct(self, loop: _Trio | _Asyncio, frame: bytes,
                              timeout: float | None, connect_by: float) -> bytes:
        """``request`` on the socket itself: sent without blocking (waiting
        while no connection can take it), the reply taken once the socket's
        receive descriptor is readable. A request given up (cancelled, timed
        out) stays in NNG until the next one on the socket replaces it; its
        late reply is dropped there."""
        socket = self._socket
        deadline = math.inf if timeout is None else loop.now() + timeout
        completed = False
        try:
            while True:
                try:
                    socket.send(frame, block=False)
                    break
                except pynng.TryAgain:  # no connection yet
                    if connect_by < deadline and not self._ever.value:
                        if self._closed:
                            raise self._closed_error() from None
                        if not await loop.wait_readable(self._send_fd, connect_by):
                            if not self._ever.value:
                                raise self._not_connected() from None
                    else:
                        await self._wait(loop, self._send_fd, deadline, timeout)
            while True:
                try:
                    reply = receive_now(socket)
                    completed = True
                    return reply
                except pynng.TryAgain:
                    await self._wait(loop, self._recv_fd, deadline, timeout)
        except pynng.Closed:
            raise self._closed_error() from None
        finally:
            if not completed and not self._closed:
                give_up(socket)

    async def _wait(self, loop: _Trio | _Asyncio, fd: int, deadline: float,
                    timeout: float | None) -> None:
        """Wait until ``fd`` is readable; raise if the wire closed or the
        time ran out."""
        if self._closed:  # its descriptors may be gone already
            raise self._closed_error()
        if not await loop.wait_readable(fd, deadline):
            raise self._timed_out(timeout)

    async def _wait_direct(self, loop: _Trio | _Asyncio, timeout: float | None,
                           connect_by: float) -> None:
        """Wait until the socket's request ends (a wire of one context); on
        a wire never connected, at most until ``connect_by``."""
        deadline = math.inf if timeout is None else loop.now() + timeout
        try:
            with anyio.fail_after(None if min(deadline, connect_by) == math.inf
                                  else max(0.0, min(deadline, connect_by) - loop.now())):
                while not self._direct:
                    if self._closed:
                        raise self._closed_error()
                    if self._direct_done is None:
                        self._direct_done = anyio.Event()
                    await self._direct_done.wait()
        except TimeoutError:
            if connect_by < deadline and not self._ever.value:
                raise self._not_connected() from None
            if connect_by < deadline:  # connected meanwhile: the request's own time goes on
                await self._wait_direct(loop, max(0.0, deadline - loop.now()), math.inf)
                return
            raise self._timed_out(timeout) from None

    async def _take_slot(self, connect_by: float) -> None:
        """Take a context's slot; on a wire never connected, wait for one at
        most until ``connect_by``."""
        if connect_by == math.inf:
            await self._slots.acquire()
            return
        with anyio.move_on_at(connect_by) as scope:
            await self._slots.acquire()
        if not scope.cancelled_caught:
            return
        if not self._ever.value:
            raise self._not_connected()
        await self._slots.acquire()  # connected meanwhile

    def _timed_out(self, timeout: float | None) -> TimeoutError:
        return TimeoutError(f"{self._name}: no reply within {timeout:g} s")

    async def aclose(self) -> None:
        """Close the socket; waiting and later requests raise anyio.ClosedResourceError."""
        if not self._closed:
            self._closed = True
            if self._loop is not None:
                for fd in (self._send_fd, self._recv_fd):
                    self._loop.closing(fd)
            # nng_close waits for the socket's pipes to wind down.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._close)
        await anyio.lowlevel.checkpoint()

    # aclose marks the wire closed on the event loop's thread, then closes the
    # contexts on another: each use checks first, with no await in between.

    async def _send_connected(self, context: Any, frame: bytes, connect_by: float) -> None:
        """Send on ``context``; on a wire never connected, give up at
        ``connect_by`` (the send is taken back: nothing went out)."""
        send = functools.partial(self._send, context, frame)
        if self._ever.value or connect_by == math.inf:
            await _cancellable(send)
            return
        sent = False

        async def send_marked() -> None:
            nonlocal sent
            await send()
            sent = True  # before any cancellation the caller may see after it

        with anyio.move_on_at(connect_by) as scope:
            await _cancellable(send_marked)
        if sent or not scope.cancelled_caught:
            return
        if not self._ever.value:
            raise self._not_connected()
        await _cancellable(send)  # connected meanwhile: the cancelled send did not go out

    async def _send(self, context: Any, frame: bytes) -> None:
        if self._closed:
            raise self._closed_error()
        await send_message(context, frame)

    async def _receive(self, context: Any) -> Any:
        if self._closed:
            raise self._closed_error()
        return await context.arecv_msg()

    def _close(self) -> None:
        # Contexts first: once the socket is gone, closing one raises in __del__.
        for context in self._contexts:
            try:
                context.close()
            except pynng.NNGException:
                pass
        self._socket.close()

    def _closed_error(self) -> anyio.ClosedResourceError:
        return anyio.ClosedResourceError(f"wire {self._name} is closed")
