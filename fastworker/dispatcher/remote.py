"""The Dispatcher's side of its conversation with subworkers.

Subworkers ask through the workers edge: ``Pull`` (answered by
``pulls.py``), ``Report`` (credit, starts, ends) and ``Drain``. Placed jobs
wait in the worker's outbox for its Pull. When a subworker drains, leaves
or is lost, or does not acknowledge an Assign in time, what it held is
requeued, redelivered or failed. Nothing is sent from here: results and
requeued jobs go to ``Outgoing``, and where jobs go is ``placement.py``'s
to decide.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import attrs

from actors.log import RateLimitedLog
from actors.requests import Answers
from fastworker.dispatcher.outgoing import Outgoing
from fastworker.dispatcher.placement import (
    Placement,
    WorkerAccount,
    assign_budget,
    job_limit,
)
from fastworker.dispatcher.pulls import Pulls
from fastworker.dispatcher.redelivery import REDELIVERED_REMEMBERED, Redelivery
from fastworker.internal import Adopted, Dispatched, DrainWorker, WorkerJoined, WorkerLeft
from fastworker.limits import check_prefetch
from fastworker.messages import (
    ASYNC,
    Ack,
    Assign,
    Cancelled,
    CancelReply,
    Drain,
    Finished,
    Job,
    Outcome,
    Pull,
    Report,
    Running,
    UnknownWorker,
)

__all__ = ["Subworkers"]

log = logging.getLogger("fastworker.dispatcher")

#: Jobs taken back from one worker (their Assign unacknowledged) remembered,
#: to take their credit again if the worker runs them after all.
_TAKEN_BACK_REMEMBERED = 10_000


class Subworkers(Redelivery):
    """Answers subworkers' requests, fills their outboxes, and takes back
    the jobs of those that go.

    ``timer`` answers parked Pulls whose wait is over; the Dispatcher runs
    it in its nursery.

    Args:
        name: the Dispatcher's name, for log lines.
        placement: the workers' accounts (the Dispatcher's too).
        out: where results, requeued jobs and retries wait to be sent.
        counts: the Dispatcher's counters; this adds ``late``,
            ``redelivered``, ``failed_lost``, ``resent_results``,
            ``stale_pulls`` and ``taken_back``.
        poison_after: a job held by this many lost workers fails as poison.
        pull_wait_max: the longest a Pull is parked, in seconds.
        ack_timeout: seconds an Assign with jobs may go unacknowledged (by
            the worker's next Pull, or a Report) before its jobs are taken
            back and queued again.
        on_overdue: awaited by ``ack_timer`` when Assigns fall overdue; it
            has the Dispatcher call ``take_back`` (inside its handling, so
            what goes back is sent with a dispatch).
        max_assign_bytes: about the most bytes of jobs one Assign carries
            (the workers edge's frame limit, less room); the rest wait in
            the outbox for the next Pull, which the subworker sends at once.
    """

    def __init__(self, name: str, placement: Placement, out: Outgoing, counts: Counter[str], *,
                 poison_after: int, pull_wait_max: float, ack_timeout: float = 5.0,
                 on_overdue: Callable[[], Awaitable[None]] | None = None,
                 max_assign_bytes: int = 12 * 1024 * 1024,
                 max_job_bytes: int = 16 * 1024 * 1024 - 512) -> None:
        self._name = name
        self._placement = placement
        self._out = out
        self._counts = counts
        self._poison_after = poison_after
        self.pulls = Pulls(name, counts, out, pull_wait_max=pull_wait_max, ack_timeout=ack_timeout,
                           max_assign_bytes=max_assign_bytes, max_job_bytes=max_job_bytes,
                           on_overdue=on_overdue)
        self._redelivered: OrderedDict[str, None] = OrderedDict()
        #: Tasks whose queued copies a late result cancelled (once each).
        self._copies_cancelled: OrderedDict[str, None] = OrderedDict()
        #: Acks of Reports of results, waiting for the store to keep them
        #: (``ResultsKept``): the request's answers, the index, the Ack.
        self.unkept_acks: list[tuple[Answers, int, Any]] = []
        #: Tasks the journal brought back as dispatched that no subworker
        #: has yet said it holds (the inbox keeps their copies).
        self._recovered: set[str] = set()
        self._late_log = RateLimitedLog(log, what="late results", period=60.0,
                                        level=logging.INFO)
        self._take_back_log = RateLimitedLog(log, what="Assigns taken back", period=60.0)
        self._bad_prefetch_log = RateLimitedLog(log, what="prefetches ignored", period=60.0)

    # -- requests --------------------------------------------------------------------

    def answer(self, item: Any, answers: Answers, index: int, *, may_wait: bool) -> None:
        """Answer one message of a subworker's request at ``answers[index]``.
        A Pull with nothing for it parks if it ``may_wait`` (only a request's
        last message may), and fills its answer later."""
        match item:
            case Report():
                value: Any = self._report(item)
                if item.finished and isinstance(value, Ack):
                    # Acked once the store keeps them (the subworker lets them go then).
                    answers.later()
                    self.unkept_acks.append((answers, index, value))
                    return
            case Pull(worker=name):
                worker = self._placement.workers.get(name)
                if worker is None or worker.local:
                    value = UnknownWorker(worker=name)
                else:
                    value = self.pulls.pull(worker, item, answers, index, may_wait=may_wait)
                    if value is None:  # parked
                        return
            case Drain(worker=name):
                worker = self._placement.workers.get(name)
                if worker is None or worker.local:
                    value = UnknownWorker(worker=name)
                else:
                    self._drain(worker)
                    value = Ack()
            case _:
                log.warning("%s: ignored %s in a request", self._name, type(item).__name__)
                value = None
        answers.values[index] = value

    def _report(self, report: Report) -> Ack | UnknownWorker:
        worker = self._placement.workers.get(report.worker)
        if worker is not None and not worker.local and report.seq and (
                report.seq <= worker.report_seq):
            # A resend (its answer was lost, or NNG sent it again): all of it
            # was handled the first time, its results passed on.
            self._counts["resent_results"] += len(report.finished)
            return Ack()
        out = self._out
        out.results.extend(report.running)
        if report.finished:
            out.results.append(Finished(outcomes=report.finished))
        held = worker.held if worker is not None else {}
        adopted = worker.adopted if worker is not None else {}
        started = worker.started if worker is not None else set()
        for running in report.running:
            started.update(task_id for task_id in running.ids if task_id in held)
        for outcome in report.finished:
            job = held.pop(outcome.id, None)
            started.discard(outcome.id)
            if job is None and outcome.id in adopted:
                self._adopted_ended(adopted, outcome)
            elif job is None:
                self._late(outcome)
            elif outcome.retry_in is not None:
                # A pool process that died running it counts as a loss, as
                # the subworker's executor counted it (its poison_after).
                died = outcome.error is not None and outcome.error.type == "WorkerProcessDied"
                out.retries.append(
                    attrs.evolve(job, attempt=job.attempt + 1, losses=job.losses + died))
                out.retry_delays.append(outcome.retry_in)
        if worker is None or worker.local:
            return UnknownWorker(worker=report.worker)
        worker.report_seq = report.seq
        if report.prefetch:
            if (problem := check_prefetch(report.prefetch)) is None:
                worker.set_prefetch(report.prefetch)  # before its credit: see _tier
            else:
                self._counts["bad_prefetch"] += 1
                self._bad_prefetch_log.event(
                    "%s: worker %s said a prefetch the dispatcher ignores: %s",
                    self._name, worker.name, problem)
        worker.add_credit(report.credit)
        if report.returned:
            self._returned(worker, report.returned)
        if report.assigned and report.assigned >= worker.pull_seq:
            self.pulls.acknowledged(worker)
        if worker.taken_back:  # did it get a job taken back after all?
            worker.ran_after_all(report.running, report.finished)
        return Ack()

    def _returned(self, worker: WorkerAccount, ids: Iterable[str]) -> None:
        """Jobs a subworker gives back unstarted (it was drained, or stops):
        queued again at the front, the same attempt; its credit for them
        comes in its Reports. One it no longer holds (ended, or gone back
        already) is passed over."""
        jobs = [job for task_id in ids if (job := worker.held.get(task_id)) is not None
                and task_id not in worker.started]
        if jobs:
            self._counts["returned"] += len(jobs)
            log.info("%s: worker %s gave back %d jobs it had not started: queued again",
                     self._name, worker.name, len(jobs))
            self._redeliver(worker, jobs, lost=False, delivered=False)

    def returned_locally(self, name: str, jobs: Iterable[Job]) -> None:
        """Jobs the local executor ``name`` gives back unstarted: queued
        again at the front, the same attempt."""
        jobs = list(jobs)
        worker = self._placement.workers.get(name)
        self._counts["returned"] += len(jobs)
        if worker is None:
            self._out.requeue.extend(jobs)
        else:
            self._redeliver(worker, jobs, lost=False, delivered=False)

    def _late(self, outcome: Outcome) -> None:
        """A result from a worker that no longer holds the job: accepted (the
        store keeps one result per (task, attempt)); a queued copy (a
        redelivery, or one a restart brought back) is cancelled if the
        result is final (a failed attempt to be retried leaves it: the copy
        is its retry)."""
        self._counts["late"] += 1
        self._late_log.event(
            "%s: late result for task %s (attempt %d) from worker %s, which no longer held "
            "it: kept", self._name, outcome.id, outcome.attempt, outcome.worker)
        if outcome.retry_in is None and outcome.id not in self._copies_cancelled:
            # A copy the journal brought back as queued (its dispatch was not
            # yet written) is not among the redelivered: cancelled all the same.
            self._redelivered.pop(outcome.id, None)
            self._copies_cancelled[outcome.id] = None
            if len(self._copies_cancelled) > REDELIVERED_REMEMBERED:
                self._copies_cancelled.popitem(last=False)
            self._out.cancel_queued.append(outcome.id)

    def recovered(self, ids: Iterable[str]) -> None:
        """Tasks the journal said were dispatched when the control plane
        stopped, whose copies the inbox holds for its recovery grace: one a
        subworker says it holds is adopted (it ends there); a late result
        for another cancels its copy."""
        for task_id in ids:
            self._remember_redelivered(task_id)
            self._recovered.add(task_id)
        for worker in self._placement.workers.values():
            if worker.holding:
                self._adopt(worker)

    def _adopt(self, worker: WorkerAccount, *, everything: bool = False) -> None:
        """Adopt the recovered tasks ``worker`` holds (``everything``: all it
        said it holds when it registered): the inbox keeps their copies
        from running, if it has them, and the store hears where they run."""
        recovered = self._recovered
        found = [held for task_id, held in worker.holding.items()
                 if everything or task_id in recovered]
        if not found:
            return
        now = time.time()
        for held in found:
            recovered.discard(held.id)
            del worker.holding[held.id]
            worker.adopted[held.id] = None
            self._out.results.append(
                Running(ids=(held.id,), worker=worker.name, started_at=held.started_at,
                        attempts=(held.attempt,)) if held.started_at else
                Dispatched(ids=(held.id,), worker=worker.name, at=now))
        self._out.adopted.append(Adopted(ids=tuple(held.id for held in found), state="running"))
        self._counts["adopted"] += len(found)
        log.info("%s: worker %s still holds %d tasks it had before it registered again: they "
                 "end there, and are not run again", self._name, worker.name, len(found))

    def _adopted_ended(self, adopted: dict[str, None], outcome: Outcome) -> None:
        """An adopted task's result: kept; its copy is forgotten (or, for a
        failed attempt to be retried, run as the retry)."""
        del adopted[outcome.id]
        self._redelivered.pop(outcome.id, None)
        self._counts["late"] += 1
        self._late_log.event(
            "%s: result for task %s (attempt %d) from worker %s, which ran it across a restart "
            "of the control plane: kept", self._name, outcome.id, outcome.attempt,
            outcome.worker)
        if outcome.retry_in is None:
            self._out.adopted.append(Adopted(ids=(outcome.id,), state="ended"))
        else:
            self._out.adopted.append(
                Adopted(ids=(outcome.id,), state="again", delays=(outcome.retry_in,)))

    def take_back(self) -> None:
        """Take back the jobs of each overdue Assign that its worker (still
        the same, still holding them) has not acknowledged: queued again at
        the front as their next attempt (a task that must not run twice
        fails with ``WorkerLost``), the credit given back. If the worker had
        them after all, their results come as late ones, and a second run
        is counted by the store."""
        overdue, self.pulls.overdue = self.pulls.overdue, {}
        timeout = self.pulls.ack_timeout
        for worker, seq in overdue.values():
            if self._placement.workers.get(worker.name) is not worker or worker.pull_seq != seq:
                continue  # it left (what it held went back then), or had that Assign
            last = worker.last_assign
            jobs = [job for job in last.jobs if job.id in worker.held]
            worker.last_assign = Assign(jobs=(), cancel=last.cancel)  # a late resend: nothing
            if not jobs:
                continue
            taken_back = worker.taken_back
            for job in jobs:
                taken_back[job.id] = (job.attempt, worker.kind(job.task))
                worker.give(job)
            while len(taken_back) > _TAKEN_BACK_REMEMBERED:  # the oldest never came
                del taken_back[next(iter(taken_back))]
            self._counts["taken_back"] += len(jobs)
            self._take_back_log.event(
                "%s: worker %s did not acknowledge the %d jobs answered to its Pull %d within "
                "%g s (ack_timeout): taken back and queued again", self._name, worker.name,
                len(jobs), seq, timeout)
            self._redeliver(worker, jobs, lost=False, delivered=True, how=(
                f"worker {worker.name} did not acknowledge the jobs sent to it within "
                f"{timeout:g} s"))

    # -- jobs placed, and tasks stopped ----------------------------------------------

    def hand(self, worker: WorkerAccount, jobs: list[Job]) -> None:
        """Jobs placed on a subworker: held by it from now, and sent with the
        answer to its parked Pull, or to its next."""
        held = worker.held
        for job in jobs:
            held[job.id] = job
        worker.outbox.extend(jobs)
        self.pulls.answer(worker)

    def stop(self, task_id: str) -> CancelReply | None:
        """Stop a task a subworker holds: cancelled if it is still in the
        outbox, else the worker is told with its next Assign. ``None`` if no
        subworker holds it."""
        for worker in self._placement.workers.values():
            if task_id in worker.adopted:
                worker.cancel.append(task_id)
                self.pulls.answer(worker)
                return CancelReply(id=task_id, outcome="requested")
            if task_id not in worker.held:
                continue
            for job in worker.outbox:
                if job.id == task_id:  # placed, not yet pulled
                    worker.outbox.remove(job)
                    del worker.held[task_id]
                    worker.give(job)
                    self._out.results.append(Cancelled(ids=(task_id,)))
                    return CancelReply(id=task_id, outcome="cancelled")
            worker.cancel.append(task_id)
            self.pulls.answer(worker)
            return CancelReply(id=task_id, outcome="requested")
        return None

    # -- joining, draining, leaving ----------------------------------------------------

    def join(self, joined: WorkerJoined) -> None:
        if joined.worker in self._placement.workers:
            self.leave(WorkerLeft(worker=joined.worker, reason="registered again", lost=False))
        worker = self._placement.add_subworker(joined.worker, _kinds(joined), joined.at_most_once,
                                               joined.prefetch)
        # Copies of its requests from before it registered are stale here.
        worker.pull_seq = worker.pull_seen = max(joined.pull_seq, 0)
        worker.report_seq = max(joined.report_seq, 0)
        if joined.max_frame_bytes > 0:  # the smaller of its frame limit and ours
            worker.max_assign_bytes = min(self.pulls.max_assign_bytes,
                                          assign_budget(joined.max_frame_bytes))
            worker.max_job_bytes = min(self.pulls.max_job_bytes,
                                       job_limit(joined.max_frame_bytes))
        if joined.holding:
            # All of them: the journal may have brought one back as queued
            # (its dispatch was not yet written), or this control plane may
            # have requeued them when it lost the worker.
            worker.holding = {held.id: held for held in joined.holding}
            self._adopt(worker, everything=True)

    def drain_by_operator(self, message: DrainWorker) -> bool:
        """Give a worker nothing new (or again, ``resume``); ``False`` if it
        is not known."""
        worker = self._placement.workers.get(message.worker)
        if worker is None:
            return False
        self._placement.update(worker, drained=not message.resume)
        if worker.drained and not worker.local:
            # What it was given but has not pulled goes back to the queue
            # (its credit with it); what it holds and has not started, once
            # it hands it back.
            for job in worker.outbox:
                worker.give(job)
            self._redeliver(worker, worker.outbox, lost=False, delivered=False)
            worker.outbox = []
            worker.give_back = True
            self.pulls.answer(worker)
        elif not worker.drained:
            # Resumed before its next Pull: it keeps what it holds.
            worker.give_back = False
        log.info("%s: worker %s %s by request", self._name, worker.name,
                 "drained" if worker.drained else "resumed")
        return True

    def _drain(self, worker: WorkerAccount) -> None:
        """Give a stopping worker nothing more; what it was given but has
        not pulled goes with its last Pull, or back to the queue."""
        self._placement.update(worker, health="draining")
        worker.credit = [0, 0, 0]
        if self.pulls.is_parked(worker):
            self.pulls.answer(worker)
        else:
            self._redeliver(worker, worker.outbox, lost=False, delivered=False)
            worker.outbox = []

    def leave(self, left: WorkerLeft) -> None:
        worker = self._placement.remove(left.worker)
        if worker is None or worker.local:
            return
        self.pulls.answer(worker, UnknownWorker(worker=worker.name))
        self.pulls.acknowledged(worker)  # nothing of it is taken back: it all goes back now
        if worker.adopted:  # their copies run now (a late result cancels them)
            self._out.adopted.append(Adopted(ids=tuple(worker.adopted), state="again"))
        undelivered = {job.id for job in worker.outbox}
        delivered = [job for job in worker.held.values() if job.id not in undelivered]
        # Oldest first: what it held was placed before what it had yet to pull.
        waiting = list(worker.outbox)
        failed = self._redeliver(worker, delivered, lost=left.lost, delivered=True,
                                 reason=left.reason)
        self._redeliver(worker, waiting, lost=left.lost, delivered=False)
        self._say_gone(worker, left.lost, left.reason, delivered, failed, waiting)



def _kinds(joined: WorkerJoined) -> dict[str, int]:
    """A newcomer's tasks and the kind of slot each needs there: ``kinds``
    follows the sorted tasks (async for any it did not say)."""
    said = dict(zip(sorted(joined.tasks), joined.kinds, strict=False))
    return {task: said.get(task, ASYNC) for task in joined.tasks}
