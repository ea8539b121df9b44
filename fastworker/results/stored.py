"""What the store holds about one task, and what it counts.

``StoredTask`` is one task's record with what the dashboard's task page
shows besides; ``record_size`` is the bytes a record counts against the
store's ``max_bytes`` (its value and error texts, plus a fixed overhead);
``RecordCounts`` are the running totals ``ResultStoreStats`` reports. Plain
data: ``records.RecordBook`` moves and bounds them.
"""

from __future__ import annotations

import attrs

from fastworker.messages import TaskRecord

__all__ = ["RECORD_OVERHEAD_BYTES", "RecordCounts", "StoredTask", "record_size"]

#: What the store counts per record besides its value and error texts.
RECORD_OVERHEAD_BYTES = 512


class StoredTask:
    """What the store holds about one task: its record, when it became
    final and its counted size, and what a task's page shows besides."""

    __slots__ = ("record", "final_at", "size", "payload", "dispatched_at", "dispatched_to",
                 "retry_of", "retried_as", "duplicate_runs")

    def __init__(self, record: TaskRecord) -> None:
        self.record = record
        self.final_at: float | None = None
        self.size = record_size(record)
        self.payload = b""
        self.dispatched_at = 0.0
        self.dispatched_to = ""
        self.retry_of = ""
        self.retried_as: tuple[str, ...] = ()
        #: The (attempt, worker) of each duplicate run counted, so that a
        #: resent report of one is not counted twice.
        self.duplicate_runs: tuple[tuple[int, str], ...] = ()


@attrs.define
class RecordCounts:
    """The records' running totals, named as in ``ResultStoreStats``."""

    finished_total: int = 0
    succeeded_total: int = 0
    failed_total: int = 0
    cancelled_total: int = 0
    expired_total: int = 0
    duplicates_total: int = 0
    duplicate_runs_total: int = 0
    stale_total: int = 0
    evicted_ttl: int = 0
    evicted_lru: int = 0
    evicted_bytes: int = 0
    retried_total: int = 0


def record_size(record: TaskRecord) -> int:
    """The bytes ``record`` counts against the store's ``max_bytes``."""
    size = RECORD_OVERHEAD_BYTES + len(record.value or b"")
    errors = [attempt.error for attempt in record.attempts]
    if record.error is not None:
        errors.append(record.error)
    for error in errors:
        size += len(error.type) + len(error.message) + len(error.traceback)
    return size
