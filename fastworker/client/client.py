"""The client: submit tasks and get their results, from asyncio or trio.

``Client`` runs under either library (FastAPI handlers are asyncio; trio
programs are trio): it is written on anyio, and pynng picks the library
itself. Its calls stay thin: a Submit is built by ``build_submit``, sent
by its port's ``Coalescer`` (concurrent calls share one frame), and its
result waited for through the ``ResultPoller`` (one watch session for the
whole client); ``outcome`` says what the answers mean.

Task ids are chosen here (``TaskIds``: counting from a random start), so a
resent submission is recognised by the control plane, ``submit`` can wait
for the result in the same breath as it submits, and a ``pipeline``
returns each id at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import anyio
import anyio.abc

from fastworker.client import lookup, workflows
from fastworker.client.admin import AdminClient
from fastworker.client.bulk import build_each, run_watched
from fastworker.client.outcome import AsCompleted, Completed, accepted_id, notify, task_value
from fastworker.client.pipeline import DEFAULT_WINDOW, Pipeline
from fastworker.client.ports import Ports
from fastworker.client.slot import Slot
from fastworker.messages import (
    ListTasks,
    Submit,
    TaskPage,
    TaskRecord,
    WorkflowState,
)
from fastworker.submission import build_submit
from fastworker.tasks import Task
from fastworker.workflows.canvas import Part, Signature, Workflow

__all__ = ["Client"]

log = logging.getLogger("fastworker.client")

_NOT_OPEN = "use the client inside `async with Client() as client:`"


class Client(Ports):
    """Submits tasks to a control plane and gets their results.

    Use it as ``async with Client() as client:`` under asyncio or trio.

    Args:
        address: the control plane's base address (submissions on
            base+0..3 by priority, queries on base+4); default
            ``$FASTWORKER_ADDRESS`` or ``tcp://127.0.0.1:5555``.
        secret: the shared secret; default ``$FASTWORKER_SECRET``, or the
            contents of the file ``$FASTWORKER_SECRET_FILE``; neither set:
            this user's per-host secret, which a control plane on this host
            made (``~/.local/state/fastworker/secret``; docs/transport.md),
            or none when a client certificate does mutual TLS. ``""`` sends
            unsigned frames.
        queue_wait: how long a submission may wait for room when the
            control plane's queue is full, before ``QueueFull``.
        request_timeout: how long a request may go unanswered before the
            call fails with ``ConnectionLost``. A restart of the control
            plane shorter than that is ridden through: waiting calls get
            their results, or ``ResultUnknown`` for a task the restart lost.
        connect_timeout: until the client has first reached the control
            plane, how long a call waits for a connection before
            ``NoControlPlane`` (nothing is sent); ``None`` waits as long as
            ``request_timeout``.
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
        tls: ``TlsOptions`` for a ``tls+tcp://`` control plane: ``ca_file``
            (the CA that signed its certificate), ``cert_file`` and
            ``key_file`` (this client's, for mutual TLS), ``server_name``
            (default: the address's host). Default: ``$FASTWORKER_TLS_CA``,
            ``$FASTWORKER_TLS_CERT``, ``$FASTWORKER_TLS_KEY``,
            ``$FASTWORKER_TLS_SERVER_NAME``. A ``tls+tcp://`` address without
            them, or a plain address with them, raises ``InvalidSubmission``
            when the client opens.
    """

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
        fair_key: str | None = None,
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
            fair_key: a fairness key (a tenant, a user): within a priority
                level, keys take turns, one task each, so one key's flood
                does not hold up another key's tasks (default: the task's
                ``fair_key`` of the arguments, else none).
        """
        if not self._submitters:
            raise RuntimeError(_NOT_OPEN)
        submit = build_submit(
            task, args, kwargs, id=task_id or self._ids.next(), priority=priority,
            timeout=timeout, queue_wait=self.queue_wait if queue_wait is None else queue_wait,
            countdown=countdown, eta=eta, expires=expires, retries=retries, key=key,
            fair_key=fair_key,
        )
        return accepted_id(await self._submitters[submit.priority].ask(submit))

    async def delay_many(
        self,
        task: str | Task[Any, Any],
        calls: Iterable[tuple[Any, ...] | Any],
        *,
        priority: str | None = None,
        fair_key: str | None = None,
    ) -> list[str]:
        """Queue one run of ``task`` per item of ``calls`` (a tuple of
        positional arguments, or a single argument); return their ids.
        ``fair_key`` is the fairness key of them all (default: the task's
        ``fair_key`` of each call's arguments, else none)."""
        if not self._submitters:
            raise RuntimeError(_NOT_OPEN)
        slots = [self._queue(submit) for submit in build_each(
            task, calls, self._ids.next, priority=priority, queue_wait=self.queue_wait,
            fair_key=fair_key)]
        return [accepted_id(await slot.wait()) for slot in slots]

    def pipeline(self, *, window: int = DEFAULT_WINDOW) -> Pipeline:
        """Submit in a loop without waiting for each answer::

            async with client.pipeline() as pipe:
                for row in rows:
                    task_id = await pipe.delay(process, row)

        Each id comes back at once; refusals are raised as
        ``SubmissionsRefused``; at most ``window`` submissions wait for
        their answers (``fastworker.client.pipeline`` says when and how).
        """
        if not self._submitters:
            raise RuntimeError(_NOT_OPEN)
        results = self._results
        return Pipeline(self._queue, self._build, window=window, batch=self.max_batch,
                        pending=None if results is None else results.pending)

    def _queue(self, submit: Submit) -> Slot[Any]:
        """Queue ``submit`` on its port; its answer comes to the slot."""
        return self._submitters[submit.priority].put(submit)

    def _build(self, task: str | Task[Any, Any], args: Any, kwargs: Any,
               options: dict[str, Any]) -> Submit:
        """The Submit of one ``send(task, args, kwargs, **options)``."""
        queue_wait = options.pop("queue_wait", None)
        task_id = options.pop("task_id", None)
        return build_submit(task, args, kwargs, id=task_id or self._ids.next(),
                            queue_wait=self.queue_wait if queue_wait is None else queue_wait,
                            **options)

    async def map(
        self,
        task: str | Task[Any, Any],
        calls: Iterable[tuple[Any, ...] | Any],
        *,
        priority: str | None = None,
        timeout: float | None = None,
    ) -> list[Any]:
        """Run ``task`` once per item of ``calls`` and return the results in order.

        Each result is watched for from before its task is submitted: a
        watched result is kept for this client until it has it, so a run
        larger than the control plane's ``max_entries`` comes back whole."""
        results = self._results
        if not self._submitters or results is None:
            raise RuntimeError(_NOT_OPEN)
        submits = build_each(task, calls, self._ids.next, priority=priority,
                             queue_wait=self.queue_wait)
        return await run_watched(results, self._queue, submits, timeout)

    async def submit(
        self, task: str | Task[Any, Any], /, *args: Any, priority: str | None = None, **kwargs: Any
    ) -> Any:
        """Queue ``task(*args, **kwargs)`` and return its result (``delay`` +
        ``result``, with the result asked for as soon as the id is chosen)."""
        if not self._submitters:
            raise RuntimeError(_NOT_OPEN)
        submit = build_submit(task, args, kwargs, id=self._ids.next(), priority=priority,
                              queue_wait=self.queue_wait)
        results = self._results
        assert results is not None
        # One round trip: the submission and a Watch for it travel in one
        # frame to the queries port; the reply carries the record if it was
        # final in time, else the session's poller takes over.
        slot = results.expect(submit.id, sent=True)
        try:
            accepted_id(await results.send_watched(submit))
            return task_value(await slot.wait())
        finally:
            results.forget(submit.id, slot)

    async def start(self, workflow: Part | Workflow, *, time_limit: float | None = None,
                    keep_going: bool = False, on_error: Signature | None = None) -> str:
        """Start a workflow (``fastworker.workflows``: ``a.s() | b.s()``,
        ``group(...)``, a ``Workflow``) in the control plane; return its id,
        which ``result``, ``status``, ``cancel`` and ``workflow`` take.

        Args:
            time_limit: seconds the whole workflow may take; past it, it
                fails (``TimeLimitExceeded``) and its running steps are cancelled.
            keep_going: a failing step stops only the steps that wait for
                it; the other branches run on (the workflow still fails).
            on_error: a step (``notify.s()``) submitted if the workflow
                fails, with a dict saying what failed as its first argument
                (``.si()``: without it).
        """
        assert self._queries is not None, "use the client inside `async with`"
        return await workflows.start(self._queries, workflow, self._ids.next(),
                                     time_limit=time_limit, keep_going=keep_going,
                                     on_error=on_error)

    async def run(self, workflow: Part | Workflow, timeout: float | None = None,
                  **options: Any) -> Any:
        """Start a workflow (``options``: ``start``'s) and return its result
        (its last step's), or raise ``TaskError`` naming the step that failed."""
        return await self.result(await self.start(workflow, **options), timeout)

    async def workflow(self, workflow_id: str) -> WorkflowState:
        """Where a workflow stands: its state and each step's (task, state,
        task id, attempt, times, error); ``state`` is ``unknown`` for a
        workflow the control plane does not keep."""
        assert self._queries is not None, "use the client inside `async with`"
        return await workflows.state(self._queries, workflow_id)

    async def retry_workflow(self, workflow_id: str) -> str:
        """Run a failed or cancelled workflow again from where it stopped:
        the steps that succeeded keep their results; the workflow's id and
        ``result`` stay the same."""
        assert self._queries is not None, "use the client inside `async with`"
        return await workflows.retry(self._queries, workflow_id)

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
            ResultUnknown: the control plane has no record of it (the
                message says when a restart of the control plane lost it).
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
        return task_value(record)

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
                return [task_value(await slot.wait()) for slot in slots]
        finally:
            for task_id, slot in zip(ids, slots, strict=True):
                results.forget(task_id, slot)

    def as_completed(
        self, task_ids: Iterable[str], *, timeout: float | None = None
    ) -> AsCompleted:
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
        return AsCompleted(self._results, task_ids, timeout)

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

        def ready(slot: Slot[TaskRecord]) -> None:
            try:
                group.start_soon(notify, task_id, slot, callback)
            except RuntimeError:  # the client is closing: its task group is done
                log.debug("on_complete callback for task %s dropped: client closed", task_id)

        results.expect(task_id).when_done(ready)

    @property
    def admin(self) -> AdminClient:
        """The operator's questions and bulk actions: ``status()``,
        ``purge()``, ``retry()``, ``drain()`` (docs/cli.md)."""
        assert self._queries is not None, "use the client inside `async with`"
        return AdminClient(self._queries)

    async def status(self, task_id: str) -> TaskRecord:
        """The task's current record (state, attempt, worker, times, error)."""
        assert self._queries is not None, "use the client inside `async with`"
        return await lookup.status(self._queries, task_id)

    async def list_tasks(self, *, state: str | None = None, task: str | None = None,
                         id: str | None = None, limit: int = 50, offset: int = 0) -> TaskPage:
        """A page of the records the control plane holds, newest first, of
        those matching every filter given: ``state`` (``failed``, say),
        ``task`` (its name), ``id`` (a part of the id); ``total`` says how
        many match in all. At most ``limits.MAX_PAGE`` records a page.

        Raises:
            InvalidSubmission: a filter or the page is out of bounds.
        """
        assert self._queries is not None, "use the client inside `async with`"
        return await lookup.list_tasks(self._queries, ListTasks(
            state=state, task=task, id=id, limit=limit, offset=offset))

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
        return await lookup.cancel(self._queries, task_id)


