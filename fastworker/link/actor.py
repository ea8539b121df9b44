"""The WorkerLink: a subworker's line to its control plane.

A subworker is an Executor wired to a WorkerLink instead of a Dispatcher and
a ResultStore (config/sub.toml). To the Executor the link is both: it takes
the Executor's ``Credit``, ``Running`` and ``Finished`` and hands it the
jobs the control plane assigns. To the control plane it is a requester on
the workers port (base+5), over NNG req/rep, in four conversations:

- ``Register`` once (again whenever the control plane answers
  ``UnknownWorker``: it restarted, or declared this worker lost);
- a ``Pull`` always parked at the Dispatcher, answered with an ``Assign``
  when there are jobs for this worker. Each Pull carries a sequence number,
  so a Pull resent after a dropped connection gets the same jobs again
  instead of losing them;
- ``Report``s: free credit, and what started and ended, batched: while one
  is in flight the next accumulates. A start alone waits up to
  ``running_delay`` for company (the job's end, usually), so that a short
  task costs one Report, not two in a row;
- a ``Heartbeat`` every interval the Registry asked for, with the load.

While the control plane is unreachable, or has restarted and no longer
knows this worker, what the Executor reports waits here, in order: at most
``max_buffered_outcomes`` outcomes (and as many ``Running``), the oldest
dropped beyond that, counted (``LinkStats``) and logged. It goes out in
Reports of bounded size once the link has registered again (issue 14). A
Report is sent again until it is answered, so one whose answer was lost
may reach the control plane twice: the store keeps one result per
(task id, attempt), and counts the repeat.

With no ``address`` it looks for a control plane with the discovery beacon
(docs/discovery.md), and keeps looking, saying so every few seconds. An
address given always wins.

A graceful stop (SIGTERM) drains: ``stopping`` sends ``Drain`` (the
control plane assigns nothing more, and answers the parked Pull with what it
had placed); the link, stopped before the Executor it sends to, goes on
taking the Executor's reports (``Actor.serve_until``) until every job it
handed over has ended, reports them, then sends ``Deregister``: anything
the control plane still counts as held goes back to the queue. Then the
node exits 0.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any, TypeAlias, Union

import anyio
import attrs
import trio

from actors import Actor, ActorContext
from actors.edge import offset_address
from actors.errors import FrameError
from actors.frame import DEFAULT_MAX_FRAME_BYTES, Framer, load_secret
from actors.log import RateLimitedLog
from actors.nng import TlsOptions, open_request_wire
from actors.requester import Requester
from fastworker.messages import (
    CODEC,
    WORKERS_PORT_OFFSET,
    Ack,
    Assign,
    Credit,
    Deregister,
    Drain,
    Finished,
    Heartbeat,
    Outcome,
    Pull,
    Register,
    Registered,
    Report,
    Retry,
    Running,
    UnknownWorker,
)
from fastworker.probe import DEFAULT_DISCOVERY_PORT, discover_forever
from fastworker.stats import LinkStats
from fastworker.tasks import default_registry

__all__ = ["LinkOptions", "LinkStats", "WorkerLink"]

log = logging.getLogger("fastworker.link")

Accepts: TypeAlias = Union[Credit, Running, Finished, Retry]

#: Outcomes a link keeps while the control plane cannot take them.
DEFAULT_MAX_BUFFERED_OUTCOMES = 10_000
#: The most outcomes (and, apart, ``Running`` reports) one Report carries:
#: a backlog after an outage goes out in several, oldest first.
REPORT_MAX_ITEMS = 500
#: Bytes an outcome adds to a frame besides its value and error text
#: (its id, worker, times): for keeping a Report within ``max_frame_bytes``.
_OUTCOME_OVERHEAD = 200


@attrs.frozen(kw_only=True)
class LinkOptions:
    """How a subworker reaches its control plane.

    Attributes:
        address: the control plane's base address (as its
            ``FASTWORKER_ADDRESS``); empty: find it by discovery.
        discovery_port: the UDP port of the discovery beacon; 0: no
            discovery (then ``address`` is required).
        secret / secret_file: the control plane's shared secret.
        tls: certificates for a ``tls+tcp://`` address.
        worker: this worker's id; empty: ``<hostname>:<pid>`` (the
            Executor's default name, so records name the same worker).
        pull_wait: seconds a Pull waits at the control plane for jobs.
        running_delay: seconds a report of started jobs alone may wait to
            go out with their results.
        request_timeout: seconds to wait for any other answer.
        max_frame_bytes: the largest frame sent or accepted.
        max_buffered_outcomes: outcomes (and, apart, ``Running`` reports)
            kept while they cannot be delivered; beyond it the oldest are
            dropped and counted.
    """

    address: str = ""
    discovery_port: int = attrs.field(default=DEFAULT_DISCOVERY_PORT,
                                      validator=attrs.validators.ge(0))
    secret: str = attrs.field(default="", repr=False)
    secret_file: str = ""
    tls: TlsOptions | None = None
    worker: str = ""
    pull_wait: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))
    request_timeout: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    running_delay: float = attrs.field(default=0.05, validator=attrs.validators.ge(0))
    max_frame_bytes: int = attrs.field(
        default=DEFAULT_MAX_FRAME_BYTES, validator=attrs.validators.ge(64)
    )
    max_buffered_outcomes: int = attrs.field(default=DEFAULT_MAX_BUFFERED_OUTCOMES,
                                             validator=attrs.validators.ge(1))

    def __attrs_post_init__(self) -> None:
        if self.secret and self.secret_file:
            raise ValueError("set either secret or secret_file, not both")
        if not self.address and not self.discovery_port:
            raise ValueError(
                "no address and discovery is off (discovery_port 0): set the control plane's "
                "address (FASTWORKER_ADDRESS) or a discovery port (FASTWORKER_DISCOVERY_PORT)")


class WorkerLink(Actor[Accepts]):
    """Connects an Executor to a control plane's Dispatcher and Registry
    (see the module docstring)."""

    Options = LinkOptions
    refs_required = ("executor",)

    def __init__(self, options: LinkOptions, context: ActorContext) -> None:
        super().__init__(options, context)
        self.worker = options.worker or f"{socket.gethostname()}:{os.getpid()}"
        self._framer = Framer(CODEC, secret=load_secret(options.secret, options.secret_file),
                              max_frame_bytes=options.max_frame_bytes)
        self._requester: Requester | None = None
        self._address = ""
        self._concurrency = 0
        self._first_credit = trio.Event()
        self._free = 0  # slots the executor has free, beyond jobs on their way to it
        self._reported = 0  # of those, credit the control plane holds
        self._running: list[Running] = []
        self._finished: list[Outcome] = []
        self._report_wanted = trio.Event()
        self._running_timer = False
        self._report_seq = 0
        self._reported_all = trio.Event()
        self._registered = False
        self._unknown = trio.Event()
        self._draining = False
        self._pulling_done = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._counts = dict.fromkeys(("registrations", "jobs", "outcomes", "reports"), 0)
        self._in_flight = 0
        self._succeeded = self._failed = 0
        self._quiet_log = RateLimitedLog(log, what="unanswered requests", period=10.0)
        self._dropped_log = RateLimitedLog(log, what="times", period=60.0)
        self._dropped = dict.fromkeys(("outcomes", "running"), 0)

    async def setup(self, nursery: trio.Nursery) -> str | None:
        self._nursery = nursery
        nursery.start_soon(self._connect)
        where = self.options.address or "the control plane found by discovery"
        return f"worker {self.worker}, to {where}"

    async def handle(self, message: Accepts) -> None:
        await self.handle_batch([message])

    async def handle_batch(self, messages: list[Accepts]) -> None:
        urgent = False
        for message in messages:
            match message:
                case Credit(n=n):
                    if not self._first_credit.is_set():
                        self._concurrency = n
                        self._first_credit.set()
                    self._free += n
                    urgent = True
                case Running():
                    self._running.append(message)
                case Retry():
                    # The Report's outcomes say ``retry_in``: the control
                    # plane's Dispatcher retries from its own copy of the job.
                    pass
                case Finished(outcomes=outcomes):
                    urgent = True
                    self._finished.extend(outcomes)
                    self._in_flight -= len(outcomes)
                    for outcome in outcomes:
                        if outcome.error is None:
                            self._succeeded += 1
                        else:
                            self._failed += 1
        self._bound_buffers()
        if urgent:
            self._report_wanted.set()
        elif self._running and not self._running_timer and self._nursery is not None:
            self._running_timer = True
            self._nursery.start_soon(self._report_running_soon)

    def _bound_buffers(self) -> None:
        """Keep at most ``max_buffered_outcomes`` undelivered outcomes (and
        ``Running`` reports): the oldest go, counted."""
        most = self.options.max_buffered_outcomes
        over = len(self._finished) - most
        if over > 0:
            del self._finished[:over]
            self._dropped["outcomes"] += over
            self._dropped_log.event(
                "%s: dropped the %d oldest outcomes not yet delivered to the control plane at "
                "%s (%d dropped in all); keeping the newest %d (max_buffered_outcomes)",
                self.name, over, self._address, self._dropped["outcomes"], most)
        over = len(self._running) - most
        if over > 0:
            del self._running[:over]
            self._dropped["running"] += over

    async def _report_running_soon(self) -> None:
        await trio.sleep(self.options.running_delay)
        self._running_timer = False
        self._report_wanted.set()

    def stopping(self) -> None:
        self._draining = True
        if self._nursery is not None:
            self._nursery.start_soon(self._drain_request)

    async def drain(self) -> None:
        """Wait for the last Pull's answer, let the executor (it stops after
        the link) finish every job it was given, report them, deregister."""
        self._draining = True
        if self._requester is None:
            return
        if self._registered:
            await self._pulling_done.wait()
            await self.serve_until(lambda: self._in_flight <= 0 or not self._registered)
            while (self._running or self._finished) and self._registered:
                self._reported_all = trio.Event()
                self._report_wanted.set()
                await self._reported_all.wait()
            answer = await self._ask(Deregister(worker=self.worker),
                                     timeout=self.options.request_timeout, quiet=True)
            if answer is not None:
                log.info("%s: deregistered from %s", self.name, self._address)
        await self._requester.wire.aclose()

    def stats_detail(self) -> LinkStats:
        counts = self._counts
        return LinkStats(
            worker=self.worker, control_plane=self._address, registered=self._registered,
            registrations_total=counts["registrations"], jobs_received_total=counts["jobs"],
            outcomes_reported_total=counts["outcomes"], reports_total=counts["reports"],
            draining=self._draining, buffered_outcomes=len(self._finished),
            outcomes_dropped_total=self._dropped["outcomes"],
            running_dropped_total=self._dropped["running"],
        )

    # -- finding and joining the control plane ---------------------------------------

    async def _connect(self) -> None:
        options = self.options
        address = options.address
        if not address:
            address, announcement = await discover_forever(
                log=log, what=self.name, port=options.discovery_port)
            if announcement.secret_required and not (options.secret or options.secret_file):
                log.error(
                    "%s: the control plane at %s requires a shared secret; set "
                    "FASTWORKER_SECRET or FASTWORKER_SECRET_FILE to the same one",
                    self.name, address)
            log.info("%s: found control plane %s at %s", self.name, announcement.name, address)
        self._address = address
        wire = await open_request_wire(
            offset_address(address, WORKERS_PORT_OFFSET),
            recv_max_size=options.max_frame_bytes, contexts=4, tls=options.tls,
        )
        self._requester = Requester(wire, self._framer)
        await self._first_credit.wait()
        while not self._draining:
            await self._session()

    async def _session(self) -> None:
        """Register, then pull, report and beat until the control plane
        forgets this worker (or the node stops)."""
        interval = await self._register()
        if interval is None:
            return
        self._unknown = trio.Event()
        self._reported = 0  # a new registration holds none of our credit
        self._report_wanted.set()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._report_loop)
            nursery.start_soon(self._heartbeat_loop, interval)
            nursery.start_soon(self._pull_loop)
            await self._unknown.wait()
            self._registered = False
            nursery.cancel_scope.cancel()
        if not self._draining:
            log.warning("%s: the control plane at %s no longer knows this worker; "
                        "registering again", self.name, self._address)

    async def _register(self) -> float | None:
        registry = default_registry()
        tasks = registry.names()
        at_most_once = tuple(sorted(n for n in tasks if (t := registry.get(n)) and t.at_most_once))
        register = Register(
            worker=self.worker, host=socket.gethostname(), pid=os.getpid(),
            concurrency=self._concurrency, tasks=tuple(sorted(tasks)), at_most_once=at_most_once,
        )
        since = trio.current_time()
        while not self._draining:
            answer = await self._ask(register, timeout=self.options.request_timeout, quiet=True)
            if isinstance(answer, Registered):
                self._registered = True
                self._counts["registrations"] += 1
                log.info("%s: registered with %s as %s (%d slots, %d tasks)", self.name,
                         self._address, self.worker, self._concurrency, len(tasks))
                return answer.heartbeat_interval
            if answer is None:
                log.warning(
                    "%s: no answer from a control plane at %s for %.0f s; still trying (is it "
                    "running, and is the shared secret the same?)", self.name,
                    offset_address(self._address, WORKERS_PORT_OFFSET),
                    trio.current_time() - since)
            else:
                log.warning("%s: registration refused (%s); trying again", self.name,
                            type(answer).__name__)
                await trio.sleep(self.options.request_timeout)
        return None

    # -- the conversations ----------------------------------------------------------

    async def _pull_loop(self) -> None:
        seq = 0
        try:
            while True:
                seq += 1
                pull = Pull(worker=self.worker, wait=self.options.pull_wait, seq=seq)
                answer: Any = None
                while answer is None:  # the same Pull again until it is answered
                    answer = await self._ask(
                        pull, timeout=self.options.pull_wait + self.options.request_timeout)
                if isinstance(answer, UnknownWorker):
                    self._unknown.set()
                    return
                if isinstance(answer, Assign) and (answer.jobs or answer.cancel):
                    count = len(answer.jobs)
                    self._free -= count
                    self._reported -= count
                    self._in_flight += count
                    self._counts["jobs"] += count
                    await self.refs["executor"].send(answer)  # its ``cancel`` too
                if self._draining:
                    return
        finally:
            if self._draining:
                self._pulling_done.set()

    async def _drain_request(self) -> None:
        if self._registered:
            answer = await self._ask(Drain(worker=self.worker),
                                     timeout=self.options.request_timeout)
            if isinstance(answer, Ack):
                log.info("%s: draining: %s assigns nothing more; finishing %d jobs held",
                         self.name, self._address, self._in_flight)
        else:
            self._pulling_done.set()

    async def _report_loop(self) -> None:
        while True:
            await self._report_wanted.wait()
            self._report_wanted = trio.Event()
            credit = self._free - self._reported
            if not (self._running or self._finished or credit > 0):
                self._reported_all.set()
                continue
            running, finished = self._take_report()
            self._report_seq += 1
            report = Report(worker=self.worker, credit=max(credit, 0), running=tuple(running),
                            finished=tuple(finished), seq=self._report_seq)
            self._reported += report.credit
            try:
                answer = None
                while answer is None:  # results are never dropped: the same report again
                    answer = await self._ask(report, timeout=self.options.request_timeout)
            except BaseException:
                # Cancelled mid-request: keep it for the next session (the
                # store takes a result once, so a repeat is harmless).
                self._running[:0], self._finished[:0] = running, finished
                self._reported -= report.credit
                raise
            self._counts["reports"] += 1
            self._counts["outcomes"] += len(finished)
            if report.credit and self._reported == report.credit:
                log.info("%s: offered %d slots to %s", self.name, report.credit, self._address)
            if isinstance(answer, UnknownWorker):
                self._unknown.set()  # the results were taken; the credit was not
            self._report_wanted.set()

    def _take_report(self) -> tuple[list[Running], list[Outcome]]:
        """The oldest buffered starts and outcomes that fit one Report: at
        most ``REPORT_MAX_ITEMS`` of each, the outcomes within about half a
        frame (always at least one: a bigger one fails alone, as before)."""
        running = self._running[:REPORT_MAX_ITEMS]
        del self._running[:REPORT_MAX_ITEMS]
        budget = self.options.max_frame_bytes // 2
        count = 0
        for outcome in self._finished[:REPORT_MAX_ITEMS]:
            size = _OUTCOME_OVERHEAD + len(outcome.value or b"")
            if outcome.error is not None:
                size += len(outcome.error.message) + len(outcome.error.traceback)
            budget -= size
            if budget < 0 and count:
                break
            count += 1
        finished = self._finished[:count]
        del self._finished[:count]
        return running, finished

    async def _heartbeat_loop(self, interval: float) -> None:
        while True:
            await trio.sleep(interval)
            beat = Heartbeat(worker=self.worker, in_flight=self._in_flight,
                             succeeded_total=self._succeeded, failed_total=self._failed)
            answer = await self._ask(beat, timeout=interval * 2, quiet=True)
            if isinstance(answer, UnknownWorker):
                self._unknown.set()

    async def _ask(self, message: Any, *, timeout: float, quiet: bool = False) -> Any:
        """One request, one answer; ``None`` when none came in time (or a
        bad frame came)."""
        assert self._requester is not None
        try:
            [answer] = await self._requester.ask([message], timeout=timeout)
        except TimeoutError:
            if not quiet:
                self._quiet_log.event("%s: no answer to %s from %s within %g s", self.name,
                                      type(message).__name__, self._address, timeout)
            return None
        except FrameError as error:
            self._quiet_log.event("%s: bad answer from %s: %s", self.name, self._address, error)
            return None
        except (anyio.ClosedResourceError, trio.ClosedResourceError):
            return None  # the link is stopping
        if not isinstance(answer, (Ack, Assign, Registered, UnknownWorker)):
            self._quiet_log.event("%s: unexpected answer from %s: %r", self.name,
                                  self._address, [answer])
            return None
        return answer
