"""The Admin actor: the operator's questions and bulk actions, answered
inside the control plane.

``fastworker status``, ``workers``, ``watch``, ``purge``, ``retry`` and
``drain`` send ``ClusterQuery``, ``Purge``, ``RetryTasks`` and ``SetDrain``
over the queries port (the queries edge routes them here, as ``Requests``);
the dashboard's bulk actions call it in process with the same messages.
It holds no state of the queue: it asks the actors that do.

- ``ClusterQuery``: every actor of the node is asked for ``GetStats``
  (``fastworker.admin.status`` builds the answer); throughput comes from
  the inbox's and the store's running totals, read every
  ``sample_interval``;
- ``Purge``: ``PurgeQueued`` to the inbox, which cancels each task as a
  ``Cancel`` would;
- ``RetryTasks``: the store says which tasks and their arguments
  (``GetTask``, ``FailedToRetry``); each is submitted to the inbox again as
  a new task, ``retry_of`` the old one, in frames of ``RETRY_BATCH``;
- ``SetDrain``: ``DrainWorker`` to the dispatcher.

One request is handled at a time; an operator's traffic is small.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

import attrs
import trio

from actors import Actor, ActorContext, ActorCrashed, ActorStats, GetStats, Ref
from actors.errors import CallTimeout
from actors.mailbox import Reply
from actors.requests import Requests
from fastworker.admin.retrying import retry_refusal, retry_submit
from fastworker.admin.status import Node, Rates, cluster_status
from fastworker.internal import DrainWorker, FailedToRetry, GetTask, PurgeQueued, TaskDetail
from fastworker.limits import check_admin
from fastworker.messages import (
    PRIORITIES,
    Accepted,
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
from fastworker.stats import InboxStats, ResultStoreStats
from fastworker.version import VERSION

__all__ = ["Admin", "AdminOptions"]

log = logging.getLogger("fastworker.admin")

#: Retries submitted to the inbox in one request.
RETRY_BATCH = 500

Question = ClusterQuery | Purge | RetryTasks | SetDrain


@attrs.frozen(kw_only=True)
class AdminOptions:
    """How the Admin asks.

    Attributes:
        call_timeout: seconds to wait for the actors' snapshots (each
            asked at once; one that has not answered by then is shown by
            its last snapshot), so a status takes at most about this long.
        action_timeout: seconds to wait for the inbox, store or dispatcher
            to carry out a purge, retry or drain (a journal write may be
            slow). Past it the operator is told "Unavailable"; what was
            asked may still be done after.
        concurrency: requests answered at once; more wait their turn. The
            Admin's own mailbox never waits for them (a snapshot of it, for
            the dashboard, is answered at once).
        sample_interval: seconds between two readings of the running totals.
        rate_window: seconds over which throughput is averaged.
    """

    call_timeout: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    action_timeout: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))
    sample_interval: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    rate_window: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    concurrency: int = attrs.field(default=4, validator=attrs.validators.ge(1))


class Admin(Actor[Any]):
    """Answers the operator (see the module docstring)."""

    Options = AdminOptions
    refs_required = ("inbox", "results", "dispatcher")

    def __init__(self, options: AdminOptions, context: ActorContext) -> None:
        super().__init__(options, context)
        self.node = Node(name=context.node or "node", version=VERSION, started_at=time.time())
        self.rates = Rates(options.rate_window)
        #: Each actor's last snapshot detail: one busy now is shown by it.
        self._last: dict[str, Any] = {}
        self._limiter = trio.CapacityLimiter(options.concurrency)
        self._nursery: trio.Nursery | None = None

    async def setup(self, nursery: trio.Nursery) -> str | None:
        self._nursery = nursery
        nursery.start_soon(self._read_totals)
        return None

    async def _read_totals(self) -> None:
        inbox, store = self.refs["inbox"], self.refs["results"]
        while True:
            # A reading the inbox or store missed is skipped, neither zero nor stale.
            reading = (await self._fresh(inbox), await self._fresh(store))
            if isinstance(reading[0], InboxStats) and isinstance(reading[1], ResultStoreStats):
                self.rates.add(trio.current_time(), reading[0].accepted_total,
                               reading[1].succeeded_total, reading[1].failed_total)
            await trio.sleep(self.options.sample_interval)

    async def _fresh(self, ref: Ref[Any]) -> Any:
        """The actor's snapshot detail now (``None``: it did not answer in time)."""
        try:
            stats: ActorStats = await ref.call(GetStats(), timeout=self.options.call_timeout)
        except (CallTimeout, ActorCrashed, trio.BrokenResourceError, trio.ClosedResourceError):
            return None
        return stats.detail

    async def _stats(self, name: str, ref: Ref[Any]) -> Any:
        """``name``'s snapshot detail now, else its last one (``None``: never had one)."""
        detail = await self._fresh(ref)
        if detail is None:
            return self._last.get(name)
        self._last[name] = detail
        return detail

    async def handle(self, message: Any) -> None:
        # Answered by a task of its own, so that the mailbox (and a
        # snapshot asked of the Admin) never waits for a purge or a retry.
        try:
            reply = self.defer()
        except RuntimeError:  # sent, not called: nobody would read an answer
            log.warning("%s: ignored %s (the admin answers calls only)", self.name,
                        type(message).__name__)
            return
        assert self._nursery is not None
        self._nursery.start_soon(self._reply_to, message, reply)

    async def _reply_to(self, message: Any, reply: Reply) -> None:
        async with self._limiter:
            if isinstance(message, Requests):
                reply.set([await self._contained(item) for item in message.messages])
            else:
                reply.set(await self._contained(message))

    async def _contained(self, message: Any) -> Any:
        """``answer``, with a mistake of the Admin's own answered and
        logged: it must not restart the control plane's actors with it."""
        try:
            return await self.answer(message)
        except Exception as error:
            log.exception("%s: failed to answer %s", self.name, type(message).__name__)
            return Rejected(id="", error="Unavailable",
                            message=f"the admin failed: {type(error).__name__}: {error}")

    async def answer(self, message: Any) -> Any:
        """The answer to one operator's message (``Rejected`` if it is
        wrong, or none of the Admin's)."""
        if not isinstance(message, (ClusterQuery, Purge, RetryTasks, SetDrain)):
            return Rejected(id="", error="InvalidSubmission",
                            message=f"the admin takes ClusterQuery, Purge, RetryTasks and "
                            f"SetDrain, not {type(message).__name__}")
        if not isinstance(message, ClusterQuery) and (problem := check_admin(message)):
            return Rejected(id="", error="InvalidSubmission", message=problem)
        try:
            match message:
                case ClusterQuery():
                    return await self.status()
                case Purge():
                    return await self._purge(message)
                case RetryTasks():
                    return await self._retry(message)
                case SetDrain():
                    return await self._drain(message)
        except (CallTimeout, ActorCrashed, trio.BrokenResourceError,
                trio.ClosedResourceError) as error:
            # A peer busy past the timeout, restarting or stopping: the
            # operator is told, and asks again.
            return Rejected(id="", error="Unavailable",
                            message=f"{type(error).__name__}: {error}")
        raise AssertionError("unreachable")

    async def status(self) -> ClusterStatus:
        """Every actor asked at once; each answers within ``call_timeout``
        or is shown by its last snapshot."""
        details: dict[str, Any] = {}

        async def ask(name: str, ref: Ref[Any]) -> None:
            details[name] = await self._stats(name, ref)

        async with trio.open_nursery() as nursery:
            for name, ref in self.context.peers.items():
                if name != self.name:
                    nursery.start_soon(ask, name, ref)
        return cluster_status(details.values(), self.node, time.time(), self.rates)

    async def _call(self, ref: str, message: Any) -> Any:
        return await self.refs[ref].call(message, timeout=self.options.action_timeout)

    async def _purge(self, message: Purge) -> Purged:
        level = None if message.priority is None else PRIORITIES.index(message.priority)
        count = await self._call("inbox", PurgeQueued(level=level, task=message.task,
                                                      scheduled=message.scheduled))
        log.info("%s: purged %d tasks (priority %s, task %s%s)", self.name, count,
                 message.priority or "any", message.task or "any",
                 ", scheduled too" if message.scheduled else "")
        return Purged(count=count)

    async def _retry(self, message: RetryTasks) -> RetryReport:
        refused: list[tuple[str, str]] = []
        remaining = 0
        details: list[TaskDetail] = []
        before = 0.0
        if message.failed:
            before = message.before or time.time()
            found, remaining = await self._call(
                "results", FailedToRetry(task=message.task, limit=message.limit, before=before))
            details.extend(found)
        chosen = {detail.record.id for detail in details}
        for task_id in dict.fromkeys(message.ids):
            if task_id in chosen:
                continue
            detail: TaskDetail | None = await self._call("results", GetTask(id=task_id))
            why = ("unknown: no record of it is held" if detail is None
                   else retry_refusal(detail))
            if why is not None:
                refused.append((task_id, why))
            else:
                assert detail is not None
                details.append(detail)
        retried: list[tuple[str, str]] = []
        nonce = message.nonce or secrets.token_hex(4)
        for start in range(0, len(details), RETRY_BATCH):
            batch = details[start:start + RETRY_BATCH]
            submits = tuple(retry_submit(detail, nonce) for detail in batch)
            answers = await self._call("inbox", Requests(messages=submits, peer="admin"))
            for detail, submit, answer in zip(batch, submits, answers, strict=True):
                if isinstance(answer, Accepted):
                    retried.append((detail.record.id, submit.id))
                else:
                    assert isinstance(answer, Rejected)
                    refused.append((detail.record.id, f"{answer.error}: {answer.message}"))
        if retried:
            log.info("%s: retried %d tasks as new ones", self.name, len(retried))
        return RetryReport(retried=tuple(retried), refused=tuple(refused), remaining=remaining,
                           before=before)

    async def _drain(self, message: SetDrain) -> DrainReply:
        known = await self._call("dispatcher",
                                 DrainWorker(worker=message.worker, resume=message.resume))
        if not known:
            return DrainReply(worker=message.worker, outcome="unknown")
        log.info("%s: worker %s %s by an operator", self.name, message.worker,
                 "resumed" if message.resume else "drained")
        return DrainReply(worker=message.worker, outcome="resumed" if message.resume
                          else "drained")
