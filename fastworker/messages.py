"""The wire protocol of fastworker, as a spec.

Every message that crosses a process boundary is here: frozen, keyword-only
attrs classes, grouped by conversation, each with one line saying who sends
it to whom and when. ``CODEC`` registers them all under ``PROTOCOL_VERSION``.
Messages between actors of one node are in ``fastworker/internal.py``.

The way of one task (docs/architecture.md has the picture and a table of
every message):

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
5. workers (subworker WorkerLink <-> workers edge on base+5 -> Registry /
   Dispatcher): ``Register`` (answered ``Registered``), ``Heartbeat`` and
   ``Deregister`` go to the Registry; a parked ``Pull`` is answered with
   an ``Assign``; ``Report`` carries credit, ``Running`` and ``Outcome``s
   (the Dispatcher passes them on to the ResultStore); ``Drain`` stops new
   assignments. ``UnknownWorker`` tells a worker to register again.

Times named ``*_at`` are wall-clock seconds (``time.time()``) of the
process that wrote them, for people; deadlines inside a process use trio's
clock. One clock decides each thing: a deadline handed to another process
(``Job.expires_at`` in an ``Assign`` to a subworker) travels with the
sender's clock reading at send (``Assign.sent_at``), and the receiver turns
the time left into a deadline on its own clock on arrival
(``fastworker.deadlines``); every other time that crosses is a duration
(``delay``, ``expires_in``, ``retry_in``, ``wait``, heartbeat intervals).
"""

from __future__ import annotations

from typing import Literal

import attrs

from actors import Codec

#: Bumped whenever a message changes shape; frames of another version are dropped.
PROTOCOL_VERSION = 8

#: Priority levels, highest first; a level's index is its port offset.
PRIORITIES: tuple[str, ...] = ("critical", "high", "normal", "low")
Priority = Literal["critical", "high", "normal", "low"]
#: Port offset of the results and status queries.
RESULTS_PORT_OFFSET = 4
#: Port offset where subworkers register, heartbeat, pull jobs and report.
WORKERS_PORT_OFFSET = 5

State = Literal[
    "scheduled", "queued", "running", "succeeded", "failed", "cancelled", "expired", "unknown"]
#: States after which a task's record no longer changes.
FINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled", "expired"})


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


@attrs.frozen(kw_only=True)
class Demand:
    """Dispatcher -> PriorityInbox: send me up to ``n`` more jobs, best first,
    of tasks my free workers can run: ``only`` these (``None``: any). The
    latest Demand's filter holds for all of it."""

    n: int
    only: frozenset[str] | None = None


@attrs.frozen(kw_only=True)
class JobBatch:
    """PriorityInbox -> Dispatcher: jobs in priority order (maybe fewer than asked)."""

    jobs: tuple[Job, ...]


@attrs.frozen(kw_only=True)
class Assign:
    """Dispatcher -> Executor: run these jobs (never more than its credit).
    To a subworker it also carries the running jobs to ``cancel``."""

    jobs: tuple[Job, ...]
    cancel: tuple[str, ...] = ()
    #: The sender's wall clock when it answered a subworker's Pull with this:
    #: the jobs' ``expires_at`` are on that clock, and a subworker keeps the
    #: time left (``expires_at - sent_at``), not the clock (0: the deadlines
    #: are on this process's own clock). Not part of equality.
    sent_at: float = attrs.field(default=0.0, eq=False)


@attrs.frozen(kw_only=True)
class Stop:
    """Client -> Dispatcher (queries port, after a Cancel answered
    ``not_queued``); Dispatcher -> Executor: stop the task ``id`` if it is
    running. Answered with a ``CancelReply``."""

    id: str


@attrs.frozen(kw_only=True)
class Credit:
    """Executor -> Dispatcher: ``worker`` can take ``n`` more jobs."""

    worker: str
    n: int


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


# -- query ---------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Attempt:
    """An earlier attempt of a task that failed and was retried."""

    attempt: int
    worker: str
    started_at: float
    finished_at: float
    error: RemoteError


@attrs.frozen(kw_only=True)
class TaskRecord:
    """A task's state as the store knows it; ``value`` once it succeeded."""

    id: str
    state: State
    task: str = ""
    priority: int = 2
    attempt: int = 0
    worker: str = ""
    #: Every worker that started it, oldest first (more than one: redelivered).
    workers: tuple[str, ...] = ()
    queued_at: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    value: bytes | None = None
    error: RemoteError | None = None
    #: When a scheduled task is (or was) due to be queued; 0: at once.
    #: For a task waiting for a retry: when the retry is due.
    scheduled_for: float = 0.0
    #: The earlier attempts that failed and were retried, oldest first.
    attempts: tuple[Attempt, ...] = ()
    #: Runs of this task beyond the one whose outcome the record keeps, as
    #: at-least-once delivery allows (a worker thought lost that woke up
    #: and reported its outcome too); counted as their outcomes arrive.
    duplicate_runs: int = 0


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
    #: The store's ``epoch`` the client last heard; a store of another
    #: epoch (it restarted) answers at once, so the client learns it.
    epoch: str = ""


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
    #: The store's incarnation, new at each start: a client that sees it
    #: change knows the control plane restarted. Not part of equality.
    epoch: str = attrs.field(default="", eq=False)


@attrs.frozen(kw_only=True)
class Cancel:
    """Client -> PriorityInbox: cancel the task ``id`` if it is still queued."""

    id: str


