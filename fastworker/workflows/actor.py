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

Workflows live in memory: a restart of the control plane loses those
running (the journal does not keep them yet).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from typing import Any

import attrs
import trio

from actors import Actor, ActorContext, ActorCrashed, CallTimeout
from actors.requests import Requests
from fastworker.cancel import cancel_task
from fastworker.errors import InvalidSubmission
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
    StartWorkflow,
    StatusQuery,
    Submit,
    TaskRecord,
    Watch,
)
from fastworker.submission import build_submit, check_submit
from fastworker.workflows.canvas import StepSpec
from fastworker.workflows.graph import Run, step_id

__all__ = ["Workflows", "WorkflowsOptions"]

log = logging.getLogger("fastworker.workflows")

#: The store's watch session of this actor.
SESSION = "fastworker.workflows"
#: What a call to another actor of the node raises when it does not answer.
_PEER_ERRORS = (CallTimeout, ActorCrashed, trio.BrokenResourceError, trio.ClosedResourceError)
#: Batches of records the watch hands over before it waits for them to be acted on.
_RECORD_BATCHES = 64
#: Seconds the watch waits after the store failed or refused one.
_WATCH_PAUSE = 0.5
#: The task name a workflow's own record carries.
WORKFLOW_TASK = "fastworker.workflow"


@attrs.frozen(kw_only=True)
class WorkflowsOptions:
    """Bounds and waits.

    Attributes:
        max_steps: the most steps one workflow may have.
        max_running: the most workflows running at once; more are refused.
        max_edges: the most "waits for" links of one workflow, all steps together.
        max_bytes: the most bytes of steps' arguments the running workflows
            hold together; a new workflow past it is refused (``QueueFull``).
        call_timeout: seconds to wait for the inbox's or store's answer.
        watch_wait: seconds one watch of the store parks.
    """

    max_steps: int = attrs.field(default=10_000, validator=attrs.validators.ge(1))
    max_running: int = attrs.field(default=1_000, validator=attrs.validators.ge(1))
    max_edges: int = attrs.field(default=100_000, validator=attrs.validators.ge(0))
    max_bytes: int = attrs.field(default=256 * 1024 * 1024, validator=attrs.validators.ge(0))
    call_timeout: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    watch_wait: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))


