"""NNG calls pynng lacks or gets wrong, for the wires' hot paths.

pynng's aio completes every operation through NNG's task thread: a hop of
threads, the GIL taken from there and a wake-up of the event loop per
message, which on two cores cost more than the work. So the wires call
NNG directly where they can: a context's receive that never blocks
(``try_receive``), a reply sent in the caller's call on an aio with no
callback (``send_reply``, waited for in a worker thread only when it must
wait behind another), a reply taken without blocking (``receive_now``,
empty ones too), and a request given up ended inside NNG (``give_up``).
pynng frees nothing after a send that failed or was cancelled (NNG hands
the message back; pynng marked it given away), so every send here takes
the message back (``send_message`` for pynng's own sends). Used by
``actors.nng_rep`` and ``actors.nng_req``; see docs/transport.md.
"""

from __future__ import annotations

import threading
from typing import Any

import pynng  # type: ignore[import-untyped]
import trio

__all__ = ["PendingSend", "finish_send", "give_up", "receive_now", "send_message",
           "send_reply", "try_receive"]

_lib = pynng.nng.lib
_ffi = pynng.nng.ffi


def try_receive(socket: Any, context: Any) -> Any:
    """The request waiting for ``context`` (a pynng Message), or None if
    none waits; never blocks. A receive that finds nothing leaves the
    context as it was. Raises pynng's errors (Closed, ...)."""
    out = _ffi.new("nng_msg **")
    result = _lib.nng_ctx_recvmsg(context.context, out, _lib.NNG_FLAG_NONBLOCK)
    if result == _lib.NNG_EAGAIN:
        return None
    pynng.check_err(result)
    message = pynng.Message(out[0])
    socket._try_associate_msg_with_pipe(message)
    return message


class PendingSend:
    """A reply NNG could not write at once, waited for in a worker thread.

    Whoever ends it frees the aio (with the message, if NNG gave it back):
    the thread once the send completes, or ``cancel`` from trio's side when
    the thread never started (trio may give up before it starts one). The
    lock orders them, so the aio is freed once and never used after.
    """

    __slots__ = ("aio", "done", "lock", "result", "started")

    def __init__(self, aio: Any) -> None:
        self.aio = aio
        self.lock = threading.Lock()
        self.started = False
        self.done = False
        self.result = 0

    def wait(self) -> int:
        with self.lock:
            if self.done:  # given up before this thread started: freed
                return self.result
            self.started = True
        _lib.nng_aio_wait(self.aio)
        with self.lock:
            self.done = True
            self.result = finish_send(self.aio)
        return self.result

    def cancel(self) -> None:
        """Abort the send (its message is dropped); free it here if no
        thread waits for it."""
        with self.lock:
            if self.done:
                return
            _lib.nng_aio_cancel(self.aio)
            if self.started:
                return  # the thread frees it once NNG lets go, at once now
            self.done = True
        _lib.nng_aio_wait(self.aio)  # prompt: it was just cancelled
        finish_send(self.aio)


def finish_send(aio: Any) -> int:
    """The result of a completed send aio; frees it, and the message if NNG
    gave it back (a failed send)."""
    result = _lib.nng_aio_result(aio)
    if result != 0:
        message = _lib.nng_aio_get_msg(aio)
        if message != _ffi.NULL:
            _lib.nng_msg_free(message)
    _lib.nng_aio_free(aio)
    return int(result)


async def send_reply(context: Any, frame: bytes, limiter: trio.CapacityLimiter) -> None:
    """Send ``frame`` on ``context``: at once, in this call, when its
    connection is free to write; else wait for NNG in a worker thread of
    ``limiter`` (cancellable: a cancelled reply is dropped, never leaked).
    The context's send timeout bounds the wait. Raises pynng's errors
    (Timeout, Closed, ...)."""
    out = _ffi.new("nng_aio **")
    pynng.check_err(_lib.nng_aio_alloc(out, _ffi.NULL, _ffi.NULL))
    aio = out[0]
    message = _ffi.new("nng_msg **")
    result = _lib.nng_msg_alloc(message, 0)
    if result == 0:
        result = _lib.nng_msg_append(message[0], frame, len(frame))
        if result != 0:
            _lib.nng_msg_free(message[0])
    if result != 0:
        _lib.nng_aio_free(aio)
        pynng.check_err(result)
    _lib.nng_aio_set_msg(aio, message[0])
    _lib.nng_ctx_send(context.context, aio)
    if not _lib.nng_aio_busy(aio):  # done in that call: the common case
        pynng.check_err(finish_send(aio))
        return
    pending = PendingSend(aio)
    try:
        result = await trio.to_thread.run_sync(pending.wait, abandon_on_cancel=True,
                                               limiter=limiter)
    except BaseException:
        pending.cancel()
        raise
    pynng.check_err(result)


async def send_message(target: Any, frame: bytes) -> None:
    """``target.asend_msg`` (a pynng socket or context) that never leaks ``frame``.

    NNG gives a message back to its sender whenever a send fails, is
    cancelled or times out, but pynng has marked it as given away by then and
    never frees it (1 MB frames cancelled 300 times: +316 MB). Marking it as
    ours again lets ``Message.__del__`` free it, so the send may be cancelled.
    """
    message = pynng.Message(frame)
    try:
        await target.asend_msg(message)
    except BaseException:
        message._mem_freed = False  # NNG did not take it: ours to free
        raise





def receive_now(socket: Any) -> bytes:
    """The reply waiting on ``socket``, as bytes (empty ones too, which
    pynng's ``recv`` cannot return). Raises pynng.TryAgain if none waits."""
    out = _ffi.new("nng_msg **")
    pynng.check_err(_lib.nng_recvmsg(socket.socket, out, _lib.NNG_FLAG_NONBLOCK))
    message = out[0]
    try:
        return bytes(_ffi.buffer(_lib.nng_msg_body(message), _lib.nng_msg_len(message)))
    finally:
        _lib.nng_msg_free(message)


def give_up(socket: Any) -> None:
    """End the request in flight on ``socket`` inside NNG, as cancelling a
    receive does (its reply taken and dropped if it came): else NNG goes on
    resending it, at every ``resend_time`` and reconnection, until the next
    request replaces it. An aio with no callback: all of it happens in this
    call."""
    out = _ffi.new("nng_aio **")
    if _lib.nng_aio_alloc(out, _ffi.NULL, _ffi.NULL) != 0:
        return  # out of memory: the next request replaces it
    aio = out[0]
    try:
        _lib.nng_recv_aio(socket.socket, aio)
        _lib.nng_aio_cancel(aio)
        _lib.nng_aio_wait(aio)
        if _lib.nng_aio_result(aio) == 0:  # the reply had come: drop it
            message = _lib.nng_aio_get_msg(aio)
            if message != _ffi.NULL:
                _lib.nng_msg_free(message)
    finally:
        _lib.nng_aio_free(aio)