#: What a Cancel or Stop did (see ``CancelReply``).
CancelOutcome = Literal["cancelled", "interrupted", "terminated", "abandoned", "requested",
                        "not_queued", "unknown"]


@attrs.frozen(kw_only=True)
class CancelReply:
    """What became of a Cancel (PriorityInbox) or a Stop (Dispatcher).

    ``outcome`` is one of:

    - ``cancelled``: it was queued, scheduled or waiting for a worker, and
      will not run;
    - ``interrupted``: it was running as an async task, and was cancelled
      (at its next ``await``);
    - ``terminated``: it was running in a process (``isolation="process"``),
      which was killed;
    - ``abandoned``: it was running in a thread, which cannot be stopped:
      the task is cancelled now, and what the thread returns is discarded;
    - ``requested``: a subworker runs it and was told to stop it; the
      task's record says how once it has (its error's message);
    - ``not_queued``: the inbox no longer holds it (running or finished;
      a ``Stop`` then says which), or ``unknown``.
    """

    id: str
    outcome: CancelOutcome


# -- workers (subworker <-> control plane on base+5) ----------------------------
#
# A subworker's WorkerLink sends request frames; each is answered by one reply
# frame. Register first; then one Pull is kept parked at the Dispatcher (it
# answers with an Assign when it has jobs for this worker), Reports carry
# credit and results, Heartbeats carry load. A control plane that does not
# know the worker (it restarted, or declared the worker lost) answers
# UnknownWorker, and the worker registers again.


@attrs.frozen(kw_only=True)
class HeldJob:
    """A job a subworker holds (assigned to it, not yet ended), as it tells
    a control plane it registers with again."""

    id: str
    attempt: int
    #: When it started (0: not yet), on the subworker's wall clock: for
    #: people, never compared with the control plane's.
    started_at: float = 0.0


@attrs.frozen(kw_only=True)
class Register:
    """Subworker -> Registry: I exist, and can run these tasks."""

    worker: str
    host: str
    pid: int
    concurrency: int
    tasks: tuple[str, ...]
    #: Of ``tasks``, those never to be run twice (``@task(at_most_once=True)``).
    at_most_once: tuple[str, ...] = ()
    #: The jobs it holds now (registering again: a restarted control plane
    #: lets them end there rather than run them again).
    holding: tuple[HeldJob, ...] = ()
    #: The last Pull and Report numbers it used before (registering again):
    #: a copy of an older request, still on its way, is then known as stale.
    pull_seq: int = 0
    report_seq: int = 0
    #: The largest frame it takes (its ``max_frame_bytes``; 0: not said): an
    #: answer to its Pull is kept within it, and a job alone larger fails.
    max_frame_bytes: int = 0


@attrs.frozen(kw_only=True)
class Registered:
    """Registry -> subworker: welcome; heartbeat every ``heartbeat_interval``
    seconds: after ``missed_limit`` missed beats you are declared lost."""

    worker: str
    heartbeat_interval: float
    missed_limit: int


@attrs.frozen(kw_only=True)
class Heartbeat:
    """Subworker -> Registry: still here, with this load."""

    worker: str
    in_flight: int = 0
    succeeded_total: int = 0
    failed_total: int = 0


@attrs.frozen(kw_only=True)
class Pull:
    """Subworker -> Dispatcher: answer with an ``Assign`` as soon as there are
    jobs for me, or an empty one after ``wait`` seconds."""

    worker: str
    wait: float = 5.0
    #: Counts the worker's Pulls, from 1, across its registrations: one
    #: resent after a dropped connection has the number of the last one
    #: answered, and gets the same jobs again; one older than that is stale
    #: (a copy the network delayed) and gets nothing. Sending Pull N+1
    #: acknowledges the Assign that answered Pull N.
    seq: int = 0


@attrs.frozen(kw_only=True)
class Report:
    """Subworker -> Dispatcher: ``credit`` more free slots, these jobs
    started, these ended."""

    worker: str
    credit: int = 0
    running: tuple[Running, ...] = ()
    finished: tuple[Outcome, ...] = ()
    #: Counts the worker's Reports: one seen before (resent after a lost
    #: answer) adds no credit twice.
    seq: int = 0
    #: The seq of the last Pull whose answer (an Assign) it received: an
    #: acknowledgement of that Assign's jobs, besides the next Pull.
    assigned: int = 0


@attrs.frozen(kw_only=True)
class Drain:
    """Subworker -> Dispatcher: assign me nothing more (I am stopping); a
    parked Pull is answered at once."""

    worker: str


@attrs.frozen(kw_only=True)
class Deregister:
    """Subworker -> Registry: I am leaving; whatever I still hold is requeued."""

    worker: str


@attrs.frozen(kw_only=True)
class Ack:
    """Control plane -> subworker: the request was taken."""


@attrs.frozen(kw_only=True)
class UnknownWorker:
    """Control plane -> subworker: I do not know you (I restarted, or I
    declared you lost): register again."""

    worker: str


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
        Retry,
        Queued,
        Running,
        Finished,
        Cancelled,
        Released,
        Expired,
        ResultQuery,
        Watch,
        StatusQuery,
        Records,
        Cancel,
        CancelReply,
        Stop,
        Register,
        Registered,
        Heartbeat,
        Pull,
        Report,
        Drain,
        Deregister,
        Ack,
        UnknownWorker,
    ],
    protocol=PROTOCOL_VERSION,
)
