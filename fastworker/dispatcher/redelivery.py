"""What becomes of jobs a subworker held: queued again (the same attempt if
they never reached it, the next if they did), or failed as ``WorkerLost``
(an at-most-once task) or ``PoisonTask`` (lost with too many workers); and
the ids redelivered, remembered so that a late result cancels the queued
copy. A base of ``Subworkers`` (``remote.py``), which owns the state; it
sends nothing: results and requeued jobs go to ``Outgoing``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable

import attrs

from fastworker.dispatcher.outgoing import Outgoing
from fastworker.dispatcher.placement import WorkerAccount
from fastworker.messages import Finished, Job, Outcome, RemoteError

__all__ = ["REDELIVERED_REMEMBERED", "Redelivery"]

log = logging.getLogger("fastworker.dispatcher")

#: Ids of redelivered jobs (and of jobs recovered as dispatched after a
#: restart) remembered, to cancel a queued copy when a late result arrives.
REDELIVERED_REMEMBERED = 100_000


class Redelivery:
    """Requeues or fails the jobs of workers that went, and lets through
    only jobs not yet lost too often."""

    _name: str
    _out: Outgoing
    _counts: Counter[str]
    _poison_after: int
    _redelivered: OrderedDict[str, None]

    def admit(self, jobs: tuple[Job, ...]) -> list[Job]:
        """The jobs of a ``JobBatch`` that may be placed: a job already lost
        by ``poison_after`` workers (control-plane restarts count: the
        journal brings back what was dispatched as lost once more) fails as
        poison instead of being handed out."""
        poison_after = self._poison_after
        admitted = [job for job in jobs if job.losses < poison_after]
        if len(admitted) < len(jobs):
            now = time.time()
            failed = tuple(Outcome(
                id=job.id, attempt=job.attempt, worker=self._name, started_at=now,
                finished_at=now, error=RemoteError(
                    type="PoisonTask", kind="error",
                    message=f"task {job.task} was lost {job.losses} times (by workers that "
                    "were lost, or by restarts of the control plane while it was "
                    f"dispatched); failed as poison (poison_after = {poison_after}) "
                    "rather than risk more"))
                for job in jobs if job.losses >= poison_after)
            self._counts["failed_lost"] += len(failed)
            self._out.results.append(Finished(outcomes=failed))
        return admitted

    def _remember_redelivered(self, task_id: str) -> None:
        self._redelivered[task_id] = None
        if len(self._redelivered) > REDELIVERED_REMEMBERED:
            self._redelivered.popitem(last=False)

    def _redeliver(self, worker: WorkerAccount, jobs: Iterable[Job], *, lost: bool,
                   delivered: bool, reason: str = "", how: str = "") -> list[Outcome]:
        """Requeue a gone worker's jobs, or taken back ones, or fail them;
        return the outcomes of those failed."""
        failed: list[Outcome] = []
        for job in jobs:
            worker.held.pop(job.id, None)
            worker.started.discard(job.id)
            if not delivered:  # never reached the worker: the same attempt again
                self._out.requeue.append(job)
                continue
            error = self._lost_error(worker, job, lost=lost, reason=reason, how=how)
            if error is not None:
                now = time.time()
                failed.append(Outcome(id=job.id, attempt=job.attempt, worker=worker.name,
                                      error=error, started_at=now, finished_at=now))
                continue
            self._out.requeue.append(
                attrs.evolve(job, attempt=job.attempt + 1, losses=job.losses + int(lost)))
            self._counts["redelivered"] += 1
            self._remember_redelivered(job.id)
        if failed:
            self._counts["failed_lost"] += len(failed)
            self._out.results.append(Finished(outcomes=tuple(failed)))
        return failed

    def _say_gone(self, worker: WorkerAccount, lost: bool, reason: str, delivered: list[Job],
                  failed: list[Outcome], waiting: list[Job]) -> None:
        """One line on what became of the tasks of a worker that went
        (WARNING if it was lost)."""
        if not (delivered or waiting):
            return
        ids = [job.id for job in delivered]
        more = f" and {len(ids) - 5} more" if len(ids) > 5 else ""
        log.log(logging.WARNING if lost else logging.INFO,
                "%s: worker %s %s (%s): %d of the tasks it was running queued again as their "
                "next attempt, %d failed (%s), %d not yet sent to it queued again%s",
                self._name, worker.name, "was lost" if lost else "left", reason,
                len(delivered) - len(failed), len(failed),
                ", ".join(sorted({o.error.type for o in failed if o.error})) or "none",
                len(waiting), f"; ids {', '.join(ids[:5])}{more}" if ids else "")

    def _lost_error(self, worker: WorkerAccount, job: Job, *, lost: bool,
                    reason: str, how: str = "") -> RemoteError | None:
        how = how or (f"worker {worker.name} was lost ({reason})" if lost else (
            f"worker {worker.name} left ({reason}) before finishing it"))
        if job.task in worker.at_most_once:
            return RemoteError(
                type="WorkerLost", kind="error",
                message=f"{how}, holding at-most-once task {job.task}; "
                "it may or may not have run, and is not run again",
            )
        if lost and job.losses + 1 >= self._poison_after:
            return RemoteError(
                type="PoisonTask", kind="error",
                message=f"task {job.task} was held by {job.losses + 1} workers that were lost "
                f"(the last: {how}); failed as poison (poison_after = "
                f"{self._poison_after}) rather than risk more workers",
            )
        return None
