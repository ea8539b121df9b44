"""The WorkerLink actor: its options, its message table (what the Executor
reports), its snapshot, and its graceful stop.

The link stands in for the Dispatcher and the ResultStore to its Executor:
``Credit``, ``Finished`` and ``Returned`` ask for a Report at once; a ``Running`` alone
waits up to ``running_delay`` for company (the job's end, usually), so that
a short task costs one Report, not two in a row. What the Executor reports
waits in a ``ReportBuffer``; a ``LinkSession`` carries it to the control
plane.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from collections.abc import Callable
from typing import TypeAlias, Union

import attrs
import trio

from actors import Actor, ActorContext
from actors.frame import DEFAULT_MAX_FRAME_BYTES, Framer
from actors.log import RateLimitedLog
from actors.nng import TlsOptions
from actors.secret import check_secret_choice, dialer_secret
from actors.tls import resolve_tls
from fastworker.link.reports import DEFAULT_MAX_BUFFERED_OUTCOMES, ReportBuffer
from fastworker.link.session import LinkSession
from fastworker.messages import CODEC, Assign, Credit, Finished, Retry, Returned, Running
from fastworker.probe import DEFAULT_DISCOVERY_PORT
from fastworker.stats import LinkStats

__all__ = ["LinkOptions", "WorkerLink"]

log = logging.getLogger("fastworker.link")

Accepts: TypeAlias = Union[Credit, Running, Finished, Retry, Returned]


@attrs.frozen(kw_only=True)
class LinkOptions:
    """How a subworker reaches its control plane.

    Attributes:
        address: the control plane's base address (as its
            ``FASTWORKER_ADDRESS``); empty: find it by discovery.
        discovery_port: the UDP port of the discovery beacon; 0: no
            discovery (then ``address`` is required).
        secret / secret_file: the control plane's shared secret
            (``actors.secret.frame_secret``); ``secret_file = "auto"`` is
            this user's per-host secret: made if missing for a control
            plane on this host (it may start after the link), read for one
            elsewhere (missing: an error at start for a given address, a
            control plane found by discovery passed over with the reason);
            none when this worker's certificate does mutual TLS (with TLS
            settings, a missing per-host secret is none).
        tls: TLS settings for a ``tls+tcp://`` control plane (``ca_file``,
            and ``cert_file`` / ``key_file`` for mutual TLS; empty strings
            are unset). With them, a plain ``tcp://`` address (given or
            discovered) is refused.
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
        check_secret_choice(self.secret, self.secret_file)
        if not self.address and not self.discovery_port:
            raise ValueError(
                "no address and discovery is off (discovery_port 0): set the control plane's "
                "address (FASTWORKER_ADDRESS) or a discovery port (FASTWORKER_DISCOVERY_PORT)")
        if self.address:
            resolve_tls(self.address, self.tls, "dial")


