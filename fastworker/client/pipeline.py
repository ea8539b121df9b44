"""Pipelined submissions: a loop of ``delay`` calls without a round trip each.

``async with client.pipeline() as pipe:``, then ``task_id = await
pipe.delay(task, ...)`` once per task: the id comes back at once (the
client chooses ids), and the submission goes out with the others queued
meanwhile, in shared frames, as ``delay_many`` sends them. Their answers
come back behind the loop. Nothing is dropped silently: every refusal
(``UnknownTask``, ``QueueFull``, ``InvalidSubmission``, ``ConnectionLost``)
is raised, as one ``SubmissionsRefused`` naming each refused id and why,
by the next ``delay`` once it is known (that call queues nothing), by
``flush()``, or when the block ends, which waits for every answer. At
most ``window`` submissions wait for their answers at once; ``delay``
waits for room beyond that, so a loop faster than the control plane is
held back, not buffered without bound.

``SyncPipeline`` is the same for ``SyncClient``: it builds submissions in
the caller's thread and hands them to the client's event loop a batch at
a time, so a blocking loop does not pay a hand-off per task. Its refusals
are raised by the hand-off after the one that learned of them (the
submissions handed over then are sent: their ids were returned).
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any, final

import anyio.lowlevel

from fastworker.client.outcome import accepted_id
from fastworker.client.slot import Slot
from fastworker.errors import FastworkerError, SubmissionsRefused
from fastworker.messages import Submit
from fastworker.submission import TaskIds, build_submit
from fastworker.tasks import Task

__all__ = ["DEFAULT_WINDOW", "Pipeline", "SyncPipeline"]

log = logging.getLogger("fastworker.client")

#: The most pipelined submissions waiting for their answers at once.
DEFAULT_WINDOW = 10_000

#: Builds a Submit: (task, args, kwargs, options) -> Submit.
Build = Callable[[Any, Any, Any, dict[str, Any]], Submit]


@final
class Pipeline:
    """Submissions sent without waiting for each answer; see the module.

    Made by ``Client.pipeline()``; use it as ``async with``.
    """

    __slots__ = ("_batch", "_build", "_closed", "_pending", "_put", "_queued", "_refused",
                 "_unanswered", "_window")

    def __init__(self, put: Callable[[Submit], Slot[Any]], build: Build, *, window: int,
                 batch: int, pending: set[str] | None = None) -> None:
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive int, got {window!r}")
        self._put = put
        # Ids sent but not yet answered, shared with the result poller: a
        # store with no record of one of them has not had it yet.
        self._pending = set() if pending is None else pending
        self._build = build
        self._window = window
        self._batch = max(1, batch)
        self._unanswered: deque[tuple[str, Slot[Any]]] = deque()
        self._refused: dict[str, FastworkerError] = {}  # known, not raised yet
        self._queued = 0  # since the caller last let the client's tasks run
        self._closed = False

    @property
    def unanswered(self) -> int:
        """Submissions sent whose answers have not come back yet."""
        self._collect()
        return len(self._unanswered)

    async def delay(self, task: str | Task[Any, Any], /, *args: Any,
                    priority: str | None = None, **kwargs: Any) -> str:
        """Queue ``task(*args, **kwargs)``; return its id at once.

        Raises:
            SubmissionsRefused: earlier submissions of this pipeline were
                refused (this one is not queued).
            InvalidSubmission: this one cannot be queued as given.
        """
        return await self.send(task, args, kwargs, priority=priority)

    async def send(self, task: str | Task[Any, Any], args: tuple[Any, ...] | list[Any] = (),
                   kwargs: dict[str, Any] | None = None, **options: Any) -> str:
        """The explicit form of ``delay``, with ``Client.send``'s options."""
        self._check()
        submit = self._build(task, args, kwargs, options)
        self._pending.add(submit.id)
        self._unanswered.append((submit.id, self._put(submit)))
        await self._pace()
        return submit.id

    def hold(self, task_id: str) -> None:
        """Note an id returned before its submission reached this pipeline
        (``SyncPipeline``'s buffer): until answered, the control plane not
        knowing it is no sign it was never submitted. Any thread."""
        self._pending.add(task_id)

    async def extend(self, submits: list[Submit]) -> None:
        """Queue submissions already built (``SyncPipeline``'s hand-off);
        then raise what was refused so far."""
        if self._closed:
            raise RuntimeError("the pipeline is closed: its block has ended")
        put, unanswered, pending = self._put, self._unanswered, self._pending
        for submit in submits:
            pending.add(submit.id)
            unanswered.append((submit.id, put(submit)))
        self._queued = self._batch  # let the flushers take them now
        await self._pace()
        self._collect()
        self._raise_refused()

    async def flush(self) -> None:
        """Wait until every submission so far is answered.

        Raises:
            SubmissionsRefused: some were refused (those not raised before).
        """
        await self._answered_down_to(0)
        self._raise_refused()

    async def __aenter__(self) -> Pipeline:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is None:
            try:
                await self.flush()
            except SubmissionsRefused:
                raise
            except BaseException:  # cancelled while waiting: log what is left
                self._let_go()
                raise
            finally:
                self._closed = True
            return
        self._let_go()

    def _let_go(self) -> None:
        """The block failed or was cancelled: its submissions still go,
        unwaited; a refusal among them is logged, never silent."""
        self._closed = True
        for task_id, slot in self._unanswered:
            slot.when_done(functools.partial(_log_refusal, task_id, self._pending))
        self._unanswered.clear()
        refused, self._refused = self._refused, {}
        for task_id, error in refused.items():
            log.warning("pipelined submission of task %s refused: %s", task_id, error)

    def _check(self) -> None:
        if self._closed:
            raise RuntimeError("the pipeline is closed: its block has ended")
        self._collect()
        self._raise_refused()

    async def _pace(self) -> None:
        """Let the client's tasks send what is queued every ``batch``
        submissions, and wait for answers while ``window`` are unanswered."""
        self._queued += 1
        if len(self._unanswered) >= self._window:
            self._queued = 0
            await self._answered_down_to(self._window - 1)
        elif self._queued >= self._batch:
            self._queued = 0
            await anyio.lowlevel.checkpoint()

    async def _answered_down_to(self, most: int) -> None:
        """Wait for answers, oldest first, until at most ``most`` are missing."""
        unanswered = self._unanswered
        while len(unanswered) > most:
            task_id, slot = unanswered.popleft()
            try:
                await slot.settled()
            except BaseException:
                unanswered.appendleft((task_id, slot))
                raise
            self._note(task_id, slot)

    def _collect(self) -> None:
        """Take the answers already in, oldest first."""
        unanswered = self._unanswered
        while unanswered and unanswered[0][1].done:
            task_id, slot = unanswered.popleft()
            self._note(task_id, slot)

    def _note(self, task_id: str, slot: Slot[Any]) -> None:
        self._pending.discard(task_id)
        try:
            accepted_id(slot.get())
        except FastworkerError as error:
            self._refused[task_id] = error

    def _raise_refused(self) -> None:
        if self._refused:
            refused, self._refused = self._refused, {}
            raise SubmissionsRefused(refused)


