"""What the dashboard shows, built from snapshots (the types are in
``dashboard.schema``).

Every view here is a pure function of ``Sample`` (the actors' ``GetStats``
answers taken at one moment) or of the store's answers, so the pages, the
event stream and ``/metrics`` agree, and tests can build them from plain
records.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
import cattrs

from actors import ActorStats
from dashboard.schema import (
    Actors,
    ActorView,
    AttemptView,
    ErrorView,
    FairKeyView,
    FleetView,
    JournalView,
    KindSlotsView,
    NodeView,
    Overview,
    QueueView,
    RatesView,
    Schedules,
    ScheduleView,
    SeriesView,
    StoreView,
    TaskActions,
    TaskSummary,
    TaskView,
    TimelineEvent,
    TotalsView,
    WorkerView,
    WorkflowActions,
    WorkflowStepView,
    WorkflowView,
)
from fastworker.admin.retrying import retry_refusal
from fastworker.admin.status import Node
from fastworker.internal import TaskDetail
from fastworker.journal import JournalStats
from fastworker.messages import FINAL_STATES, KINDS, RemoteError, TaskRecord, WorkflowState
from fastworker.peek import peek_call, peek_value
from fastworker.stats import (
    DispatcherStats,
    ExecutorStats,
    InboxStats,
    RegistryStats,
    ResultStoreStats,
    SchedulerStats,
    WorkerInfo,
    WorkerLoad,
)
from fastworker.submission import priority_name

#: Task states, in the order a task moves through them.
STATES: tuple[str, ...] = (
    "scheduled", "queued", "running", "succeeded", "failed", "cancelled", "expired")


# -- samples -------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Sample:
    """Every actor's snapshot at one moment: ``at`` is wall-clock seconds,
    ``clock`` trio's clock (for rates)."""

    at: float
    clock: float
    stats: Mapping[str, ActorStats]

    def details(self, cls: type[Any]) -> list[Any]:
        """The ``detail`` of every actor whose detail is a ``cls``."""
        return [s.detail for s in self.stats.values() if isinstance(s.detail, cls)]

    def detail(self, cls: type[Any]) -> Any:
        """The first ``detail`` that is a ``cls``, or ``None``."""
        found = self.details(cls)
        return found[0] if found else None


@attrs.frozen(kw_only=True)
class Totals:
    """The running totals a throughput point is the difference of."""

    submitted: int
    succeeded: int
    failed: int
    cancelled: int

    @classmethod
    def of(cls, sample: Sample) -> Totals:
        inbox: InboxStats | None = sample.detail(InboxStats)
        stores: list[ResultStoreStats] = sample.details(ResultStoreStats)
        return cls(
            submitted=inbox.accepted_total if inbox is not None else 0,
            succeeded=sum(s.succeeded_total for s in stores),
            failed=sum(s.failed_total for s in stores),
            cancelled=sum(s.cancelled_total for s in stores),
        )


#: The node the dashboard runs in (the Admin's too).
NodeInfo = Node


# -- building them -------------------------------------------------------------


def rate_point(before: tuple[float, Totals], after: tuple[float, Totals],
               at: float) -> tuple[float, float, float, float]:
    """(wall time, submitted/s, succeeded/s, failed/s) between two
    ``(clock, totals)`` readings; a total that went down (its actor was
    restarted and counts from zero again) counts as none."""
    (t0, a), (t1, b) = before, after
    span = max(t1 - t0, 1e-9)
    return (
        at,
        max(b.submitted - a.submitted, 0) / span,
        max(b.succeeded - a.succeeded, 0) / span,
        max(b.failed - a.failed, 0) / span,
    )


