"""``client.admin``: the operator's questions and bulk actions, over the
queries port to the control plane's Admin actor (``fastworker status``,
``workers``, ``watch``, ``purge``, ``retry`` and ``drain`` use it)."""

from __future__ import annotations

import secrets
from typing import Any, TypeVar

from fastworker.client.coalescer import Coalescer
from fastworker.errors import FastworkerError, InvalidSubmission
from fastworker.limits import MAX_BULK
from fastworker.messages import (
    PRIORITIES,
    ClusterQuery,
    ClusterStatus,
    DrainReply,
    Purge,
    Purged,
    Rejected,
    RetryReport,
    RetryTasks,
    SetDrain,
)

__all__ = ["AdminClient"]

T = TypeVar("T")


class AdminClient:
    """What an operator asks of a control plane; from ``client.admin``."""

    def __init__(self, queries: Coalescer) -> None:
        self._queries = queries

    async def _ask(self, message: Any, answer: type[T]) -> T:
        reply = await self._queries.ask(message)
        if isinstance(reply, Rejected):
            if reply.error == "InvalidSubmission":
                raise InvalidSubmission(reply.message)
            raise FastworkerError(f"{reply.error}: {reply.message}")
        assert isinstance(reply, answer), reply
        return reply

    async def status(self) -> ClusterStatus:
        """The control plane and its workers now: the queue per priority,
        tasks in flight, counts and rates, the journal, every worker."""
        return await self._ask(ClusterQuery(), ClusterStatus)

    async def purge(self, *, priority: str | None = None, task: str | None = None,
                    scheduled: bool = False) -> int:
        """Cancel every queued task (of ``priority``, of the task named
        ``task``; with ``scheduled`` those held for later too). Returns how
        many were cancelled. Tasks already handed to a worker are not
        touched (``cancel`` stops those one by one).

        Raises:
            InvalidSubmission: an unknown priority, or a name too long.
        """
        if priority is not None and priority not in PRIORITIES:
            raise InvalidSubmission(
                f"unknown priority {priority!r}; expected one of {', '.join(PRIORITIES)}")
        purged = await self._ask(Purge(priority=priority, task=task, scheduled=scheduled),
                                 Purged)
        return purged.count

    async def retry(self, ids: tuple[str, ...] | list[str] = (), *, failed: bool = False,
                    task: str | None = None, limit: int = MAX_BULK,
                    before: float = 0.0, nonce: str | None = None) -> RetryReport:
        """Run tasks again, each as a new task with the same arguments: the
        ``ids`` given (failed, cancelled or expired ones), or with
        ``failed`` the failed tasks (of ``task``) not yet retried, at most
        ``limit`` (``RetryReport.remaining`` says how many more there are;
        to get them, ask again with the answer's ``before``, so that
        retries made meanwhile are not taken). Each retry's id is
        ``<id>-retry-<nonce>``, ``nonce`` a random word of this call (pass
        the same one to continue one operation over several calls).

        Raises:
            InvalidSubmission: more than ``limits.MAX_BULK`` ids or limit.
        """
        return await self._ask(RetryTasks(ids=tuple(ids), failed=failed, task=task,
                                          limit=limit, before=before,
                                          nonce=nonce or secrets.token_hex(4)), RetryReport)

    async def drain(self, worker: str, *, resume: bool = False) -> str:
        """Give ``worker`` no new tasks (what it holds runs to the end), or
        again with ``resume``. Returns ``drained``, ``resumed``, or
        ``unknown`` (no such live worker)."""
        reply = await self._ask(SetDrain(worker=worker, resume=resume), DrainReply)
        return reply.outcome
