"""NNG requests over contexts: the requesting end behind ``actors.nng``.

``actors.nng.open_request_wire`` makes a Req0 socket (``req_socket``: with
NNG's resend time and tick) and wraps it in a ``RequestWire``: a pool of
contexts, one request in flight on each. It is written on anyio and pynng's
own async calls, which pick the event loop through sniffio, so it runs
under asyncio (a FastAPI handler's client) and trio alike. The serving end
is ``actors.nng_rep``.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, final

import anyio
import pynng  # type: ignore[import-untyped]
import sniffio

from actors.nng_rep import send_message

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
class RequestWire:
    """Sends request frames to a rep listener; each gets exactly one reply frame.

    Make one with ``actors.nng.open_request_wire``. Runs under asyncio and
    trio. Up to ``contexts`` requests are in flight at once; more wait for a
    free context. Any number of tasks may call ``request`` at once.
    """

    def __init__(self, socket: Any, *, name: str, contexts: int) -> None:
        self._socket = socket
        self._name = name
        # NNG copies the socket's resend time into a context when it is made.
        self._contexts = [socket.new_context() for _ in range(contexts)]
        self._free = list(self._contexts)
        self._slots = anyio.Semaphore(contexts)
        self._closed = False

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
            anyio.ClosedResourceError: the wire is closed, before or while waiting.
        """
        try:
            with anyio.fail_after(timeout):
                async with self._slots:
                    context = self._free.pop()
                    try:
                        await _cancellable(functools.partial(self._send, context, frame))
                        message = await _cancellable(functools.partial(self._receive, context))
                    except pynng.Closed:
                        raise self._closed_error() from None
                    finally:
                        self._free.append(context)
        except TimeoutError:
            if timeout is None:
                raise
            raise TimeoutError(f"{self._name}: no reply within {timeout:g} s") from None
        return bytes(message.bytes)

    async def aclose(self) -> None:
        """Close the socket; waiting and later requests raise anyio.ClosedResourceError."""
        if not self._closed:
            self._closed = True
            # nng_close waits for the socket's pipes to wind down.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._close)
        await anyio.lowlevel.checkpoint()

    # aclose marks the wire closed on the event loop's thread, then closes the
    # contexts on another: each use checks first, with no await in between.

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
