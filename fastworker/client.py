"""The client: submit tasks and get their results, from asyncio or trio.

``Client`` runs under either library (FastAPI handlers are asyncio; trio
programs are trio): it is written on anyio, and pynng picks the library
itself. ``SyncClient`` wraps it for blocking code.

Speed comes from coalescing, not from a batch API. Every ``delay`` puts its
``Submit`` on a queue; a few flusher tasks per port take everything queued
(up to ``max_batch``) and send it as one request frame, so a thousand
concurrent ``delay`` calls cost a handful of round trips. Results work the
same way: ``result`` registers interest in an id, and pollers ask the store
about every id waited for in one ``ResultQuery``, which the store answers as
soon as any of them is final. ``as_completed`` and ``on_complete`` ride the
same machinery: they register interest the way ``result`` does and are told
as each slot is answered, so results arrive in completion order.

Task ids are chosen here (a random per-client prefix and a counter), so a
resent submission is recognised by the control plane, and ``submit`` can
wait for the result in the same breath as it submits.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from datetime import datetime
from itertools import count
from types import TracebackType
from typing import Any, Generic, TypeVar, final

import anyio
import anyio.abc
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from actors.edge import offset_address
from actors.errors import FrameError
from actors.frame import DEFAULT_MAX_FRAME_BYTES, Framer, secret_from
from actors.nng import RequestWire, open_request_wire
from fastworker.probe import discover
from fastworker.errors import (
    ConnectionLost,
    InvalidSubmission,
    QueueFull,
    ResultUnknown,
    TaskCancelled,
    TaskExpired,
    TaskError,
    TaskTimeout,
    UnknownTask,
)
from fastworker.messages import (
    CODEC,
    PRIORITIES,
    RESULTS_PORT_OFFSET,
    Accepted,
    Cancel,
    CancelReply,
    Records,
    Rejected,
    StatusQuery,
    Stop,
    Submit,
    TaskRecord,
    Watch,
)
from fastworker.payload import pack_call, unpack_value
from fastworker.tasks import Task, task_name

T = TypeVar("T")

log = logging.getLogger("fastworker.client")

#: Where the control plane listens unless told otherwise.
DEFAULT_ADDRESS = "tcp://127.0.0.1:5555"
#: How long a submission may wait for room in a full queue, in seconds.
DEFAULT_QUEUE_WAIT = 5.0
#: How long a request may go unanswered before the call fails, in seconds.
DEFAULT_REQUEST_TIMEOUT = 30.0
#: The longest one result poll waits at the store.
POLL_WAIT = 10.0

_REJECTIONS: dict[str, type[Exception]] = {
    "QueueFull": QueueFull,
    "UnknownTask": UnknownTask,
    "InvalidSubmission": InvalidSubmission,
}


def _read_secret_file(path: str | None) -> str | None:
    if not path:
        return None
    try:
        return open(path).read().strip() or None
    except OSError as error:
        raise InvalidSubmission(
            f"FASTWORKER_SECRET_FILE {path}: cannot read: {error.strerror}"
        ) from None


@final
class _Slot(Generic[T]):
    """A one-shot answer for one caller."""

    __slots__ = ("_event", "_value", "_error", "_on_done")

    def __init__(self) -> None:
        self._event = anyio.Event()
        self._value: Any = None
        self._error: BaseException | None = None
        self._on_done: Callable[[_Slot[T]], None] | None = None

    def set(self, value: T) -> None:
        if not self._event.is_set():
            self._value = value
            self._done()

    def fail(self, error: BaseException) -> None:
        if not self._event.is_set():
            self._error = error
            self._done()

    def when_done(self, callback: Callable[[_Slot[T]], None]) -> None:
        """Call ``callback(self)`` once the answer is in (at once if it is).
        It runs inside ``set``/``fail``, so it must not block or raise."""
        self._on_done = callback
        if self._event.is_set():
            callback(self)

    def _done(self) -> None:
        self._event.set()
        if self._on_done is not None:
            self._on_done(self)

    def get(self) -> T:
        """The answer, once it is in (raises the failure)."""
        assert self._event.is_set()
        if self._error is not None:
            raise self._error
        value: T = self._value
        return value

    async def wait(self) -> T:
        await self._event.wait()
        return self.get()


class _Coalescer:
    """Sends the messages queued for one port in request frames, a batch per
    frame, ``flushers`` frames in flight at once; hands each caller the
    reply message at its position."""

    def __init__(self, client: Client, wire: RequestWire, *, timeout: float) -> None:
        self.client = client
        self.wire = wire
        self.timeout = timeout
        send, receive = anyio.create_memory_object_stream[tuple[Any, _Slot[Any]]](math.inf)
        self._send: MemoryObjectSendStream[tuple[Any, _Slot[Any]]] = send
        self._receive: MemoryObjectReceiveStream[tuple[Any, _Slot[Any]]] = receive

    def put(self, message: Any) -> _Slot[Any]:
        slot: _Slot[Any] = _Slot()
        self._send.send_nowait((message, slot))
        return slot

    async def ask(self, message: Any) -> Any:
        return await self.put(message).wait()

    def close(self) -> None:
        """Fail what is still queued, and close the queue."""
        while True:
            try:
                _, slot = self._receive.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
            slot.fail(ConnectionLost("the client was closed"))
        self._send.close()
        self._receive.close()

    async def flush_forever(self) -> None:
        receive = self._receive
        limit = self.client.max_batch
        while True:
            batch = [await receive.receive()]
            while len(batch) < limit:
                try:
                    batch.append(receive.receive_nowait())
                except anyio.WouldBlock:
                    break
            await self._send_batch(batch)

    async def _send_batch(self, batch: list[tuple[Any, _Slot[Any]]]) -> None:
        try:
            replies = await self.client._request(self.wire, [m for m, _ in batch], self.timeout)
        except ConnectionLost as error:
            for _, slot in batch:
                slot.fail(error)
            return
        if len(replies) != len(batch):
            mismatch = ConnectionLost(
                f"{self.wire.name}: {len(replies)} answers to {len(batch)} requests"
            )
            for _, slot in batch:
                slot.fail(mismatch)
            return
        for (_, slot), reply in zip(batch, replies):
            slot.set(reply)


class _ResultPoller:
    """Waits for results through the client's watch session at the store:
    each poll carries only the ids not yet sent, and brings back every
    record of the session that became final, so N results cost far fewer
    than N round trips. One poll is parked at a time; a poll carrying new
    ids sends the parked one home."""

    def __init__(self, client: Client, wire: RequestWire) -> None:
        self.client = client
        self.wire = wire
        self.session = client._prefix
        self.waiters: dict[str, list[_Slot[TaskRecord]]] = {}
        self.new_ids: dict[str, None] = {}  # waited for, not yet sent to the store
        self.elsewhere: set[str] = set()  # their Watch travels with their submission
        self.in_flight = 0
        send, receive = anyio.create_memory_object_stream[None](math.inf)
        self._wake_send: MemoryObjectSendStream[None] = send
        self._wake_receive: MemoryObjectReceiveStream[None] = receive

    def expect(self, task_id: str, *, sent: bool = False) -> _Slot[TaskRecord]:
        """Register interest in ``task_id``; ``sent``: a Watch for it is
        already on its way (``submit`` sends one with the submission)."""
        slot: _Slot[TaskRecord] = _Slot()
        waiters = self.waiters.setdefault(task_id, [])
        waiters.append(slot)
        if sent:
            self.elsewhere.add(task_id)
        elif len(waiters) == 1:
            self.new_ids[task_id] = None
            self._wake_send.send_nowait(None)
        return slot

    def forget(self, task_id: str, slot: _Slot[TaskRecord]) -> None:
        waiters = self.waiters.get(task_id)
        if waiters is None:
            return
        if slot in waiters:
            waiters.remove(slot)
        if not waiters:
            del self.waiters[task_id]
            self.new_ids.pop(task_id, None)
            self.elsewhere.discard(task_id)

    async def wait(self, task_id: str, timeout: float | None) -> TaskRecord:
        slot = self.expect(task_id)
        try:
            with anyio.fail_after(timeout):
                return await slot.wait()
        finally:
            self.forget(task_id, slot)

    def deliver(self, records: Iterable[TaskRecord]) -> None:
        for record in records:
            for slot in self.waiters.pop(record.id, []):
                slot.set(record)
            self.elsewhere.discard(record.id)

    def resend(self, task_id: str) -> None:
        """Cover ``task_id`` by a poll again (its Watch came back without it)."""
        self.elsewhere.discard(task_id)
        if task_id in self.waiters:
            self.new_ids[task_id] = None
            self._wake_send.send_nowait(None)

    def close(self) -> None:
        """Fail every waiter, and close the wake-up queue."""
        for slots in self.waiters.values():
            for slot in slots:
                slot.fail(ConnectionLost("the client was closed"))
        self.waiters.clear()
        self._wake_send.close()
        self._wake_receive.close()

    async def poll_forever(self) -> None:
        limit = self.client.max_batch * 8
        while True:
            polled = len(self.waiters) - len(self.elsewhere)  # ids only a poll covers
            if not self.new_ids and (self.in_flight or polled <= 0):
                await self._wake_receive.receive()
                continue
            ids = list(itertools.islice(self.new_ids, limit))
            for task_id in ids:
                del self.new_ids[task_id]
            self.in_flight += 1
            try:
                (reply,) = await self.client._request(
                    self.wire,
                    [Watch(session=self.session, ids=tuple(ids), wait=self.client.poll_wait)],
                    self.client.poll_wait + self.client.request_timeout,
                )
            except ConnectionLost as error:
                for slots in self.waiters.values():
                    for slot in slots:
                        slot.fail(error)
                self.waiters.clear()
                self.new_ids.clear()
                continue
            finally:
                self.in_flight -= 1
                self._wake_send.send_nowait(None)
            assert isinstance(reply, Records)
            self.deliver(reply.records)
            if reply.waited_out:
                # A whole poll passed with nothing final: ask whether the
                # store knows the ids at all (an expired or foreign id, or
                # a control plane that restarted, would be waited for
                # forever otherwise).
                await self._settle_unknown(list(itertools.islice(self.waiters, limit)))

    async def _settle_unknown(self, ids: list[str]) -> None:
        if not ids:
            return
        try:
            (reply,) = await self.client._request(
                self.wire, [StatusQuery(ids=tuple(ids))], self.client.request_timeout
            )
        except ConnectionLost:
            return  # the next poll will say so
        assert isinstance(reply, Records)
        self.deliver(record for record in reply.records if record.state == "unknown")


def _seconds_until(when: datetime | float, name: str) -> float:
    if isinstance(when, datetime):
        if when.tzinfo is None:
            raise InvalidSubmission(f"{name} must be an aware datetime (with a tzinfo)")
        return when.timestamp() - time.time()
    if isinstance(when, (int, float)) and not isinstance(when, bool):
        return float(when) - time.time()
    raise InvalidSubmission(f"{name} must be a datetime or Unix seconds, got {when!r}")


def _schedule(countdown: float | None, eta: datetime | float | None,
              expires: datetime | float | None) -> dict[str, Any]:
    """``delay`` and ``expires_in`` of a Submit, from the client's options:
    relative seconds, so the two machines' clocks need not agree."""
    fields: dict[str, Any] = {}
    if countdown is not None and eta is not None:
        raise InvalidSubmission("give countdown or eta, not both")
    if countdown is not None:
        if not (isinstance(countdown, (int, float)) and math.isfinite(countdown)):
            raise InvalidSubmission(f"countdown must be a number of seconds, got {countdown!r}")
        fields["delay"] = max(float(countdown), 0.0)
    elif eta is not None:
        fields["delay"] = max(_seconds_until(eta, "eta"), 0.0)
    if expires is not None:
        if isinstance(expires, datetime):
            left = _seconds_until(expires, "expires")
        elif isinstance(expires, (int, float)) and not isinstance(expires, bool) and (
                math.isfinite(expires)):
            left = float(expires)
        else:
            raise InvalidSubmission(f"expires must be seconds or a datetime, got {expires!r}")
        if left <= 0:
            raise InvalidSubmission(f"expires is already past ({left:.3f} s)")
        fields["expires_in"] = left
    return fields


