"""The wire protocol of fastworker, as a spec.

Every message that crosses a process boundary is here: frozen, keyword-only
attrs classes, grouped by conversation, each with one line saying who sends
it to whom and when. ``CODEC`` registers them all under ``PROTOCOL_VERSION``.
Messages private to one actor stay in that actor's module.

The way of one task (docs/protocol.md has the picture):

1. submit (client -> Ingress on base+priority -> PriorityInbox): a request
   frame of ``Submit`` is answered by a frame of ``Accepted`` / ``Rejected``.
2. dispatch (Dispatcher <-> PriorityInbox, Dispatcher -> Executor):
   ``Demand`` asks the inbox for up to n jobs, ``JobBatch`` answers in
   priority order, ``Assign`` hands jobs to an executor, ``Credit`` says
   how many more an executor can take.
3. report (Executor -> ResultStore): ``Running``, then ``Finished`` with
   each job's ``Outcome``; (PriorityInbox -> ResultStore): ``Queued``,
   ``Cancelled``.
4. query (client -> Results edge on base+4 -> ResultStore / PriorityInbox):
   ``Watch`` (a client's session: new ids in, final records out),
   ``ResultQuery`` and ``StatusQuery`` are answered by ``Records``;
   ``Cancel`` by ``CancelReply``. ``submit`` sends ``Submit`` and ``Watch``
   in one request frame here, so it takes a single round trip.

Times named ``*_at`` are wall-clock seconds (``time.time()``), for people;
deadlines inside a process use trio's clock.
"""

from __future__ import annotations

from typing import Literal

import attrs

from actors import Codec

#: Bumped whenever a message changes shape; frames of another version are dropped.
PROTOCOL_VERSION = 1

#: Priority levels, highest first; a level's index is its port offset.
PRIORITIES: tuple[str, ...] = ("critical", "high", "normal", "low")
Priority = Literal["critical", "high", "normal", "low"]
#: Port offset of the results and status queries.
RESULTS_PORT_OFFSET = 4

State = Literal["queued", "running", "succeeded", "failed", "cancelled", "unknown"]
#: States after which a task's record no longer changes.
FINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


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


@attrs.frozen(kw_only=True)
class Demand:
    """Dispatcher -> PriorityInbox: send me up to ``n`` jobs, best first."""

    n: int


@attrs.frozen(kw_only=True)
class JobBatch:
    """PriorityInbox -> Dispatcher: jobs in priority order (maybe fewer than asked)."""

    jobs: tuple[Job, ...]


@attrs.frozen(kw_only=True)
class Assign:
    """Dispatcher -> Executor: run these jobs (never more than its credit)."""

    jobs: tuple[Job, ...]


@attrs.frozen(kw_only=True)
class Credit:
    """Executor -> Dispatcher: ``worker`` can take ``n`` more jobs."""

    worker: str
    n: int


# -- report --------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class RemoteError:
    """What a task raised, as text: the exception class is never unpickled.

    ``kind`` is ``error`` (the task raised), ``timeout`` (it ran past its
    time limit), or ``cancelled``.
    """

    type: str
    message: str
    traceback: str = ""
    kind: Literal["error", "timeout", "cancelled"] = "error"


@attrs.frozen(kw_only=True)
class Outcome:
    """How one job ended: ``value`` (pickled) or ``error``."""

    id: str
    attempt: int
    worker: str
    value: bytes | None = None
    error: RemoteError | None = None
    started_at: float = 0.0
    finished_at: float = 0.0


@attrs.frozen(kw_only=True)
class QueuedEntry:
    """One task the inbox accepted: what the store records for it."""

    id: str
    task: str
    priority: int
    queued_at: float


@attrs.frozen(kw_only=True)
class Queued:
    """PriorityInbox -> ResultStore: these tasks were accepted."""

    entries: tuple[QueuedEntry, ...]


@attrs.frozen(kw_only=True)
class Running:
    """Executor -> ResultStore: these jobs started on ``worker``."""

    ids: tuple[str, ...]
    worker: str
    started_at: float


@attrs.frozen(kw_only=True)
class Finished:
    """Executor -> ResultStore: these jobs ended."""

    outcomes: tuple[Outcome, ...]


@attrs.frozen(kw_only=True)
class Cancelled:
    """PriorityInbox -> ResultStore: these queued tasks were cancelled."""

    ids: tuple[str, ...]


# -- query ---------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class TaskRecord:
    """A task's state as the store knows it; ``value`` once it succeeded."""

    id: str
    state: State
    task: str = ""
    priority: int = 2
    attempt: int = 0
    worker: str = ""
    queued_at: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    value: bytes | None = None
    error: RemoteError | None = None


@attrs.frozen(kw_only=True)
class ResultQuery:
    """Client -> ResultStore: answer as soon as any of ``ids`` is final, or
    when ``wait`` seconds have passed; ids not yet known are waited for
    too (a just-accepted task may not have reached the store yet)."""

    ids: tuple[str, ...]
    wait: float = 0.0


@attrs.frozen(kw_only=True)
class Watch:
    """Client -> ResultStore: add ``ids`` to the watch set of ``session``
    (one per client) and answer with the final records of every watched id
    as soon as there is one, or when ``wait`` seconds have passed. Delivered
    ids leave the set. A session has at most one parked Watch: a new one
    answers the older one at once, so new ids are never held up."""

    session: str
    ids: tuple[str, ...] = ()
    wait: float = 0.0


@attrs.frozen(kw_only=True)
class StatusQuery:
    """Client -> ResultStore: the current record of each of ``ids``, at once."""

    ids: tuple[str, ...]


@attrs.frozen(kw_only=True)
class Records:
    """ResultStore -> client: records, for a ResultQuery only the final ones
    (the ids missing from it are still pending)."""

    records: tuple[TaskRecord, ...]
    #: True when a ResultQuery or Watch was answered because its wait ran out.
    waited_out: bool = False


@attrs.frozen(kw_only=True)
class Cancel:
    """Client -> PriorityInbox: cancel the task ``id`` if it is still queued."""

    id: str


@attrs.frozen(kw_only=True)
class CancelReply:
    """PriorityInbox -> client: what became of a Cancel.

    ``outcome`` is ``cancelled`` (it was queued and will not run),
    ``not_queued`` (already running or finished), or ``unknown``.
    """

    id: str
    outcome: Literal["cancelled", "not_queued", "unknown"]


CODEC = Codec(
    [
        Submit,
        Accepted,
        Rejected,
        Job,
        Demand,
        JobBatch,
        Assign,
        Credit,
        Queued,
        Running,
        Finished,
        Cancelled,
        ResultQuery,
        Watch,
        StatusQuery,
        Records,
        Cancel,
        CancelReply,
    ],
    protocol=PROTOCOL_VERSION,
)
