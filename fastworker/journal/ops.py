"""The journal's operations: what actors ask the journal to remember.

Each is a small frozen attrs class; a ``JournalWriter.write`` takes a
sequence of them and commits them in one transaction, in order. The same
classes come back from ``JournalFile.load`` (a recovered task is the
``PutTask`` that would write it again), so what an actor writes is what it
reads after a restart.

Who sends what:

- the inbox: ``PutTask`` for an accepted task (``queued``, or
  ``scheduled`` with its wall-clock ``due_at``), ``SetState`` when
  scheduled tasks are released, ``DropTask`` when one is cancelled or expires;
  ``SetState(ids, "dispatched")`` when it hands jobs to the dispatcher
  (``once`` for at-most-once tasks, committed before the jobs leave),
  ``PutTask`` of the next attempt (``queued`` when a lost worker's job goes
  back, ``scheduled`` until a retry's backoff ends);
- the result store: ``PutRecord`` when an attempt failed and the task waits
  for its retry (the record keeps its earlier attempts), ``PutResult`` when
  a record becomes final (it also drops the task's row), ``DropResult`` when
  TTL or a bound evicts it;
- the scheduler: ``PutSchedule`` after each run, ``DropSchedule`` for a
  schedule no longer defined;
- the workflows actor: ``PutWorkflow`` when a workflow starts, fails
  (kept for a retry from its failed step) or is retried, ``DropWorkflow``
  when it succeeds or is let go (with the ``PutResult`` of its record, in
  the same transaction).

Nothing here does I/O; states are checked when an op is made, so a bad op
fails in its sender, not inside a shared transaction.
"""

from __future__ import annotations

from typing import Literal, Union

import attrs

from fastworker.messages import FINAL_STATES, Job, StartWorkflow, TaskRecord

__all__ = [
    "DropResult",
    "DropSchedule",
    "DropTask",
    "DropWorkflow",
    "Op",
    "PutRecord",
    "PutResult",
    "PutSchedule",
    "PutTask",
    "PutWorkflow",
    "SetState",
    "TASK_STATES",
    "TaskState",
]

#: Where a live task is: waiting in a level, held until ``due_at``, or
#: handed to a worker (running or about to).
TaskState = Literal["queued", "scheduled", "dispatched"]
TASK_STATES: frozenset[str] = frozenset({"queued", "scheduled", "dispatched"})

_task_state = attrs.validators.in_(TASK_STATES)


def _final(instance: object, attribute: attrs.Attribute[TaskRecord], record: TaskRecord) -> None:
    if record.state not in FINAL_STATES:
        raise ValueError(f"PutResult takes a final record, got state {record.state!r} "
                         f"(final states: {', '.join(sorted(FINAL_STATES))})")


@attrs.frozen
class PutTask:
    """Keep ``job`` (insert, or replace the task of that id: a new attempt).

    A task keeps the place in its level that its first ``PutTask`` gave it
    (arrival order); ``due_at`` is wall-clock seconds, for ``scheduled``.
    """

    job: Job
    state: TaskState = attrs.field(default="queued", validator=_task_state)
    due_at: float = 0.0
    #: Its idempotency key ("" none): recovered with the live tasks.
    key: str = ""


def _task_ids(instance: object, attribute: attrs.Attribute[tuple[str, ...]],
              ids: tuple[str, ...]) -> None:
    if type(ids) is not tuple:  # a bare id would be taken for its characters
        raise TypeError(f"SetState takes a tuple of task ids, got {type(ids).__name__}")


@attrs.frozen
class SetState:
    """Move the live tasks ``ids`` to ``state`` (those gone: nothing).

    One op for many tasks: the inbox hands out jobs in batches, and an op
    per job would cost an object and its handling per task.

    ``once`` marks ``dispatched`` tasks as at-most-once: if the control
    plane stops while one is dispatched, it fails with ``WorkerLost`` at the
    restart rather than run again (whether or not this process's registry
    knows the task then)."""

    ids: tuple[str, ...] = attrs.field(validator=_task_ids)
    state: TaskState = attrs.field(validator=_task_state)
    due_at: float = 0.0
    once: bool = False


def _live(instance: object, attribute: attrs.Attribute[TaskRecord], record: TaskRecord) -> None:
    if record.state in FINAL_STATES:
        raise ValueError(f"PutRecord takes the record of a live task, got state {record.state!r} "
                         "(a final record is a PutResult)")


@attrs.frozen
class PutRecord:
    """Keep the record of the live task ``record.id`` with its row in
    ``tasks`` (nothing if it is gone): an attempt failed and the task waits
    for its retry, so the record holds its earlier ``attempts``, which a
    restart gives back to the store. It goes with the row."""

    record: TaskRecord = attrs.field(validator=_live)


@attrs.frozen
class DropTask:
    """Forget the task ``id``: it ended without a result to keep, or was
    cancelled or expired."""

    id: str


@attrs.frozen
class PutResult:
    """Keep the final ``record`` of a task, which also ends the task: its
    row in ``tasks`` goes in the same transaction. ``final_at`` is when it
    became final, wall-clock seconds (for the store's TTL after a restart)."""

    record: TaskRecord = attrs.field(validator=_final)
    final_at: float = 0.0


@attrs.frozen
class DropResult:
    """Forget the stored result of ``id`` (its TTL passed, or a bound evicted it)."""

    id: str


@attrs.frozen
class PutSchedule:
    """Remember that schedule ``name`` last ran at ``last_run`` (wall clock)
    as task ``last_id``."""

    name: str
    last_run: float
    last_id: str = ""


@attrs.frozen
class DropSchedule:
    """Forget the schedule ``name`` (it is no longer defined)."""

    name: str


@attrs.frozen
class PutWorkflow:
    """Keep the workflow ``start`` (insert, or replace the one of its id):
    running, or ``failed`` and kept for a retry from its failed step.

    Its steps' states are not kept here: a restart reads them from the
    steps' own tasks and records (``<id>.<index>``, and
    ``<id>.<index>.<generation>`` for a step run again by a retry)."""

    start: StartWorkflow
    #: When it was first started, wall-clock seconds.
    started_at: float = 0.0
    #: How many times it was retried from a failure.
    generation: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    failed: bool = False


@attrs.frozen
class DropWorkflow:
    """Forget the workflow ``id`` (it succeeded, or is no longer kept)."""

    id: str


Op = Union[PutTask, SetState, DropTask, PutRecord, PutResult, DropResult, PutSchedule, DropSchedule,
           PutWorkflow, DropWorkflow]