def _task_value(record: TaskRecord) -> Any:
    """A final record's value, or the exception ``Client.result`` raises for it."""
    if record.state == "succeeded":
        return unpack_value(record.value) if record.value is not None else None
    if record.state == "unknown":
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
        return _task_value(self.record)

    def result(self) -> Any:
        """The task's value, or the exception ``Client.result`` would raise."""
        return _task_value(self.record)


_Done = tuple[str, _Slot[TaskRecord]]


def _forward(send: MemoryObjectSendStream[_Done], task_id: str, slot: _Slot[TaskRecord]) -> None:
    try:
        send.send_nowait((task_id, slot))
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass  # the iteration was closed meanwhile


@final
class _AsCompleted:
    """The async iterator of ``Client.as_completed``.

    Interest in the ids is registered when iteration starts (the first
    ``__anext__``), which is also when ``timeout`` starts counting. The
    rest is forgotten at the poller as soon as the iteration ends: run out,
    raised, ``aclose()``d, or dropped after a ``break``.
    """

    def __init__(self, client: Client, task_ids: Iterable[str], timeout: float | None) -> None:
        self._client = client
        self._ids = list(dict.fromkeys(task_ids))  # each id once, in order
        self._timeout = timeout
        self._deadline = math.inf
        self._pending: dict[str, _Slot[TaskRecord]] = {}
        self._poller: _ResultPoller | None = None
        self._send: MemoryObjectSendStream[_Done] | None = None
        self._receive: MemoryObjectReceiveStream[_Done] | None = None
        self._thread: int | None = None
        self._started = False
        self._closed = False

    def __aiter__(self) -> _AsCompleted:
        return self

    def _start(self) -> None:
        self._started = True
        self._thread = threading.get_ident()
        poller = self._client._results
        if poller is None:
            self._closed = True
            raise ConnectionLost("the client was closed")
        if self._timeout is not None:
            self._deadline = anyio.current_time() + self._timeout
        self._send, self._receive = anyio.create_memory_object_stream[_Done](math.inf)
        self._poller = poller
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
        if self._poller is not None:
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