class WorkerLink(Actor[Accepts]):
    """Connects an Executor to a control plane's Dispatcher and Registry
    (see ``fastworker.link``)."""

    Options = LinkOptions
    refs_required = ("executor",)

    def __init__(self, options: LinkOptions, context: ActorContext) -> None:
        super().__init__(options, context)
        self.worker = options.worker or f"{socket.gethostname()}:{os.getpid()}"
        self._buffer = ReportBuffer(max_buffered=options.max_buffered_outcomes,
                                    max_frame_bytes=options.max_frame_bytes)
        framer_for: Callable[[str], Framer] = functools.partial(_framer_for, options)
        if options.address:
            framer = framer_for(options.address)  # a bad secret stops the node at start
            framer_for = lambda address: framer  # noqa: E731
        self._session = LinkSession(options, name=self.name, worker=self.worker,
                                    framer_for=framer_for, buffer=self._buffer, refs=self.refs)
        self._running_timer = False
        self._nursery: trio.Nursery | None = None
        self._dropped_log = RateLimitedLog(log, what="times", period=60.0)

    async def setup(self, nursery: trio.Nursery) -> str | None:
        self._nursery = nursery
        nursery.start_soon(self._session.connect)
        where = self.options.address or "the control plane found by discovery"
        return f"worker {self.worker}, to {where}"

    async def handle(self, message: Accepts) -> None:
        await self.handle_batch([message])

    async def handle_batch(self, messages: list[Accepts]) -> None:
        urgent = False
        for message in messages:
            match message:
                case Credit(slots=slots, tasks=tasks, prefetch=prefetch, holds=holds):
                    self._session.credit(slots, tasks, prefetch, holds)
                    urgent = True
                case Running():
                    self._buffer.add_running(message)
                    self._session.running(message)
                case Retry():
                    # The Report's outcomes say ``retry_in``: the control
                    # plane's Dispatcher retries from its own copy of the job.
                    pass
                case Finished(outcomes=outcomes):
                    urgent = True
                    self._buffer.add_outcomes(outcomes)
                    self._session.finished(outcomes)
                case Returned(jobs=jobs):
                    # Never dropped: the control plane queues them again.
                    urgent = True
                    self._buffer.add_returned(self._session.returned(jobs))
        self._bound_buffer()
        if urgent:
            self._session.want_report()
        elif self._buffer.has_running and not self._running_timer and self._nursery is not None:
            self._running_timer = True
            self._nursery.start_soon(self._report_running_soon)

    def _bound_buffer(self) -> None:
        """Keep at most ``max_buffered_outcomes`` undelivered outcomes (and
        ``Running`` reports): the oldest go, counted and logged."""
        over = self._buffer.bound()
        if over > 0:
            self._dropped_log.event(
                "%s: dropped the %d oldest outcomes not yet delivered to the control plane at "
                "%s (%d dropped in all); keeping the newest %d (max_buffered_outcomes)",
                self.name, over, self._session.address, self._buffer.outcomes_dropped,
                self._buffer.max_buffered)

    async def _report_running_soon(self) -> None:
        await trio.sleep(self.options.running_delay)
        self._running_timer = False
        self._session.want_report()

    def stopping(self) -> None:
        self._session.draining = True
        if self._nursery is not None:
            self._nursery.start_soon(self._session.drain_request)

    async def drain(self) -> None:
        """Wait for the last Pull's answer and for the ``Drain`` request's;
        then ask the executor (it stops after the link) to give back the
        jobs it holds that have not started, let it finish the others,
        report all of them, deregister."""
        session = self._session
        session.draining = True
        if session.requester is None:
            return
        if session.registered:
            if not await self._answered_while_heard(session):
                log.warning(
                    "%s: the control plane at %s has answered nothing for %g s: stopping "
                    "without it (it hands the %d jobs held here to other workers once it "
                    "finds this one gone)", self.name, session.address,
                    trio.current_time() - session.last_answer, session.in_flight)
                await session.requester.wire.aclose()
                return
            # Only now: the last Pull's jobs have reached the executor (they
            # go back too), and the control plane, drained, will not place
            # the jobs given back on this worker again.
            if session.in_flight > 0:
                await self.refs["executor"].send(Assign(jobs=(), give_back=True))
            await self.serve_until(lambda: session.in_flight <= 0 or not session.registered)
            await session.deregister()
        await session.requester.wire.aclose()

    async def _answered_while_heard(self, session: LinkSession) -> bool:
        """Wait for the last Pull's answer and the Drain's; False once the
        control plane has been silent for ``SILENT_INTERVALS`` heartbeat
        intervals while this worker is idle (it may be gone: a SIGTERM need
        not wait the whole shutdown deadline for it). A worker holding jobs
        or results waits on: giving up would drop what they report, and a
        control plane that is only slow would run them again."""
        interval = session.heartbeat_interval or 1.0
        while not (session.pulling_done.is_set() and session.drain_done.is_set()):
            if session.silent() and session.idle:
                return False
            with trio.move_on_after(interval / 4):
                await session.pulling_done.wait()
                await session.drain_done.wait()
        return True

    def stats_detail(self) -> LinkStats:
        session, counts = self._session, self._session.counts
        return LinkStats(
            worker=self.worker, control_plane=session.address, registered=session.registered,
            registrations_total=counts["registrations"], jobs_received_total=counts["jobs"],
            outcomes_reported_total=counts["outcomes"], reports_total=counts["reports"],
            draining=session.draining, buffered_outcomes=self._buffer.outcomes,
            outcomes_dropped_total=self._buffer.outcomes_dropped,
            running_dropped_total=self._buffer.running_dropped,
            returned_total=counts["returned"],
        )


def _framer_for(options: LinkOptions, address: str) -> Framer:
    """The framer for the control plane at ``address``, signing by
    ``actors.secret.dialer_secret`` (the per-host secret made if missing for
    a control plane on this host, only read for another host's).

    Raises:
        ConfigError: the secret settings cannot be used (the message says why).
    """
    secret = dialer_secret(options.secret, options.secret_file, address=address, tls=options.tls)
    return Framer(CODEC, secret=secret, max_frame_bytes=options.max_frame_bytes)