def overview(sample: Sample, node: NodeInfo,
             series: Sequence[tuple[float, float, float, float]], interval: float) -> Overview:
    """``series`` holds ``rate_point``s, oldest first; the current rates
    are the mean of the last five."""
    inbox: InboxStats | None = sample.detail(InboxStats)
    queued = inbox.queued if inbox is not None else (0, 0, 0, 0)
    stores: list[ResultStoreStats] = sample.details(ResultStoreStats)
    totals = Totals.of(sample)
    finished = totals.succeeded + totals.failed
    series = list(series)
    recent = series[-5:]
    count = len(recent) or 1
    workers = worker_views(sample, node)
    live = [w for w in workers if w.health in ("alive", "suspect")]
    return Overview(
        node=NodeView(name=node.name, version=node.version, started_at=node.started_at,
                      uptime=max(sample.at - node.started_at, 0.0), now=sample.at),
        queue=QueueView(critical=queued[0], high=queued[1], normal=queued[2], low=queued[3],
                        total=sum(queued), capacity=inbox.capacity if inbox is not None else 0,
                        scheduled=inbox.scheduled if inbox is not None else 0,
                        fair_keys=inbox.fair_keys if inbox is not None else 0,
                        top_fair_keys=[FairKeyView(key=key, queued=count) for key, count
                                       in (inbox.top_fair_keys if inbox is not None else ())]),
        in_flight=in_flight(sample),
        totals=TotalsView(submitted=totals.submitted, succeeded=totals.succeeded,
                          failed=totals.failed, cancelled=totals.cancelled),
        rates=RatesView(submitted=round(sum(p[1] for p in recent) / count, 3),
                        succeeded=round(sum(p[2] for p in recent) / count, 3),
                        failed=round(sum(p[3] for p in recent) / count, 3)),
        success_ratio=totals.succeeded / finished if finished else None,
        store=StoreView(entries=sum(s.entries for s in stores),
                        live=sum(s.live_entries for s in stores),
                        bytes=sum(s.bytes for s in stores)),
        journal=journal_view(sample),
        workers=FleetView(
            alive=sum(1 for w in workers if w.health == "alive"),
            suspect=sum(1 for w in workers if w.health == "suspect"),
            lost=sum(1 for w in workers if w.health == "lost"),
            slots_used=sum(w.slots_used for w in live),
            slots_total=sum(w.slots_total for w in live),
            running=sum(w.running for w in live),
            prefetched=sum(w.prefetched for w in live),
            free=sum(w.free for w in live),
            by_kind={kind: _sum_kind([w.by_kind[kind] for w in live if kind in w.by_kind])
                     for kind in KINDS},
        ),
        series=SeriesView(interval=interval, t=[p[0] for p in series],
                          submitted=[round(p[1], 3) for p in series],
                          succeeded=[round(p[2], 3) for p in series],
                          failed=[round(p[3], 3) for p in series]),
    )


#: The journal panel of a node that keeps nothing across a restart.
_NO_JOURNAL = JournalView(enabled=False, path="", bytes=0, healthy=True, pending_ops=0,
                          commits_total=0, last_commit_at=None, failures_total=0, last_error="")


def journal_view(sample: Sample) -> JournalView:
    """The journal's state, from its actor's snapshot (a journal that is
    off has none: it shows as not enabled, like a node without one)."""
    journal: JournalStats | None = sample.detail(JournalStats)
    if journal is None:
        return _NO_JOURNAL
    return JournalView(
        enabled=True, path=journal.path, bytes=journal.bytes, healthy=journal.healthy,
        pending_ops=journal.pending_ops, commits_total=journal.commits_total,
        last_commit_at=journal.last_commit_at or None, failures_total=journal.failures_total,
        last_error=journal.last_error,
    )


def in_flight(sample: Sample) -> int:
    """Tasks handed to a worker and not yet finished."""
    dispatcher: DispatcherStats | None = sample.detail(DispatcherStats)
    remote = sum(w.held for w in dispatcher.workers if not w.local) if dispatcher else 0
    executors: list[ExecutorStats] = sample.details(ExecutorStats)
    return remote + sum(e.in_flight for e in executors)


def worker_views(sample: Sample, node: NodeInfo) -> list[WorkerView]:
    """The control plane's own executors, then every subworker the registry
    lists (lost and left ones too, while it keeps them)."""
    dispatcher: DispatcherStats | None = sample.detail(DispatcherStats)
    loads: dict[str, WorkerLoad] = {w.worker: w for w in dispatcher.workers} if dispatcher else {}
    views = []
    for executor in sample.details(ExecutorStats):
        views.append(_local(executor, loads.get(executor.worker), node, sample.at))
    registry: RegistryStats | None = sample.detail(RegistryStats)
    for info in registry.workers if registry is not None else ():
        views.append(_subworker(info, loads.get(info.worker)))
    return views


