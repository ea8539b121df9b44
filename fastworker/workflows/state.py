"""What the Workflows actor holds: its options, the runs and the steps
they are waiting on, the ended workflows kept, and the store's watch
session that tells it how steps end. ``ending`` stops and ends runs on top
of it, ``running`` moves them on, ``actor`` answers the messages.
"""

from __future__ import annotations

import itertools
import logging
from collections import OrderedDict
from typing import Any

import attrs
import trio

from actors import Actor, ActorContext, ActorCrashed, CallTimeout, Ref
from fastworker.limits import MAX_QUERY_IDS
from fastworker.messages import (
    Records,
    StartWorkflow,
    StatusQuery,
    Submit,
    TaskRecord,
    Watch,
)
from fastworker.workflows.graph import Run

__all__ = ["ENDED_BADLY", "Kept", "PEER_ERRORS", "State", "WORKFLOW_TASK", "WorkflowsOptions",
           "held_size", "why"]

log = logging.getLogger("fastworker.workflows")

#: The store's watch session of this actor.
SESSION = "fastworker.workflows"
#: What a call to another actor of the node raises when it does not answer.
PEER_ERRORS = (CallTimeout, ActorCrashed, trio.BrokenResourceError, trio.ClosedResourceError)
#: Seconds the watch waits after the store failed or refused one.
_WATCH_PAUSE = 0.5
#: The final states of a step that did not succeed.
ENDED_BADLY = frozenset({"failed", "cancelled", "expired"})
#: The task name a workflow's own record carries.
WORKFLOW_TASK = "fastworker.workflow"


@attrs.define
class Kept:
    """An ended workflow, kept for ``WorkflowQuery`` and (failed or
    cancelled) for ``RetryWorkflow``."""

    start: StartWorkflow
    started_at: float
    generation: int
    state: str  # succeeded | failed | cancelled
    error: str = ""
    size: int = 0


@attrs.frozen(kw_only=True)
class WorkflowsOptions:
    """Bounds and waits.

    Attributes:
        max_steps: the most steps one workflow may have.
        max_running: the most workflows running at once; more are refused.
        max_edges: the most "waits for" links of one workflow, all steps together.
        max_bytes: the most bytes of steps' arguments the workflows held
            (running, and ended ones kept) take together; the oldest kept
            are let go first, then a new workflow past it is refused
            (``QueueFull``).
        max_kept: the most ended workflows kept (for their page and, failed
            or cancelled, for a retry); the oldest go first.
        call_timeout: seconds to wait for the inbox's or store's answer.
        watch_wait: seconds one watch of the store parks.
    """

    max_steps: int = attrs.field(default=10_000, validator=attrs.validators.ge(1))
    max_running: int = attrs.field(default=1_000, validator=attrs.validators.ge(1))
    max_edges: int = attrs.field(default=100_000, validator=attrs.validators.ge(0))
    max_bytes: int = attrs.field(default=256 * 1024 * 1024, validator=attrs.validators.ge(0))
    max_kept: int = attrs.field(default=1_000, validator=attrs.validators.ge(0))
    call_timeout: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    watch_wait: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))


