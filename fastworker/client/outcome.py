"""What the control plane's answers mean to the caller.

A submission's answer becomes its id or the exception for its refusal; a
final ``TaskRecord`` becomes the task's value or the exception
``Client.result`` raises (``task_value``). ``Completed`` hands a final
record to ``as_completed`` and ``on_complete``; ``AsCompleted`` is the
iterator behind ``as_completed``. Nothing here sends anything.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, final

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from fastworker.client.poller import ResultPoller
from fastworker.client.slot import Slot
from fastworker.errors import (
    ConnectionLost,
    InvalidSubmission,
    JournalUnavailable,
    QueueFull,
    ResultUnknown,
    TaskCancelled,
    TaskError,
    TaskExpired,
    TaskTimeout,
    Unavailable,
    UnknownTask,
)
from fastworker.messages import Accepted, Rejected, TaskRecord
from fastworker.payload import unpack_value

__all__ = ["AsCompleted", "Completed", "accepted_id", "notify", "task_value"]

#: The logger of the whole client (``on_complete`` callbacks report here).
log = logging.getLogger("fastworker.client")

_REJECTIONS: dict[str, type[Exception]] = {
    "QueueFull": QueueFull,
    "UnknownTask": UnknownTask,
    "InvalidSubmission": InvalidSubmission,
    "JournalUnavailable": JournalUnavailable,
    "Unavailable": Unavailable,
}


def accepted_id(reply: Any) -> str:
    """The id of an accepted submission, or the exception its refusal names."""
    if isinstance(reply, Accepted):
        return reply.id
    if isinstance(reply, Rejected):
        raise _REJECTIONS.get(reply.error, InvalidSubmission)(reply.message)
    raise ConnectionLost(f"unexpected answer to a submission: {type(reply).__name__}")


def task_value(record: TaskRecord) -> Any:
    """A final record's value, or the exception ``Client.result`` raises for it."""
    if record.state == "succeeded":
        return unpack_value(record.value) if record.value is not None else None
    if record.state == "unknown":
        if record.error is not None:  # the client's own word on it (a restart lost it)
            raise ResultUnknown(record.error.message)
        raise ResultUnknown(
            f"no record of task {record.id}: never submitted here, or its result expired"
        )
    error = record.error
    if record.state == "cancelled" or (error is not None and error.kind == "cancelled"):
        raise TaskCancelled(record.id, "TaskCancelled", error.message if error else "cancelled")
    if record.state == "expired" or (error is not None and error.kind == "expired"):
        raise TaskExpired(record.id, "TaskExpired", error.message if error else "expired")
    if error is None:
        raise TaskError(record.id, "Unknown", f"task ended as {record.state}")
    kind = TaskTimeout if error.kind == "timeout" else TaskError
    raise kind(record.id, error.type, error.message, error.traceback)


@attrs.frozen
class Completed:
    """A task that became final, as ``Client.as_completed`` and
    ``Client.on_complete`` hand it over.

    ``record`` is its final ``TaskRecord``; ``result()`` (or ``value``)
    returns its value or raises what ``Client.result`` would raise
    (``TaskError``, ``TaskTimeout``, ``TaskCancelled``, ``ResultUnknown``).
    """

    id: str
    record: TaskRecord

    @property
    def ok(self) -> bool:
        """Whether the task succeeded (``result()`` will not raise)."""
        return self.record.state == "succeeded"

    @property
    def value(self) -> Any:
        """The task's value; raises as ``result()`` does."""
        return task_value(self.record)

    def result(self) -> Any:
        """The task's value, or the exception ``Client.result`` would raise."""
        return task_value(self.record)


async def notify(
    task_id: str, slot: Slot[TaskRecord], callback: Callable[[Completed], Any]
) -> None:
    """Call ``callback`` with the task's ``Completed`` (awaiting what it
    returns if that is awaitable); log what goes wrong, raise nothing."""
    try:
        record = slot.get()
    except Exception as error:
        log.warning("on_complete callback for task %s not called: %s", task_id, error)
        return
    try:
        outcome = callback(Completed(task_id, record))
        if inspect.isawaitable(outcome):
            await outcome
    except Exception:
        log.exception("on_complete callback for task %s raised", task_id)


_Done = tuple[str, Slot[TaskRecord]]


def _forward(send: MemoryObjectSendStream[_Done], task_id: str, slot: Slot[TaskRecord]) -> None:
    try:
        send.send_nowait((task_id, slot))
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass  # the iteration was closed meanwhile


@final
class AsCompleted(AsyncIterator[Completed]):
    """The async iterator of ``Client.as_completed``.

    Interest in the ids is registered when iteration starts (the first
    ``__anext__``), which is also when ``timeout`` starts counting. The
    rest is forgotten at the poller as soon as the iteration ends: run out,
    raised, ``aclose()``d, or dropped after a ``break``.
    """

    def __init__(self, poller: ResultPoller, task_ids: Iterable[str],
                 timeout: float | None) -> None:
        self._poller = poller
        self._ids = list(dict.fromkeys(task_ids))  # each id once, in order
        self._timeout = timeout
        self._deadline = math.inf
        self._pending: dict[str, Slot[TaskRecord]] = {}
        self._send: MemoryObjectSendStream[_Done] | None = None
        self._receive: MemoryObjectReceiveStream[_Done] | None = None
        self._thread: int | None = None
        self._started = False
        self._closed = False

    def __aiter__(self) -> AsCompleted:
        return self

    def _start(self) -> None:
        self._started = True
        self._thread = threading.get_ident()
        poller = self._poller
        if poller.closed:
            self._closed = True
            raise ConnectionLost("the client was closed")
        if self._timeout is not None:
            self._deadline = anyio.current_time() + self._timeout
        self._send, self._receive = anyio.create_memory_object_stream[_Done](math.inf)
        for task_id in self._ids:
            slot = poller.expect(task_id)
            self._pending[task_id] = slot
            slot.when_done(functools.partial(_forward, self._send, task_id))

    async def __anext__(self) -> Completed:
        if not self._started:
            self._start()
        if self._closed or not self._pending:
            self._close()
            raise StopAsyncIteration
        receive = self._receive
        assert receive is not None
        try:
            try:
                task_id, slot = receive.receive_nowait()  # never drop one already in
            except anyio.WouldBlock:
                with anyio.CancelScope(deadline=self._deadline) as scope:
                    task_id, slot = await receive.receive()
                if scope.cancelled_caught:
                    raise TimeoutError(
                        f"{len(self._pending)} of {len(self._ids)} tasks still pending "
                        f"after {self._timeout:g} s"
                    ) from None
            del self._pending[task_id]
            record = slot.get()  # ConnectionLost when the poll failed
        except BaseException:
            self._close()
            raise
        if not self._pending:
            self._close()
        return Completed(task_id, record)

    async def aclose(self) -> None:
        """Stop early: forget the ids not yet yielded."""
        self._close()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task_id, slot in self._pending.items():
            self._poller.forget(task_id, slot)
        self._pending.clear()
        if self._send is not None and self._receive is not None:
            self._send.close()
            self._receive.close()

    def __del__(self) -> None:
        # ``break`` in an ``async for`` drops the iterator without closing
        # it; forget its interest then (only on the event loop's thread,
        # where the poller lives).
        if not self._closed and self._thread == threading.get_ident():
            self._close()
