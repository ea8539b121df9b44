"""The WorkerLink's conversations with its control plane, over NNG req/rep
on the workers port (base+5).

``connect`` finds the control plane (the address given, or the discovery
beacon's), then runs sessions until the link drains: ``Register``, then a
parked ``Pull``, batched ``Report``s and ``Heartbeat``s side by side until
the control plane answers ``UnknownWorker`` (it restarted, or declared this
worker lost) and the link registers again. A request unanswered is asked
again; what a Report carries comes from the link's ``ReportBuffer``.

Credit is counted per kind of slot (``KINDS``): the executor's ``Credit``
adds to what it has free, each job assigned takes one of its task's kind
(from the executor's latest ``tasks``), and a Report offers what the
control plane does not already hold.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import anyio
import trio

from actors import Ref
from actors.edge import offset_address
from actors.errors import FrameError
from actors.frame import Framer
from actors.log import RateLimitedLog
from actors.nng import open_request_wire
from actors.requester import Requester
from actors.tls import resolve_tls
from fastworker.deadlines import on_arrival
from fastworker.link.finding import find_control_plane
from fastworker.link.reports import ReportBuffer
from fastworker.link.shape import ExecutorShape
from fastworker.messages import (
    THREAD,
    WORKERS_PORT_OFFSET,
    Ack,
    Assign,
    Deregister,
    Drain,
    Heartbeat,
    HeldJob,
    Job,
    Outcome,
    Pull,
    Register,
    Registered,
    Report,
    Running,
    Slots,
    UnknownWorker,
    describe_slots,
)

if TYPE_CHECKING:
    from fastworker.link.actor import LinkOptions

__all__ = ["LinkSession"]

log = logging.getLogger("fastworker.link")

#: Seconds before a request answered with a bad frame is asked again (the
#: control plane refused it as stale again and again, or could not answer).
_BAD_ANSWER_PAUSE = 1.0
#: Heartbeat intervals without any answer after which a draining worker
#: takes its control plane for gone and stops without it.
SILENT_INTERVALS = 2


class LinkSession:
    """One subworker's standing with its control plane: the request wire,
    the credit offered and the jobs held, and the loops that keep them.

    The actor feeds it (``credit``, ``finished``, ``want_report``) and
    reads its counters for its snapshot; ``refs["executor"]`` gets the
    jobs assigned.
    """

    def __init__(self, options: LinkOptions, *, name: str, worker: str,
                 framer_for: Callable[[str], Framer], buffer: ReportBuffer,
                 refs: Mapping[str, Ref[Any]]) -> None:
        self.options = options
        self.name = name
        self.worker = worker
        #: The framer for a control plane's address (its secret depends on
        #: whether that is this host); raises ConfigError if it cannot sign.
        self._framer_for = framer_for
        self._buffer = buffer
        self._refs = refs
        self.requester: Requester | None = None
        self.address = ""
        #: What the executor said of itself (registering waits for it).
        self.executor = ExecutorShape(name)
        # Per kind: slots the executor has free, beyond jobs on their way
        # to it; of those, credit the control plane holds.
        self._free = [0, 0, 0]
        self._reported = [0, 0, 0]
        # Whether this registration's first offer of credit was said (INFO).
        self._offered = False
        self._report_wanted = trio.Event()
        self._report_seq = 0
        #: Pulls are numbered across registrations (the control plane takes
        #: a copy numbered at or below the last used before it as stale);
        #: ``_assigned`` is the last whose answer came, told in Reports.
        self._pull_seq = 0
        self._assigned = 0
        self._reported_all = trio.Event()
        self.registered = False
        self._unknown = trio.Event()
        #: When the control plane last answered (trio time), and how often
        #: this registration heartbeats (``None``: not registered yet).
        self.last_answer = -math.inf
        self.heartbeat_interval: float | None = None
        self.draining = False
        self.pulling_done = trio.Event()
        #: Set once the ``Drain`` request has been answered (or could not be).
        self.drain_done = trio.Event()
        self.counts = dict.fromkeys(
            ("registrations", "jobs", "outcomes", "reports", "returned"), 0)
        self.in_flight = 0
        #: The jobs assigned and not yet ended: id -> attempt, and when the
        #: started ones started (told when registering again).
        self._holding: dict[str, int] = {}
        self._started: dict[str, float] = {}
        self._succeeded = self._failed = 0
        self._quiet_log = RateLimitedLog(log, what="unanswered requests", period=10.0)

    # -- what the actor tells it ------------------------------------------------------

    def credit(self, slots: Slots, tasks: dict[str, int] | None,
               prefetch: Slots | None = None, holds: Slots | None = None) -> None:
        """The executor has ``slots`` more free per kind (registering waits
        for its first), and says of itself what ``ExecutorShape.said``
        keeps: its tasks (told at the next registration), its prefetch (told
        with the next Report) and the most it holds."""
        self.executor.said(slots, tasks, prefetch, holds)
        free = self._free
        for kind, n in enumerate(slots):
            free[kind] += n

    def running(self, running: Running) -> None:
        """Jobs held have started."""
        holding, started, at = self._holding, self._started, running.started_at
        for task_id in running.ids:
            if task_id in holding:
                started[task_id] = at

    def holding(self) -> tuple[HeldJob, ...]:
        """The jobs held now, for a ``Register``."""
        started = self._started
        return tuple(HeldJob(id=task_id, attempt=attempt, started_at=started.get(task_id, 0.0))
                     for task_id, attempt in self._holding.items())

    def returned(self, jobs: tuple[Job, ...]) -> list[str]:
        """Jobs held were given back unstarted: they are held no more.

        Returns:
            The ids to report (those of jobs held, each once).
        """
        holding, started = self._holding, self._started
        ids = []
        for job in jobs:
            if holding.pop(job.id, None) is not None:
                started.pop(job.id, None)
                ids.append(job.id)
        self.in_flight -= len(ids)
        self.counts["returned"] += len(ids)
        return ids

    def finished(self, outcomes: tuple[Outcome, ...]) -> None:
        """Jobs held have ended (their outcomes are in the buffer)."""
        self.in_flight -= len(outcomes)
        holding, started = self._holding, self._started
        for outcome in outcomes:
            holding.pop(outcome.id, None)
            started.pop(outcome.id, None)
            if outcome.error is None:
                self._succeeded += 1
            else:
                self._failed += 1

    def want_report(self) -> None:
        self._report_wanted.set()

    # -- finding and joining the control plane ---------------------------------------

    async def connect(self) -> None:
        options = self.options
        address, framer = await find_control_plane(options, self._framer_for, self.name)
        self.address = address
        wire = await open_request_wire(
            offset_address(address, WORKERS_PORT_OFFSET),
            recv_max_size=options.max_frame_bytes, contexts=4,
            tls=resolve_tls(address, options.tls, "dial"),
        )
        self.requester = Requester(wire, framer)
        await self.executor.known.wait()
        while not self.draining:
            await self._session()

    async def _session(self) -> None:
        """Register, then pull, report and beat until the control plane
        forgets this worker (or the node stops)."""
        interval = await self._register()
        if interval is None:
            return
        self.heartbeat_interval = interval
        self._unknown = trio.Event()
        self._reported = [0, 0, 0]  # a new registration holds none of our credit
        self._offered = False
        self._report_wanted.set()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._report_loop)
            nursery.start_soon(self._heartbeat_loop, interval)
            nursery.start_soon(self._pull_loop)
            await self._unknown.wait()
            self.registered = False
            nursery.cancel_scope.cancel()
        if not self.draining:
            log.warning("%s: the control plane at %s no longer knows this worker; "
                        "registering again", self.name, self.address)

    def _register_message(self) -> Register:
        """This worker's ``Register``: what its executor said of itself
        (slots, tasks and their kinds, prefetch), what it holds, its last
        numbers."""
        return Register(
            worker=self.worker, host=socket.gethostname(), pid=os.getpid(),
            holding=self.holding(), pull_seq=self._pull_seq, report_seq=self._report_seq,
            max_frame_bytes=self.options.max_frame_bytes, **self.executor.register_fields(),
        )

    async def _register(self) -> float | None:
        register = self._register_message()
        since = trio.current_time()
        while not self.draining:
            answer = await self._ask(register, timeout=self.options.request_timeout, quiet=True)
            if isinstance(answer, Registered):
                self.registered = True
                self.counts["registrations"] += 1
                log.info("%s: registered with %s as %s (%s slots, %d tasks)", self.name,
                         self.address, self.worker, describe_slots(register.slots),
                         len(register.tasks))
                return answer.heartbeat_interval
            if answer is None:
                log.warning(
                    "%s: no answer from a control plane at %s for %.0f s; still trying (is it "
                    "running, and is the shared secret the same?)", self.name,
                    offset_address(self.address, WORKERS_PORT_OFFSET),
                    trio.current_time() - since)
            else:
                log.warning("%s: registration refused (%s); trying again", self.name,
                            type(answer).__name__)
                await trio.sleep(self.options.request_timeout)
        return None

    # -- the conversations ----------------------------------------------------------

    async def _pull_loop(self) -> None:
        try:
            while True:
                self._pull_seq += 1
                pull = Pull(worker=self.worker, wait=self.options.pull_wait, seq=self._pull_seq)
                answer: Any = None
                while answer is None:  # the same Pull again until it is answered
                    answer = await self._ask(
                        pull, timeout=self.options.pull_wait + self.options.request_timeout)
                if isinstance(answer, UnknownWorker):
                    self._unknown.set()
                    return
                if isinstance(answer, Assign):
                    # Acknowledged by the next Pull, and by the next Report
                    # (which goes out even while this one waits for the executor).
                    self._assigned = pull.seq
                if isinstance(answer, Assign) and (answer.jobs or answer.cancel
                                                   or answer.give_back):
                    # Deadlines onto this worker's clock, counted from now.
                    answer = on_arrival(answer, time.time())
                    count = len(answer.jobs)
                    self.in_flight += count
                    self.counts["jobs"] += count
                    holding, free, reported = self._holding, self._free, self._reported
                    kinds_of = self.executor.tasks or {}
                    for job in answer.jobs:
                        holding[job.id] = job.attempt
                        # Each job takes a slot of its task's kind (one of
                        # a task the executor did not name: a thread's).
                        kind = kinds_of.get(job.task, THREAD)
                        free[kind] -= 1
                        reported[kind] -= 1
                    # Shielded: jobs received and counted as held must reach
                    # the executor even if the session ends meanwhile (the
                    # next Register says they are held, so they run here).
                    with trio.CancelScope(shield=True):
                        # Its ``cancel`` and ``give_back`` (drained by an operator) too.
                        await self._refs["executor"].send(answer)
                if self.draining:
                    return
        finally:
            if self.draining:
                self.pulling_done.set()

    async def drain_request(self) -> None:
        """Ask the control plane to assign nothing more (``Drain``)."""
        try:
            if self.registered:
                answer = await self._ask(Drain(worker=self.worker),
                                         timeout=self.options.request_timeout)
                if isinstance(answer, Ack):
                    log.info("%s: draining: %s assigns nothing more; %d jobs held (those "
                             "not started go back)", self.name, self.address, self.in_flight)
            else:
                self.pulling_done.set()
        finally:
            self.drain_done.set()

    async def deregister(self) -> None:
        """Report what is left (while still registered), then ``Deregister``."""
        while self._buffer and self.registered:
            self._reported_all = trio.Event()
            self._report_wanted.set()
            await self._reported_all.wait()
        answer = await self._ask(Deregister(worker=self.worker),
                                 timeout=self.options.request_timeout, quiet=True)
        if answer is not None:
            log.info("%s: deregistered from %s", self.name, self.address)

    async def _report_loop(self) -> None:
        while True:
            await self._report_wanted.wait()
            self._report_wanted = trio.Event()
            free, reported = self._free, self._reported
            credit: Slots = (max(free[0] - reported[0], 0), max(free[1] - reported[1], 0),
                             max(free[2] - reported[2], 0))
            shape = self.executor
            prefetch = shape.prefetch
            changed = prefetch != shape.prefetch_told
            if not (self._buffer or any(credit) or changed):
                self._reported_all.set()
                continue
            running, finished, returned = self._buffer.take()
            self._report_seq += 1
            report = Report(worker=self.worker, credit=credit, running=tuple(running),
                            finished=tuple(finished), seq=self._report_seq,
                            assigned=self._assigned, returned=tuple(returned),
                            prefetch=prefetch if changed else ())
            for kind, n in enumerate(credit):
                reported[kind] += n
            try:
                answer = None
                while answer is None:  # results are never dropped: the same report again
                    answer = await self._ask(report, timeout=self.options.request_timeout)
            except BaseException:
                # Cancelled mid-request: keep it for the next session (the
                # store takes a result once, so a repeat is harmless).
                self._buffer.put_back(running, finished, returned)
                for kind, n in enumerate(credit):
                    reported[kind] -= n
                raise
            self.counts["reports"] += 1
            self.counts["outcomes"] += len(finished)
            if changed:
                shape.prefetch_told = prefetch
            # Said once it is all the credit there is (none was held), and
            # always for a registration's first offer: jobs assigned while
            # that Report was answered must not hide that the worker is in.
            # A registration's first offer at INFO, the rest (one per pull
            # at most) at DEBUG.
            if any(credit) and (tuple(reported) == credit or not self._offered):
                log.log(logging.DEBUG if self._offered else logging.INFO,
                        "%s: offered %s slots to %s", self.name, describe_slots(credit),
                        self.address)
                self._offered = True
            if returned:
                log.info("%s: gave back %d jobs not started to %s", self.name, len(returned),
                         self.address)
            if isinstance(answer, UnknownWorker):
                self._unknown.set()  # the results were taken; the credit was not
            self._report_wanted.set()

    async def _heartbeat_loop(self, interval: float) -> None:
        while True:
            await trio.sleep(interval)
            beat = Heartbeat(worker=self.worker, in_flight=self.in_flight,
                             succeeded_total=self._succeeded, failed_total=self._failed)
            answer = await self._ask(beat, timeout=interval * 2, quiet=True)
            if isinstance(answer, UnknownWorker):
                self._unknown.set()

    async def _ask(self, message: Any, *, timeout: float, quiet: bool = False) -> Any:
        """One request, one answer; ``None`` when none came in time (or a
        bad frame came, after ``_BAD_ANSWER_PAUSE``)."""
        assert self.requester is not None
        try:
            [answer] = await self.requester.ask([message], timeout=timeout)
        except TimeoutError:
            if not quiet:
                self._quiet_log.event("%s: no answer to %s from %s within %g s", self.name,
                                      type(message).__name__, self.address, timeout)
            return None
        except FrameError as error:
            self._quiet_log.event("%s: bad answer from %s: %s", self.name, self.address, error)
            # Asked again by the caller: not at once, as the same may follow.
            await trio.sleep(_BAD_ANSWER_PAUSE)
            return None
        except (anyio.ClosedResourceError, trio.ClosedResourceError):
            # The link is stopping: its loops wait here to be cancelled (a
            # loop that asked again at once would spin without a checkpoint).
            await trio.sleep_forever()
        if not isinstance(answer, (Ack, Assign, Registered, UnknownWorker)):
            self._quiet_log.event("%s: unexpected answer from %s: %r", self.name,
                                  self.address, [answer])
            return None
        self.last_answer = trio.current_time()
        return answer

    @property
    def idle(self) -> bool:
        """Whether this worker holds no job and has no outcome to report."""
        return self.in_flight <= 0 and not self._buffer

    def silent(self) -> bool:
        """Whether the control plane has answered nothing for
        ``SILENT_INTERVALS`` heartbeat intervals (it is gone, or cut off)."""
        interval = self.heartbeat_interval
        return interval is not None and (
            trio.current_time() - self.last_answer > SILENT_INTERVALS * interval)
