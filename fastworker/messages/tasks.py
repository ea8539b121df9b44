"""The task's conversations on the wire: submit, dispatch and report.

``Submit`` and its answers (client -> inbox), the jobs the dispatcher hands
out (``Job``, ``Demand``, ``JobBatch``, ``Assign``, ``Stop``, ``Credit``,
``Retry``) and what becomes of them (``Outcome``, ``Running``, ``Finished``,
``Queued``, ``Cancelled``, ``Released``, ``Expired``). Part of the wire spec:
see ``fastworker.messages`` for the whole and the rules every message keeps.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

import attrs

# -- submit ------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Submit:
    """Client -> Ingress: queue task ``task`` with pickled ``(args, kwargs)``
    under the client-chosen ``id``; wait up to ``queue_wait`` s for room."""

    id: str
    task: str
    payload: bytes
    priority: int = 2
    timeout: float | None = None
    queue_wait: float = 0.0
    #: The task this one retries by hand (the dashboard's retry), if any.
    retry_of: str = ""
    #: Seconds to hold it before it is queued (``countdown`` / ``eta``).
    delay: float = 0.0
    #: Seconds after acceptance past which it must not start (``expires``).
    expires_in: float | None = None
    #: An idempotency key: while a task submitted with the same key is
    #: queued, scheduled or running, this submission is answered with that
    #: task's id and not queued ("": none).
    key: str = ""
    #: Retries of a failed attempt, overriding the task's ``retries``
    #: (``None``: the task's).
    retries: int | None = None
    #: The fairness key: within a priority level, keys take turns ("": none,
    #: the tasks without a key share one turn).
    fair_key: str = ""


@attrs.frozen(kw_only=True)
class Accepted:
    """Ingress -> client: the task ``id`` is queued (or was already)."""

    id: str


@attrs.frozen(kw_only=True)
class Rejected:
    """Ingress -> client: the task ``id`` was not queued, and why.

    ``error`` names the client-side exception: ``QueueFull``,
    ``UnknownTask`` or ``InvalidSubmission``.
    """

    id: str
    error: str
    message: str


# -- dispatch ------------------------------------------------------------------

#: The kinds of slot a job needs to start, in the order credit counts them:
#: a lane (an async task), a worker thread (a sync task) or a pool process
#: (a sync task with ``isolation="process"``). A worker has so many of each,
#: and the kind of each of its tasks (``fastworker.tasks.task_kind``).
KINDS: tuple[str, str, str] = ("async", "thread", "process")
ASYNC, THREAD, PROCESS = 0, 1, 2
#: Slots per kind, in the order of ``KINDS``.
Slots: TypeAlias = tuple[int, int, int]


def describe_slots(slots: Slots) -> str:
    """Slots per kind for a log line: "8 async, 10 thread, 0 process"."""
    return ", ".join(f"{n} {kind}" for kind, n in zip(KINDS, slots, strict=True))


@attrs.frozen(kw_only=True)
class Job:
    """A queued task as it travels inside the system."""

    id: str
    task: str
    payload: bytes
    priority: int
    timeout: float | None
    attempt: int = 1
    queued_at: float = 0.0
    #: Workers lost while they held this job, and pool processes that died
    #: running it (a poison task kills them).
    losses: int = 0
    #: Wall-clock time past which it must not start (``None``: no deadline),
    #: on the clock of the process that holds the job: the control plane's;
    #: in an ``Assign`` that crossed to a subworker, the sender's until the
    #: subworker moves it onto its own (see ``Assign.sent_at``).
    expires_at: float | None = None
    #: Retries of a failed attempt, overriding the task's (``None``: the task's).
    retries: int | None = None
    #: The submission's fairness key ("": none); kept across attempts.
    fair_key: str = ""


@attrs.frozen(kw_only=True)
class Demand:
    """Dispatcher -> PriorityInbox: what its free workers can take now,
    replacing the Demand before. Per pool of free slots (slots of one kind,
    on workers that run the same tasks): how many jobs, and of which tasks.
    ``received`` counts the jobs the dispatcher had received in JobBatches
    when it wrote this: the inbox first charges to the pools what it sent
    since, still on its way."""

    pools: tuple[tuple[int, frozenset[str]], ...] = ()
    received: int = 0


@attrs.frozen(kw_only=True)
class JobBatch:
    """PriorityInbox -> Dispatcher: jobs in priority order (maybe fewer than asked)."""

    jobs: tuple[Job, ...]


@attrs.frozen(kw_only=True)
class Assign:
    """Dispatcher -> Executor: run these jobs (never more than its credit of
    their kind). To a subworker it also carries the running jobs to
    ``cancel``; ``give_back`` asks the executor to hand back every job it
    holds that has not started (the worker is drained), as ``Returned``."""

    jobs: tuple[Job, ...]
    cancel: tuple[str, ...] = ()
    #: The sender's wall clock when it answered a subworker's Pull with this:
    #: the jobs' ``expires_at`` are on that clock, and a subworker keeps the
    #: time left (``expires_at - sent_at``), not the clock (0: the deadlines
    #: are on this process's own clock). Not part of equality.
    sent_at: float = attrs.field(default=0.0, eq=False)
    give_back: bool = False


@attrs.frozen(kw_only=True)
class Stop:
    """Client -> Dispatcher (queries port, after a Cancel answered
    ``not_queued``); Dispatcher -> Executor: stop the task ``id`` if it is
    running. Answered with a ``CancelReply``."""

    id: str


@attrs.frozen(kw_only=True)
class Credit:
    """Executor -> Dispatcher (or its link): ``worker`` can take this many
    more jobs per kind of slot (``KINDS``): the slots it has free to start
    one now, plus its small prefetch. ``tasks`` (in its first Credit, and
    whenever they changed) names the tasks it can run and the kind of each."""

    worker: str
    slots: Slots
    tasks: dict[str, int] | None = attrs.field(default=None, eq=False)
    #: Of each kind's credit, how much is prefetch rather than slots (in
    #: its first Credit, and whenever it changed; ``None``: as before):
    #: placement fills free slots first.
    prefetch: Slots | None = None
    #: The most jobs it holds at once per kind: its slots plus the most
    #: prefetch (in its first Credit; ``None``: its first credit is that).
    holds: Slots | None = None


@attrs.frozen(kw_only=True)
class Returned:
    """Executor -> Dispatcher (or its link): jobs it was assigned and hands
    back without having started them (asked by ``Assign.give_back``, or
    stopping); they are queued again, at the front, with the same attempt."""

    jobs: tuple[Job, ...]


@attrs.frozen(kw_only=True)
class Retry:
    """Executor -> Dispatcher: these jobs (already their next attempt) failed
    and are to run again after ``delays`` seconds each. Only the control
    plane's own executor needs it: a subworker's ``Report`` says
    ``retry_in`` and the Dispatcher retries from its own copy of the job."""

    jobs: tuple[Job, ...]
    delays: tuple[float, ...]


# -- report --------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class RemoteError:
    """What a task raised, as text: the exception class is never unpickled.

    ``kind`` is ``error`` (the task raised), ``timeout`` (it ran past its
    time limit), ``cancelled``, or ``expired`` (its deadline passed before
    it started).
    """

    type: str
    message: str
    traceback: str = ""
    kind: Literal["error", "timeout", "cancelled", "expired"] = "error"


@attrs.frozen(kw_only=True)
class Outcome:
    """How one job ended: ``value`` (pickled) or ``error``."""

    id: str
    attempt: int
    worker: str
    value: bytes | None = None
    error: RemoteError | None = None
    #: When it started and ended, on the wall clock of the worker that ran
    #: it (for people; nothing compares them with another process's clock).
    started_at: float = 0.0
    finished_at: float = 0.0
    #: The attempt failed and is retried after this many seconds
    #: (``None``: this outcome is final).
    retry_in: float | None = None


@attrs.frozen(kw_only=True)
class QueuedEntry:
    """One task the inbox accepted: what the store records for it (the
    payload is kept for a task's page and for retrying it)."""

    id: str
    task: str
    priority: int
    queued_at: float
    payload: bytes = b""
    retry_of: str = ""
    #: Wall-clock time it is held until (0: queued at once).
    scheduled_for: float = 0.0
    #: A final record of this id is let go and a new one begun (a workflow
    #: retried from its failed step runs again under its id).
    again: bool = False


@attrs.frozen(kw_only=True)
class Queued:
    """PriorityInbox -> ResultStore: these tasks were accepted."""

    entries: tuple[QueuedEntry, ...]


@attrs.frozen(kw_only=True)
class Running:
    """Executor -> ResultStore: these jobs started on ``worker``."""

    ids: tuple[str, ...]
    worker: str
    #: On ``worker``'s wall clock (for people).
    started_at: float
    #: Each id's attempt number, in order (empty: the store counts them).
    attempts: tuple[int, ...] = ()


@attrs.frozen(kw_only=True)
class Finished:
    """Executor -> ResultStore: these jobs ended."""

    outcomes: tuple[Outcome, ...]


@attrs.frozen(kw_only=True)
class Cancelled:
    """PriorityInbox -> ResultStore: these queued tasks were cancelled."""

    ids: tuple[str, ...]


@attrs.frozen(kw_only=True)
class Released:
    """PriorityInbox -> ResultStore: these scheduled tasks are now queued."""

    ids: tuple[str, ...]


@attrs.frozen(kw_only=True)
class Expired:
    """PriorityInbox -> ResultStore: these tasks were still queued (or
    scheduled) at their deadline, and will not run."""

    ids: tuple[str, ...]
