"""The messages actors of one node send each other, never over the network.

Beside ``fastworker.messages`` (the wire spec), these are the rest of the
conversation inside a control plane: frozen, keyword-only attrs classes,
each with one line saying who sends it to whom. An actor module imports
its peers' messages from here, never from the peer's module, so no actor
depends on another's code (``tests/test_layers.py`` keeps it so).
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from fastworker.messages import HeldJob, Job, Slots, TaskRecord

__all__ = [
    "Adopted",
    "Dispatched",
    "DrainWorker",
    "FailedToRetry",
    "GetTask",
    "JournalWrite",
    "KnownTasks",
    "PurgeQueued",
    "Recover",
    "RecoveredDispatched",
    "Requeue",
    "Requeued",
    "ResultsKept",
    "TaskDetail",
    "UnknownTasks",
    "WorkerHealth",
    "WorkerJoined",
    "WorkerLeft",
]



# -- registry -> dispatcher, inbox; operators -> dispatcher --------------------

@attrs.frozen(kw_only=True)
class WorkerJoined:
    """Registry -> Dispatcher: a subworker registered and can run ``tasks``
    (the kind of slot each needs: ``kinds``) with ``slots``; it holds the
    jobs ``holding`` (a control plane restarted meanwhile)."""

    worker: str
    tasks: frozenset[str]
    #: The kind of slot (``KINDS`` index) each task needs, in the order of
    #: ``sorted(tasks)``: ``dict(zip(sorted(tasks), kinds))``. Empty: the
    #: worker did not say.
    kinds: tuple[int, ...] = ()
    #: Its slots per kind of slot (the jobs it starts at once).
    slots: Slots = (0, 0, 0)
    #: Of those, per kind, how many are prefetch now.
    prefetch: Slots = (0, 0, 0)
    at_most_once: frozenset[str] = frozenset()
    holding: tuple[HeldJob, ...] = ()
    #: The last Pull and Report numbers it used before registering: older
    #: copies still on their way are stale.
    pull_seq: int = 0
    report_seq: int = 0
    #: The largest frame it takes (0: not said).
    max_frame_bytes: int = 0


@attrs.frozen(kw_only=True)
class WorkerHealth:
    """Registry -> Dispatcher: a subworker missed a heartbeat (``suspect``:
    give it nothing new) or was heard again (``alive``)."""

    worker: str
    health: Literal["alive", "suspect"]


@attrs.frozen(kw_only=True)
class WorkerLeft:
    """Registry -> Dispatcher: a subworker is gone; ``lost`` if it was not a
    clean stop. What it held is redelivered or failed."""

    worker: str
    reason: str
    lost: bool


@attrs.frozen(kw_only=True)
class DrainWorker:
    """Anyone (the dashboard) -> Dispatcher, with ``Ref.call``: give
    ``worker`` no new jobs (what it holds runs to the end), or again
    (``resume``). Answered ``True``, or ``False`` for a worker it does not
    know. The control plane's own executor can be drained too."""

    worker: str
    resume: bool = False


@attrs.frozen(kw_only=True)
class PurgeQueued:
    """Admin -> PriorityInbox (``Ref.call``): cancel every queued task of
    priority ``level`` and name ``task`` (``None``: any), and with
    ``scheduled`` those held for later too; answered with how many."""

    level: int | None = None
    task: str | None = None
    scheduled: bool = False


@attrs.frozen(kw_only=True)
class KnownTasks:
    """Anyone (subworkers, later) -> PriorityInbox: these task names exist
    too, beyond those of the task registry; ``at_most_once`` of them are
    never to be run twice."""

    names: frozenset[str]
    at_most_once: frozenset[str] = frozenset()


@attrs.frozen(kw_only=True)
class UnknownTasks:
    """Workflows -> PriorityInbox (``Ref.call``): which of ``names`` it
    would refuse as unknown; answered with a tuple of (name, the UnknownTask
    message), one per unknown name (empty: all known, or names not checked)."""

    names: tuple[str, ...]


# -- inbox -> dispatcher -------------------------------------------------------

