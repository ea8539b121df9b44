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
import logging
import time
from typing import Any

import trio

from actors import GetStats
from actors.requests import Requests
from fastworker.internal import JournalWrite, Recover, UnknownTasks
from fastworker.journal.ops import PutWorkflow
from fastworker.messages import (
    PRIORITIES,
    Accepted,
    CancelReply,
    CancelWorkflow,
    Queued,
    QueuedEntry,
    Rejected,
    RetryWorkflow,
    StartWorkflow,
    StepInfo,
    TaskRecord,
    WorkflowQuery,
    WorkflowState,
)
from fastworker.workflows.canvas import StepSpec
from fastworker.workflows.checks import MAX_GENERATION, check_start, start_ids, start_names
from fastworker.workflows.graph import Run, Seen, step_id
from fastworker.workflows.running import Runner
from fastworker.workflows.state import (
    ENDED_BADLY,
    PEER_ERRORS,
    WORKFLOW_TASK,
    Kept,
    WorkflowsOptions,
    held_size,
)

__all__ = ["Workflows", "WorkflowsOptions"]

log = logging.getLogger("fastworker.workflows")

#: Batches of records the watch hands over before it waits for them to be acted on.
_RECORD_BATCHES = 64


class Workflows(Runner):
    """Runs workflows (see the module docstring)."""

    Options = WorkflowsOptions
    refs_required = ("inbox", "results", "dispatcher")
    refs_optional = ("journal",)
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
        nursery.start_soon(self._room_forever)
        return said

    async def handle(self, message: Any) -> Any:
        async with self._lock:
            if not isinstance(message, Requests):
                return (await self._answer_many([message]))[0]
            return await self._answer_many(list(message.messages))

    async def _answer_many(self, messages: list[Any]) -> list[Any]:
        """The answers to a request's messages, in order; each run of
        ``StartWorkflow`` in it started together (one look-up of their task
        names, one of their ids, one journal commit)."""
        answers: list[Any] = []
        at = 0
        while at < len(messages):
            if not isinstance(messages[at], StartWorkflow):
                answers.append(await self._answer_one(messages[at]))
                at += 1
                continue
            end = at
            while end < len(messages) and isinstance(messages[end], StartWorkflow):
                end += 1
            starts = messages[at:end]
            try:
                answers.extend(await self._start_many(starts))
            except Exception as error:
                answers.extend(self._failed_to_answer(message, error) for message in starts)
            at = end
        return answers

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
            return Rejected(id=str(getattr(message, "id", "")), error="InvalidSubmission",
                            message=f"the workflows actor takes StartWorkflow, CancelWorkflow, "
                            f"RetryWorkflow or WorkflowQuery, not {type(message).__name__}")
        except Exception as error:
            return self._failed_to_answer(message, error)

    def _failed_to_answer(self, message: Any, error: Exception) -> Rejected:
        """``Unavailable``: a peer did not answer, or this actor made a
        mistake (logged): it must not restart the control plane's actors."""
        if isinstance(error, PEER_ERRORS):
            return Rejected(id=str(getattr(message, "id", "")), error="Unavailable",
                            message=f"{type(error).__name__}: {error}")
        log.error("%s: failed to answer %s", self.name, type(message).__name__,
                  exc_info=error)
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

    async def _start_many(self, messages: list[StartWorkflow]) -> list[Accepted | Rejected]:
        """Start workflows: each checked whole (as a Submit would be, its
        task names known, its ids unused, room for it), the ones taken
        written to the journal in one commit before they are accepted, then
        their first steps submitted."""
        answers: list[Accepted | Rejected | None] = [None] * len(messages)
        first: dict[str, int] = {}  # a workflow's first message here (a resend follows it)
        fresh: list[int] = []
        for index, message in enumerate(messages):
            problem = check_start(message, self.options)
            if problem is not None:
                answers[index] = Rejected(id=message.id, error="InvalidSubmission",
                                          message=problem)
            elif message.id in self.runs:
                answers[index] = Accepted(id=message.id)  # a resend
            elif message.id in first:
                continue  # answered as its first, below
            elif message.id in self._kept:
                answers[index] = Rejected(id=message.id, error="InvalidSubmission",
                                          message=f"{message.id} is an ended workflow's id")
            else:
                first[message.id] = index
                fresh.append(index)
        taken_ones: list[int] = []
        if fresh:
            names = dict.fromkeys(name for index in fresh for name in start_names(messages[index]))
            unknown = dict(await self.refs["inbox"].call(UnknownTasks(names=tuple(names)),
                                                         timeout=self.options.call_timeout))
            taken = set(await self._records([
                task_id for index in fresh for task_id in start_ids(messages[index])]))
            pending = 0
            for index in fresh:
                answers[index], size = self._refusal(messages[index], unknown, taken,
                                                     len(taken_ones), pending)
                if answers[index] is None:
                    taken_ones.append(index)
                    pending += size
            self._let_go_kept(room=pending)
        if taken_ones:
            now = time.time()
            if self._journal is not None:
                # Written before they are accepted: a restart takes them back.
                await self._journal.call(JournalWrite(ops=tuple(
                    PutWorkflow(messages[index], now) for index in taken_ones)),
                    timeout=self.options.call_timeout)
            runs = [self._begin(messages[index], now) for index in taken_ones]
            for index, run in zip(taken_ones, runs, strict=True):
                answers[index] = Accepted(id=run.id)  # taken: whatever comes next
            try:
                await self._tell_store(Queued(entries=tuple(QueuedEntry(
                    id=run.id, task=WORKFLOW_TASK, priority=2, queued_at=now) for run in runs)))
                await self._ended(await self._advance_many(runs))
            except Exception:
                # What a watch brought may be lost with it: every step is watched again.
                log.exception("%s: failed to start the steps of %d workflows", self.name,
                              len(runs))
                self._watch_all_again()
        return [answer if answer is not None else answers[first[message.id]]  # type: ignore[misc]
                for message, answer in zip(messages, answers, strict=True)]

    def _refusal(self, message: StartWorkflow, unknown: dict[str, str], taken: set[str],
                 starting: int, pending: int) -> tuple[Rejected | None, int]:
        """Why ``message`` is refused (``None``: it is not), and its bytes;
        ``starting`` workflows holding ``pending`` bytes are taken before it."""
        bad = [unknown[name] for name in start_names(message) if name in unknown]
        if bad:
            return Rejected(id=message.id, error="UnknownTask", message="; ".join(bad)), 0
        used = next((task_id for task_id in start_ids(message) if task_id in taken), None)
        if used is not None:
            return Rejected(id=message.id, error="InvalidSubmission",
                            message=f"{used} is already a task's or an ended workflow's id"), 0
        if len(self.runs) + starting >= self.options.max_running:
            return Rejected(id=message.id, error="QueueFull",
                            message=f"{self.options.max_running} workflows already run "
                            "(max_running)"), 0
        size = held_size(message)
        running_bytes = self._held_bytes - self._kept_bytes + pending
        if running_bytes + size > self.options.max_bytes:  # even with none kept
            return Rejected(id=message.id, error="QueueFull",
                            message=f"the running workflows hold {running_bytes} bytes of "
                            f"arguments; {size} more is past max_bytes "
                            f"({self.options.max_bytes})"), 0
        return None, size

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
        self._held_bytes += held_size(message)
        self._started_total += 1
        return run

    # -- restarting, retrying, asking ----------------------------------------------

    async def _recover(self, workflows: tuple[PutWorkflow, ...]) -> str:
        """Take back the journal's workflows: failed ones are kept for a
        retry; running ones go on from where their steps' records say."""
        running = steps = 0
        for put in workflows:
            if put.failed:
                size = held_size(put.start)
                self._held_bytes += size  # as when it ended here
                self._keep(Kept(start=put.start, started_at=put.started_at,
                                 generation=put.generation, state="failed", size=size))
                continue
            running += 1
            seen = await self._seen(put.start.id, len(put.start.steps), put.generation)
            # A step that failed before the retry under way has not run again yet.
            seen = [None if found is not None and found.state in ENDED_BADLY
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
        """Each step's newest record, of its runs in generations 0..``generation``."""
        held = await self._records([step_id(workflow_id, index, gen)
                                    for gen in range(generation + 1) for index in range(count)])
        found: list[TaskRecord | None] = [None] * count
        for gen in range(generation + 1):  # a later generation's overrides
            for index in range(count):
                found[index] = held.get(step_id(workflow_id, index, gen), found[index])
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
        seen = [None if found is not None and found.state not in ENDED_BADLY | {"succeeded"}
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
        newest: list[TaskRecord | None]
        if run is not None:  # its steps' ids are known: one look-up each
            held = await self._records([task_id for task_id in run.ids if task_id])
            newest = [held.get(task_id) if task_id else None for task_id in run.ids]
        else:
            newest = await self._newest(workflow_id, len(start.steps), generation)
        steps = []
        for index, step in enumerate(start.steps):
            record = newest[index]
            if record is None:
                # A .map() step's record comes once its members ended.
                # (A map step's record comes once it expands; a step the queue
                # had no room for waits.)
                shown = ("skipped" if run is None or run.states[index] == "skipped"
                         else "running" if run.states[index] == "started"
                         and run.ids[index] not in self._parked else "waiting")
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