class State(Actor[Any]):
    """The Workflows actor's state, and the watch of its steps (see the module docstring)."""

    def __init__(self, options: WorkflowsOptions, context: ActorContext) -> None:
        super().__init__(options, context)
        self.runs: dict[str, Run] = {}
        #: The step a task id is: (workflow id, index, member of a
        #: ``.map()`` step or -1).
        self._steps: dict[str, tuple[str, int, int]] = {}
        #: Each run's last step's result, once it has one.
        self._last: dict[str, bytes] = {}
        self._started_total = self._succeeded_total = self._failed_total = 0
        #: Held while records are acted on: the mailbox and the watch both do.
        self._lock = trio.Lock()
        #: Bytes of steps' arguments the running and kept workflows hold,
        #: and of those the kept ones.
        self._held_bytes = self._kept_bytes = 0
        #: Steps to add to the watch again (a watch failed), and the store's
        #: epoch the session was opened with.
        self._rewatch: set[str] = set()
        self._watch_failed = False
        self._epoch = ""
        #: Runs cancelled by an operator (their record ends ``cancelled``).
        self._cancelled: set[str] = set()
        #: What each running workflow was started with, and when.
        self._starts: dict[str, tuple[StartWorkflow, float]] = {}
        #: Ended workflows kept, oldest first.
        self._kept: OrderedDict[str, Kept] = OrderedDict()
        #: The journal, when it is on.
        self._journal: Ref[Any] | None = None
        #: Each run's number (a retried workflow's new run has a new one),
        #: and the runs with a time limit, by when it ends (wall clock).
        self._serial = itertools.count(1)
        self._serials: dict[str, int] = {}
        self._deadlines: list[tuple[float, int, str]] = []
        #: Steps the queue had no room for, by task id: their run's number
        #: and their Submit, tried again until taken (``_room_forever``).
        self._parked: dict[str, tuple[int, Submit]] = {}
        #: Error handlers the queue had no room for (their runs have ended).
        self._parked_handlers: list[Submit] = []
        self._room_wanted = trio.Event()
        self._deadline_added = trio.Event()

    def _current(self, workflow_id: str, serial: int) -> Run | None:
        """The run of ``workflow_id`` if it is still the one numbered ``serial``."""
        return self.runs.get(workflow_id) if self._serials.get(workflow_id) == serial else None

    async def _tell_store(self, message: Any) -> None:
        try:
            await self.refs["results"].send(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            log.warning("%s: the store is gone; %s not told", self.name, type(message).__name__)

    async def _records(self, ids: list[str]) -> dict[str, TaskRecord]:
        """The store's records of ``ids`` (those it holds), asked
        ``MAX_QUERY_IDS`` at a time.

        Raises:
            RuntimeError: the store refused to say.
        """
        found: dict[str, TaskRecord] = {}
        for start in range(0, len(ids), MAX_QUERY_IDS):
            answer = await self.refs["results"].call(
                StatusQuery(ids=tuple(ids[start:start + MAX_QUERY_IDS])),
                timeout=self.options.call_timeout)
            if not isinstance(answer, Records):
                raise RuntimeError(f"the store refused a status query: {answer}")
            found.update((r.id, r) for r in answer.records if r.state != "unknown")
        return found

    async def _watch(self, ids: tuple[str, ...], *, wait: float) -> tuple[TaskRecord, ...]:
        """The final records of watched steps (adding ``ids`` to the watch;
        past what one watch names, the rest by the next, ``_watch_forever``'s)."""
        if len(ids) > MAX_QUERY_IDS:
            self._rewatch.update(ids[MAX_QUERY_IDS:])
            ids = ids[:MAX_QUERY_IDS]
        try:
            answer = await self.refs["results"].call(
                Watch(session=SESSION, ids=ids, wait=wait, epoch=self._epoch),
                timeout=wait + self.options.call_timeout)
        except PEER_ERRORS:
            # Its answer may have taken records of any step: every step is
            # watched again (a final record comes back at once).
            log.warning("%s: the store did not answer a watch of %d steps", self.name, len(ids))
            self._watch_all_again()
            return ()
        if not isinstance(answer, Records):
            log.warning("%s: the store refused a watch: %s", self.name, answer)
            self._watch_all_again()
            return ()
        if answer.epoch and answer.epoch != self._epoch:
            # Another store than the one the session was opened with: every
            # step is watched again there.
            if self._epoch:
                self._rewatch.update(self._steps)
            self._epoch = answer.epoch
        # A step whose record the store's bounds dropped comes back as an
        # "unknown" record; one it never heard of (``answer.unknown``: a step
        # watched again while it is being submitted) stays watched.
        return answer.records

    def _watch_all_again(self) -> None:
        self._rewatch.update(self._steps)
        self._watch_failed = True

    async def _watch_forever(self, records_out: trio.MemorySendChannel[
            tuple[TaskRecord, ...]]) -> None:
        """Keep a watch of the steps parked at the store; hand what it
        brings to ``_act_forever`` (so that a watch is parked again at once,
        however long acting on them takes: the store keeps an idle session
        for a while only)."""
        while True:
            if self._watch_failed:
                self._watch_failed = False
                await trio.sleep(_WATCH_PAUSE)  # not a tight loop against a failing store
            ids = tuple(itertools.islice(self._rewatch, MAX_QUERY_IDS))
            self._rewatch.difference_update(ids)
            records = await self._watch(ids, wait=0.0 if self._rewatch
                                        else self.options.watch_wait)
            if records:
                await records_out.send(records)


def held_size(message: StartWorkflow) -> int:
    """Bytes of arguments a workflow holds."""
    return sum(len(step.payload) for step in message.steps)


def why(record: TaskRecord) -> str:
    """Why a step's record says it did not succeed."""
    error = record.error
    if error is not None:
        return f"{error.type}: {error.message}"
    if record.state == "unknown":
        return "its record is gone (dropped by the store's bounds)"
    return record.state