def _local(executor: ExecutorStats, load: WorkerLoad | None, node: NodeInfo,
           now: float) -> WorkerView:
    """The control plane's executor: its own snapshot says, per kind, what
    runs and what waits for a slot; the Dispatcher's says what it may
    still be given (without it, what its slots and prefetch leave)."""
    by_kind = {}
    for index, kind in enumerate(KINDS):
        slots, running = executor.slots[index], executor.running[index]
        waiting = executor.waiting[index]
        capacity = slots + executor.prefetch[index]
        free = (load.credit_by_kind[index] if load is not None
                else max(capacity - running - waiting, 0))
        by_kind[kind] = KindSlotsView(capacity=capacity, free=free, slots=slots,
                                      running=running, prefetched=waiting)
    running, prefetched = sum(executor.running), sum(executor.waiting)
    return WorkerView(
        id=executor.worker, kind="local", host=node.host, pid=node.pid, health="alive",
        draining=bool(load and load.drained), heartbeat_age=None,
        slots_used=running + prefetched,
        slots_total=sum(k.capacity for k in by_kind.values()),
        succeeded=executor.succeeded_total, failed=executor.failed_total + executor.timed_out_total,
        registered_at=node.started_at, last_seen_at=now, gone_at=None, reason="",
        tasks=[], running=running, prefetched=prefetched,
        free=sum(k.free for k in by_kind.values()), by_kind=by_kind,
    )


def _subworker(info: WorkerInfo, load: WorkerLoad | None) -> WorkerView:
    """A subworker: the Registry has its slots per kind, the Dispatcher
    its prefetch now, what it holds, what of that runs (the rest is
    prefetched), and its free credit per kind. A lost or left one holds
    nothing."""
    gone = info.health in ("lost", "left")
    live = load if load is not None and not gone else None
    by_kind = {
        kind: KindSlotsView(
            capacity=info.slots[index] + (live.prefetch[index] if live is not None else 0),
            free=live.credit_by_kind[index] if live is not None else 0,
            slots=info.slots[index], running=None, prefetched=None)
        for index, kind in enumerate(KINDS)
    }
    if live is not None:
        held, running = live.held, min(live.running, live.held)
        prefetched = held - running
    else:  # not yet in the Dispatcher's view: only its own count is known
        held, running, prefetched = (0 if gone else info.in_flight), 0, 0
    return WorkerView(
        id=info.worker, kind="subworker", host=info.host, pid=info.pid, health=info.health,
        draining=bool(load and (load.drained or load.health == "draining")),
        heartbeat_age=None if gone else round(info.silent_for, 3),
        slots_used=held, slots_total=sum(k.capacity for k in by_kind.values()),
        succeeded=info.succeeded_total,
        failed=info.failed_total, registered_at=info.registered_at,
        last_seen_at=info.last_seen_at, gone_at=info.gone_at if gone else None,
        reason=info.reason, tasks=list(info.tasks), running=running,
        prefetched=prefetched, free=sum(k.free for k in by_kind.values()),
        by_kind=by_kind,
    )


def _sum_kind(views: Sequence[KindSlotsView]) -> KindSlotsView:
    """One kind of slot of several workers together (a figure only some
    of them report per kind is ``None``)."""

    def total(values: list[int | None]) -> int | None:
        return None if any(v is None for v in values) else sum(v for v in values if v is not None)

    return KindSlotsView(
        capacity=sum(v.capacity for v in views), free=sum(v.free for v in views),
        slots=total([v.slots for v in views]), running=total([v.running for v in views]),
        prefetched=total([v.prefetched for v in views]))


_converter = cattrs.Converter()


def _plain(value: Any) -> Any:
    """Snapshot details as JSON-able data."""
    data = _converter.unstructure(value)
    return data if isinstance(data, dict) else {"value": data}


def actor_views(sample: Sample, node: NodeInfo) -> Actors:
    return Actors(node=node.name, actors=[
        ActorView(
            name=s.name, kind=s.kind, mailbox_depth=s.mailbox.current_depth,
            mailbox_capacity=s.mailbox.max_depth, handled_total=s.handled_total,
            batches_total=s.batches_total, restarts=s.restarts,
            detail=None if s.detail is None else _plain(s.detail),
        )
        for s in sample.stats.values()
    ])


