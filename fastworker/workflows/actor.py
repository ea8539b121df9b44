"""The Workflows actor: runs workflows inside the control plane.

A client's ``StartWorkflow`` (on the queries port) names the steps. The
actor records the workflow as a task of the store under its id (so that
``client.result(id)``, ``status`` and the dashboard see it), submits each
step to the inbox as an ordinary task once its parents succeeded (id
``<workflow>.<index>``, its parents' results put before its arguments
without unpickling them: ``payload.with_inputs``), and learns how steps
end from the store through a watch session of its own. A step that fails
(after its own retries), is cancelled or expires fails the workflow: the
steps not yet started are never submitted, those still running are
cancelled, and the workflow's error names the step. Otherwise the
workflow's result is its last step's.

With the journal on, a workflow is written (``PutWorkflow``, the whole
``StartWorkflow``) before it is accepted, and a restart takes it back: each
step's state is read from its task's record (the inbox and the store
recovered theirs first), the steps still running are watched again, and
those whose parents succeeded are submitted (a step's id is fixed, so one
submitted just before the crash is not queued twice). Its end writes its
record's result and drops the workflow in one transaction.

A failed or cancelled workflow is kept (journaled too, at most
``max_kept`` with the ended ones) for ``RetryWorkflow``: the steps that
succeeded keep their results, the others run again under new ids
(``<id>.<index>.<generation>``), and the workflow's record begins again.
``WorkflowQuery`` answers where a workflow stands, step by step.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import time
from collections import OrderedDict, deque
from typing import Any

import attrs
import trio

from actors import Actor, ActorContext, ActorCrashed, CallTimeout, GetStats, Ref
from actors.requests import Requests
from fastworker.cancel import cancel_task
from fastworker.errors import InvalidSubmission
from fastworker.internal import JournalWrite, Recover, UnknownTasks
from fastworker.journal.ops import DropWorkflow, PutResult, PutWorkflow
from fastworker.limits import MAX_ID_LENGTH, MAX_QUERY_IDS, check_text
from fastworker.messages import (
    FINAL_STATES,
    PRIORITIES,
    Accepted,
    Cancelled,
    CancelReply,
    CancelWorkflow,
    Finished,
    Outcome,
    Queued,
    QueuedEntry,
    Records,
    Rejected,
    RemoteError,
    RetryWorkflow,
    StartWorkflow,
    StatusQuery,
    StepInfo,
    Submit,
    TaskRecord,
    Watch,
    WorkflowQuery,
    WorkflowState,
    WorkflowStep,
)
from fastworker.payload import pack_value, with_inputs
from fastworker.submission import build_submit, check_submit
from fastworker.workflows.canvas import StepSpec
from fastworker.workflows.graph import Failure, Run, Seen, error_step_id, step_id

__all__ = ["Workflows", "WorkflowsOptions"]

log = logging.getLogger("fastworker.workflows")

#: The store's watch session of this actor.
SESSION = "fastworker.workflows"
#: What a call to another actor of the node raises when it does not answer.
_PEER_ERRORS = (CallTimeout, ActorCrashed, trio.BrokenResourceError, trio.ClosedResourceError)
#: Batches of records the watch hands over before it waits for them to be acted on.
_RECORD_BATCHES = 64
#: Cancels of a stopped run's steps under way at once.
_CANCELS_AT_ONCE = 64
#: Seconds the watch waits after the store failed or refused one.
_WATCH_PAUSE = 0.5
#: The final states of a step that did not succeed.
_ENDED_BADLY = frozenset({"failed", "cancelled", "expired"})
#: The task name a workflow's own record carries.
WORKFLOW_TASK = "fastworker.workflow"
#: Retries of one workflow from a failure, at most (its steps' ids grow by
#: ``.<generation>``: the id limit counts it).
MAX_GENERATION = 999


@attrs.define
class _Kept:
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


class Workflows(Actor[Any]):
    """Runs workflows (see the module docstring)."""

    Options = WorkflowsOptions
    refs_required = ("inbox", "results", "dispatcher")
    refs_optional = ("journal",)

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
        self._kept: OrderedDict[str, _Kept] = OrderedDict()
        #: The journal, when it is on.
        self._journal: Ref[Any] | None = None
        #: Each run's number (a retried workflow's new run has a new one),
        #: and the runs with a time limit, by when it ends (wall clock).
        self._serial = itertools.count(1)
        self._serials: dict[str, int] = {}
        self._deadlines: list[tuple[float, int, str]] = []
        self._deadline_added = trio.Event()

    async def setup(self, nursery: trio.Nursery) -> str | None:
        send, receive = trio.open_memory_channel[tuple[TaskRecord, ...]](_RECORD_BATCHES)
        said = None
        journal = self.refs.get("journal")
        if journal is not None and (await journal.call(GetStats())).detail is not None:
            self._journal = journal
            recovered = await journal.call(Recover())
            async with self._lock:
                said = await self._recover(recovered.workflows)
        nursery.start_soon(self._watch_forever, send)
        nursery.start_soon(self._act_forever, receive)
        nursery.start_soon(self._time_limits_forever)
        return said

    async def handle(self, message: Any) -> Any:
        async with self._lock:
            if isinstance(message, Requests):
                return [await self._answer_one(item) for item in message.messages]
            return await self._answer_one(message)

    async def _answer_one(self, message: Any) -> Any:
        """The answer to one message; a peer that does not answer, or a
        mistake of this actor's own, is answered ``Unavailable`` and logged:
        it must not restart the control plane's actors with it."""
        try:
            if isinstance(message, CancelWorkflow):
                return await self._cancel(message.id)
            if isinstance(message, RetryWorkflow):
                return await self._retry(message.id)
            if isinstance(message, WorkflowQuery):
                return await self._state(message.id)
            return await self._start(message)
        except _PEER_ERRORS as error:
            return Rejected(id=str(getattr(message, "id", "")), error="Unavailable",
                            message=f"{type(error).__name__}: {error}")
        except Exception as error:
            log.exception("%s: failed to answer %s", self.name, type(message).__name__)
            return Rejected(id=str(getattr(message, "id", "")), error="Unavailable",
                            message=f"the workflows actor failed: {type(error).__name__}")

    async def _cancel(self, workflow_id: str) -> CancelReply:
        """Cancel a running workflow: nothing more starts, what runs is
        cancelled, its record ends ``cancelled``."""
        run = self.runs.get(workflow_id)
        if run is None:
            return CancelReply(id=workflow_id, outcome="unknown")
        self._cancelled.add(workflow_id)
        await self._stop(run, run.cancel("cancelled"))
        if self.runs.get(workflow_id) is run:  # its running steps' ends are not waited for
            await self._finish(run)
        return CancelReply(id=workflow_id, outcome="cancelled")

    def stats_detail(self) -> dict[str, int]:
        return {"running": len(self.runs), "kept": len(self._kept),
                "started_total": self._started_total,
                "succeeded_total": self._succeeded_total, "failed_total": self._failed_total}

    # -- starting -------------------------------------------------------------

    async def _start(self, message: Any) -> Accepted | Rejected:
        if not isinstance(message, StartWorkflow):
            return Rejected(id=str(getattr(message, "id", "")), error="InvalidSubmission",
                            message=f"the workflows actor takes StartWorkflow, not "
                            f"{type(message).__name__}")
        problem = self._check(message)
        if problem is not None:
            return Rejected(id=message.id, error="InvalidSubmission", message=problem)
        if message.id in self.runs:
            return Accepted(id=message.id)  # a resend
        names = dict.fromkeys(step.task for step in message.steps)
        if message.on_error is not None:
            names[message.on_error.task] = None
        unknown = await self.refs["inbox"].call(UnknownTasks(names=tuple(names)),
                                                timeout=self.options.call_timeout)
        if unknown:
            return Rejected(id=message.id, error="UnknownTask", message="; ".join(unknown))
        if message.id in self._kept:
            return Rejected(id=message.id, error="InvalidSubmission",
                            message=f"{message.id} is an ended workflow's id")
        taken = await self._known((message.id, *(step_id(message.id, index)
                                                  for index in range(len(message.steps)))))
        if taken:
            return Rejected(id=message.id, error="InvalidSubmission",
                            message=f"{taken} is already a task's or an ended workflow's id")
        if len(self.runs) >= self.options.max_running:
            return Rejected(id=message.id, error="QueueFull",
                            message=f"{self.options.max_running} workflows already run "
                            "(max_running)")
        size = _size(message)
        running_bytes = self._held_bytes - self._kept_bytes
        if running_bytes + size > self.options.max_bytes:  # even with none kept
            return Rejected(id=message.id, error="QueueFull",
                            message=f"the running workflows hold {running_bytes} bytes of "
                            f"arguments; {size} more is past max_bytes "
                            f"({self.options.max_bytes})")
        self._let_go_kept(room=size)
        now = time.time()
        if self._journal is not None:
            # Written before it is accepted: a restart takes it back.
            await self._journal.call(JournalWrite(ops=(PutWorkflow(message, now),)),
                                     timeout=self.options.call_timeout)
        run = self._begin(message, now)
        await self.refs["results"].send(Queued(entries=(QueuedEntry(
            id=message.id, task=WORKFLOW_TASK, priority=2, queued_at=now),)))
        await self._ended(await self._advance(run))
        return Accepted(id=message.id)

    def _begin(self, message: StartWorkflow, started_at: float, generation: int = 0) -> Run:
        """Hold the run of ``message`` (its steps all waiting)."""
        specs = [StepSpec(task=step.task, payload=step.payload, after=step.after,
                          input=step.input,  # type: ignore[arg-type]
                          priority=PRIORITIES[step.priority], timeout=step.timeout)
                 for step in message.steps]
        run = Run(message.id, specs, keep_going=message.keep_going)
        run.generation = generation
        self.runs[message.id] = run
        self._starts[message.id] = (message, started_at)
        self._serials[message.id] = serial = next(self._serial)
        if message.time_limit is not None:
            heapq.heappush(self._deadlines, (started_at + message.time_limit, serial, message.id))
            self._deadline_added.set()
        self._held_bytes += _size(message)
        self._started_total += 1
        return run

    def _check(self, message: StartWorkflow) -> str | None:
        """What is wrong with a ``StartWorkflow`` (its every step checked
        as a Submit would be), or ``None``."""
        steps = message.steps
        # Room for its steps' ids, however often it is retried.
        suffix = max(len(step_id("", len(steps), MAX_GENERATION))
                     + len(f".m{self.options.max_steps}"),
                     len(error_step_id("", MAX_GENERATION)))
        problem = check_text("workflow id", message.id, MAX_ID_LENGTH - suffix, empty=False)
        if problem is not None:
            return problem
        if "." in message.id:
            return "a workflow id has no '.' (its steps' ids are <id>.<index>)"
        if not steps:
            return "a workflow needs at least one step"
        if len(steps) > self.options.max_steps:
            return (f"the workflow has {len(steps)} steps; the limit is "
                    f"{self.options.max_steps} (max_steps)")
        edges = sum(len(step.after) for step in steps)
        if edges > self.options.max_edges:
            return (f"the workflow's steps wait for {edges} steps in all; the limit is "
                    f"{self.options.max_edges} (max_edges)")
        for index, step in enumerate(steps):
            if not 0 <= step.priority < len(PRIORITIES):
                return f"step {index}: priority {step.priority} is not 0..3"
            # Checked as the inbox checks a Submit, before anything runs.
            problem = check_submit(Submit(id=step_id(message.id, index), task=step.task,
                                          payload=step.payload, priority=step.priority,
                                          timeout=step.timeout))
            if problem is not None:
                return f"step {index}: {problem}"
            if step.input not in ("none", "one", "list", "each"):
                return f"step {index}: input {step.input!r} is not none, one, list or each"
            if step.input == "each" and len(step.after) != 1:
                return f"step {index} maps over one step's result but waits for " \
                       f"{len(step.after)} steps"
            if any(not 0 <= parent < index for parent in step.after):
                return f"step {index} waits for a step that is not before it"
            if len(set(step.after)) != len(step.after):
                return f"step {index} waits for a step twice"
            if step.input == "one" and len(step.after) != 1:
                return f"step {index} takes one input but waits for {len(step.after)} steps"
        limit = message.time_limit
        if limit is not None and not (isinstance(limit, (int, float)) and 0 < limit < math.inf):
            return f"time_limit {limit:g} is not a number of seconds > 0"
        handler = message.on_error
        if handler is not None:
            if not 0 <= handler.priority < len(PRIORITIES):
                return f"on_error: priority {handler.priority} is not 0..3"
            problem = check_submit(Submit(id=error_step_id(message.id, MAX_GENERATION),
                                          task=handler.task, payload=handler.payload,
                                          priority=handler.priority, timeout=handler.timeout))
            if problem is not None:
                return f"on_error: {problem}"
            if handler.input not in ("none", "one") or handler.after:
                return "on_error: the handler waits for no step and takes the failure or nothing"
        return None

    async def _known(self, ids: tuple[str, ...]) -> str | None:
        """The first of ``ids`` the store holds a record of, or ``None``."""
        for start in range(0, len(ids), MAX_QUERY_IDS):
            answer = await self.refs["results"].call(
                StatusQuery(ids=ids[start:start + MAX_QUERY_IDS]),
                timeout=self.options.call_timeout)
            if isinstance(answer, Records):
                for record in answer.records:
                    if record.state != "unknown":
                        return record.id
        return None

    # -- restarting, retrying, asking ----------------------------------------------

    async def _recover(self, workflows: tuple[PutWorkflow, ...]) -> str:
        """Take back the journal's workflows: failed ones are kept for a
        retry; running ones go on from where their steps' records say."""
        running = steps = 0
        for put in workflows:
            if put.failed:
                size = _size(put.start)
                self._held_bytes += size  # as when it ended here
                self._keep(_Kept(start=put.start, started_at=put.started_at,
                                 generation=put.generation, state="failed", size=size))
                continue
            running += 1
            seen = await self._seen(put.start.id, len(put.start.steps), put.generation)
            # A step that failed before the retry under way has not run again yet.
            seen = [None if found is not None and found.state in _ENDED_BADLY
                    and found.id != step_id(put.start.id, index, put.generation) else found
                    for index, found in enumerate(seen)]
            steps += sum(found is not None for found in seen)
            await self._resume(put.start, put.started_at, put.generation, seen, retry=False)
        kept = sum(put.failed for put in workflows)
        return (f"recovered {running} running workflow{'' if running == 1 else 's'} "
                f"({steps} steps had run or were running) and {kept} failed kept for a retry")

    async def _resume(self, start: StartWorkflow, started_at: float, generation: int,
                      seen: list[Seen | None], *, retry: bool) -> None:
        """Run ``start`` again from where its steps' records (``seen``) say
        it stood (``retry``: its steps that did not succeed run again)."""
        run = self._begin(start, started_at, generation)
        # Its record is live again (a retry's, or a restart's that found the
        # record of the failure a retry began from).
        await self.refs["results"].send(Queued(entries=(QueuedEntry(
            id=start.id, task=WORKFLOW_TASK, priority=2, queued_at=started_at, again=True),)))
        restored = run.restore(seen, retry=retry)
        last = len(start.steps) - 1
        if run.states[last] == "succeeded" and (found := seen[last]) is not None:
            self._last[run.id] = found.value or b""
        for index in restored.running:
            self._steps[run.ids[index]] = (run.id, index, -1)
            self._rewatch.add(run.ids[index])
        if run.stopped:
            await self._stop(run, restored.cancel)
        else:  # (keep_going: a failed step stopped only what waits for it)
            await self._ended(await self._advance(run))

    async def _seen(self, workflow_id: str, count: int, generation: int) -> list[Seen | None]:
        """The newest record of each step's runs (generations 0..``generation``)."""
        return [None if record is None else Seen(
                    id=record.id, state=record.state, value=record.value,
                    error=(f"{record.error.type}: {record.error.message}"
                           if record.error is not None else ""))
                for record in await self._newest(workflow_id, count, generation)]

    async def _newest(self, workflow_id: str, count: int,
                      generation: int) -> list[TaskRecord | None]:
        ids = [step_id(workflow_id, index, gen)
               for gen in range(generation + 1) for index in range(count)]
        found: list[TaskRecord | None] = [None] * count
        for start in range(0, len(ids), MAX_QUERY_IDS):
            answer = await self.refs["results"].call(
                StatusQuery(ids=tuple(ids[start:start + MAX_QUERY_IDS])),
                timeout=self.options.call_timeout)
            if not isinstance(answer, Records):
                raise RuntimeError(f"the store refused a status query: {answer}")
            for offset, record in enumerate(answer.records):
                if record.state != "unknown":  # a later generation's overrides
                    found[(start + offset) % count] = record
        return found

    async def _retry(self, workflow_id: str) -> Accepted | Rejected:
        """Run a failed or cancelled workflow again from where it stopped."""
        if workflow_id in self.runs:
            return Rejected(id=workflow_id, error="InvalidSubmission",
                            message=f"workflow {workflow_id} is still running")
        kept = self._kept.get(workflow_id)
        if kept is None:
            return Rejected(id=workflow_id, error="InvalidSubmission",
                            message=f"no workflow {workflow_id} is kept here (never started, "
                            "or let go: max_kept)")
        if kept.state == "succeeded":
            return Rejected(id=workflow_id, error="InvalidSubmission",
                            message=f"workflow {workflow_id} succeeded: nothing to retry")
        if kept.generation >= MAX_GENERATION:
            return Rejected(id=workflow_id, error="InvalidSubmission",
                            message=f"workflow {workflow_id} was retried {MAX_GENERATION} times")
        if len(self.runs) >= self.options.max_running:
            return Rejected(id=workflow_id, error="QueueFull",
                            message=f"{self.options.max_running} workflows already run "
                            "(max_running)")
        generation, now = kept.generation + 1, time.time()
        # Read before anything changes: a store that does not answer leaves
        # the workflow kept, to be retried again.
        seen = await self._seen(workflow_id, len(kept.start.steps), kept.generation)
        # A step still running from before (its cancel not through yet) runs
        # again too: what it still reports is not waited for.
        seen = [None if found is not None and found.state not in _ENDED_BADLY | {"succeeded"}
                else found for found in seen]
        if self._journal is not None:
            await self._journal.call(JournalWrite(ops=(
                PutWorkflow(kept.start, now, generation),)),
                timeout=self.options.call_timeout)
        del self._kept[workflow_id]
        self._kept_bytes -= kept.size
        self._held_bytes -= kept.size
        log.info("%s: workflow %s retried from where it stopped (retry %d)", self.name,
                 workflow_id, generation)
        # Its time limit counts from the retry.
        await self._resume(kept.start, now, generation, seen, retry=True)
        return Accepted(id=workflow_id)

    async def _state(self, workflow_id: str) -> WorkflowState:
        """Where a workflow stands, step by step."""
        run = self.runs.get(workflow_id)
        if run is not None:
            start, started_at = self._starts[workflow_id]
            generation, state, error = run.generation, "running", ""
        elif (kept := self._kept.get(workflow_id)) is not None:
            start, started_at = kept.start, kept.started_at
            generation, state, error = kept.generation, kept.state, kept.error
        else:
            return WorkflowState(id=workflow_id, state="unknown")
        newest = await self._newest(workflow_id, len(start.steps), generation)
        steps = []
        for index, step in enumerate(start.steps):
            record = newest[index]
            if record is None:
                # A .map() step's record comes once its members ended.
                shown = ("skipped" if run is None or run.states[index] == "skipped"
                         else "running" if run.states[index] == "started" else "waiting")
                steps.append(StepInfo(index=index, task=step.task, after=step.after,
                                      state=shown))
                continue
            steps.append(StepInfo(
                index=index, task=step.task, after=step.after, id=record.id,
                state=record.state, attempt=record.attempt, started_at=record.started_at,
                finished_at=record.finished_at,
                error=(f"{record.error.type}: {record.error.message}"
                       if record.error is not None else "")))
        return WorkflowState(id=workflow_id, state=state, generation=generation,
                             started_at=started_at, error=error, steps=tuple(steps))

    # -- running --------------------------------------------------------------

    async def _advance(self, run: Run) -> tuple[TaskRecord, ...]:
        """Submit the steps that are ready, until none is (a ``.map()`` of
        an empty list lets its children start at once); finish the run once
        it is over. Returns the final records the watch of the new steps
        brought (to act on next: a loop, not a recursion, however long a
        chain), whatever else happens: the watch hands each record out once."""
        records: tuple[TaskRecord, ...] = ()
        while not run.stopped and (ready := run.ready()):
            for index in [index for index in ready if run.specs[index].input == "each"]:
                records += await self._expand(run, index)
                if run.stopped:
                    break
            if not run.stopped:
                records += await self._submit(run, [
                    index for index in ready
                    if run.specs[index].input != "each" and run.states[index] == "waiting"])
        if run.ended and self.runs.get(run.id) is run:
            await self._finish(run)
        return records

    async def _submit(self, run: Run, ready: list[int]) -> tuple[TaskRecord, ...]:
        """Submit the plain steps ``ready``; the final records their watch brought."""
        submits: list[tuple[int, Submit]] = []
        for index in ready:
            spec = run.specs[index]
            try:
                submits.append((index, build_submit(
                    spec.task, id=step_id(run.id, index, run.generation),
                    payload=run.payload(index), priority=spec.priority, timeout=spec.timeout)))
            except (ValueError, InvalidSubmission) as error:  # its inputs: over the limit
                await self._step_failed(run, index, f"{type(error).__name__}: {error}")
                if run.stopped:
                    return ()
        if not submits:
            return ()
        for index, submit in submits:
            run.started(index)
            self._steps[submit.id] = (run.id, index, -1)
        try:
            answers = await self.refs["inbox"].call(
                Requests(messages=tuple(submit for _, submit in submits), peer="workflows"),
                timeout=self.options.call_timeout)
        except _PEER_ERRORS as error:
            # Whether they were queued is not known: the workflow fails,
            # and those that were are cancelled.
            await self._stop(run, run.cancel(f"Unavailable: the inbox did not answer: "
                                             f"{type(error).__name__}: {error}"))
            return ()
        watched = []
        for (index, submit), answer in zip(submits, answers, strict=True):
            if isinstance(answer, Rejected):
                self._steps.pop(submit.id, None)
                await self._step_failed(run, index, f"{answer.error}: {answer.message}")
            else:
                watched.append(submit.id)
        return await self._watch(tuple(watched), wait=0.0)

    async def _expand(self, run: Run, index: int) -> tuple[TaskRecord, ...]:
        """Start a ``.map()`` step: a member per item of its parent's result
        (``<step id>.m<n>``). Members with a record already (submitted
        before a restart) are taken as they are, not submitted again."""
        spec = run.specs[index]
        try:
            payloads = run.member_payloads(index)
        except ValueError as error:
            await self._step_failed(run, index, f"ValueError: {error}")
            return ()
        if len(payloads) > self.options.max_steps:
            await self._step_failed(run, index, f"ValueError: its list has {len(payloads)} "
                                    f"items; a .map() runs at most {self.options.max_steps} "
                                    "(max_steps)")
            return ()
        joined = run.started_members(index, len(payloads))
        if joined is not None:  # an empty list: its children are ready now
            await self._map_ended(run, index, joined)
            return ()
        ids = [run.member_id(index, member) for member in range(len(payloads))]
        for member, task_id in enumerate(ids):
            self._steps[task_id] = (run.id, index, member)
        known: dict[str, TaskRecord] = {}
        for start in range(0, len(ids), MAX_QUERY_IDS):
            answer = await self.refs["results"].call(
                StatusQuery(ids=tuple(ids[start:start + MAX_QUERY_IDS])),
                timeout=self.options.call_timeout)
            if isinstance(answer, Records):
                known.update((r.id, r) for r in answer.records if r.state != "unknown")
        submits = []
        for member, task_id in enumerate(ids):
            if task_id not in known:
                try:
                    submits.append(build_submit(spec.task, id=task_id, payload=payloads[member],
                                                priority=spec.priority, timeout=spec.timeout))
                except InvalidSubmission as error:  # an item over the payload limit
                    await self._step_failed(run, index, f"item {member}: InvalidSubmission: "
                                            f"{error}")
                    return ()
        for start in range(0, len(submits), MAX_QUERY_IDS):
            chunk = tuple(submits[start:start + MAX_QUERY_IDS])
            try:
                answers = await self.refs["inbox"].call(
                    Requests(messages=chunk, peer="workflows"),
                    timeout=self.options.call_timeout)
            except _PEER_ERRORS as error:
                await self._stop(run, run.cancel(f"Unavailable: the inbox did not answer: "
                                                 f"{type(error).__name__}: {error}"))
                return ()
            for submit, answer in zip(chunk, answers, strict=True):
                if isinstance(answer, Rejected):
                    await self._step_failed(run, index, f"item {ids.index(submit.id)}: "
                                            f"{answer.error}: {answer.message}")
                    return ()
        final = tuple(r for r in known.values() if r.state in FINAL_STATES)
        live = tuple(task_id for task_id in ids if task_id not in known
                     or known[task_id].state not in FINAL_STATES)
        return final + await self._watch(live, wait=0.0)

    async def _map_ended(self, run: Run, index: int, value: bytes) -> None:
        """A ``.map()`` step's members all succeeded: its result is theirs,
        in parts; the step gets a record of its own (for a restart, and
        whoever asks for it)."""
        run.succeeded(index, value)
        if index == len(run.specs) - 1:
            self._last[run.id] = value
        await self._tell_store(Finished(outcomes=(Outcome(
            id=run.ids[index], attempt=1, worker=self.name, value=value,
            finished_at=time.time()),)))

    async def _watch(self, ids: tuple[str, ...], *, wait: float) -> tuple[TaskRecord, ...]:
        """The final records of watched steps (adding ``ids`` to the watch)."""
        try:
            answer = await self.refs["results"].call(
                Watch(session=SESSION, ids=ids, wait=wait, epoch=self._epoch),
                timeout=wait + self.options.call_timeout)
        except _PEER_ERRORS:
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

    async def _act_forever(self, records_in: trio.MemoryReceiveChannel[
            tuple[TaskRecord, ...]]) -> None:
        async for records in records_in:
            async with self._lock:
                try:
                    await self._ended(records)
                except Exception:
                    log.exception("%s: failed to act on %d step records", self.name,
                                  len(records))
                    self._watch_all_again()

    def _current(self, workflow_id: str, serial: int) -> Run | None:
        """The run of ``workflow_id`` if it is still the one numbered ``serial``."""
        return self.runs.get(workflow_id) if self._serials.get(workflow_id) == serial else None

    async def _time_limits_forever(self) -> None:
        """Stop each run whose time limit passed (it fails, its running
        steps are cancelled)."""
        while True:
            deadlines = self._deadlines
            while deadlines and self._current(deadlines[0][2], deadlines[0][1]) is None:
                heapq.heappop(deadlines)  # ended, or a run of it begun again
            if len(deadlines) > 2 * len(self.runs) + 64:  # ended ones deeper down
                self._deadlines = deadlines = [
                    entry for entry in deadlines if self._current(entry[2], entry[1])]
                heapq.heapify(deadlines)
            self._deadline_added = trio.Event()
            if not deadlines:
                await self._deadline_added.wait()
                continue
            with trio.move_on_after(max(deadlines[0][0] - time.time(), 0.0)):
                await self._deadline_added.wait()
                continue
            _, serial, workflow_id = heapq.heappop(deadlines)
            async with self._lock:
                run = self._current(workflow_id, serial)  # (asked again under the lock)
                if run is None:
                    continue
                limit = self._starts[workflow_id][0].time_limit
                try:
                    await self._stop(run, run.cancel(
                        f"TimeLimitExceeded: the workflow ran past its time limit of "
                        f"{limit:g} s"))
                except Exception:
                    log.exception("%s: failed to stop workflow %s past its time limit",
                                  self.name, workflow_id)

    async def _ended(self, records: tuple[TaskRecord, ...]) -> None:
        """Act on final records of steps, and on those the steps they let
        start bring, until none is left."""
        queue = deque(records)
        while queue:
            record = queue.popleft()
            if record.state not in FINAL_STATES and record.state != "unknown":
                continue
            found = self._steps.pop(record.id, None)
            if found is None:
                continue
            run = self.runs.get(found[0])
            if run is None:
                continue
            index, member = found[1], found[2]
            if member >= 0:
                if record.state == "succeeded" and record.value is not None:
                    try:
                        joined = run.member_succeeded(index, member, record.value)
                    except ValueError as error:  # the results together are over the limit
                        await self._step_failed(run, index, f"ValueError: {error}")
                        continue
                    if joined is not None:
                        await self._map_ended(run, index, joined)
                        queue.extend(await self._advance(run))
                else:
                    await self._step_failed(run, index, f"item {member}: {_why(record)}")
                continue
            if record.state == "succeeded" and record.value is not None:
                run.succeeded(index, record.value)
                if index == len(run.specs) - 1:
                    self._last[run.id] = record.value
                queue.extend(await self._advance(run))
            else:
                await self._step_failed(run, index, _why(record))

    async def _step_failed(self, run: Run, index: int, why: str) -> None:
        """Fail the run for step ``index`` (a ``.map()`` step: its members
        still running are cancelled, and it gets a failed record)."""
        members = [run.member_id(index, member) for member in run.open_members(index)]
        for task_id in members:  # what still comes of them is ignored
            self._steps.pop(task_id, None)
        if run.specs[index].input == "each" and run.ids[index]:
            await self._tell_store(Finished(outcomes=(Outcome(
                id=run.ids[index], attempt=1, worker=self.name, finished_at=time.time(),
                error=RemoteError(type="StepFailed", message=why)),)))
        await self._stop(run, run.failed(index, why), members)

    async def _stop(self, run: Run, running: list[int], also: list[str] | None = None) -> None:
        """Cancel the ``running`` steps of a stopped run (and the tasks
        ``also``); finish it once over."""
        timeout = self.options.call_timeout
        ids = list(also or ())
        for other in running:
            if run.specs[other].input == "each":
                ids.extend(run.member_id(other, member) for member in run.open_members(other))
            else:
                ids.append(run.ids[other])
        limiter = trio.CapacityLimiter(_CANCELS_AT_ONCE)

        async def cancel(task_id: str) -> None:
            async with limiter:
                try:
                    await cancel_task(
                        task_id,
                        at_inbox=lambda m: self.refs["inbox"].call(m, timeout=timeout),
                        at_dispatcher=lambda m: self.refs["dispatcher"].call(m, timeout=timeout))
                except Exception as error:  # best effort: the workflow ends failed anyway
                    log.warning("%s: could not cancel step %s: %s", self.name, task_id, error)

        # Side by side: a map's thousands of members take a few round trips,
        # and an inbox that does not answer costs one call_timeout, not one each.
        async with trio.open_nursery() as nursery:
            for other_id in ids:
                nursery.start_soon(cancel, other_id)
        # Ended at once: what comes later of its steps is not waited for.
        if run.ended and self.runs.get(run.id) is run:
            await self._finish(run)

    async def _finish(self, run: Run) -> None:
        """Make the workflow's record final: its last step's result, or the
        failure. With the journal on, the record's result is written with
        the workflow's end (dropped, or kept failed for a retry) in one
        transaction, before the store hears of it."""
        self.runs.pop(run.id, None)
        self._serials.pop(run.id, None)
        start, started_at = self._starts.pop(run.id)
        value = self._last.pop(run.id, None)
        for task_id in run.ids:  # what still comes of its steps is ignored
            self._steps.pop(task_id, None)
        for index in list(run.members):
            for member in range(len(run.members[index])):
                self._steps.pop(run.member_id(index, member), None)
        now = time.time()
        failure = run.failure
        record = TaskRecord(id=run.id, state="succeeded", task=WORKFLOW_TASK, attempt=1,
                            worker=self.name, workers=(self.name,), queued_at=started_at,
                            started_at=started_at, finished_at=now)
        if run.id in self._cancelled:
            self._cancelled.discard(run.id)
            self._failed_total += 1
            log.info("%s: workflow %s cancelled", self.name, run.id)
            record = attrs.evolve(record, state="cancelled")
            report: Any = Cancelled(ids=(run.id,))
        elif failure is None and value is not None:
            record = attrs.evolve(record, value=value)
            report = Finished(outcomes=(Outcome(id=run.id, attempt=1, worker=self.name,
                                                value=value, finished_at=now),))
            self._succeeded_total += 1
        else:
            message = ("its last step gave no result" if failure is None
                       else failure.error if failure.step < 0
                       else f"step {failure.step} ({failure.task}) failed: {failure.error}")
            error = RemoteError(type="WorkflowFailed", message=message)
            record = attrs.evolve(record, state="failed", error=error)
            report = Finished(outcomes=(Outcome(id=run.id, attempt=1, worker=self.name,
                                                finished_at=now, error=error),))
            self._failed_total += 1
            log.warning("%s: workflow %s failed: %s", self.name, run.id, message)
        if record.state == "failed" and start.on_error is not None:
            await self._on_error(run, start.on_error, failure)
        if self._journal is not None:
            ended = (DropWorkflow(run.id) if record.state == "succeeded"
                     else PutWorkflow(start, started_at, run.generation, failed=True))
            try:
                await self._journal.send(JournalWrite(ops=(
                    PutResult(record=record, final_at=now), ended)))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                log.warning("%s: the journal is gone; the end of %s not written", self.name,
                            run.id)
        # Kept after its end is written: letting it go (max_kept) drops its row after.
        self._keep(_Kept(start=start, started_at=started_at, generation=run.generation,
                         state=record.state, size=_size(start),
                         error=record.error.message if record.error is not None else ""))
        await self._tell_store(report)

    async def _on_error(self, run: Run, handler: WorkflowStep, failure: Failure | None) -> None:
        """Submit a failed workflow's error handler (``<id>.error``), with
        what failed as its first argument unless it takes none. At least
        once: a restart before the workflow's end is written submits it again."""
        what = {"workflow": run.id, "step": failure.step if failure is not None else -1,
                "task": failure.task if failure is not None else "",
                "error": failure.error if failure is not None else "its last step gave no result"}
        payload = handler.payload
        try:
            if handler.input != "none":
                payload = with_inputs(payload, [pack_value(what)], as_list=False)
            submit = build_submit(handler.task, id=error_step_id(run.id, run.generation),
                                  payload=payload, priority=PRIORITIES[handler.priority],
                                  timeout=handler.timeout)
            [answer] = await self.refs["inbox"].call(
                Requests(messages=(submit,), peer="workflows"),
                timeout=self.options.call_timeout)
        except (*_PEER_ERRORS, InvalidSubmission, ValueError) as error:
            log.warning("%s: the error handler of workflow %s was not submitted: %s: %s",
                        self.name, run.id, type(error).__name__, error)
            return
        if isinstance(answer, Rejected):
            log.warning("%s: the error handler of workflow %s was refused: %s: %s",
                        self.name, run.id, answer.error, answer.message)

    def _keep(self, kept: _Kept) -> None:
        """Keep an ended workflow (its bytes, held already, stay held),
        letting the oldest go."""
        self._kept[kept.start.id] = kept
        self._kept_bytes += kept.size
        self._let_go_kept()

    def _let_go_kept(self, room: int = 0) -> None:
        """Let the oldest kept workflows go while more than ``max_kept`` are
        kept, or while ``room`` more bytes would not fit (their journal rows too)."""
        gone: list[DropWorkflow] = []
        while self._kept and (len(self._kept) > self.options.max_kept
                              or self._held_bytes + room > self.options.max_bytes):
            _, kept = self._kept.popitem(last=False)
            self._held_bytes -= kept.size
            self._kept_bytes -= kept.size
            if kept.state != "succeeded":
                gone.append(DropWorkflow(kept.start.id))
        # The running ones' bytes and the kept ones' are counted together.
        if gone and self._journal is not None:
            try:
                self._journal.send_nowait(JournalWrite(ops=tuple(gone)))
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                log.warning("%s: %d workflows let go stay in the journal until the next start",
                            self.name, len(gone))

    async def _tell_store(self, message: Any) -> None:
        try:
            await self.refs["results"].send(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            log.warning("%s: the store is gone; %s not told", self.name, type(message).__name__)


def _size(message: StartWorkflow) -> int:
    """Bytes of arguments a workflow holds."""
    return sum(len(step.payload) for step in message.steps)


def _why(record: TaskRecord) -> str:
    """Why a step's record says it did not succeed."""
    error = record.error
    if error is not None:
        return f"{error.type}: {error.message}"
    if record.state == "unknown":
        return "its record is gone (dropped by the store's bounds)"
    return record.state
