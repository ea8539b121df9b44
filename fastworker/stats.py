"""The snapshots actors report about themselves (``stats_detail``).

Each actor answers ``GetStats`` with an ``actors.ActorStats`` whose
``detail`` is one of these records. The dashboard and ``/metrics`` read
them from here, never an actor's attributes and never an actor's module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import attrs

__all__ = [
    "BUCKETS",
    "BeaconStats",
    "DispatcherStats",
    "ExecutorStats",
    "Histogram",
    "InboxStats",
    "LinkStats",
    "RegistryStats",
    "ResultStoreStats",
    "ScheduleInfo",
    "SchedulerStats",
    "TOP_FAIR_KEYS",
    "TaskSeries",
    "WorkerInfo",
    "WorkerLoad",
]

#: A subworker's health as the Registry judges it.
Health = Literal["alive", "suspect", "lost", "left"]


#: The fairness keys an ``InboxStats`` names (those with the most queued).
TOP_FAIR_KEYS = 10


@attrs.frozen(kw_only=True)
class InboxStats:
    """The inbox's snapshot. ``queued`` is per level, critical first;
    ``parked`` counts Submits waiting for room; ``duplicates_total`` counts
    resent Submits answered without queueing; ``rejected_total`` is by
    error name."""

    queued: tuple[int, int, int, int]
    capacity: int
    parked: int
    demand: int
    accepted_total: int
    duplicates_total: int
    rejected_total: Mapping[str, int]
    dispatched_total: int
    cancelled_total: int
    requeued_total: int
    #: Tasks held for a later time, and tasks dropped at their deadline.
    scheduled: int = 0
    expired_total: int = 0
    #: Failed attempts held for their retry; Submits answered with the id
    #: of the task holding their key; keys held.
    retried_total: int = 0
    unique_hits_total: int = 0
    keys: int = 0
    #: Fairness keys with tasks queued, and the ``TOP_FAIR_KEYS`` with the
    #: most, as ``(key, queued)``, most first.
    fair_keys: int = 0
    top_fair_keys: tuple[tuple[str, int], ...] = ()


#: Upper bounds, in seconds, of the run-time and queue-wait buckets of
#: ``TaskSeries``.
BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                              30.0, 60.0, 300.0, 1800.0)


@attrs.frozen
class Histogram:
    """Observations per bucket of ``BUCKETS`` (not cumulative; the last
    count is for those above the largest bound), their sum and count."""

    counts: tuple[int, ...]
    sum: float
    count: int


@attrs.frozen
class TaskSeries:
    """One task name's figures: final states counted, run time (started to
    finished, of the run that ended it) and queue wait (queued to that
    run's start, retries' backoff included)."""

    task: str
    states: tuple[tuple[str, int], ...]
    run: Histogram
    wait: Histogram


@attrs.frozen(kw_only=True)
class ResultStoreStats:
    """The store's snapshot: what it holds, who waits, what it dropped.

    Attributes:
        entries / live_entries: records held; those of queued or running tasks.
        bytes: the counted size of all records (see ``max_bytes``).
        waiting_queries: ResultQuery and Watch messages parked now.
        finished_total: outcomes that made a record final; of them,
            succeeded_total and failed_total.
        cancelled_total: queued tasks cancelled; expired_total: tasks not
            started by their deadline.
        duplicates_total: a Finished seen before (the same id, attempt and
            worker: a resent report), ignored.
        duplicate_runs_total: outcomes of a task's runs beyond the one its
            record keeps (another attempt, or the same attempt on another
            worker: at-least-once delivery ran it twice); each is counted
            in its record's ``duplicate_runs`` too, and not applied.
        stale_total: a Running or Cancelled for a record already final, ignored.
        evicted_ttl / evicted_lru / evicted_bytes: final records dropped by
            age, by the entry bound, by the byte bound.
        queries_total: queries answered or parked.
        ignored_total: messages with nobody to answer: a query sent without
            ``Ref.call``, or a non-query inside ``Requests``.
        retried_total: failed attempts that run again (kept in the
            record's ``attempts``).
        unsent_total: answers the queries edge could not send (too large
            for its frame); their records were delivered again.
        too_large_total: records too large for any answer, delivered as
            failed with ``ResultTooLarge``.
        rejected_total: queries refused over a limit of
            ``fastworker.limits`` (answered ``Rejected``).
    """

    entries: int
    live_entries: int
    bytes: int
    waiting_queries: int
    finished_total: int
    succeeded_total: int
    failed_total: int
    cancelled_total: int
    expired_total: int
    duplicates_total: int
    duplicate_runs_total: int
    stale_total: int
    evicted_ttl: int
    evicted_lru: int
    evicted_bytes: int
    queries_total: int
    ignored_total: int
    retried_total: int = 0
    unsent_total: int = 0
    too_large_total: int = 0
    rejected_total: int = 0
    #: Per task name: final states, run time, queue wait (at most the
    #: store's ``max_task_names`` names, the rest as ``(other)``).
    tasks: tuple[TaskSeries, ...] = ()


@attrs.frozen(kw_only=True)
class WorkerLoad:
    """One worker in the Dispatcher's snapshot."""

    worker: str
    local: bool
    health: str
    #: Free credit, all kinds of slot together (``by_kind``: per kind).
    credit: int
    #: Jobs handed to it and not yet ended (a subworker's; the local
    #: executor's are in its own snapshot).
    held: int
    assigned_total: int
    #: Drained by an operator (``DrainWorker``): given nothing new.
    drained: bool = False
    #: Of ``held``, those it reported started; the rest wait there for a
    #: slot (prefetched), or for its next Pull.
    running: int = 0
    #: Free credit per kind of slot (``KINDS``).
    credit_by_kind: tuple[int, int, int] = (0, 0, 0)
    #: Of its credit per kind, how much is prefetch now (as it last said).
    prefetch: tuple[int, int, int] = (0, 0, 0)


@attrs.frozen(kw_only=True)
class DispatcherStats:
    """The Dispatcher's snapshot: each worker's free credit and held jobs,
    jobs held for lack of a worker, jobs asked of the inbox and not yet
    received, and what happened to jobs of lost workers."""

    workers: tuple[WorkerLoad, ...]
    held: int
    asked: int
    assigned_total: int
    batches_total: int
    redelivered_total: int
    failed_lost_total: int
    late_results_total: int
    #: Failed attempts sent back to the inbox to run again after their backoff.
    retried_total: int = 0
    #: Outcomes in a Report seen before (resent after its answer was lost),
    #: dropped here; a repeat the Dispatcher cannot recognise (across a
    #: restart) is the store's ``duplicates_total``.
    resent_results_total: int = 0
    #: Pulls older than the newest of their worker (copies the network
    #: delayed or repeated), answered with no jobs.
    stale_pulls_total: int = 0
    #: Jobs of Assigns their worker did not acknowledge within
    #: ``ack_timeout``, taken back and queued again.
    taken_back_total: int = 0
    #: Jobs failed with ``JobTooLarge``: alone larger than a frame their
    #: worker takes.
    too_large_total: int = 0

    @property
    def credit(self) -> Mapping[str, int]:
        """Free credit by worker name."""
        return {load.worker: load.credit for load in self.workers}


@attrs.frozen(kw_only=True)
class ExecutorStats:
    """An executor's snapshot. ``failed_total`` counts errors, not timeouts;
    ``late_results_discarded`` counts sync jobs that returned after their
    time limit had already failed them."""

    worker: str
    concurrency: int
    #: Jobs running, plus those waiting for a slot (``waiting``).
    in_flight: int
    threads: int
    succeeded_total: int
    failed_total: int
    timed_out_total: int
    late_results_discarded: int
    retried_total: int = 0
    #: Running (or waiting) jobs stopped by a ``Stop``.
    cancelled_total: int = 0
    #: Processes of the pool for ``isolation="process"`` tasks, alive now.
    processes: int = 0
    #: Per kind of slot (``KINDS``): how many it has, how many run a job,
    #: and the jobs assigned to it that wait for one (prefetched).
    slots: tuple[int, int, int] = (0, 0, 0)
    running: tuple[int, int, int] = (0, 0, 0)
    waiting: tuple[int, int, int] = (0, 0, 0)
    #: Jobs per kind it takes beyond its free slots now, to start as one
    #: frees (it follows the start rate).
    prefetch: tuple[int, int, int] = (0, 0, 0)


@attrs.frozen(kw_only=True)
class WorkerInfo:
    """One subworker as the Registry sees it (times are wall-clock seconds,
    ``silent_for`` is seconds since its last heartbeat)."""

    worker: str
    host: str
    pid: int
    #: Its slots per kind (``KINDS``): the jobs it starts at once.
    slots: tuple[int, int, int]
    tasks: tuple[str, ...]
    peer: str
    health: Health
    registered_at: float
    last_seen_at: float
    silent_for: float
    in_flight: int
    succeeded_total: int
    failed_total: int
    gone_at: float = 0.0
    reason: str = ""


@attrs.frozen(kw_only=True)
class RegistryStats:
    """The Registry's snapshot: every worker it lists, and counts."""

    workers: tuple[WorkerInfo, ...]
    registered_total: int
    lost_total: int
    left_total: int


@attrs.frozen(kw_only=True)
class ScheduleInfo:
    """One schedule in the scheduler's snapshot.

    Attributes:
        task: the task's name.
        cron: its cron expression, or ``None``.
        every: its period in seconds, or ``None``.
        next_run: when it next runs (wall-clock Unix seconds).
        last_run: when its last run was accepted (0: none yet).
        last_id: the id of its last run ("" if none).
        runs_total: runs the inbox accepted.
        skipped_overlap: runs skipped because the previous one had not ended.
        skipped_missed: slots passed over when the scheduler fell behind.
        rejected_total: runs the inbox rejected (``QueueFull``, ...).
        failed_total: runs given up because the inbox or store did not answer.
    """

    task: str
    cron: str | None
    every: float | None
    next_run: float
    last_run: float
    last_id: str
    runs_total: int
    skipped_overlap: int
    skipped_missed: int
    rejected_total: int
    failed_total: int

    @property
    def skipped_total(self) -> int:
        """Runs skipped for either reason."""
        return self.skipped_overlap + self.skipped_missed


@attrs.frozen(kw_only=True)
class SchedulerStats:
    """The scheduler's snapshot: whether it is on, and its schedules."""

    enabled: bool
    schedules: tuple[ScheduleInfo, ...]


@attrs.frozen(kw_only=True)
class LinkStats:
    """A link's snapshot.

    Attributes:
        buffered_outcomes: outcomes waiting to be reported (all of them while
            the control plane is unreachable), besides a Report in flight.
        outcomes_dropped_total / running_dropped_total: the oldest outcomes
            (``Running`` reports) dropped past ``max_buffered_outcomes``.
        returned_total: jobs the executor gave back unstarted (drained),
            reported to the control plane to be queued again.
    """

    worker: str
    control_plane: str
    registered: bool
    registrations_total: int
    jobs_received_total: int
    outcomes_reported_total: int
    reports_total: int
    draining: bool
    buffered_outcomes: int = 0
    outcomes_dropped_total: int = 0
    running_dropped_total: int = 0
    returned_total: int = 0


@attrs.frozen(kw_only=True)
class BeaconStats:
    """A beacon's snapshot.

    Attributes:
        listening: ``udp://host:port`` it answers on; empty if it does not.
        available: whether it answers (false when off or the port was taken).
        probes_total / answers_total: probes received; answers sent.
        dropped_total: datagrams that were not a probe.
        limited_total: probes left unanswered past ``ANSWERS_PER_SECOND``.
        send_errors_total: answers the network refused.
    """

    listening: str
    available: bool
    probes_total: int
    answers_total: int
    dropped_total: int
    limited_total: int
    send_errors_total: int
