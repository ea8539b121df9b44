"""The client's connections: its options, the ports it opens (a
``Coalescer`` per submission port and one for queries, the ``ResultPoller``),
the tasks that flush them, and closing it all. ``Client``
(``fastworker.client.client``) adds the calls on top.
"""

from __future__ import annotations

import secrets
from types import TracebackType
from typing import TypeVar

import anyio
import anyio.abc

from actors.frame import DEFAULT_MAX_FRAME_BYTES
from actors.tls import TlsOptions
from fastworker.client.coalescer import Coalescer
from fastworker.client.connection import Connection
from fastworker.client.poller import ResultPoller
from fastworker.messages import RESULTS_PORT_OFFSET
from fastworker.submission import TaskIds

__all__ = ["DEFAULT_CONNECT_TIMEOUT", "DEFAULT_QUEUE_WAIT", "DEFAULT_REQUEST_TIMEOUT",
           "POLL_WAIT", "Ports"]

#: How long a submission may wait for room in a full queue, in seconds.
DEFAULT_QUEUE_WAIT = 5.0
#: How long a request may go unanswered before the call fails, in seconds.
DEFAULT_REQUEST_TIMEOUT = 30.0
#: Seconds a call waits for a control plane the client has never reached.
DEFAULT_CONNECT_TIMEOUT = 2.0
#: The longest one result poll waits at the store.
POLL_WAIT = 10.0


P = TypeVar("P", bound="Ports")


class Ports:
    """A client's connections and their flushers (the options: ``Client``)."""

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
        tls: TlsOptions | None = None,
        connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        self._connection = Connection(address, secret, discover=discover,
                                      max_frame_bytes=max_frame_bytes, contexts=contexts,
                                      tls=tls, connect_timeout=connect_timeout)
        self.queue_wait = queue_wait
        self.request_timeout = request_timeout
        self.max_batch = max_batch
        self.contexts = contexts
        self.max_frame_bytes = max_frame_bytes
        self.poll_wait = poll_wait
        self._ids = TaskIds()
        self._session = secrets.token_hex(6)
        self._submitters: list[Coalescer] = []  # by priority level
        self._queries: Coalescer | None = None
        self._results: ResultPoller | None = None
        self._task_group: anyio.abc.TaskGroup | None = None

    @property
    def address(self) -> str:
        """The control plane's base address (once open, the one discovered)."""
        return self._connection.address

    async def __aenter__(self: P) -> P:
        ports = await self._connection.open()
        timeout, batch = self.queue_wait + self.request_timeout, self.max_batch
        self._submitters = [Coalescer(port, timeout=timeout, max_batch=batch)
                            for port in ports[:RESULTS_PORT_OFFSET]]
        queries = ports[RESULTS_PORT_OFFSET]
        self._queries = Coalescer(queries, timeout=self.request_timeout, max_batch=batch)
        self._results = ResultPoller(queries, session=self._session, max_batch=batch,
                                     poll_wait=self.poll_wait,
                                     request_timeout=self.request_timeout)
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        tasks = max(1, self.contexts // 2)
        for coalescer in [*self._submitters, self._queries]:
            for _ in range(tasks):
                self._task_group.start_soon(coalescer.flush_forever)
        for _ in range(tasks):
            self._task_group.start_soon(self._results.poll_forever)
        self._task_group.start_soon(self._results.check_forever)
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
        await self._connection.aclose()
