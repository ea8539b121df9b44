"""How the Workflows actor moves its runs on: submitting the steps that
are ready (a ``.map()``'s members too), all runs' together, waiting for
room in the queue, and acting on the records the store's watch brings.
"""

from __future__ import annotations

import logging
import time

import trio

from actors.requests import Requests
from fastworker.errors import InvalidSubmission
from fastworker.limits import MAX_QUERY_IDS
from fastworker.messages import (
    FINAL_STATES,
    Finished,
    Outcome,
    Rejected,
    Running,
    Submit,
    TaskRecord,
)
from fastworker.submission import build_submit
from fastworker.workflows.ending import Ending
from fastworker.workflows.graph import Run, step_id
from fastworker.workflows.state import (
    PEER_ERRORS,
    why,
)

__all__ = ["Runner"]

log = logging.getLogger("fastworker.workflows")

#: Seconds between tries of the steps the queue had no room for.
_ROOM_PAUSE = 0.5


class Runner(Ending):
    """Moving runs on (see the module docstring)."""

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
                    if handlers := self._parked_handlers:
                        self._parked_handlers = []
                        await self._submit_handlers(handlers)
                except Exception:
                    log.exception("%s: failed to submit steps waiting for room", self.name)
                    self._watch_all_again()
                if self._parked or self._parked_handlers:
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
        try:
            known = await self._records(ids)
        except (*PEER_ERRORS, RuntimeError) as error:
            await self._stop(run, run.cancel(f"Unavailable: the store did not answer: "
                                             f"{type(error).__name__}: {error}"))
            return ()
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
            because = why(record)
            await self._step_failed(run, index,
                                    f"item {member}: {because}" if member >= 0 else because)
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
