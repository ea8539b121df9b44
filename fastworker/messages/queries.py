"""Queries and cancels on the wire: what clients ask the control plane.

``Watch``, ``ResultQuery`` and ``StatusQuery`` (answered by ``Records`` of
``TaskRecord``s), ``Cancel`` (answered by ``CancelReply``), and the states a
task's record goes through. Part of the wire spec: see
``fastworker.messages``.
"""

from __future__ import annotations

from typing import Literal

import attrs

from fastworker.messages.tasks import RemoteError

State = Literal[
    "scheduled", "queued", "running", "succeeded", "failed", "cancelled", "expired", "unknown"]
#: States after which a task's record no longer changes.
FINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled", "expired"})


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
    #: Ids a Watch named that the store has no record of, nor of dropping:
    #: not submitted to this control plane (or not yet: the client knows
    #: which it has not heard accepted). It watches them all the same.
    unknown: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class ListTasks:
    """Client (``fastworker tasks``), dashboard -> ResultStore: a page of
    the records held, newest first, of those matching every filter given:
    ``state``, ``task`` (its name), and ``id`` (a part of the id), at most
    ``limit`` (``fastworker.limits.MAX_PAGE``). Answered with a ``TaskPage``."""

    state: str | None = None
    task: str | None = None
    id: str | None = None
    offset: int = 0
    limit: int = 50


@attrs.frozen(kw_only=True)
class TaskPage:
    """ResultStore -> caller: the records of a ``ListTasks`` page, and how
    many records match in all."""

    records: tuple[TaskRecord, ...]
    total: int


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
