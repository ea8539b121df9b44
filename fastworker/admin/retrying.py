"""Running a task again as a new task with the same arguments: whether it
can be, and the ``Submit`` that does it (for the Admin and the dashboard)."""

from __future__ import annotations

import hashlib

from fastworker.internal import TaskDetail
from fastworker.limits import MAX_ID_LENGTH
from fastworker.messages import Submit
from fastworker.submission import build_submit, priority_name

__all__ = ["RETRYABLE", "retry_id", "retry_refusal", "retry_submit"]

#: The states a task can be retried from.
RETRYABLE = ("failed", "cancelled", "expired")


def retry_refusal(detail: TaskDetail) -> str | None:
    """Why the task cannot be retried, or ``None``: it must have ended
    failed, cancelled or expired, with its arguments still held."""
    record = detail.record
    if record.state not in RETRYABLE:
        return f"it is {record.state} (only failed, cancelled or expired tasks can be retried)"
    if not detail.payload:
        return "its arguments are no longer held"
    return None


def retry_id(task_id: str, nonce: str) -> str:
    """The id of the retry of ``task_id`` that the request ``nonce`` (a
    random word its sender chose) asks for: the same request sent again
    (its answer was lost, its frame resent) names the same task, which
    the inbox recognises, and no user's id is like it."""
    candidate = f"{task_id}-retry-{nonce}"
    if len(candidate) <= MAX_ID_LENGTH:
        return candidate
    return f"{hashlib.sha256(task_id.encode()).hexdigest()[:32]}-retry-{nonce}"


def retry_submit(detail: TaskDetail, nonce: str) -> Submit:
    """A new task running ``detail``'s task with its arguments and
    priority (``retry_id``); its record says which it retries (``retry_of``)."""
    record = detail.record
    return build_submit(record.task, id=retry_id(record.id, nonce), payload=detail.payload,
                        priority=priority_name(record.priority), retry_of=record.id)
