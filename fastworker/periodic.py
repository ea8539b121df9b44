"""The Scheduler: submits the runs of periodic tasks (``@task(cron=...)``,
``@task(every=...)``) to the inbox, like any submission, and starts those
of periodic workflows (``fastworker.workflows.periodic``) with the
Workflows actor (its optional ``workflows`` ref).

It runs only in the control plane, so subworkers never double a run. One
timer sleeps on trio's clock until the earliest next run (never longer than
``recheck``, so a wall clock that jumps is noticed). Missed runs are not
made up, runs never overlap (the store is asked about the previous one),
and a run that fails is counted, not retried here: docs/tasks.md
("Periodic tasks") has the rules.

With a ``journal`` ref (a Journal that is on), each accepted run's time and
task id are journaled (``PutSchedule``), and at start each schedule takes
its last run back: the overlap check asks about that run, and the first
run after a restart follows from it (an ``every`` schedule keeps its beat,
a cron slot that has run is not run again). Schedules the journal holds
that are no longer defined are dropped from it.
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import attrs
import trio
from croniter import croniter

from actors import Actor, ActorContext, GetStats, Ref
from actors.errors import ActorCrashed, CallTimeout
from actors.log import RateLimitedLog
from actors.requests import Requests
from fastworker.internal import GetTask, JournalWrite, Recover, TaskDetail
from fastworker.journal.ops import DropSchedule, PutSchedule
from fastworker.messages import Accepted, Rejected
from fastworker.stats import ScheduleInfo, SchedulerStats
from fastworker.submission import build_submit, new_task_id
from fastworker.tasks import Task, TaskRegistry, default_registry

__all__ = [
    "Scheduler",
    "SchedulerOptions",
]

log = logging.getLogger("fastworker.periodic")

#: States of a previous run during which a new run is skipped.
ACTIVE_STATES = frozenset({"queued", "scheduled", "running"})
#: A cron schedule counts as due this close to its wall-clock time (float
#: rounding between trio's clock and the wall clock).
_DUE_SLACK = 1e-3
#: The most passed-over cron slots counted in one catch-up (a long suspend
#: of an every-minute schedule would otherwise iterate for long).
_COUNT_MAX = 10_000


@attrs.frozen(kw_only=True)
class SchedulerOptions:
    """The ``[actors.scheduler]`` keys.

    Attributes:
        enabled: schedule the periodic tasks at all (``false``: none runs).
        call_timeout: seconds to wait for the inbox or the store to answer.
        recheck: the longest the timer sleeps before it looks at the wall
            clock again (a cron schedule follows a clock that jumped).
        log_period: at most one line per kind of event (skipped, rejected,
            failed) per this many seconds.
    """

    enabled: bool = True
    call_timeout: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    recheck: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))
    log_period: float = attrs.field(default=60.0, validator=attrs.validators.ge(0))


@attrs.define(eq=False)
class _Schedule:
    """One periodic task's schedule and counters (the scheduler's own state)."""

    task: Task[Any, Any]
    #: When it next comes due on trio's clock (its place in the heap).
    deadline: float = 0.0
    #: For cron: the same moment as wall-clock seconds (authoritative).
    next_wall: float = 0.0
    last_run: float = 0.0
    last_id: str = ""
    runs_total: int = 0
    skipped_overlap: int = 0
    skipped_missed: int = 0
    rejected_total: int = 0
    failed_total: int = 0

    @property
    def name(self) -> str:
        return self.task.name

    def describe(self) -> str:
        if self.task.cron is not None:
            return f"cron {self.task.cron!r}"
        return f"every {self.task.every:g} s"


def _cron_after(expression: str, wall: float) -> float:
    """The first time of ``expression`` strictly after ``wall``, in local time."""
    start = datetime.fromtimestamp(wall)  # naive local time: croniter keeps it local
    following: datetime = croniter(expression, start).get_next(datetime)
    return following.timestamp()


class Scheduler(Actor[Any]):
    """Submits periodic tasks on their schedules (see the module docstring)."""

    Options = SchedulerOptions
    refs_required = ("inbox", "results")
    refs_optional = ("journal", "workflows")

    def __init__(
        self,
        options: SchedulerOptions,
        context: ActorContext,
        *,
        registry: TaskRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(options, context)
        self._registry = default_registry() if registry is None else registry
        self._clock = clock
        self._schedules: list[_Schedule] = []
        self._heap: list[tuple[float, int, _Schedule]] = []
        self._closing = False
        #: The journal, once ``setup`` found it on; ``None``: nothing is journaled.
        self._journal: Ref[Any] | None = None
        self._overlap_log = RateLimitedLog(log, what="skipped", period=options.log_period,
                                           level=logging.INFO)
        self._rejected_log = RateLimitedLog(log, what="rejected", period=options.log_period)
        self._failed_log = RateLimitedLog(log, what="failed", period=options.log_period)
        self._missed_log = RateLimitedLog(log, what="late runs", period=options.log_period)

    # -- the actor ---------------------------------------------------------------

    async def setup(self, nursery: trio.Nursery) -> str | None:
        periodic = [
            task for name in sorted(self._registry.names())
            if (task := self._registry.get(name)) is not None and task.periodic
        ]
        if not self.options.enabled:
            # Off for now: what the journal holds is kept for when it is on.
            return f"off (enabled = false): {_count(len(periodic), 'periodic task')} not scheduled"
        self._schedules = [_Schedule(task=task) for task in periodic]
        if "journal" in self.refs:
            await self._recover(self.refs["journal"])
        if not periodic:
            return "no periodic tasks"
        now, wall = trio.current_time(), self._clock()
        for index, schedule in enumerate(self._schedules):
            self._first(schedule, now, wall)
            heapq.heappush(self._heap, (schedule.deadline, index, schedule))
        nursery.start_soon(self._timer)
        shown = ", ".join(
            f"{s.name} {s.describe()}, "
            + (f"last {_local(s.last_run)}, " if s.last_run else "")
            + f"next {_local(self._next_wall(s, now, wall))}"
            for s in self._schedules)
        return f"{_count(len(self._schedules), 'schedule')}: {shown}"

    async def _recover(self, journal: Ref[Any]) -> None:
        """Take each schedule's last run back from the journal (if it is
        on), and drop from it the schedules no longer defined."""
        if (await journal.call(GetStats())).detail is None:
            return  # off: it keeps nothing, so nothing is sent to it
        self._journal = journal
        recovered = await journal.call(Recover())
        defined = {schedule.name: schedule for schedule in self._schedules}
        gone: list[DropSchedule] = []
        for kept in recovered.schedules:
            schedule = defined.get(kept.name)
            if schedule is None:
                gone.append(DropSchedule(name=kept.name))
            else:
                schedule.last_run, schedule.last_id = kept.last_run, kept.last_id
        if gone:
            # (The last runs taken back show in the "started scheduler" line.)
            await journal.send(JournalWrite(ops=tuple(gone)))
            log.info("%s: dropped from the journal %s no longer defined: %s", self.name,
                     _count(len(gone), "schedule"), ", ".join(op.name for op in gone))

    def _first(self, schedule: _Schedule, now: float, wall: float) -> None:
        """Place a schedule's first run after a start: its next time after
        now, and after its last run if one is known (missed runs are not made
        up, and a slot that has run does not run again)."""
        task, last = schedule.task, schedule.last_run
        if task.cron is not None:
            # A run may be accepted a hair before its slot (_DUE_SLACK).
            after = max(wall, last + _DUE_SLACK) if last else wall
            schedule.next_wall = _cron_after(task.cron, after)
            schedule.deadline = now + (schedule.next_wall - wall)
        else:
            every = task.every
            assert every is not None
            # Known: the beat of the last run goes on (the next of its slots
            # after now, never more than ``every`` away); else ``every`` after now.
            wait = every - ((wall - last) % every) if last else every
            schedule.deadline = now + wait

    def stopping(self) -> None:
        # No new run once the node begins to stop (the inbox stops after us).
        self._closing = True

    def stats_detail(self) -> SchedulerStats:
        now, wall = trio.current_time(), self._clock()
        return SchedulerStats(
            enabled=self.options.enabled,
            schedules=tuple(
                ScheduleInfo(
                    task=s.name, cron=s.task.cron, every=s.task.every,
                    next_run=self._next_wall(s, now, wall), last_run=s.last_run,
                    last_id=s.last_id, runs_total=s.runs_total,
                    skipped_overlap=s.skipped_overlap, skipped_missed=s.skipped_missed,
                    rejected_total=s.rejected_total, failed_total=s.failed_total,
                )
                for s in self._schedules
            ),
        )

    async def handle(self, message: Any) -> Any:
        log.warning("%s: ignored %s (the scheduler takes no messages)", self.name,
                    type(message).__name__)
        return None

    # -- time --------------------------------------------------------------------

    def _next_wall(self, schedule: _Schedule, now: float, wall: float) -> float:
        if schedule.task.cron is not None:
            return schedule.next_wall
        return wall + (schedule.deadline - now)

    async def _timer(self) -> None:
        """Sleep until the earliest schedule is due; run what is due; repeat."""
        while not self._closing:
            now = trio.current_time()
            await trio.sleep_until(min(self._heap[0][0], now + self.options.recheck))
            self._follow_wall_clock()
            while self._heap and not self._closing:
                deadline, index, schedule = self._heap[0]
                if deadline > trio.current_time() + (
                        _DUE_SLACK if schedule.task.cron is not None else 0.0):
                    break
                heapq.heappop(self._heap)
                due = self._advance(schedule)
                heapq.heappush(self._heap, (schedule.deadline, index, schedule))
                await self._run(schedule, due)

    def _follow_wall_clock(self) -> None:
        """Put each cron schedule's trio deadline back in line with its
        wall-clock time (the wall clock may have jumped since)."""
        if not any(s.task.cron is not None for s in self._schedules):
            return
        now, wall = trio.current_time(), self._clock()
        self._heap = [
            ((now + (s.next_wall - wall)) if s.task.cron is not None else deadline, index, s)
            for deadline, index, s in self._heap
        ]
        for deadline, _, s in self._heap:
            s.deadline = deadline
        heapq.heapify(self._heap)

    def _advance(self, schedule: _Schedule) -> float:
        """Move a due schedule on to its next time after now; count the
        slots passed over. Returns how late the due slot is, in seconds."""
        task = schedule.task
        now, wall = trio.current_time(), self._clock()
        missed = 0
        if task.cron is not None:
            slot = schedule.next_wall
            late = max(wall - slot, 0.0)
            following = _cron_after(task.cron, slot)
            # Behind: count the slots passed over (up to a bound), then go
            # on from the first one after now.
            while following <= wall and missed < _COUNT_MAX:
                missed += 1
                following = _cron_after(task.cron, following)
            if following <= wall:
                following = _cron_after(task.cron, wall)
            schedule.next_wall = following
            schedule.deadline = now + (following - wall)
        else:
            assert task.every is not None
            slot = schedule.deadline
            late = max(now - slot, 0.0)
            passed = math.floor(late / task.every)  # slots after the due one, up to now
            missed = passed
            schedule.deadline = slot + (passed + 1) * task.every
        if missed:
            schedule.skipped_missed += missed
            self._missed_log.event(
                "%s: periodic task %s is %.3g s late: running it once now; %s passed over",
                self.name, schedule.name, late, _count(missed, "run"))
        return late

    # -- one run -----------------------------------------------------------------

    async def _run(self, schedule: _Schedule, late: float) -> None:
        if schedule.last_id:
            state = await self._previous_state(schedule)
            if state is None:
                return  # the store did not answer: given up (counted)
            if state in ACTIVE_STATES:
                schedule.skipped_overlap += 1
                self._overlap_log.event(
                    "%s: periodic task %s skipped: its previous run %s is still %s",
                    self.name, schedule.name, schedule.last_id, state)
                return
        task = schedule.task
        run_id = new_task_id()
        peer = "the inbox" if task.workflow is None else "the workflows actor"
        if task.workflow is not None and "workflows" not in self.refs:
            self._failed(schedule, "no Workflows actor is wired to the scheduler (its "
                         "workflows ref) to start this periodic workflow")
            return
        try:
            answer = await self._start(task, run_id)
        except CallTimeout:
            # It may still be taken: the next run checks on this id.
            schedule.last_id = run_id
            await self._journal_run(schedule)
            self._failed(schedule, f"{peer} did not answer within "
                         f"{self.options.call_timeout:g} s")
            return
        except (ActorCrashed, trio.BrokenResourceError, trio.ClosedResourceError) as error:
            self._failed(schedule, f"{peer} failed: {type(error).__name__}: {error}")
            return
        if isinstance(answer, Accepted):
            schedule.runs_total += 1
            schedule.last_run = self._clock()
            schedule.last_id = run_id
            await self._journal_run(schedule)
            log.debug("%s: periodic %s %s started as %s%s", self.name,
                      "task" if task.workflow is None else "workflow", schedule.name,
                      run_id, f" ({late:.3g} s late)" if late >= 1 else "")
        elif isinstance(answer, Rejected):
            schedule.rejected_total += 1
            self._rejected_log.event("%s: periodic task %s: the run was rejected: %s: %s",
                                     self.name, schedule.name, answer.error, answer.message)
        else:
            self._failed(schedule, f"unexpected answer {type(answer).__name__}")

    async def _start(self, task: Task[Any, Any], run_id: str) -> Any:
        """Submit a periodic task's run, or start a periodic workflow's
        (its id the run's); the answer."""
        timeout = self.options.call_timeout
        if task.workflow is not None:
            return await self.refs["workflows"].call(attrs.evolve(task.workflow, id=run_id),
                                                     timeout=timeout)
        [answer] = await self.refs["inbox"].call(
            Requests(messages=(build_submit(task, id=run_id),), peer="scheduler"),
            timeout=timeout)
        return answer

    async def _journal_run(self, schedule: _Schedule) -> None:
        if self._journal is not None:
            await self._journal.send(JournalWrite(ops=(PutSchedule(
                name=schedule.name, last_run=schedule.last_run, last_id=schedule.last_id),)))

    async def _previous_state(self, schedule: _Schedule) -> str | None:
        """The state of the schedule's previous run ("" if the store does
        not hold it), or ``None`` if the store did not answer (counted)."""
        try:
            detail: TaskDetail | None = await self.refs["results"].call(
                GetTask(id=schedule.last_id), timeout=self.options.call_timeout)
        except CallTimeout:
            self._failed(schedule, f"the result store did not answer within "
                         f"{self.options.call_timeout:g} s (is the previous run "
                         f"{schedule.last_id} still going?)")
            return None
        except (ActorCrashed, trio.BrokenResourceError, trio.ClosedResourceError) as error:
            self._failed(schedule, f"the result store failed: {type(error).__name__}: {error}")
            return None
        return "" if detail is None else detail.record.state

    def _failed(self, schedule: _Schedule, why: str) -> None:
        schedule.failed_total += 1
        self._failed_log.event("%s: periodic task %s: run given up: %s", self.name,
                               schedule.name, why)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _local(wall: float) -> str:
    return datetime.fromtimestamp(wall).strftime("%Y-%m-%d %H:%M:%S")
