"""The operator's conversation: the cluster's state and the bulk actions.

``fastworker status``, ``workers``, ``watch``, ``purge``, ``retry`` and
``drain`` (and the dashboard's bulk actions) send these on the queries port
(base+4) to the control plane's ``Admin`` actor, which asks the inbox,
dispatcher, store and the rest in process. Each request is answered by one
message.
"""

from __future__ import annotations

from typing import Literal

import attrs

from fastworker.messages.tasks import Slots


@attrs.frozen(kw_only=True)
class ClusterQuery:
    """Operator -> Admin: the cluster as it is now; answered ``ClusterStatus``."""


@attrs.frozen(kw_only=True)
class WorkerStatus:
    """One worker in a ``ClusterStatus``: the control plane's own executor
    (``local``) or a subworker, live or recently gone.

    Attributes:
        health: ``alive``, ``suspect`` (a heartbeat missed: given nothing
            new), ``lost`` (silent too long; its tasks were redelivered) or
            ``left`` (stopped cleanly). Gone ones stay listed a while.
        drained: an operator drained it: it gets no new task.
        slots: the tasks it starts at once, per kind of slot (``KINDS``).
        running: tasks it runs now; ``waiting``: tasks handed to it that
            wait there for a slot (prefetched).
        free: tasks it may still be given now (its free credit).
        silent_for: seconds since its last heartbeat (0 for the local one).
        reason: why it is gone ("" while it is not).
    """

    worker: str
    local: bool
    host: str
    pid: int
    health: str
    drained: bool
    slots: Slots
    running: int
    waiting: int
    free: int
    succeeded_total: int
    failed_total: int
    silent_for: float = 0.0
    reason: str = ""
    tasks: int = 0


@attrs.frozen(kw_only=True)
class JournalStatus:
    """The journal in a ``ClusterStatus`` (``enabled`` False: the control
    plane keeps nothing across a restart)."""

    enabled: bool
    path: str = ""
    healthy: bool = True
    bytes: int = 0
    pending_ops: int = 0
    last_commit_at: float = 0.0
    last_error: str = ""


@attrs.frozen(kw_only=True)
class ClusterStatus:
    """Admin -> operator: the control plane and its workers now.

    Attributes:
        node / version: the control plane's name and fastworker version.
        started_at / now: its start and this answer's time (wall clock).
        queued: tasks waiting per priority, critical first; ``capacity``
            the most the queue holds; ``waiting_for_room`` submissions
            waiting for a place (the queue is full).
        scheduled: tasks held for later (a countdown, an eta, a retry's backoff).
        in_flight: tasks handed to a worker and not yet ended.
        unplaced: tasks the dispatcher holds for lack of a worker that
            can run them.
        *_total: counts since the control plane started.
        rates: accepted, succeeded and failed tasks per second over the
            last ``rate_window`` seconds (0 until two readings exist).
        stored / stored_bytes: the records the store holds, and their size.
    """

    node: str
    version: str
    started_at: float
    now: float
    queued: tuple[int, int, int, int]
    capacity: int
    waiting_for_room: int
    scheduled: int
    in_flight: int
    unplaced: int
    accepted_total: int
    succeeded_total: int
    failed_total: int
    cancelled_total: int
    expired_total: int
    rates: tuple[float, float, float]
    rate_window: float
    stored: int
    stored_bytes: int
    journal: JournalStatus
    workers: tuple[WorkerStatus, ...]


@attrs.frozen(kw_only=True)
class Purge:
    """Operator -> Admin: cancel every queued task of ``priority`` and
    ``task`` (``None``: any), and with ``scheduled`` the tasks held for
    later too. Answered ``Purged``. Each is recorded as cancelled, and the
    journal forgets it."""

    priority: str | None = None
    task: str | None = None
    scheduled: bool = False


@attrs.frozen(kw_only=True)
class Purged:
    """Admin -> operator: how many tasks a ``Purge`` cancelled."""

    count: int


@attrs.frozen(kw_only=True)
class RetryTasks:
    """Operator -> Admin: run these tasks again, each as a new task with
    the same arguments (its record says ``retry_of``): the ``ids`` given,
    or with ``failed`` the failed tasks (of ``task`` if given) not yet
    retried, at most ``limit`` of them (``fastworker.limits.MAX_BULK``).
    Answered ``RetryReport``."""

    ids: tuple[str, ...] = ()
    failed: bool = False
    task: str | None = None
    limit: int = 1000
    #: A random word the sender chose for this request (``""``: the Admin
    #: chooses), part of each retry's id: a request sent twice retries once.
    nonce: str = ""
    #: With ``failed``: only tasks queued before this time (the control
    #: plane's wall clock; 0: now). A command that sends several asks with
    #: the ``before`` of the first answer, so the retries it made, should
    #: they fail too, are not retried again by the same command.
    before: float = 0.0


@attrs.frozen(kw_only=True)
class RetryReport:
    """Admin -> operator: what a ``RetryTasks`` did.

    Attributes:
        retried: ``(id, new id)`` of each task queued again.
        refused: ``(id, why)`` of each that was not: unknown, not failed,
            cancelled or expired, its arguments no longer held, or the
            queue full (``QueueFull: ...``).
        remaining: failed tasks not yet retried that match, beyond these
            (``failed`` only): send it again for the next ones.
    """

    retried: tuple[tuple[str, str], ...] = ()
    refused: tuple[tuple[str, str], ...] = ()
    remaining: int = 0
    #: The ``before`` applied (``failed``): send it with the next ask.
    before: float = 0.0


@attrs.frozen(kw_only=True)
class SetDrain:
    """Operator -> Admin: give ``worker`` no new tasks (what it holds runs
    to the end), or again (``resume``). Answered ``DrainReply``."""

    worker: str
    resume: bool = False


@attrs.frozen(kw_only=True)
class DrainReply:
    """Admin -> operator: ``drained`` / ``resumed``, or ``unknown`` (no
    such live worker)."""

    worker: str
    outcome: Literal["drained", "resumed", "unknown"]
