"""The JSON API's types: what the pages, the event stream and the API send.

msgspec structs: Litestar encodes them and derives the OpenAPI schema from
them. They are built from snapshots in ``dashboard.views``; nothing here
knows where the values come from.
"""

from __future__ import annotations

from typing import Any

import msgspec


class NodeView(msgspec.Struct):
    name: str
    version: str
    started_at: float
    uptime: float
    now: float


class FairKeyView(msgspec.Struct):
    key: str
    queued: int


class QueueView(msgspec.Struct):
    critical: int
    high: int
    normal: int
    low: int
    total: int
    capacity: int
    #: Held for a later time (countdown / eta), not counted in ``total``.
    scheduled: int
    #: Fairness keys with tasks queued, and those with the most, most first.
    fair_keys: int = 0
    top_fair_keys: list[FairKeyView] = msgspec.field(default_factory=list)


class TotalsView(msgspec.Struct):
    submitted: int
    succeeded: int
    failed: int
    cancelled: int


class RatesView(msgspec.Struct):
    """Tasks per second, averaged over the last few samples."""

    submitted: float
    succeeded: float
    failed: float


class StoreView(msgspec.Struct):
    entries: int
    live: int
    bytes: int


class JournalView(msgspec.Struct):
    """The journal's state (docs/durability.md). ``enabled`` is false when
    the node keeps nothing across a restart (no journal, or it is off); the
    other fields are then zero or empty."""

    enabled: bool
    path: str
    #: The file and its write-ahead log, as of the last commit.
    bytes: int
    #: False since a commit failed, until one succeeds.
    healthy: bool
    #: Operations written and not yet committed.
    pending_ops: int
    commits_total: int
    #: Wall-clock time of the last commit (``None``: none yet).
    last_commit_at: float | None
    failures_total: int
    #: Why the last failed commit failed ("" if none has).
    last_error: str


class KindSlotsView(msgspec.Struct):
    """One kind of slot (``async``, ``thread``, ``process``) of a worker, or
    of the live workers together.

    ``capacity`` is the most jobs of this kind it holds now (its slots
    plus its prefetch, which follows its start rate); ``free`` the jobs of
    this kind it can take now (free slots plus unused prefetch: its
    credit). ``running`` and ``prefetched`` (waiting there for a slot) are
    ``None`` where they are not known per kind: a subworker reports its
    running jobs for all kinds together.
    """

    capacity: int
    free: int
    slots: int | None
    running: int | None
    prefetched: int | None


class FleetView(msgspec.Struct):
    alive: int
    suspect: int
    lost: int
    #: Jobs the live workers hold (running plus prefetched), of the most
    #: they hold (``capacity``, all kinds together).
    slots_used: int
    slots_total: int
    #: Of the jobs the live workers hold, those running and those waiting
    #: there for a slot; and the jobs they can take now.
    running: int = 0
    prefetched: int = 0
    free: int = 0
    #: The same per kind of slot, by kind name.
    by_kind: dict[str, KindSlotsView] = msgspec.field(default_factory=dict)


class SeriesView(msgspec.Struct):
    """Per-second rates, oldest first, one point per sample."""

    interval: float
    t: list[float]
    submitted: list[float]
    succeeded: list[float]
    failed: list[float]


class Overview(msgspec.Struct):
    node: NodeView
    queue: QueueView
    in_flight: int
    totals: TotalsView
    rates: RatesView
    success_ratio: float | None
    store: StoreView
    journal: JournalView
    workers: FleetView
    series: SeriesView


class WorkerView(msgspec.Struct):
    id: str
    kind: str
    host: str
    pid: int
    health: str
    draining: bool
    heartbeat_age: float | None
    #: Jobs it holds (``running`` + ``prefetched``), of the most it holds
    #: (its slots plus its prefetch, all kinds together).
    slots_used: int
    slots_total: int
    succeeded: int
    failed: int
    registered_at: float
    last_seen_at: float
    gone_at: float | None
    reason: str
    tasks: list[str]
    #: Jobs running on it; jobs handed to it that wait there for a slot
    #: (prefetched); jobs it can take now (its free credit).
    running: int = 0
    prefetched: int = 0
    free: int = 0
    #: Per kind of slot, by kind name (``async``, ``thread``, ``process``).
    by_kind: dict[str, KindSlotsView] = msgspec.field(default_factory=dict)


