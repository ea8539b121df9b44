"""How the Workflows actor runs what it holds: submitting the steps that
are ready (a ``.map()``'s members too), following them through the store's
watch session, time limits, stopping a run (its running steps cancelled)
and ending it (its record, its journal row, its error handler). The actor
(``fastworker.workflows.actor``) adds the messages it answers: starting,
cancelling, retrying, asking, and taking workflows back after a restart.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from collections import OrderedDict
from typing import Any

import attrs
import trio

from actors import Actor, ActorContext, ActorCrashed, CallTimeout, Ref
from actors.requests import Requests
from fastworker.cancel import cancel_task
from fastworker.errors import InvalidSubmission
from fastworker.internal import JournalWrite
from fastworker.journal.ops import DropWorkflow, PutResult, PutWorkflow
from fastworker.limits import MAX_QUERY_IDS
from fastworker.messages import (
    FINAL_STATES,
    PRIORITIES,
    Cancelled,
    Finished,
    Outcome,
    Records,
    Rejected,
    RemoteError,
    Running,
    StartWorkflow,
    StatusQuery,
    Submit,
    TaskRecord,
    Watch,
    WorkflowStep,
)
from fastworker.payload import pack_value, with_inputs
from fastworker.submission import build_submit
from fastworker.workflows.graph import Failure, Run, error_step_id, step_id

__all__ = ["ENDED_BADLY", "Kept", "PEER_ERRORS", "Runner", "WORKFLOW_TASK", "WorkflowsOptions",
           "held_size"]

log = logging.getLogger("fastworker.workflows")

#: The store's watch session of this actor.
SESSION = "fastworker.workflows"
#: What a call to another actor of the node raises when it does not answer.
PEER_ERRORS = (CallTimeout, ActorCrashed, trio.BrokenResourceError, trio.ClosedResourceError)
#: Cancels of a stopped run's steps under way at once.
_CANCELS_AT_ONCE = 64
#: Seconds between tries of the steps the queue had no room for.
_ROOM_PAUSE = 0.5
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


class Runner(Actor[Any]):
    """The Workflows actor's runs and how they go (see the module docstring)."""

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
        self._room_wanted = trio.Event()
        self._deadline_added = trio.Event()

    # -- running --------------------------------------------------------------

    async def _advance(self, run: Run) -> tuple[TaskRecord, ...]:
        """``_advance_many`` of one run."""
        return await self._advance_many([run])

    async def _advance_many(self, runs: list[Run]) -> tuple[TaskRecord, ...]:
        """Submit the steps of ``runs`` that are ready, until none is (a
        ``.map()`` of an empty list lets its children start at once), all
        runs' in one submission and one watch; finish each run once it is
        over. Returns the final records the watch brought (to act on next:
        a loop, not a recursion, however long a chain), whatever else
        happens: the watch hands each record out once."""
        records: tuple[TaskRecord, ...] = ()
        pending = [run for run in runs if not run.stopped and self.runs.get(run.id) is run]
        while pending:
            # The maps first: their members go in at once. Then what is
            # prepared (marked started) is sent in the same breath.
            for run in pending:
                for index in run.ready():
                    if run.specs[index].input == "each" and not run.stopped:
                        records += await self._expand(run, index)
            submits: list[tuple[Run, Submit]] = []
            for run in pending:
                if not run.stopped and self.runs.get(run.id) is run:
                    submits.extend((run, submit) for submit in await self._prepare(
                        run, [index for index in run.ready()
                              if run.specs[index].input != "each"]))
            accepted = await self._send_many(submits)
            if accepted:
                records += await self._watch(accepted, wait=0.0)
            # Steps that succeeded at once (a map of nothing) let others start.
            pending = [run for run in pending if not run.stopped and run.ready()
                       and self.runs.get(run.id) is run]
        for run in runs:
            if run.ended and self.runs.get(run.id) is run:
                await self._finish(run)
        return records

    async def _prepare(self, run: Run, ready: list[int]) -> list[Submit]:
        """The Submits of the plain steps ``ready``, each marked started (a
        step whose inputs are over the limit fails)."""
        submits: list[Submit] = []
        for index in ready:
            spec = run.specs[index]
            try:
                submit = build_submit(
                    spec.task, id=step_id(run.id, index, run.generation),
                    payload=run.payload(index), priority=spec.priority, timeout=spec.timeout)
            except (ValueError, InvalidSubmission) as error:  # its inputs: over the limit
                await self._step_failed(run, index, f"{type(error).__name__}: {error}")
                if run.stopped:
                    return []
                continue
            run.started(index)
            self._steps[submit.id] = (run.id, index, -1)
            submits.append(submit)
        return submits

    async def _send(self, run: Run, submits: list[Submit]) -> tuple[str, ...] | None:
        """``_send_many`` of one run's steps; ``None`` if the run stopped."""
        accepted = await self._send_many([(run, submit) for submit in submits])
        return None if run.stopped else accepted

    async def _send_many(self, submits: list[tuple[Run, Submit]]) -> tuple[str, ...]:
        """Submit steps (registered in ``_steps``) of any runs to the inbox;
        returns the ids it accepted. A step refused for want of room
        (``QueueFull``) waits for it (``_room_forever``); any other refusal
        fails it; an inbox that does not answer fails their runs."""
        accepted: list[str] = []
        for start in range(0, len(submits), MAX_QUERY_IDS):
            # (A run that stopped, or a map step that failed, let its steps go.)
            chunk = [(run, submit) for run, submit in submits[start:start + MAX_QUERY_IDS]
                     if submit.id in self._steps and not run.stopped]
            if not chunk:
                continue
            try:
                answers = await self.refs["inbox"].call(
                    Requests(messages=tuple(submit for _, submit in chunk), peer="workflows"),
                    timeout=self.options.call_timeout)
            except PEER_ERRORS as error:
                # Whether they were queued is not known: the workflows fail,
                # and those that were are cancelled.
                why = f"Unavailable: the inbox did not answer: {type(error).__name__}: {error}"
                for run in {id(run): run for run, _ in chunk}.values():
                    await self._stop(run, run.cancel(why))
                continue
            for (run, submit), answer in zip(chunk, answers, strict=True):
                if not isinstance(answer, Rejected):
                    accepted.append(submit.id)
                elif run.stopped or self.runs.get(run.id) is not run:
                    self._steps.pop(submit.id, None)  # its run ended on an earlier answer
                elif answer.error == "QueueFull":
                    self._parked[submit.id] = (self._serials[run.id], submit)
                    self._room_wanted.set()
                else:
                    found = self._steps.pop(submit.id, None)
                    if found is not None:
                        member = f"item {found[2]}: " if found[2] >= 0 else ""
                        await self._step_failed(run, found[1],
                                                f"{member}{answer.error}: {answer.message}")
        return tuple(accepted)

    async def _room_forever(self) -> None:
        """Submit again, now and then, the steps refused for want of room
        in the queue, until it takes them (or their run ends)."""
        while True:
            await self._room_wanted.wait()
            await trio.sleep(_ROOM_PAUSE)
            async with self._lock:
                self._room_wanted = trio.Event()
                try:
                    await self._ended(await self._submit_parked())
                except Exception:
                    log.exception("%s: failed to submit steps waiting for room", self.name)
                    self._watch_all_again()
                if self._parked:
                    self._room_wanted.set()

    async def _submit_parked(self) -> tuple[TaskRecord, ...]:
        """One pass over the steps waiting for room; the records their watch brought."""
        parked, self._parked = self._parked, {}
        submits: list[tuple[Run, Submit]] = []
        for task_id, (serial, submit) in parked.items():
            found = self._steps.get(task_id)
            run = None if found is None else self._current(found[0], serial)
            if run is not None and not run.stopped:
                submits.append((run, submit))
        accepted = await self._send_many(submits)
        return await self._watch(accepted, wait=0.0) if accepted else ()

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
        # The step's own record: running from now (its end: _map_ended).
        await self._tell_store(Running(ids=(run.ids[index],), worker=self.name,
                                       started_at=time.time(), attempts=(1,)))
        if joined is not None:  # an empty list: its children are ready now
            await self._map_ended(run, index, joined)
            return ()
        ids = [run.member_id(index, member) for member in range(len(payloads))]
        for member, task_id in enumerate(ids):
            self._steps[task_id] = (run.id, index, member)
        known: dict[str, TaskRecord] = {}
        for start in range(0, len(ids), MAX_QUERY_IDS):
            try:
                answer = await self.refs["results"].call(
                    StatusQuery(ids=tuple(ids[start:start + MAX_QUERY_IDS])),
                    timeout=self.options.call_timeout)
            except PEER_ERRORS as error:
                await self._stop(run, run.cancel(f"Unavailable: the store did not answer: "
                                                 f"{type(error).__name__}: {error}"))
                return ()
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
        if await self._send(run, submits) is None:
            return ()
        final = tuple(r for r in known.values() if r.state in FINAL_STATES)
        live = tuple(task_id for task_id in ids if task_id not in self._parked and (
            task_id not in known or known[task_id].state not in FINAL_STATES))
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
        """Act on final records of steps, then start what they let start,
        all runs together (one submission, one watch), and so on with the
        records that brings, until none is left."""
        while records:
            moved: dict[str, Run] = {}
            for record in records:
                run = await self._act_on(record)
                if run is not None:
                    moved[run.id] = run
            records = await self._advance_many(list(moved.values()))

    async def _act_on(self, record: TaskRecord) -> Run | None:
        """Act on one step's record; the run whose step succeeded (what
        follows it may start now), if any."""
        if record.state not in FINAL_STATES and record.state != "unknown":
            return None
        found = self._steps.pop(record.id, None)
        if found is None:
            return None
        run = self.runs.get(found[0])
        if run is None:
            return None
        index, member = found[1], found[2]
        if record.state != "succeeded" or record.value is None:
            why = _why(record)
            await self._step_failed(run, index, f"item {member}: {why}" if member >= 0 else why)
            return None
        if member < 0:
            run.succeeded(index, record.value)
            if index == len(run.specs) - 1:
                self._last[run.id] = record.value
            return run
        try:
            joined = run.member_succeeded(index, member, record.value)
        except ValueError as error:  # the results together are over the limit
            await self._step_failed(run, index, f"ValueError: {error}")
            return None
        if joined is None:
            return None
        await self._map_ended(run, index, joined)
        return run

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
        # A map step still running has a record of its own: it ends too.
        maps = tuple(run.ids[index] for index, spec in enumerate(run.specs)
                     if spec.input == "each" and run.states[index] == "started")
        if maps:
            await self._tell_store(Cancelled(ids=maps))
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
        self._keep(Kept(start=start, started_at=started_at, generation=run.generation,
                         state=record.state, size=held_size(start),
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
        except (*PEER_ERRORS, InvalidSubmission, ValueError) as error:
            log.warning("%s: the error handler of workflow %s was not submitted: %s: %s",
                        self.name, run.id, type(error).__name__, error)
            return
        if isinstance(answer, Rejected):
            log.warning("%s: the error handler of workflow %s was refused: %s: %s",
                        self.name, run.id, answer.error, answer.message)

    def _keep(self, kept: Kept) -> None:
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


def held_size(message: StartWorkflow) -> int:
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