def _log_refusal(task_id: str, pending: set[str], slot: Slot[Any]) -> None:
    pending.discard(task_id)
    try:
        accepted_id(slot.get())
    except FastworkerError as error:
        log.warning("pipelined submission of task %s refused: %s", task_id, error)


@final
class SyncPipeline:
    """``Pipeline`` for blocking code; made by ``SyncClient.pipeline()``,
    used as ``with``. Submissions are built here and handed to the
    client's loop ``batch`` at a time."""

    __slots__ = ("_batch", "_buffer", "_call", "_ids", "_pipeline", "_queue_wait")

    def __init__(self, call: Callable[..., Any], pipeline: Pipeline, *, queue_wait: float,
                 batch: int) -> None:
        self._call = call
        self._pipeline = pipeline
        self._queue_wait = queue_wait
        self._batch = max(1, batch)
        self._buffer: list[Submit] = []
        # Its own ids: the loop's thread makes the client's.
        self._ids = TaskIds()

    def delay(self, task: str | Task[Any, Any], /, *args: Any, priority: str | None = None,
              **kwargs: Any) -> str:
        """See ``Pipeline.delay``."""
        return self.send(task, args, kwargs, priority=priority)

    def send(self, task: str | Task[Any, Any], args: tuple[Any, ...] | list[Any] = (),
             kwargs: dict[str, Any] | None = None, **options: Any) -> str:
        """See ``Pipeline.send``."""
        options.setdefault("queue_wait", self._queue_wait)
        submit = build_submit(task, args, kwargs, id=options.pop("task_id", None)
                              or self._ids.next(), **options)
        self._pipeline.hold(submit.id)
        self._buffer.append(submit)
        if len(self._buffer) >= self._batch:
            self._hand_over()
        return submit.id

    def flush(self) -> None:
        """See ``Pipeline.flush``."""
        self._finish(self._pipeline.flush)

    def _finish(self, wait: Callable[..., Any], *args: Any) -> None:
        """Hand over what is buffered, then ``wait`` for every answer; raise
        every refusal either step found, as one ``SubmissionsRefused``."""
        refused: dict[str, FastworkerError] = {}
        try:
            self._hand_over()
        except SubmissionsRefused as error:
            refused.update(error.refused)
        try:
            self._call(wait, *args)
        except SubmissionsRefused as error:
            refused.update(error.refused)
        if refused:
            raise SubmissionsRefused(refused)

    def _hand_over(self) -> None:
        if self._buffer:
            buffer, self._buffer = self._buffer, []
            self._call(self._pipeline.extend, buffer)

    def __enter__(self) -> SyncPipeline:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            self._finish(self._pipeline.__aexit__, None, None, None)
            return
        try:
            self._hand_over()  # their ids were returned: they go
        except SubmissionsRefused as refused:  # the block's own error goes on
            log.warning("%s", refused)
        finally:
            self._call(self._pipeline.__aexit__, exc_type, exc, tb)
