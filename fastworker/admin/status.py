"""The cluster's state for an operator (``ClusterStatus``), from the
snapshots the node's actors give (``GetStats``), and the rates from a
short history of running totals (no trio).
"""

from __future__ import annotations

import os
import socket
from collections import deque
from collections.abc import Iterable
from typing import Any

import attrs

from fastworker.journal import JournalStats
from fastworker.messages import ClusterStatus, JournalStatus, WorkerStatus
from fastworker.stats import (
    DispatcherStats,
    ExecutorStats,
    InboxStats,
    RegistryStats,
    ResultStoreStats,
    WorkerInfo,
    WorkerLoad,
)

__all__ = ["Node", "Rates", "cluster_status"]


@attrs.frozen(kw_only=True)
class Node:
    """The control plane the Admin runs in."""

    name: str
    version: str
    started_at: float
    host: str = attrs.field(factory=socket.gethostname)
    pid: int = attrs.field(factory=os.getpid)


class Rates:
    """Accepted, succeeded and failed tasks per second over a window, from
    readings of the running totals ``(clock, accepted, succeeded, failed)``.

    A total that went down (its actor restarted and counts from zero)
    counts as none across that step.
    """

    def __init__(self, window: float) -> None:
        self.window = window
        self._readings: deque[tuple[float, int, int, int]] = deque()

    def add(self, clock: float, accepted: int, succeeded: int, failed: int) -> None:
        readings = self._readings
        readings.append((clock, accepted, succeeded, failed))
        while len(readings) > 2 and clock - readings[1][0] >= self.window:
            readings.popleft()

    def now(self) -> tuple[float, float, float]:
        readings = self._readings
        if len(readings) < 2:
            return (0.0, 0.0, 0.0)
        span = readings[-1][0] - readings[0][0]
        if span <= 0:
            return (0.0, 0.0, 0.0)
        sums: list[float] = [0, 0, 0]
        for before, after in zip(readings, list(readings)[1:], strict=False):
            for index in range(3):
                sums[index] += max(after[index + 1] - before[index + 1], 0)
        return (round(sums[0] / span, 3), round(sums[1] / span, 3), round(sums[2] / span, 3))


def _one(details: list[Any], cls: type[Any]) -> Any:
    return next((d for d in details if isinstance(d, cls)), None)


def cluster_status(details: Iterable[Any], node: Node, now: float,
                   rates: Rates) -> ClusterStatus:
    """The ``ClusterStatus`` of a node whose actors' snapshot details are
    ``details`` (an actor that did not answer is missing: its figures are 0)."""
    details = list(details)
    inbox: InboxStats | None = _one(details, InboxStats)
    dispatcher: DispatcherStats | None = _one(details, DispatcherStats)
    registry: RegistryStats | None = _one(details, RegistryStats)
    journal: JournalStats | None = _one(details, JournalStats)
    stores = [d for d in details if isinstance(d, ResultStoreStats)]
    executors = [d for d in details if isinstance(d, ExecutorStats)]
    loads = {w.worker: w for w in dispatcher.workers} if dispatcher is not None else {}
    workers = [_local(e, loads.get(e.worker), node) for e in executors]
    workers.extend(_subworker(info, loads.get(info.worker))
                   for info in (registry.workers if registry is not None else ()))
    remote_held = sum(w.held for w in loads.values() if not w.local)
    return ClusterStatus(
        node=node.name, version=node.version, started_at=node.started_at, now=now,
        queued=inbox.queued if inbox is not None else (0, 0, 0, 0),
        capacity=inbox.capacity if inbox is not None else 0,
        waiting_for_room=inbox.parked if inbox is not None else 0,
        scheduled=inbox.scheduled if inbox is not None else 0,
        in_flight=remote_held + sum(e.in_flight for e in executors),
        unplaced=dispatcher.held if dispatcher is not None else 0,
        accepted_total=inbox.accepted_total if inbox is not None else 0,
        succeeded_total=sum(s.succeeded_total for s in stores),
        failed_total=sum(s.failed_total for s in stores),
        cancelled_total=sum(s.cancelled_total for s in stores),
        expired_total=sum(s.expired_total for s in stores),
        rates=rates.now(), rate_window=rates.window,
        stored=sum(s.entries for s in stores), stored_bytes=sum(s.bytes for s in stores),
        journal=JournalStatus(enabled=False) if journal is None else JournalStatus(
            enabled=True, path=journal.path, healthy=journal.healthy, bytes=journal.bytes,
            pending_ops=journal.pending_ops, last_commit_at=journal.last_commit_at,
            last_error=journal.last_error),
        workers=tuple(workers),
    )


def _local(executor: ExecutorStats, load: WorkerLoad | None, node: Node) -> WorkerStatus:
    """The control plane's own executor: its snapshot says what runs and
    waits; the Dispatcher's what it may still be given."""
    capacity = sum(executor.slots) + sum(executor.prefetch)
    running, waiting = sum(executor.running), sum(executor.waiting)
    return WorkerStatus(
        worker=executor.worker, local=True, host=node.host, pid=node.pid, health="alive",
        drained=bool(load and load.drained), slots=executor.slots, running=running,
        waiting=waiting,
        free=load.credit if load is not None else max(capacity - running - waiting, 0),
        succeeded_total=executor.succeeded_total,
        failed_total=executor.failed_total + executor.timed_out_total,
    )


def _subworker(info: WorkerInfo, load: WorkerLoad | None) -> WorkerStatus:
    """A subworker: the Registry knows it, the Dispatcher what it holds
    (a gone one holds nothing)."""
    gone = info.health in ("lost", "left")
    live = load if load is not None and not gone else None
    held = live.held if live is not None else (0 if gone else info.in_flight)
    running = min(live.running, live.held) if live is not None else 0
    return WorkerStatus(
        worker=info.worker, local=False, host=info.host, pid=info.pid, health=info.health,
        drained=bool(load and (load.drained or load.health == "draining")),
        slots=info.slots, running=running,
        waiting=held - running if live is not None else 0,
        free=live.credit if live is not None else 0,
        succeeded_total=info.succeeded_total, failed_total=info.failed_total,
        silent_for=0.0 if gone else round(info.silent_for, 3), reason=info.reason,
        tasks=len(info.tasks),
    )
