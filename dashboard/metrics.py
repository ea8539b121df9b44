"""``/metrics``: the same snapshots as the pages, in Prometheus' text format.

A collector reads the latest sample when scraped (prometheus_client writes
the format), so a scrape costs no message to any actor.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from actors.serve import ServeStats
from dashboard.views import (
    NodeInfo,
    Sample,
    Totals,
    in_flight,
    journal_view,
    schedules,
    worker_views,
)
from fastworker.messages import PRIORITIES
from fastworker.stats import (
    BUCKETS,
    DispatcherStats,
    Histogram,
    InboxStats,
    ResultStoreStats,
    TaskSeries,
)

#: The content type of the text format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _per_task(series: list[TaskSeries]) -> Iterator[Metric]:
    """Final states, run times and queue waits per task name (the store
    bounds the names: the rest are counted as ``(other)``)."""
    ended = CounterMetricFamily(
        "fastworker_task_runs", "Tasks that ended, by task name and final state.",
        labels=["task", "state"])
    run = HistogramMetricFamily(
        "fastworker_task_run_seconds",
        "Run time of tasks that ended, from the start to the end of the run that ended "
        "them, by task name.", labels=["task"])
    wait = HistogramMetricFamily(
        "fastworker_task_queue_wait_seconds",
        "Time from queued to the start of the run that ended the task (backoff of "
        "retries included), by task name.", labels=["task"])
    for one in series:
        for state, count in one.states:
            ended.add_metric([one.task, state], count)
        run.add_metric([one.task], _buckets(one.run), one.run.sum)
        wait.add_metric([one.task], _buckets(one.wait), one.wait.sum)
    yield ended
    yield run
    yield wait


def _buckets(histogram: Histogram) -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs, ``+Inf`` last."""
    pairs, total = [], 0
    for bound, count in zip((*map(str, BUCKETS), "+Inf"), histogram.counts, strict=True):
        total += count
        pairs.append((bound, float(total)))
    return pairs


