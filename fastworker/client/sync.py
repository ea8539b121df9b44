"""The blocking client: a ``Client`` on an event loop in a background thread.

For scripts and Django-style code. The loop is trio's, started and stopped
by an anyio blocking portal; each call is handed to it with
``trio.from_thread.run`` (less than half the cost of a portal call) and
waits there. What the calls do is ``Client``'s.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from typing import Any

import trio

from fastworker.client.client import Client
from fastworker.client.outcome import AsCompleted, Completed
from fastworker.client.pipeline import DEFAULT_WINDOW, SyncPipeline
from fastworker.messages import TaskRecord, WorkflowState
from fastworker.tasks import Task
from fastworker.workflows.canvas import Part, Workflow

__all__ = ["SyncClient"]

_NOT_OPEN = "use SyncClient inside `with SyncClient() as client:`"


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
        self._token: trio.lowlevel.TrioToken | None = None

    def __enter__(self) -> SyncClient:
        from anyio.from_thread import start_blocking_portal

        self._portal_cm = start_blocking_portal("trio")
        self._portal = self._portal_cm.__enter__()
        try:
            self._token = self._portal.call(trio.lowlevel.current_trio_token)
            self._client_cm = self._portal.wrap_async_context_manager(self._client)
            self._client_cm.__enter__()
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._token = None
        try:
            self._client_cm.__exit__(None, None, None)
        finally:
            self._portal_cm.__exit__(None, None, None)

    def _call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        """Run ``function(*args, **kwargs)`` (async) on the loop; its result."""
        if self._token is None:
            raise RuntimeError(_NOT_OPEN)
        return trio.from_thread.run(functools.partial(function, *args, **kwargs),
                                    trio_token=self._token)

    def delay(self, task: str | Task[Any, Any], /, *args: Any, priority: str | None = None,
              **kwargs: Any) -> str:
        """See ``Client.delay``."""
        return self._call(self._client.delay, task, *args, priority=priority, **kwargs)  # type: ignore[no-any-return]

    def send(self, task: str | Task[Any, Any], args: tuple[Any, ...] | list[Any] = (),
             kwargs: dict[str, Any] | None = None, **options: Any) -> str:
        """See ``Client.send``."""
        return self._call(self._client.send, task, args, kwargs, **options)  # type: ignore[no-any-return]

    def delay_many(self, task: str | Task[Any, Any], calls: Iterable[Any], *,
                   priority: str | None = None, fair_key: str | None = None) -> list[str]:
        """See ``Client.delay_many``."""
        return self._call(self._client.delay_many, task, list(calls),  # type: ignore[no-any-return]
                          priority=priority, fair_key=fair_key)

    def pipeline(self, *, window: int = DEFAULT_WINDOW) -> SyncPipeline:
        """See ``Client.pipeline``; used as ``with``. Submissions are built
        in this thread and handed to the client a batch at a time; a refusal
        is raised by the hand-off after the one that learned of it, by
        ``flush()``, or when the block ends."""
        if self._token is None:
            raise RuntimeError(_NOT_OPEN)
        return SyncPipeline(self._call, self._client.pipeline(window=window),
                            queue_wait=self._client.queue_wait, batch=self._client.max_batch)

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

    def results(self, task_ids: Iterable[str], timeout: float | None = None) -> list[Any]:
        """See ``Client.results``."""
        return self._call(self._client.results, list(task_ids), timeout=timeout)  # type: ignore[no-any-return]

    def as_completed(
        self, task_ids: Iterable[str], timeout: float | None = None
    ) -> Iterator[Completed]:
        """See ``Client.as_completed``; a blocking iterator (leaving the loop
        early forgets the rest, as there)."""
        if self._token is None:
            raise RuntimeError(_NOT_OPEN)
        return self._iterate(self._client.as_completed(task_ids, timeout=timeout))

    def _iterate(self, iterator: AsCompleted) -> Iterator[Completed]:
        try:
            while True:
                try:
                    done: Completed = self._call(iterator.__anext__)
                except StopAsyncIteration:
                    return
                yield done
        finally:
            try:
                self._call(iterator.aclose)
            except RuntimeError:  # the loop is gone (the client closed it all)
                pass

    def status(self, task_id: str) -> TaskRecord:
        """See ``Client.status``."""
        return self._call(self._client.status, task_id)  # type: ignore[no-any-return]

    def cancel(self, task_id: str) -> str:
        """See ``Client.cancel``."""
        return self._call(self._client.cancel, task_id)  # type: ignore[no-any-return]

    def start(self, workflow: Part | Workflow, **options: Any) -> str:
        """See ``Client.start``."""
        return self._call(self._client.start, workflow,  # type: ignore[no-any-return]
                          **options)

    def run(self, workflow: Part | Workflow, timeout: float | None = None,
            **options: Any) -> Any:
        """See ``Client.run``."""
        return self._call(self._client.run, workflow, timeout, **options)

    def workflow(self, workflow_id: str) -> WorkflowState:
        """See ``Client.workflow``."""
        return self._call(self._client.workflow, workflow_id)  # type: ignore[no-any-return]

    def retry_workflow(self, workflow_id: str) -> str:
        """See ``Client.retry_workflow``."""
        return self._call(self._client.retry_workflow,  # type: ignore[no-any-return]
                          workflow_id)