class Workflows(Actor[Any]):
    """Runs workflows (see the module docstring)."""

    Options = WorkflowsOptions
    refs_required = ("inbox", "results", "dispatcher")

    def __init__(self, options: WorkflowsOptions, context: ActorContext) -> None:
        super().__init__(options, context)
        self.runs: dict[str, Run] = {}
        #: The step a task id is: (workflow id, index).
        self._steps: dict[str, tuple[str, int]] = {}
        #: Each run's last step's result, once it has one.
        self._last: dict[str, bytes] = {}
        self._started_total = self._succeeded_total = self._failed_total = 0
        #: Held while records are acted on: the mailbox and the watch both do.
        self._lock = trio.Lock()
        #: Bytes of steps' arguments the running workflows hold.
        self._held_bytes = 0
        #: Steps to add to the watch again (a watch failed), and the store's
        #: epoch the session was opened with.
        self._rewatch: set[str] = set()
        self._watch_failed = False
        self._epoch = ""
        #: Runs cancelled by an operator (their record ends ``cancelled``).
        self._cancelled: set[str] = set()

    async def setup(self, nursery: trio.Nursery) -> str | None:
        send, receive = trio.open_memory_channel[tuple[TaskRecord, ...]](_RECORD_BATCHES)
        nursery.start_soon(self._watch_forever, send)
        nursery.start_soon(self._act_forever, receive)
        return None

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
        if workflow_id in self.runs:  # its running steps' ends are not waited for
            await self._finish(run)
        return CancelReply(id=workflow_id, outcome="cancelled")

    def stats_detail(self) -> dict[str, int]:
        return {"running": len(self.runs), "started_total": self._started_total,
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
        taken = await self._known((message.id, *(step_id(message.id, index)
                                                  for index in range(len(message.steps)))))
        if taken:
            return Rejected(id=message.id, error="InvalidSubmission",
                            message=f"{taken} is already a task's or an ended workflow's id")
        if len(self.runs) >= self.options.max_running:
            return Rejected(id=message.id, error="QueueFull",
                            message=f"{self.options.max_running} workflows already run "
                            "(max_running)")
        size = sum(len(step.payload) for step in message.steps)
        if self._held_bytes + size > self.options.max_bytes:
            return Rejected(id=message.id, error="QueueFull",
                            message=f"the running workflows hold {self._held_bytes} bytes of "
                            f"arguments; {size} more is past max_bytes "
                            f"({self.options.max_bytes})")
        specs = [StepSpec(task=step.task, payload=step.payload, after=step.after,
                          input=step.input,  # type: ignore[arg-type]
                          priority=PRIORITIES[step.priority], timeout=step.timeout)
                 for step in message.steps]
        run = Run(message.id, specs)
        self.runs[message.id] = run
        self._held_bytes += size
        self._started_total += 1
        now = time.time()
        await self.refs["results"].send(Queued(entries=(QueuedEntry(
            id=message.id, task=WORKFLOW_TASK, priority=2, queued_at=now),)))
        await self._ended(await self._advance(run))
        return Accepted(id=message.id)

    def _check(self, message: StartWorkflow) -> str | None:
        """What is wrong with a ``StartWorkflow`` (its every step checked
        as a Submit would be), or ``None``."""
        steps = message.steps
        problem = check_text("workflow id", message.id,
                             MAX_ID_LENGTH - len(f".{len(steps)}"), empty=False)
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
            if step.input not in ("none", "one", "list"):
                return f"step {index}: input {step.input!r} is not none, one or list"
            if any(not 0 <= parent < index for parent in step.after):
                return f"step {index} waits for a step that is not before it"
            if len(set(step.after)) != len(step.after):
                return f"step {index} waits for a step twice"
            if step.input == "one" and len(step.after) != 1:
                return f"step {index} takes one input but waits for {len(step.after)} steps"
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

    # -- running --------------------------------------------------------------

    async def _advance(self, run: Run) -> tuple[TaskRecord, ...]:
        """Submit the steps that are ready; finish the run once it is over.
        Returns the final records the watch of the new steps brought (to
        act on next: a loop, not a recursion, however long a chain)."""
        records: tuple[TaskRecord, ...] = ()
        if ready := run.ready():
            submits: list[Submit] = []
            for index in ready:
                spec = run.specs[index]
                try:
                    payload = run.payload(index)
                except ValueError as error:  # its inputs are over the payload limit
                    await self._step_failed(run, index, f"ValueError: {error}")
                    return ()
                try:
                    submits.append(build_submit(spec.task, id=step_id(run.id, index),
                                                payload=payload, priority=spec.priority,
                                                timeout=spec.timeout))
                except InvalidSubmission as error:  # _check let nothing such through
                    await self._step_failed(run, index, f"InvalidSubmission: {error}")
                    return ()
            for index, submit in zip(ready, submits, strict=True):
                run.started(index)
                self._steps[submit.id] = (run.id, index)
            try:
                answers = await self.refs["inbox"].call(
                    Requests(messages=tuple(submits), peer="workflows"),
                    timeout=self.options.call_timeout)
            except _PEER_ERRORS as error:
                # Whether they were queued is not known: the workflow fails,
                # and those that were are cancelled.
                await self._stop(run, run.cancel(f"Unavailable: the inbox did not answer: "
                                                 f"{type(error).__name__}: {error}"))
                return ()
            watched = []
            for index, submit, answer in zip(ready, submits, answers, strict=True):
                if isinstance(answer, Rejected):
                    self._steps.pop(submit.id, None)
                    await self._step_failed(run, index, f"{answer.error}: {answer.message}")
                else:
                    watched.append(submit.id)
            records = await self._watch(tuple(watched), wait=0.0)
        if run.over and run.id in self.runs:
            await self._finish(run)
        return records

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
        # A watched step the store has no record of (dropped before its end
        # was seen, or never queued): as a record that says so.
        dropped = tuple(TaskRecord(id=id, state="unknown") for id in answer.unknown)
        return answer.records + dropped

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
            index = found[1]
            if record.state == "succeeded" and record.value is not None:
                run.succeeded(index, record.value)
                if index == len(run.specs) - 1:
                    self._last[run.id] = record.value
                queue.extend(await self._advance(run))
            else:
                error = record.error
                why = (f"{error.type}: {error.message}" if error is not None
                       else "its record is gone (dropped by the store's bounds)"
                       if record.state == "unknown" else record.state)
                await self._step_failed(run, index, why)

    async def _step_failed(self, run: Run, index: int, why: str) -> None:
        """Fail the run for step ``index``."""
        await self._stop(run, run.failed(index, why))

    async def _stop(self, run: Run, running: list[int]) -> None:
        """Cancel the ``running`` steps of a stopped run; finish it once over."""
        timeout = self.options.call_timeout
        for other in running:
            other_id = step_id(run.id, other)
            try:
                await cancel_task(
                    other_id,
                    at_inbox=lambda m: self.refs["inbox"].call(m, timeout=timeout),
                    at_dispatcher=lambda m: self.refs["dispatcher"].call(m, timeout=timeout))
            except Exception as error:  # best effort: the workflow ends failed anyway
                log.warning("%s: could not cancel step %s: %s", self.name, other_id, error)
        # Ended at once: what comes later of its steps is not waited for.
        if run.failure is not None and run.id in self.runs:
            await self._finish(run)

    async def _finish(self, run: Run) -> None:
        """Make the workflow's record final: its last step's result, or the failure."""
        self.runs.pop(run.id, None)
        self._held_bytes -= sum(len(spec.payload) for spec in run.specs)
        value = self._last.pop(run.id, None)
        for index in range(len(run.specs)):  # what still comes of its steps is ignored
            self._steps.pop(step_id(run.id, index), None)
        if run.id in self._cancelled:
            self._cancelled.discard(run.id)
            self._failed_total += 1
            log.info("%s: workflow %s cancelled", self.name, run.id)
            await self._tell_store(Cancelled(ids=(run.id,)))
            return
        now = time.time()
        failure = run.failure
        if failure is None and value is not None:
            outcome = Outcome(id=run.id, attempt=1, worker=self.name, value=value,
                              finished_at=now)
            self._succeeded_total += 1
        else:
            message = (f"step {failure.step} ({failure.task}) failed: {failure.error}"
                       if failure is not None else "its last step gave no result")
            outcome = Outcome(id=run.id, attempt=1, worker=self.name, finished_at=now,
                              error=RemoteError(type="WorkflowFailed", message=message))
            self._failed_total += 1
            log.warning("%s: workflow %s failed: %s", self.name, run.id, message)
        await self._tell_store(Finished(outcomes=(outcome,)))

    async def _tell_store(self, message: Any) -> None:
        try:
            await self.refs["results"].send(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            log.warning("%s: the store is gone; %s not told", self.name, type(message).__name__)
