"""The Dispatcher: matches queued jobs with free worker slots.

Executors say how many more jobs they can take (``Credit``); the Dispatcher
keeps that credit per worker name and asks the PriorityInbox for as many
jobs as there is free credit (``Demand``). The ``JobBatch``es the inbox
sends back, best first, are placed job by job on the worker with the most
free credit at that moment (so a batch spreads over workers), and each
worker gets one ``Assign`` per handled batch of messages. Credits that
arrive together are asked for with one ``Demand``.

The demand is self-correcting: the Dispatcher remembers how many jobs it
asked for and has not yet received, and asks only for the difference
between that and its free credit. A job that arrives with no credit left
for it (a bug: more jobs than were asked for) is logged and held, never
dropped, and placed as soon as credit arrives; that credit is then not
asked for again.

For now every worker is the one local executor wired as ``executor``;
subworkers will add names to the credit table.
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from collections.abc import Mapping
from typing import Any, TypeAlias, Union

import attrs

from actors import Actor, ActorContext, NoOptions, Ref
from actors.log import RateLimitedLog
from fastworker.messages import Assign, Credit, Demand, Job, JobBatch

__all__ = ["Dispatcher", "DispatcherStats"]

log = logging.getLogger("fastworker.dispatcher")

Accepts: TypeAlias = Union[Credit, JobBatch]


@attrs.frozen(kw_only=True)
class DispatcherStats:
    """The Dispatcher's snapshot: free credit per worker, jobs held for lack
    of credit, jobs asked of the inbox and not yet received, jobs assigned,
    and JobBatches received."""

    credit: Mapping[str, int]
    held: int
    asked: int
    assigned_total: int
    batches_total: int


class Dispatcher(Actor[Accepts]):
    """Places jobs on workers as far as their credit allows (see the module
    docstring)."""

    Options = NoOptions
    refs_required = ("inbox", "executor")

    def __init__(self, options: NoOptions, context: ActorContext) -> None:
        super().__init__(options, context)
        self._credit: dict[str, int] = {}
        self._held: deque[Job] = deque()
        self._asked = 0
        self._assigned_total = 0
        self._batches_total = 0
        self._held_log = RateLimitedLog(log, what="such batches", period=60.0)

    async def handle(self, message: Accepts) -> None:
        await self.handle_batch([message])

    async def handle_batch(self, messages: list[Accepts]) -> None:
        received = 0
        for message in messages:
            match message:
                case Credit(worker=worker, n=n):
                    if n > 0:
                        self._credit[worker] = self._credit.get(worker, 0) + n
                case JobBatch(jobs=jobs):
                    self._batches_total += 1
                    self._held.extend(jobs)
                    received += len(jobs)
                    self._asked = max(self._asked - len(jobs), 0)
                case _:
                    # A wiring mistake; crashing would lose the jobs held.
                    kind = type(message).__name__
                    log.warning("%s: ignored %s (not a dispatcher message)", self.name, kind)
        placed = self._place()
        if self._held and received:
            self._held_log.event(
                "%s: holding %d jobs with no worker credit to place them until credit arrives "
                "(a bug: the inbox sent more jobs than were asked for)",
                self.name,
                len(self._held),
            )
        for worker, assigned in placed.items():
            await self._ref_for(worker).send(Assign(jobs=tuple(assigned)))
            self._assigned_total += len(assigned)
        wanted = sum(self._credit.values()) - self._asked
        if wanted > 0:
            self._asked += wanted
            await self.refs["inbox"].send(Demand(n=wanted))

    def stats_detail(self) -> DispatcherStats:
        return DispatcherStats(
            credit=dict(self._credit),
            held=len(self._held),
            asked=self._asked,
            assigned_total=self._assigned_total,
            batches_total=self._batches_total,
        )

    def _place(self) -> dict[str, list[Job]]:
        """Give held jobs, in order, each to the worker with the most free
        credit (ties by name), while any credit is left."""
        # A heap of (-credit, worker) for the workers with credit.
        free = [(-n, worker) for worker, n in self._credit.items() if n > 0]
        heapq.heapify(free)
        placed: dict[str, list[Job]] = {}
        while self._held and free:
            negative, worker = heapq.heappop(free)
            placed.setdefault(worker, []).append(self._held.popleft())
            if negative < -1:
                heapq.heappush(free, (negative + 1, worker))
            self._credit[worker] = -negative - 1
        return placed

    def _ref_for(self, worker: str) -> Ref[Any]:
        # One local executor for now; subworkers will get refs of their own.
        return self.refs["executor"]