@attrs.frozen(kw_only=True)
class RecoveredDispatched:
    """PriorityInbox -> Dispatcher, once after recovery: these tasks were
    dispatched when the control plane stopped and are queued again (their
    next attempt); a late result for one cancels its queued copy."""

    ids: tuple[str, ...]


# -- dispatcher -> store ---------------------------------------------------------

@attrs.frozen(kw_only=True)
class ResultsKept:
    """Dispatcher -> ResultStore (call): answered ``True`` once every report
    the store was sent before it is kept (written to the journal, if there
    is one; ``False`` if the journal could not write them). A subworker's
    Report of results is acknowledged only then: a restart between the two
    would otherwise lose results the subworker no longer keeps."""


# -- dispatcher -> inbox -------------------------------------------------------

@attrs.frozen(kw_only=True)
class Adopted:
    """Dispatcher -> PriorityInbox: tasks the journal brought back as
    dispatched, which a subworker that registered again still holds.
    ``running``: it runs them, keep their copies from running again;
    ``ended``: their results came, forget the copies; ``again``: the worker
    went without ending them, or an attempt failed and is to be retried:
    queue the copies (each after its ``delays`` entry, if given)."""

    ids: tuple[str, ...]
    state: Literal["running", "ended", "again"]
    delays: tuple[float, ...] = ()


@attrs.frozen(kw_only=True)
class Requeue:
    """Dispatcher -> PriorityInbox: put these jobs back at the front of their
    levels, in this order (they were accepted once: room is not checked).

    With ``delays`` (one per job: failed attempts to retry), each job is
    held that many seconds, then queued at the back of its level like a
    scheduled task; held retries count as scheduled tasks but are never
    refused (they are bounded by the jobs running)."""

    jobs: tuple[Job, ...]
    delays: tuple[float, ...] = ()


# -- dispatcher -> result store ------------------------------------------------

@attrs.frozen(kw_only=True)
class Requeued:
    """Dispatcher -> ResultStore: these tasks went back to the queue (their
    worker was lost or left) and will run again as the given attempts."""

    ids: tuple[str, ...]
    attempts: tuple[int, ...]


@attrs.frozen(kw_only=True)
class Dispatched:
    """Dispatcher -> ResultStore: these tasks were handed to ``worker`` at
    ``at`` (wall clock), for their timeline."""

    ids: tuple[str, ...]
    worker: str
    at: float


# -- anyone (scheduler, dashboard) -> result store -----------------------------

@attrs.frozen(kw_only=True)
class GetTask:
    """Anyone -> ResultStore (``Ref.call``): everything held about task
    ``id``; answered with a ``TaskDetail``, or ``None`` if it is not held."""

    id: str


@attrs.frozen(kw_only=True)
class FailedToRetry:
    """Admin -> ResultStore (``Ref.call``): the failed tasks (of ``task``
    if given) not yet retried whose arguments are held, oldest first, at
    most ``limit``; answered ``(details, how many more match)``, a
    ``tuple[tuple[TaskDetail, ...], int]``."""

    task: str | None = None
    limit: int = 500
    #: Only tasks queued before this wall-clock time.
    before: float = float("inf")


@attrs.frozen(kw_only=True)
class TaskDetail:
    """ResultStore -> caller: a task's record, its pickled arguments (empty
    if it was never queued here), when and to whom it was last dispatched,
    and the tasks it retries or that retry it."""

    record: TaskRecord
    payload: bytes
    dispatched_at: float
    dispatched_to: str
    retry_of: str
    retried_as: tuple[str, ...]


# -- inbox, result store, scheduler -> journal -----------------------------------


@attrs.frozen(kw_only=True)
class JournalWrite:
    """Inbox, ResultStore, Scheduler -> Journal: remember these operations
    (``fastworker.journal.ops``), after every write sent before. Sent, it is
    applied with nothing to wait for; called (``Ref.call``), it is answered
    ``True`` once durable, or fails with ``JournalUnavailable``. With the
    journal off, a call is answered ``True`` at once."""

    ops: tuple[Any, ...]


@attrs.frozen(kw_only=True)
class Recover:
    """An actor -> Journal (``Ref.call``), from its ``setup``: what the
    journal holds for a restart. Answered with a
    ``fastworker.journal.Recovered`` (empty when the journal is off)."""