class Workers(msgspec.Struct):
    workers: list[WorkerView]


class ActorView(msgspec.Struct):
    name: str
    kind: str
    mailbox_depth: int
    mailbox_capacity: int
    handled_total: int
    batches_total: int
    restarts: int
    detail: dict[str, Any] | None


class Actors(msgspec.Struct):
    node: str
    actors: list[ActorView]


class Snapshot(msgspec.Struct):
    """One event of ``/api/events``."""

    overview: Overview
    workers: Workers
    actors: Actors


class _TaskHead(msgspec.Struct):
    """What a task's row and its page both start with."""

    id: str
    task: str
    state: str
    priority: str
    attempt: int
    worker: str


class TaskSummary(_TaskHead):
    queued_at: float
    started_at: float
    finished_at: float
    error_type: str | None


class TaskList(msgspec.Struct):
    tasks: list[TaskSummary]
    total: int
    offset: int
    limit: int
    states: list[str]
    task_names: list[str]


class ErrorView(msgspec.Struct):
    type: str
    message: str
    traceback: str
    kind: str


class TimelineEvent(msgspec.Struct):
    event: str
    at: float
    worker: str | None


class AttemptView(msgspec.Struct):
    """An earlier attempt that failed and was retried."""

    attempt: int
    worker: str
    started_at: float
    finished_at: float
    error: ErrorView


class TaskActions(msgspec.Struct):
    cancel: bool
    retry: bool


class TaskView(_TaskHead):
    workers: list[str]
    args: str
    kwargs: str
    result: str | None
    error: ErrorView | None
    #: The earlier attempts that failed and were retried, oldest first.
    attempts: list[AttemptView]
    timeline: list[TimelineEvent]
    #: Runs beyond the one whose outcome is kept (at-least-once delivery).
    duplicate_runs: int
    retry_of: str | None
    retried_as: list[str]
    actions: TaskActions


class WorkflowStepView(msgspec.Struct):
    """One step of a workflow. Times are wall-clock Unix seconds."""

    index: int
    task: str
    #: The steps it waits for (their indexes, each before its own).
    after: list[int]
    #: ``waiting`` or ``skipped`` (it will not run: the workflow stopped)
    #: before it ran; then its task's state (``queued``, ``running``...).
    state: str
    #: The task id of its latest run (``None``: it has not run).
    id: str | None
    attempt: int
    started_at: float | None
    finished_at: float | None
    #: Its error as ``Type: message`` (``None``: none).
    error: str | None


class WorkflowActions(msgspec.Struct):
    cancel: bool
    retry: bool


class WorkflowView(msgspec.Struct):
    """A workflow and each of its steps, in the order they were written.

    ``state`` is ``running``, ``succeeded``, ``failed`` or ``cancelled``;
    ``generation`` counts its retries from a failure; ``error`` names the
    step that failed it (``None``: none did).
    """

    id: str
    state: str
    generation: int
    started_at: float
    error: str | None
    steps: list[WorkflowStepView]
    actions: WorkflowActions


class ScheduleView(msgspec.Struct):
    """One periodic task's schedule. Times are wall-clock Unix seconds."""

    task: str
    #: How it is shown: ``every 60 s`` or ``cron */5 * * * *``.
    schedule: str
    cron: str | None
    every: float | None
    next_run: float
    #: When its last run was accepted (``None``: not yet).
    last_run: float | None
    last_id: str | None
    runs: int
    #: Runs skipped: ``skipped_overlap`` + ``skipped_missed``.
    skipped: int
    skipped_overlap: int
    skipped_missed: int
    rejected: int
    failed: int


class Schedules(msgspec.Struct):
    """The periodic tasks the control plane's scheduler runs, soonest
    first; ``enabled`` is false when it has none or is turned off."""

    enabled: bool
    schedules: list[ScheduleView]


class CancelResult(msgspec.Struct):
    id: str
    outcome: str


class RetryResult(msgspec.Struct):
    id: str
    retry_of: str


class PurgeResult(msgspec.Struct):
    purged: int


class BulkRetryResult(msgspec.Struct):
    retried: int
    refused: int
    #: Failed tasks not retried yet beyond this request's bound (ask again).
    remaining: int
    #: Why the first refused one was refused (the queue full, say).
    first_refusal: str | None


class DrainResult(msgspec.Struct):
    worker: str
    draining: bool