class _SampleCollector(Collector):
    def __init__(self, sample: Sample, node: NodeInfo) -> None:
        self.sample = sample
        self.node = node

    def collect(self) -> Iterator[Metric]:
        sample, node = self.sample, self.node
        info = GaugeMetricFamily("fastworker_info", "The node and its version.",
                                 labels=["node", "version"])
        info.add_metric([node.name, node.version], 1)
        yield info
        yield GaugeMetricFamily("fastworker_uptime_seconds", "Seconds since the dashboard started.",
                                value=max(sample.at - node.started_at, 0.0))
        inbox: InboxStats | None = sample.detail(InboxStats)
        if inbox is not None:
            depth = GaugeMetricFamily("fastworker_queue_depth", "Tasks queued, by priority.",
                                      labels=["priority"])
            for name, count in zip(PRIORITIES, inbox.queued, strict=True):
                depth.add_metric([name], count)
            yield depth
            yield GaugeMetricFamily("fastworker_queue_capacity", "Tasks the queue can hold.",
                                    value=inbox.capacity)
            yield GaugeMetricFamily("fastworker_fair_keys",
                                    "Fairness keys with tasks queued.", value=inbox.fair_keys)
            by_key = GaugeMetricFamily(
                "fastworker_queue_depth_by_fair_key",
                "Tasks queued, for the fairness keys with the most (at most ten).",
                labels=["fair_key"])
            for key, count in inbox.top_fair_keys:
                by_key.add_metric([key], count)
            yield by_key
        totals = Totals.of(sample)
        yield CounterMetricFamily("fastworker_tasks_submitted", "Tasks accepted into the queue.",
                                  value=totals.submitted)
        finished = CounterMetricFamily("fastworker_tasks_finished",
                                       "Tasks that ended, by final state.", labels=["state"])
        finished.add_metric(["succeeded"], totals.succeeded)
        finished.add_metric(["failed"], totals.failed)
        finished.add_metric(["cancelled"], totals.cancelled)
        yield finished
        yield GaugeMetricFamily("fastworker_tasks_in_flight",
                                "Tasks handed to a worker and not finished.",
                                value=in_flight(sample))
        stores: list[ResultStoreStats] = sample.details(ResultStoreStats)
        yield from _per_task([series for store in stores for series in store.tasks])
        yield CounterMetricFamily("fastworker_task_retries",
                                  "Failed attempts run again (retries with backoff).",
                                  value=sum(s.retried_total for s in stores))
        yield CounterMetricFamily(
            "fastworker_task_duplicate_runs",
            "Runs of tasks beyond the one whose outcome is kept (at-least-once delivery ran "
            "them again: a worker thought lost finished too).",
            value=sum(s.duplicate_runs_total for s in stores))
        dispatchers: list[DispatcherStats] = sample.details(DispatcherStats)
        yield CounterMetricFamily(
            "fastworker_stale_pulls",
            "Subworker Pulls older than their worker's newest (copies the network delayed "
            "or repeated), answered with no jobs.",
            value=sum(d.stale_pulls_total for d in dispatchers))
        yield CounterMetricFamily(
            "fastworker_jobs_taken_back",
            "Jobs of Assigns their subworker did not acknowledge within ack_timeout, "
            "queued again.",
            value=sum(d.taken_back_total for d in dispatchers))
        yield CounterMetricFamily(
            "fastworker_jobs_too_large",
            "Jobs failed with JobTooLarge: alone larger than a frame their subworker takes.",
            value=sum(d.too_large_total for d in dispatchers))
        yield from _schedule_metrics(sample)
        yield from _journal_metrics(sample)
        if stores:
            yield GaugeMetricFamily("fastworker_results_entries", "Task records held.",
                                    value=sum(s.entries for s in stores))
            yield GaugeMetricFamily("fastworker_results_bytes", "Bytes of task records held.",
                                    value=sum(s.bytes for s in stores))
            yield CounterMetricFamily(
                "fastworker_results_too_large",
                "Results too large for one answer frame, delivered as ResultTooLarge.",
                value=sum(s.too_large_total for s in stores))
        workers = worker_views(sample, node)
        health = GaugeMetricFamily("fastworker_workers", "Workers listed, by health.",
                                   labels=["health"])
        for state in ("alive", "suspect", "lost", "left"):
            health.add_metric([state], sum(1 for w in workers if w.health == state))
        yield health
        used = GaugeMetricFamily(
            "fastworker_worker_slots_used",
            "Jobs each worker holds (running or prefetched); kind is local or subworker.",
            labels=["worker", "kind"])
        slots = GaugeMetricFamily(
            "fastworker_worker_slots",
            "The most jobs each worker holds now (its slots plus its prefetch, which follows "
            "its start rate; all kinds of slot together); kind is local or subworker.",
            labels=["worker", "kind"])
        done = CounterMetricFamily("fastworker_worker_tasks", "Tasks each worker finished.",
                                   labels=["worker", "kind", "outcome"])
        running = GaugeMetricFamily("fastworker_worker_running", "Jobs running on each worker.",
                                    labels=["worker"])
        prefetched = GaugeMetricFamily(
            "fastworker_worker_prefetched",
            "Jobs handed to each worker that wait there for a free slot.", labels=["worker"])
        free = GaugeMetricFamily(
            "fastworker_worker_free_slots",
            "Jobs each worker can take now, per kind of slot (async, thread, process): "
            "free slots plus unused prefetch.", labels=["worker", "slot"])
        for w in workers:
            if w.health in ("lost", "left"):
                continue
            used.add_metric([w.id, w.kind], w.slots_used)
            slots.add_metric([w.id, w.kind], w.slots_total)
            done.add_metric([w.id, w.kind, "succeeded"], w.succeeded)
            done.add_metric([w.id, w.kind, "failed"], w.failed)
            running.add_metric([w.id], w.running)
            prefetched.add_metric([w.id], w.prefetched)
            for kind, by_kind in w.by_kind.items():
                free.add_metric([w.id, kind], by_kind.free)
        yield from (used, slots, done, running, prefetched, free)
        depth = GaugeMetricFamily("fastworker_actor_mailbox_depth",
                                  "Messages waiting in each actor's mailbox.", labels=["actor"])
        handled = CounterMetricFamily("fastworker_actor_handled",
                                      "Messages each actor handled.", labels=["actor"])
        restarts = CounterMetricFamily("fastworker_actor_restarts",
                                       "Times each actor was restarted.", labels=["actor"])
        for stats in sample.stats.values():
            depth.add_metric([stats.name], stats.mailbox.current_depth)
            handled.add_metric([stats.name], stats.handled_total)
            restarts.add_metric([stats.name], stats.restarts)
        yield depth
        yield handled
        yield restarts
        dropped = CounterMetricFamily(
            "fastworker_peers_dropped_slow",
            "Clients each serving port dropped because they did not read its replies "
            "(a reply waited longer than its reply_timeout).", labels=["port"])
        stale = CounterMetricFamily(
            "fastworker_frames_stale",
            "Request frames each serving port refused as stale: replays, resends, frames "
            "stamped for an earlier start.", labels=["port"])
        for stats in sample.stats.values():
            if isinstance(stats.detail, ServeStats):
                dropped.add_metric([stats.name], stats.detail.peers_dropped_slow)
                stale.add_metric([stats.name], stats.detail.frames_stale)
        yield dropped
        yield stale