def schedules(sample: Sample) -> Schedules:
    """Every schedule of the node's schedulers, the next to run first."""
    found: list[SchedulerStats] = sample.details(SchedulerStats)
    rows = [
        ScheduleView(
            task=info.task,
            schedule=f"cron {info.cron}" if info.cron is not None else f"every {info.every:g} s",
            cron=info.cron, every=info.every, next_run=info.next_run,
            last_run=info.last_run or None, last_id=info.last_id or None,
            runs=info.runs_total, skipped=info.skipped_overlap + info.skipped_missed,
            skipped_overlap=info.skipped_overlap, skipped_missed=info.skipped_missed,
            rejected=info.rejected_total, failed=info.failed_total,
        )
        for stats in found
        for info in stats.schedules
    ]
    rows.sort(key=lambda row: (row.next_run, row.task))
    return Schedules(enabled=any(stats.enabled for stats in found), schedules=rows)


def summary(record: TaskRecord) -> TaskSummary:
    return TaskSummary(
        id=record.id, task=record.task, state=record.state,
        priority=priority_name(record.priority), attempt=record.attempt, worker=record.worker,
        queued_at=record.queued_at, started_at=record.started_at,
        finished_at=record.finished_at,
        error_type=record.error.type if record.error is not None else None,
    )


def task_view(detail: TaskDetail) -> TaskView:
    """A task's page: its record, its arguments and result shown safely
    (``fastworker.peek``: no code of the payload runs), and its timeline."""
    record = detail.record
    args, kwargs = peek_call(detail.payload) if detail.payload else ("", "")
    timeline = []
    if record.queued_at and record.scheduled_for:
        timeline.append(TimelineEvent(event="accepted", at=record.queued_at, worker=None))
        timeline.append(TimelineEvent(event="scheduled", at=record.scheduled_for,
                                      worker=None))
    elif record.queued_at:
        timeline.append(TimelineEvent(event="queued", at=record.queued_at, worker=None))
    if detail.dispatched_at:
        timeline.append(TimelineEvent(event="dispatched", at=detail.dispatched_at,
                                      worker=detail.dispatched_to))
    if record.started_at:
        timeline.append(TimelineEvent(event="started", at=record.started_at,
                                      worker=record.worker or None))
    if record.state in FINAL_STATES and record.finished_at:
        event = record.state if record.state in ("cancelled", "expired") else "finished"
        timeline.append(TimelineEvent(event=event, at=record.finished_at,
                                      worker=record.worker or None))
    error = record.error
    attempts = [AttemptView(attempt=a.attempt, worker=a.worker, started_at=a.started_at,
                            finished_at=a.finished_at, error=_error_view(a.error))
                for a in record.attempts]
    return TaskView(
        id=record.id, task=record.task, state=record.state,
        priority=priority_name(record.priority), attempt=record.attempt, worker=record.worker,
        workers=list(record.workers), args=args, kwargs=kwargs,
        result=peek_value(record.value) if record.value is not None else None,
        error=None if error is None else _error_view(error), attempts=attempts,
        timeline=timeline, duplicate_runs=record.duplicate_runs,
        retry_of=detail.retry_of or None, retried_as=list(detail.retried_as),
        actions=TaskActions(cancel=record.state in ("queued", "scheduled", "running"),
                            retry=retryable(detail)),
    )


def workflow_view(state: WorkflowState) -> WorkflowView:
    """A workflow's page: its state and each step's, as the Workflows
    actor answered ``WorkflowQuery``; what a step has not got yet (a task
    id, times, an error) is ``None``. It can be cancelled while it runs,
    and retried from where it stopped once it failed or was cancelled."""
    steps = [
        WorkflowStepView(
            index=step.index, task=step.task, after=list(step.after), state=step.state,
            id=step.id or None, attempt=step.attempt, started_at=step.started_at or None,
            finished_at=step.finished_at or None, error=step.error or None)
        for step in state.steps
    ]
    return WorkflowView(
        id=state.id, state=state.state, generation=state.generation,
        started_at=state.started_at, error=state.error or None, steps=steps,
        actions=WorkflowActions(cancel=state.state == "running",
                                retry=state.state in ("failed", "cancelled")))


def _error_view(error: RemoteError) -> ErrorView:
    return ErrorView(type=error.type, message=error.message, traceback=error.traceback,
                     kind=error.kind)


def retryable(detail: TaskDetail) -> bool:
    """A failed, cancelled or expired task whose arguments are still held."""
    return retry_refusal(detail) is None


def task_names(sample: Sample, local: Iterable[str]) -> list[str]:
    """Every task name the control plane or a live subworker can run."""
    names = set(local)
    registry: RegistryStats | None = sample.detail(RegistryStats)
    for info in registry.workers if registry is not None else ():
        if info.health in ("alive", "suspect"):
            names.update(info.tasks)
    return sorted(names)
