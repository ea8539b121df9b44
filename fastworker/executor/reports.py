"""What the executor's runners hand back to it: each job's ``Outcome`` (and
the retry a failed attempt earns), the slot it frees (counted per kind of
slot), and a wake-up for the collector, which sends them on in batches.

Touched only on the trio thread, except ``outcome``, which worker threads
call too: it reads, never writes.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import attrs
import trio

from fastworker.calls import cancelled_error
from fastworker.executor.outcome_log import OutcomeLog
from fastworker.messages import CancelOutcome, Job, Outcome, RemoteError
from fastworker.tasks import Task

#: What the executor counts, by outcome.
COUNTS = ("succeeded", "failed", "timed_out", "late", "retried", "cancelled")


class Begun(Protocol):
    """A sync job a runner (a worker thread, a pool runner) began: its
    ``Running`` is the collector's to send."""

    @property
    def job(self) -> Job: ...

    @property
    def started_at(self) -> float: ...


class Reports:
    """Outcomes and retries gathered since the collector's last pass, the
    counts for the executor's snapshot, and the jobs holding a slot, per kind.

    A runner calls ``finish`` when a job gives its slot back with its
    outcome, ``report`` when the outcome is known but the slot stays taken
    (a sync job failed at its limit keeps its thread), and the actor's
    collector takes what gathered with ``take``.
    """

    def __init__(self, worker: str) -> None:
        self.worker = worker
        #: One log line per outcome (fastworker.tasks).
        self.log = OutcomeLog(worker)
        #: Jobs started and not yet given their slot back, per kind of slot
        #: (``KINDS`` index): the executor adds, each runner takes off its own.
        self.running = [0, 0, 0]
        self.counts = dict.fromkeys(COUNTS, 0)
        self._outbox: list[Outcome] = []
        # Failed attempts to run again, and after how long.
        self._retries: list[Job] = []
        self._retry_delays: list[float] = []
        self._wakeup = trio.Event()

    @property
    def pending(self) -> bool:
        """Whether outcomes wait for the collector."""
        return bool(self._outbox)

    def outcome(self, job: Job, found: Task[Any, Any], value: bytes | None,
                error: RemoteError | None, retryable: bool, started_at: float) -> Outcome:
        """A job's outcome; a failed attempt with retries left says when to
        retry it (its task's backoff)."""
        retry_in = None
        if error is not None and retryable:
            retries = found.retries if job.retries is None else job.retries
            if job.attempt <= retries:
                retry_in = found.backoff.delay(job.attempt)
        return Outcome(id=job.id, attempt=job.attempt, worker=self.worker, value=value,
                       error=error, started_at=started_at, finished_at=time.time(),
                       retry_in=retry_in)

    def finish(self, outcome: Outcome, job: Job, kind: int) -> None:
        """A job ended and gives its slot (of ``kind``) back: report it."""
        self.running[kind] -= 1
        self.report(outcome, job)

    def report(self, outcome: Outcome, job: Job | None = None) -> None:
        """Queue an outcome for the collector's next pass, and wake it."""
        self.record(outcome, job)
        self._wakeup.set()

    def record(self, outcome: Outcome, job: Job | None) -> None:
        """Queue an outcome (and its retry) without waking the collector:
        for the collector itself."""
        if outcome.retry_in is not None and job is not None:
            self.counts["retried"] += 1
            self._retries.append(attrs.evolve(job, attempt=job.attempt + 1))
            self._retry_delays.append(outcome.retry_in)
        if outcome.error is None:
            self.counts["succeeded"] += 1
        elif outcome.error.kind == "timeout":
            self.counts["timed_out"] += 1
        elif outcome.error.kind == "cancelled":
            self.counts["cancelled"] += 1
        else:
            self.counts["failed"] += 1
        self._outbox.append(outcome)
        self.log.outcome(outcome, job)

    def cancel_unstarted(self, job: Job) -> CancelOutcome:
        """Report a job stopped before it began (its slot is the caller's
        to free)."""
        now = time.time()
        self.report(Outcome(
            id=job.id, attempt=job.attempt, worker=self.worker, started_at=now, finished_at=now,
            error=cancelled_error(None, "cancelled", job.task)), job)
        return "cancelled"

    def unknown(self, job: Job, matches: list[str]) -> Outcome:
        """The outcome of a job of a task this worker does not know (the
        registry's ``close_matches`` of its name are named as hints)."""
        hint = f" (did you mean {', '.join(repr(m) for m in matches)}?)" if matches else ""
        now = time.time()
        return Outcome(
            id=job.id, attempt=job.attempt, worker=self.worker, started_at=now, finished_at=now,
            error=RemoteError(
                type="UnknownTask",
                message=f"no task named {job.task!r} on worker {self.worker}{hint}; import the "
                "module that defines it on this worker ([node] imports or FASTWORKER_TASKS)",
            ),
        )

    def expired(self, job: Job, wall: float) -> Outcome:
        """The outcome of a job whose ``expires_at`` deadline passed (by the
        wall clock ``wall``) before it could start: it is not started."""
        assert job.expires_at is not None
        return Outcome(
            id=job.id, attempt=job.attempt, worker=self.worker, started_at=wall,
            finished_at=wall, error=RemoteError(
                type="TaskExpired", kind="expired",
                message=f"its deadline (expires) passed {wall - job.expires_at:.3f} s "
                "before it could start; it was not started"))

    def wake(self) -> None:
        """Wake the collector (worker threads call this through the trio token)."""
        self._wakeup.set()

    async def wait(self) -> None:
        """Wait until something was reported, or a thread woke the collector."""
        await self._wakeup.wait()
        self._wakeup = trio.Event()

    def take(self) -> tuple[list[Outcome], list[Job], list[float]]:
        """Take the outcomes gathered so far, and the retries they earned
        (with their delays), together: each retry goes out after the
        ``Finished`` that reports its failure."""
        taken = self._outbox, self._retries, self._retry_delays
        self._outbox, self._retries, self._retry_delays = [], [], []
        return taken
