"""The wire protocol of fastworker, as a spec.

Every message that crosses a process boundary is here: frozen,
keyword-only attrs classes in three modules by conversation (``tasks``:
submit, dispatch and report; ``queries``: queries and cancels;
``workers``: the subworker conversation; ``admin``: the operator's
state and bulk actions), re-exported here, each with one
line saying who sends it to whom and when. ``CODEC`` registers them all under ``PROTOCOL_VERSION``.
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
6. admin (``fastworker status``, ``purge``, ``retry``, ``drain``; the
   dashboard's bulk actions -> queries edge on base+4 -> Admin):
   ``ClusterQuery`` is answered ``ClusterStatus``, ``Purge`` ``Purged``,
   ``RetryTasks`` ``RetryReport``, ``SetDrain`` ``DrainReply``.

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

from actors import Codec
from fastworker.messages.admin import ClusterQuery as ClusterQuery
from fastworker.messages.admin import ClusterStatus as ClusterStatus
from fastworker.messages.admin import DrainReply as DrainReply
from fastworker.messages.admin import JournalStatus as JournalStatus
from fastworker.messages.admin import Purge as Purge
from fastworker.messages.admin import Purged as Purged
from fastworker.messages.admin import RetryReport as RetryReport
from fastworker.messages.admin import RetryTasks as RetryTasks
from fastworker.messages.admin import SetDrain as SetDrain
from fastworker.messages.admin import WorkerStatus as WorkerStatus
from fastworker.messages.queries import FINAL_STATES as FINAL_STATES
from fastworker.messages.queries import Attempt as Attempt
from fastworker.messages.queries import Cancel as Cancel
from fastworker.messages.queries import CancelOutcome as CancelOutcome
from fastworker.messages.queries import CancelReply as CancelReply
from fastworker.messages.queries import ListTasks as ListTasks
from fastworker.messages.queries import Records as Records
from fastworker.messages.queries import ResultQuery as ResultQuery
from fastworker.messages.queries import State as State
from fastworker.messages.queries import StatusQuery as StatusQuery
from fastworker.messages.queries import TaskPage as TaskPage
from fastworker.messages.queries import TaskRecord as TaskRecord
from fastworker.messages.queries import Watch as Watch
from fastworker.messages.tasks import ASYNC as ASYNC
from fastworker.messages.tasks import KINDS as KINDS
from fastworker.messages.tasks import PROCESS as PROCESS
from fastworker.messages.tasks import THREAD as THREAD
from fastworker.messages.tasks import Accepted as Accepted
from fastworker.messages.tasks import Assign as Assign
from fastworker.messages.tasks import Cancelled as Cancelled
from fastworker.messages.tasks import Credit as Credit
from fastworker.messages.tasks import Demand as Demand
from fastworker.messages.tasks import Expired as Expired
from fastworker.messages.tasks import Finished as Finished
from fastworker.messages.tasks import Job as Job
from fastworker.messages.tasks import JobBatch as JobBatch
from fastworker.messages.tasks import Outcome as Outcome
from fastworker.messages.tasks import Queued as Queued
from fastworker.messages.tasks import QueuedEntry as QueuedEntry
from fastworker.messages.tasks import Rejected as Rejected
from fastworker.messages.tasks import Released as Released
from fastworker.messages.tasks import RemoteError as RemoteError
from fastworker.messages.tasks import Retry as Retry
from fastworker.messages.tasks import Returned as Returned
from fastworker.messages.tasks import Running as Running
from fastworker.messages.tasks import Slots as Slots
from fastworker.messages.tasks import Stop as Stop
from fastworker.messages.tasks import Submit as Submit
from fastworker.messages.tasks import describe_slots as describe_slots
from fastworker.messages.workers import Ack as Ack
from fastworker.messages.workers import Deregister as Deregister
from fastworker.messages.workers import Drain as Drain
from fastworker.messages.workers import Heartbeat as Heartbeat
from fastworker.messages.workers import HeldJob as HeldJob
from fastworker.messages.workers import Pull as Pull
from fastworker.messages.workers import Register as Register
from fastworker.messages.workers import Registered as Registered
from fastworker.messages.workers import Report as Report
from fastworker.messages.workers import UnknownWorker as UnknownWorker
from fastworker.messages.workflows import CancelWorkflow as CancelWorkflow
from fastworker.messages.workflows import RetryWorkflow as RetryWorkflow
from fastworker.messages.workflows import StartWorkflow as StartWorkflow
from fastworker.messages.workflows import StepInfo as StepInfo
from fastworker.messages.workflows import WorkflowQuery as WorkflowQuery
from fastworker.messages.workflows import WorkflowState as WorkflowState
from fastworker.messages.workflows import WorkflowStep as WorkflowStep

__all__ = [
    "ASYNC",
    "Accepted",
    "Ack",
    "Assign",
    "Attempt",
    "Cancel",
    "CancelOutcome",
    "CancelReply",
    "CancelWorkflow",
    "Cancelled",
    "ClusterQuery",
    "ClusterStatus",
    "Credit",
    "Demand",
    "Deregister",
    "Drain",
    "DrainReply",
    "Expired",
    "FINAL_STATES",
    "Finished",
    "Heartbeat",
    "HeldJob",
    "Job",
    "JobBatch",
    "JournalStatus",
    "KINDS",
    "ListTasks",
    "Outcome",
    "PROCESS",
    "Pull",
    "Purge",
    "Purged",
    "Queued",
    "QueuedEntry",
    "Records",
    "Register",
    "Registered",
    "Rejected",
    "Released",
    "RemoteError",
    "Report",
    "ResultQuery",
    "Retry",
    "RetryReport",
    "RetryTasks",
    "RetryWorkflow",
    "Returned",
    "Running",
    "SetDrain",
    "Slots",
    "StartWorkflow",
    "State",
    "StatusQuery",
    "StepInfo",
    "Stop",
    "Submit",
    "THREAD",
    "TaskPage",
    "TaskRecord",
    "UnknownWorker",
    "Watch",
    "WorkerStatus",
    "WorkflowQuery",
    "WorkflowState",
    "WorkflowStep",
    "describe_slots",
]

#: Bumped whenever a message changes shape; frames of another version are dropped.
PROTOCOL_VERSION = 15

#: Priority levels, highest first; a level's index is its port offset.
PRIORITIES: tuple[str, ...] = ("critical", "high", "normal", "low")
Priority = Literal["critical", "high", "normal", "low"]
#: Port offset of the results and status queries.
RESULTS_PORT_OFFSET = 4
#: Port offset where subworkers register, heartbeat, pull jobs and report.
WORKERS_PORT_OFFSET = 5


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
        ListTasks,
        TaskPage,
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
        ClusterQuery,
        ClusterStatus,
        Purge,
        Purged,
        RetryTasks,
        RetryReport,
        SetDrain,
        DrainReply,
        StartWorkflow,
        CancelWorkflow,
        RetryWorkflow,
        WorkflowQuery,
        WorkflowState,
    ],
    protocol=PROTOCOL_VERSION,
)
