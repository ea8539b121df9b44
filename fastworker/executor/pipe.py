"""The socket pair between the pool and each of its processes.

Every message is its length (8 bytes, big-endian), then that many bytes: a
pickle. The child says ``READY`` once; then each job is
``(key, name, spec or None, payload)`` and each answer a ``Called``. The
parent's end (``Pipe``) is non-blocking and awaited on trio, watching the
process's exit as well; the child's end is plain blocking.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Literal

import trio

#: Every message is its length (8 bytes, big-endian), then that many bytes.
HEADER = struct.Struct("!Q")
#: The child's first message: it has started and waits for jobs.
READY = b"ready"
#: How a task travels: ("ref", module, qualname) or ("value", cloudpickle bytes).
Spec = tuple[Literal["ref"], str, str] | tuple[Literal["value"], bytes]

_CHUNK = 256 * 1024


class Pipe:
    """The parent's end of one process's socket.

    Args:
        exit_fd: readable once the process has exited (its pidfd or sentinel),
            so a death is seen even if a grandchild holds the socket open.
        exited: whether the process is gone (and reaps it if it just exited).
    """

    def __init__(self, sock: socket.socket, exit_fd: int, exited: Callable[[], bool]) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._exit_fd = exit_fd
        self._exited = exited
        self._buffer = bytearray()
        # Where there is epoll, one epoll fd readable when the socket or the
        # exit fd is: an answer is awaited with one wait, not with a task
        # per fd in a nursery (which cost about a third of a job's round
        # trip in the parent).
        self._either: select.epoll | None = None
        if hasattr(select, "epoll"):
            self._either = select.epoll()
            self._either.register(sock.fileno(), select.EPOLLIN)
            self._either.register(exit_fd, select.EPOLLIN)

    async def send(self, message: bytes) -> bool:
        """Send one message; ``False`` if the process is gone."""
        view = memoryview(HEADER.pack(len(message)) + message)
        while view:
            try:
                sent = self._sock.send(view)
            except BlockingIOError:
                await _first_of(
                    lambda: trio.lowlevel.wait_writable(self._sock.fileno()),
                    lambda: trio.lowlevel.wait_readable(self._exit_fd),
                )
                if self._exited():
                    return False
                continue
            except OSError:  # EPIPE, ECONNRESET: the child end is closed
                return False
            view = view[sent:]
        return True

    async def receive(self) -> bytes | None:
        """The next message; ``None`` if the process is gone first."""
        while True:
            is_open = self._fill()
            message = self._take()
            if message is not None:
                return message
            if not is_open or self._exited():
                return None
            if self._either is not None:
                await trio.lowlevel.wait_readable(self._either.fileno())
                continue
            await _first_of(
                lambda: trio.lowlevel.wait_readable(self._sock.fileno()),
                lambda: trio.lowlevel.wait_readable(self._exit_fd),
            )

    def shutdown(self) -> None:
        """Close both directions: the child reads EOF and exits."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self._either is not None:
            self._either.close()
        self._sock.close()

    def _fill(self) -> bool:
        """Read what the socket holds now; ``False`` once it is closed."""
        while True:
            try:
                chunk = self._sock.recv(_CHUNK)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not chunk:
                return False
            self._buffer += chunk

    def _take(self) -> bytes | None:
        buffer = self._buffer
        if len(buffer) < HEADER.size:
            return None
        (length,) = HEADER.unpack_from(buffer)
        end = HEADER.size + length
        if len(buffer) < end:
            return None
        message = bytes(buffer[HEADER.size : end])
        del buffer[:end]
        return message


async def _first_of(*waits: Callable[[], Awaitable[None]]) -> None:
    """Return as soon as any of ``waits`` returns."""
    async with trio.open_nursery() as nursery:
        for wait in waits:
            nursery.start_soon(_then_cancel, wait, nursery.cancel_scope)


async def _then_cancel(wait: Callable[[], Awaitable[None]], scope: trio.CancelScope) -> None:
    await wait()
    scope.cancel()


# The child's end. --------------------------------------------------------------------


def send_blocking(sock: socket.socket, message: bytes) -> None:
    sock.sendall(HEADER.pack(len(message)) + message)


def receive_blocking(sock: socket.socket) -> bytes | None:
    """The next message, or ``None`` once the parent closed the socket."""
    header = _read_exactly(sock, HEADER.size)
    if header is None:
        return None
    (length,) = HEADER.unpack(header)
    return _read_exactly(sock, length)


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    """``size`` bytes, or ``None`` at EOF."""
    data = bytearray(size)
    view = memoryview(data)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            return None
        got += n
    return bytes(data)