class Client:
    """Submits tasks to a control plane and gets their results.

    Use it as ``async with Client() as client:`` under asyncio or trio.

    Args:
        address: the control plane's base address (submissions on
            base+0..3 by priority, queries on base+4); default
            ``$FASTWORKER_ADDRESS`` or ``tcp://127.0.0.1:5555``.
        secret: the shared secret; default ``$FASTWORKER_SECRET``, or the
            contents of the file ``$FASTWORKER_SECRET_FILE`` (neither set:
            frames are not signed, which a loopback control plane accepts).
        queue_wait: how long a submission may wait for room when the
            control plane's queue is full, before ``QueueFull``.
        request_timeout: how long a request may go unanswered before the
            call fails with ``ConnectionLost``.
        max_batch: the most requests coalesced into one frame.
        contexts: frames in flight at once per port.
        poll_wait: the longest one result poll waits at the control plane;
            an id it has no record of is reported (``ResultUnknown``) after
            one such poll.
        discover: with no ``address`` and no ``$FASTWORKER_ADDRESS``, find
            the control plane with its discovery beacon when the client
            opens (on this host or the LAN; docs/discovery.md), waiting at
            most this many seconds before ``DiscoveryTimeout``. ``None``
            (the default): no discovery, ``tcp://127.0.0.1:5555``.
    """

    def __init__(
        self,
        address: str | None = None,
        secret: str | bytes | None = None,
        *,
        queue_wait: float = DEFAULT_QUEUE_WAIT,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        max_batch: int = 512,
        contexts: int = 8,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        poll_wait: float = POLL_WAIT,
        discover: float | None = None,
    ) -> None:
        given = address or os.environ.get("FASTWORKER_ADDRESS")
        self.address = given or DEFAULT_ADDRESS
        self._discover = None if given else discover
        if secret is None:
            secret = os.environ.get("FASTWORKER_SECRET") or _read_secret_file(
                os.environ.get("FASTWORKER_SECRET_FILE")
            )
        self.queue_wait = queue_wait
        self.request_timeout = request_timeout
        self.max_batch = max_batch
        self.contexts = contexts
        self.max_frame_bytes = max_frame_bytes
        self.poll_wait = poll_wait
        self._framer = Framer(CODEC, secret=secret_from(secret), max_frame_bytes=max_frame_bytes)
        self._prefix = secrets.token_hex(6)
        self._counter = count(1)
        self._wires: list[RequestWire] = []
        self._submitters: list[_Coalescer] = []
        self._queries: _Coalescer | None = None
        self._results: _ResultPoller | None = None
        self._task_group: anyio.abc.TaskGroup | None = None

    async def __aenter__(self) -> Client:
        if self._discover is not None:
            self.address, _ = await discover(timeout=self._discover)
        for offset in range(len(PRIORITIES) + 1):
            self._wires.append(
                await open_request_wire(
                    offset_address(self.address, offset),
                    recv_max_size=self.max_frame_bytes,
                    contexts=self.contexts,
                )
            )
        timeout = self.queue_wait + self.request_timeout
        self._submitters = [_Coalescer(self, wire, timeout=timeout) for wire in self._wires[:4]]
        query_wire = self._wires[RESULTS_PORT_OFFSET]
        self._queries = _Coalescer(self, query_wire, timeout=self.request_timeout)
        self._results = _ResultPoller(self, query_wire)
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        for coalescer in [*self._submitters, self._queries]:
            for _ in range(max(1, self.contexts // 2)):
                self._task_group.start_soon(coalescer.flush_forever)
        for _ in range(max(1, self.contexts // 2)):
            self._task_group.start_soon(self._results.poll_forever)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        await self.aclose()
        return None

    async def aclose(self) -> None:
        """Stop the flushers and close the connections."""
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()
            await self._task_group.__aexit__(None, None, None)
            self._task_group = None
        for part in [*self._submitters, self._queries, self._results]:
            if part is not None:
                part.close()
        self._submitters, self._queries, self._results = [], None, None
        with anyio.CancelScope(shield=True):
            for wire in self._wires:
                await wire.aclose()
        self._wires = []

    # -- submitting --------------------------------------------------------

    async def delay(
        self, task: str | Task[Any, Any], /, *args: Any, priority: str | None = None, **kwargs: Any
    ) -> str:
        """Queue ``task(*args, **kwargs)``; return its id once it is queued.

        Raises:
            UnknownTask, QueueFull, InvalidSubmission, ConnectionLost.
        """
        return await self.send(task, args, kwargs, priority=priority)

    async def send(
        self,
        task: str | Task[Any, Any],
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        priority: str | None = None,
        timeout: float | None = None,
        queue_wait: float | None = None,
        task_id: str | None = None,
        countdown: float | None = None,
        eta: datetime | float | None = None,
        expires: datetime | float | None = None,
        retries: int | None = None,
        key: str | None = None,
    ) -> str:
        """The explicit form of ``delay``, with the options of one run.

        Args:
            task: a task object or its name.
            args, kwargs: the call's arguments.
            priority: critical, high, normal or low (default: the task's,
                or normal).
            timeout: the time limit for this run (default: the task's).
            queue_wait: how long to wait for room (default: the client's).
            task_id: choose the id (a resubmission with the same id is
                recognised, not run twice).
            countdown: seconds to wait before queueing it; ``eta``: when to
                queue it (an aware ``datetime``, or Unix seconds). The
                control plane holds it until then; one of the two.
            expires: a deadline, seconds from now or a ``datetime`` / Unix
                seconds: a task not started by then never runs, and its
                result raises ``TaskExpired``.
            retries: how often a failed attempt runs again (default: the
                task's ``retries``).
            key: an idempotency key: while a task submitted with the same
                key is queued, scheduled or running, this call returns that
                task's id and queues nothing.
        """
        submit = self._submit_message(task, args, kwargs, priority, timeout, queue_wait, task_id)
        if countdown is not None or eta is not None or expires is not None:
            submit = attrs.evolve(submit, **_schedule(countdown, eta, expires))
        if retries is not None:
            if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
                raise InvalidSubmission(f"retries must be a whole number >= 0, got {retries!r}")
            submit = attrs.evolve(submit, retries=retries)
        if key is not None:
            if not isinstance(key, str) or not key:
                raise InvalidSubmission(f"key must be a non-empty string, got {key!r}")
            submit = attrs.evolve(submit, key=key)
        reply = await self._submitters[submit.priority].ask(submit)
        return self._accepted(reply)

    async def delay_many(
        self,
        task: str | Task[Any, Any],
        calls: Iterable[tuple[Any, ...] | Any],
        *,
        priority: str | None = None,
    ) -> list[str]:
        """Queue one run of ``task`` per item of ``calls`` (a tuple of
        positional arguments, or a single argument); return their ids."""
        slots = []
        for call in calls:
            args = call if isinstance(call, tuple) else (call,)
            submit = self._submit_message(task, args, None, priority, None, None, None)
            slots.append(self._submitters[submit.priority].put(submit))
        return [self._accepted(await slot.wait()) for slot in slots]

    async def map(
        self,
        task: str | Task[Any, Any],
        calls: Iterable[tuple[Any, ...] | Any],
        *,
        priority: str | None = None,
        timeout: float | None = None,
    ) -> list[Any]:
        """Run ``task`` once per item of ``calls`` and return the results in order."""
        ids = await self.delay_many(task, calls, priority=priority)
        return await self.results(ids, timeout=timeout)

    async def submit(
        self, task: str | Task[Any, Any], /, *args: Any, priority: str | None = None, **kwargs: Any
    ) -> Any:
        """Queue ``task(*args, **kwargs)`` and return its result (``delay`` +
        ``result``, with the result asked for as soon as the id is chosen)."""
        submit = self._submit_message(task, args, kwargs, priority, None, None, None)
        results = self._results
        assert results is not None
        # One round trip: the submission and a Watch for it travel in one
        # frame to the queries port; the reply carries the record if it was
        # final in time, else the session's poller takes over.
        slot = results.expect(submit.id, sent=True)
        try:
            watch = Watch(session=results.session, ids=(submit.id,), wait=self.poll_wait)
            accepted, records = await self._request(
                self._wires[RESULTS_PORT_OFFSET],
                [submit, watch],
                submit.queue_wait + self.poll_wait + self.request_timeout,
            )
            self._accepted(accepted)
            assert isinstance(records, Records)
            results.deliver(records.records)
            results.resend(submit.id)
            return _task_value(await slot.wait())
        finally:
            results.forget(submit.id, slot)

    # -- results and control -----------------------------------------------

    async def result(self, task_id: str, timeout: float | None = None, *,
                     cancel: bool = False) -> Any:
        """Wait for the task's result and return it.

        Args:
            timeout: seconds to wait at most (``None``: no limit).
            cancel: if the wait ends without a result (``timeout`` ran out,
                or the caller was cancelled: a web request that went away),
                cancel the task too, queued or running.

        Raises:
            TaskError: the task raised (``TaskTimeout`` past its time limit,
                ``TaskCancelled`` if cancelled); carries the remote type,
                message and traceback text.
            ResultUnknown: the control plane has no record of it.
            TimeoutError: ``timeout`` seconds passed first.
            ConnectionLost: the control plane did not answer.
        """
        assert self._results is not None, "use the client inside `async with`"
        try:
            record = await self._results.wait(task_id, timeout)
        except BaseException:
            if cancel:
                with anyio.CancelScope(shield=True), anyio.move_on_after(self.request_timeout):
                    await self.cancel(task_id)
            raise
        return _task_value(record)

    async def results(self, task_ids: Iterable[str], timeout: float | None = None) -> list[Any]:
        """Wait for several results at once and return them in order (the
        first failure raises, as ``result`` would). Waiting for all of them
        together lets one poll bring many back."""
        results = self._results
        assert results is not None, "use the client inside `async with`"
        ids = list(task_ids)
        slots = [results.expect(task_id) for task_id in ids]
        try:
            with anyio.fail_after(timeout):
                return [_task_value(await slot.wait()) for slot in slots]
        finally:
            for task_id, slot in zip(ids, slots):
                results.forget(task_id, slot)

    def as_completed(
        self, task_ids: Iterable[str], *, timeout: float | None = None
    ) -> AsyncIterator[Completed]:
        """Yield a ``Completed`` for each of ``task_ids`` as it becomes final,
        whichever finishes first coming first; each id once.

        ``timeout`` bounds the whole iteration (counted from its start):
        past it, ``TimeoutError`` says how many are still pending. A lost
        connection raises ``ConnectionLost``. Leaving the loop early (a
        ``break``, an exception) forgets the ids not yet yielded.

        Example::

            async for done in client.as_completed(ids, timeout=60):
                print(done.id, done.result() if done.ok else done.record.error)
        """
        assert self._results is not None, "use the client inside `async with`"
        return _AsCompleted(self, task_ids, timeout)

    def on_complete(self, task_id: str, callback: Callable[[Completed], Any]) -> None:
        """Call ``callback(completed)`` once the task is final (awaiting what
        it returns if that is awaitable).

        Each call runs in its own task in the client's task group; an
        exception it raises is logged (logger ``fastworker.client``) and
        goes no further. A callback not yet run when the client closes, or
        whose task's result cannot be had because the connection was lost
        (logged as a warning), is not called.
        """
        results, group = self._results, self._task_group
        assert results is not None and group is not None, "use the client inside `async with`"

        def ready(slot: _Slot[TaskRecord]) -> None:
            try:
                group.start_soon(self._notify, task_id, slot, callback)
            except RuntimeError:  # the client is closing: its task group is done
                log.debug("on_complete callback for task %s dropped: client closed", task_id)

        results.expect(task_id).when_done(ready)

    @staticmethod
    async def _notify(
        task_id: str, slot: _Slot[TaskRecord], callback: Callable[[Completed], Any]
    ) -> None:
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

    async def status(self, task_id: str) -> TaskRecord:
        """The task's current record (state, attempt, worker, times, error)."""
        assert self._queries is not None, "use the client inside `async with`"
        reply = await self._queries.ask(StatusQuery(ids=(task_id,)))
        assert isinstance(reply, Records)
        return reply.records[0]

    async def cancel(self, task_id: str) -> str:
        """Cancel a task, queued, scheduled or running.

        Returns:
            ``cancelled`` (it had not started, and will not run),
            ``interrupted`` (a running async task was cancelled),
            ``terminated`` (a process-isolated task's process was killed),
            ``abandoned`` (a sync task's thread cannot be stopped: the task
            is cancelled, what the thread returns is discarded),
            ``requested`` (a subworker runs it and was told; its record
            says how once done), ``not_queued`` (it had already finished),
            or ``unknown``. After any of the first five its result raises
            ``TaskCancelled``.
        """
        assert self._queries is not None, "use the client inside `async with`"
        reply = await self._queries.ask(Cancel(id=task_id))
        assert isinstance(reply, CancelReply)
        if reply.outcome == "not_queued":  # handed out: ask the dispatcher to stop it
            reply = await self._queries.ask(Stop(id=task_id))
            assert isinstance(reply, CancelReply)
        return reply.outcome

    # -- helpers -----------------------------------------------------------

    def _submit_message(
        self,
        task: str | Task[Any, Any],
        args: tuple[Any, ...] | list[Any],
        kwargs: dict[str, Any] | None,
        priority: str | None,
        timeout: float | None,
        queue_wait: float | None,
        task_id: str | None,
    ) -> Submit:
        if not self._submitters:
            raise RuntimeError("use the client inside `async with Client() as client:`")
        if priority is None:
            priority = task.priority if isinstance(task, Task) else "normal"
        if priority not in PRIORITIES:
            raise InvalidSubmission(
                f"priority must be one of {', '.join(PRIORITIES)}, got {priority!r}"
            )
        if timeout is None and isinstance(task, Task):
            timeout = task.timeout
        return Submit(
            id=task_id or f"{self._prefix}{next(self._counter):x}",
            task=task_name(task),
            payload=pack_call(tuple(args), dict(kwargs or {})),
            priority=PRIORITIES.index(priority),
            timeout=timeout,
            queue_wait=self.queue_wait if queue_wait is None else queue_wait,
        )

    @staticmethod
    def _accepted(reply: Any) -> str:
        if isinstance(reply, Accepted):
            return reply.id
        if isinstance(reply, Rejected):
            raise _REJECTIONS.get(reply.error, InvalidSubmission)(reply.message)
        raise ConnectionLost(f"unexpected answer to a submission: {type(reply).__name__}")

    async def _request(self, wire: RequestWire, messages: list[Any], timeout: float) -> list[Any]:
        frame = self._framer.pack(messages)
        try:
            reply = await wire.request(frame, timeout=timeout)
        except TimeoutError:
            raise ConnectionLost(
                f"no answer from the control plane at {wire.name} within {timeout:g} s "
                f"(is it running there, with the same FASTWORKER_SECRET?)"
            ) from None
        try:
            return self._framer.unpack(reply)
        except FrameError as error:
            raise ConnectionLost(f"bad answer from {wire.name}: {error}") from None


class SyncClient:
    """A blocking ``Client`` for scripts and Django-style code: it runs a
    ``Client`` on an event loop in a background thread.

    Example::

        with SyncClient() as client:
            task_id = client.delay("examples.tasks.add", 1, 2)
            print(client.result(task_id, timeout=10))
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._client = Client(*args, **kwargs)
        self._portal_cm: Any = None
        self._portal: Any = None
        self._client_cm: Any = None

    def __enter__(self) -> SyncClient:
        from anyio.from_thread import start_blocking_portal

        self._portal_cm = start_blocking_portal("trio")
        self._portal = self._portal_cm.__enter__()
        try:
            self._client_cm = self._portal.wrap_async_context_manager(self._client)
            self._client_cm.__enter__()
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc_info: Any) -> None:
        try:
            self._client_cm.__exit__(None, None, None)
        finally:
            self._portal_cm.__exit__(None, None, None)

    def _call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        if self._portal is None:
            raise RuntimeError("use SyncClient inside `with SyncClient() as client:`")
        return self._portal.call(lambda: function(*args, **kwargs))

    def delay(self, task: str | Task[Any, Any], /, *args: Any, priority: str | None = None,
              **kwargs: Any) -> str:
        """See ``Client.delay``."""
        return self._call(self._client.delay, task, *args, priority=priority, **kwargs)  # type: ignore[no-any-return]

    def send(self, task: str | Task[Any, Any], args: tuple[Any, ...] | list[Any] = (),
             kwargs: dict[str, Any] | None = None, **options: Any) -> str:
        """See ``Client.send``."""
        return self._call(self._client.send, task, args, kwargs, **options)  # type: ignore[no-any-return]

    def delay_many(self, task: str | Task[Any, Any], calls: Iterable[Any], *,
                   priority: str | None = None) -> list[str]:
        """See ``Client.delay_many``."""
        return self._call(self._client.delay_many, task, list(calls), priority=priority)  # type: ignore[no-any-return]

    def map(self, task: str | Task[Any, Any], calls: Iterable[Any], **options: Any) -> list[Any]:
        """See ``Client.map``."""
        return self._call(self._client.map, task, list(calls), **options)  # type: ignore[no-any-return]

    def submit(self, task: str | Task[Any, Any], /, *args: Any, priority: str | None = None,
               **kwargs: Any) -> Any:
        """See ``Client.submit``."""
        return self._call(self._client.submit, task, *args, priority=priority, **kwargs)

    def result(self, task_id: str, timeout: float | None = None, *,
               cancel: bool = False) -> Any:
        """See ``Client.result``."""
        return self._call(self._client.result, task_id, timeout=timeout, cancel=cancel)

    def as_completed(
        self, task_ids: Iterable[str], timeout: float | None = None
    ) -> Iterator[Completed]:
        """See ``Client.as_completed``; a blocking iterator (leaving the loop
        early forgets the rest, as there)."""
        portal = self._portal
        if portal is None:
            raise RuntimeError("use SyncClient inside `with SyncClient() as client:`")
        return self._iterate(portal, _AsCompleted(self._client, task_ids, timeout))

    @staticmethod
    def _iterate(portal: Any, iterator: _AsCompleted) -> Iterator[Completed]:
        try:
            while True:
                try:
                    done: Completed = portal.call(iterator.__anext__)
                except StopAsyncIteration:
                    return
                yield done
        finally:
            try:
                portal.call(iterator.aclose)
            except RuntimeError:  # the portal is gone (the client closed it all)
                pass

    def status(self, task_id: str) -> TaskRecord:
        """See ``Client.status``."""
        return self._call(self._client.status, task_id)  # type: ignore[no-any-return]

    def cancel(self, task_id: str) -> str:
        """See ``Client.cancel``."""
        return self._call(self._client.cancel, task_id)  # type: ignore[no-any-return]
