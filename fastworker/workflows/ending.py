"""How a workflow's run stops and ends: a failed step (the run fails, or
with ``keep_going`` what waits for it is skipped), a cancel or a time
limit (its running steps are cancelled), and the end (its record, its
journal row, its error handler, and keeping it for a retry).
"""

from __future__ import annotations

import heapq
import logging
import time
from typing import Any

import attrs
import trio

from actors.requests import Requests
from fastworker.cancel import cancel_task
from fastworker.errors import InvalidSubmission
from fastworker.internal import JournalWrite
from fastworker.journal.ops import DropWorkflow, PutResult, PutWorkflow
from fastworker.messages import (
    PRIORITIES,
    Cancelled,
    Finished,
    Outcome,
    Rejected,
    RemoteError,
    Submit,
    TaskRecord,
    WorkflowStep,
)
from fastworker.payload import pack_value, with_inputs
from fastworker.submission import build_submit
from fastworker.workflows.graph import Failure, Run, error_step_id
from fastworker.workflows.state import (
    PEER_ERRORS,
    WORKFLOW_TASK,
    Kept,
    State,
    held_size,
)

__all__ = ["Ending"]

log = logging.getLogger("fastworker.workflows")

#: Cancels of a stopped run's steps under way at once.
_CANCELS_AT_ONCE = 64


class Ending(State):
    """Stopping and ending runs (see the module docstring)."""

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
        except (InvalidSubmission, ValueError) as error:
            log.warning("%s: the error handler of workflow %s was not submitted: %s: %s",
                        self.name, run.id, type(error).__name__, error)
            return
        await self._submit_handlers([submit])

    async def _submit_handlers(self, submits: list[Submit]) -> None:
        """Submit error handlers; those the queue has no room for wait for
        it (``_room_forever``), the others refused are logged."""
        try:
            answers = await self.refs["inbox"].call(
                Requests(messages=tuple(submits), peer="workflows"),
                timeout=self.options.call_timeout)
        except PEER_ERRORS as error:
            log.warning("%s: %d error handlers were not submitted: %s: %s", self.name,
                        len(submits), type(error).__name__, error)
            return
        for submit, answer in zip(submits, answers, strict=True):
            if isinstance(answer, Rejected) and answer.error == "QueueFull":
                self._parked_handlers.append(submit)
                self._room_wanted.set()
            elif isinstance(answer, Rejected):
                log.warning("%s: the error handler %s was refused: %s: %s",
                            self.name, submit.id, answer.error, answer.message)

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
