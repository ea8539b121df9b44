"""Per task name: how many runs ended in each final state, how long they
ran and how long they waited in the queue (no trio).

The store observes each record as it becomes final; ``/metrics`` reads
the snapshot. Label values are bounded: at most ``max_names`` task names
get series of their own, the rest are counted under ``OTHER`` (names come
from clients, and a metric per name must not grow without end).
"""

from __future__ import annotations

import bisect

from fastworker.messages import TaskRecord
from fastworker.stats import BUCKETS, Histogram, TaskSeries

__all__ = ["DEFAULT_MAX_NAMES", "OTHER", "TaskMetrics"]
#: Task names with series of their own.
DEFAULT_MAX_NAMES = 200
#: The series of every task name past ``max_names``.
OTHER = "(other)"


class _Observed:
    __slots__ = ("run", "run_count", "run_sum", "states", "wait", "wait_count", "wait_sum")

    def __init__(self) -> None:
        self.states: dict[str, int] = {}
        self.run = [0] * (len(BUCKETS) + 1)
        self.wait = [0] * (len(BUCKETS) + 1)
        self.run_sum = self.wait_sum = 0.0
        self.run_count = self.wait_count = 0


class TaskMetrics:
    """The figures of every task name seen, bounded (see the module)."""

    def __init__(self, max_names: int = DEFAULT_MAX_NAMES) -> None:
        self.max_names = max_names
        self._series: dict[str, _Observed] = {}

    def observe(self, record: TaskRecord) -> None:
        """Count a record that just became final."""
        task = record.task or "(unknown)"
        series = self._series.get(task)
        if series is None:
            name = task if len(self._series) < self.max_names else OTHER
            series = self._series.get(name)
            if series is None:
                series = self._series[name] = _Observed()
        states = series.states
        states[record.state] = states.get(record.state, 0) + 1
        started = record.started_at
        if not started or (record.error is not None and record.finished_at == started):
            return  # never ran: cancelled or expired while queued, unknown on its worker
        if record.finished_at >= started:
            took = record.finished_at - started
            series.run[bisect.bisect_left(BUCKETS, took)] += 1
            series.run_sum += took
            series.run_count += 1
        if record.queued_at and started >= record.queued_at:
            waited = started - record.queued_at
            series.wait[bisect.bisect_left(BUCKETS, waited)] += 1
            series.wait_sum += waited
            series.wait_count += 1

    def snapshot(self) -> tuple[TaskSeries, ...]:
        """Every series, by task name."""
        return tuple(
            TaskSeries(task=name, states=tuple(sorted(s.states.items())),
                       run=Histogram(tuple(s.run), s.run_sum, s.run_count),
                       wait=Histogram(tuple(s.wait), s.wait_sum, s.wait_count))
            for name, s in sorted(self._series.items()))