def _schedule_metrics(sample: Sample) -> Iterator[Metric]:
    """Each periodic task's next run and what became of its runs."""
    rows = schedules(sample).schedules
    if not rows:
        return
    next_run = GaugeMetricFamily("fastworker_schedule_next_run_timestamp_seconds",
                                 "When each periodic task runs next (Unix time).",
                                 labels=["task"])
    runs = CounterMetricFamily("fastworker_schedule_runs", "Runs each schedule submitted.",
                               labels=["task"])
    skipped = CounterMetricFamily(
        "fastworker_schedule_skipped",
        "Runs each schedule skipped: the previous still going (overlap), or missed.",
        labels=["task", "reason"])
    rejected = CounterMetricFamily("fastworker_schedule_rejected",
                                   "Runs the queue refused, or that could not be submitted.",
                                   labels=["task"])
    for row in rows:
        next_run.add_metric([row.task], row.next_run)
        runs.add_metric([row.task], row.runs)
        skipped.add_metric([row.task, "overlap"], row.skipped_overlap)
        skipped.add_metric([row.task, "missed"], row.skipped_missed)
        rejected.add_metric([row.task], row.rejected + row.failed)
    yield from (next_run, runs, skipped, rejected)


def _journal_metrics(sample: Sample) -> Iterator[Metric]:
    """The journal's file, its writes and its health (none when it is off)."""
    journal = journal_view(sample)
    if not journal.enabled:
        return
    yield GaugeMetricFamily("fastworker_journal_bytes",
                            "Bytes of the journal file and its write-ahead log.",
                            value=journal.bytes)
    yield GaugeMetricFamily("fastworker_journal_pending_ops",
                            "Journal operations written and not yet committed.",
                            value=journal.pending_ops)
    yield CounterMetricFamily("fastworker_journal_commits", "Journal commits that succeeded.",
                              value=journal.commits_total)
    yield CounterMetricFamily("fastworker_journal_failures",
                              "Journal commits that failed (disk full, I/O error).",
                              value=journal.failures_total)
    yield GaugeMetricFamily("fastworker_journal_healthy",
                            "1 while the journal commits, 0 since a commit failed.",
                            value=1 if journal.healthy else 0)
    if journal.last_commit_at is not None:
        yield GaugeMetricFamily("fastworker_journal_last_commit_timestamp_seconds",
                                "When the journal last committed (Unix time).",
                                value=journal.last_commit_at)


def render(sample: Sample, node: NodeInfo) -> bytes:
    """The text of ``/metrics`` for ``sample``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SampleCollector(sample, node))
    return generate_latest(registry)
