"""The Dashboard actor: serves the dashboard from inside the node.

It runs the Litestar app (``dashboard.app``) on hypercorn's trio server in
its own ``setup`` nursery, so the web handlers run in the node's trio loop
and talk to the other actors by message like any actor does. It never
reads another actor's attributes:

- once per ``sample_interval`` it asks every actor of the node (the
  runtime's ``peers``) for ``GetStats``; the views, the event stream and
  ``/metrics`` are built from the latest of these samples, and the
  throughput chart from a ring buffer of ``samples`` points, so memory
  stays flat however busy the node is;
- task lists and pages are asked of the ResultStore (``ListTasks``,
  ``GetTask``), whose own bounds (``max_entries``, ``ttl``) bound the
  history;
- actions are messages: ``Cancel`` and a ``Submit`` (a retry) to the
  PriorityInbox, ``DrainWorker`` to the Dispatcher, and the bulk ones
  (``Purge``, ``RetryTasks`` of the failed tasks) to the Admin;
- a workflow's page and actions are asked of the Workflows actor
  (``WorkflowQuery``, ``CancelWorkflow``, ``RetryWorkflow``).

Sampling costs a few dozen messages a second whether or not anyone looks;
the JSON of each sample is built once, however many pages are open.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
import secrets
import socket
import time
from collections import deque
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import attrs
import msgspec
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from actors import Actor, ActorContext, ActorStats, ConfigError, GetStats
from actors.errors import CallTimeout
from actors.frame import load_secret
from actors.requests import Requests
from dashboard import schema, views
from dashboard.errors import ActionError
from dashboard.views import NodeInfo, Sample, Totals
from dashboard.workflows import WorkflowActions
from fastworker import __version__
from fastworker.admin.retrying import retry_refusal, retry_submit
from fastworker.cancel import cancel_task
from fastworker.errors import Unavailable
from fastworker.internal import DrainWorker, GetTask, TaskDetail
from fastworker.limits import MAX_BULK
from fastworker.messages import (
    Accepted,
    ListTasks,
    Purge,
    Purged,
    Rejected,
    RetryReport,
    RetryTasks,
    TaskPage,
)
from fastworker.tasks import default_registry

log = logging.getLogger("dashboard")
#: hypercorn's own messages (its "Running on" line duplicates ours).
http_log = logging.getLogger("dashboard.http")
http_log.setLevel(logging.WARNING)

#: Requests of ``MAX_BULK`` one "Retry failed" makes at most.
BULK_ROUNDS = 10

#: The address that turns the dashboard off.
OFF = "off"


def _check_address(_: Any, __: Any, value: str) -> None:
    if value != OFF:
        parse_address(value)


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:8080`` for IPv6; an ``http://`` prefix is
    allowed) as a pair.

    Raises:
        ValueError: it is not of that form.
    """
    text = address.removeprefix("http://").rstrip("/")
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(
            f"expected host:port (e.g. 127.0.0.1:8080) or {OFF!r}, got {address!r}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@attrs.frozen(kw_only=True)
class DashboardOptions:
    """Where the dashboard listens and what it keeps.

    Attributes:
        address: ``host:port`` to listen on, or ``off``. Off loopback a
            token is required.
        token: the token that unlocks the dashboard (``Authorization:
            Bearer``); when set, actions always need it, and reads too when
            listening off loopback.
        token_file: a file holding the token instead.
        sample_interval: seconds between two snapshots of every actor.
        samples: throughput points kept for the chart (600 at 1 s: ten minutes).
        page_max: the most tasks one page of the task list may ask for.
        call_timeout: seconds to wait for another actor's answer.
        action_timeout: seconds to wait for a bulk action (purge, retry of
            the failed), longer than the Admin's own ``action_timeout``.
    """

    address: str = attrs.field(default="127.0.0.1:8080", validator=_check_address)
    token: str = ""
    token_file: str = ""
    sample_interval: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    samples: int = attrs.field(default=600, validator=attrs.validators.ge(2))
    page_max: int = attrs.field(default=500, validator=attrs.validators.ge(1))
    call_timeout: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))
    action_timeout: float = attrs.field(default=75.0, validator=attrs.validators.gt(0))

    def __attrs_post_init__(self) -> None:
        if self.address == OFF:
            return
        host, _ = parse_address(self.address)
        if not is_loopback(host) and not (self.token or self.token_file):
            raise ValueError(
                f"address {self.address} is not loopback: set a token (token, token_file, "
                "or FASTWORKER_DASHBOARD_TOKEN) so that only you can see and steer the node")


@attrs.frozen(kw_only=True)
class DashboardStats:
    """The dashboard's own snapshot: where it listens, the event streams
    open now, and the chart's points held."""

    url: str
    watchers: int
    samples: int


class Dashboard(Actor[Any]):
    """Serves the dashboard (see the module docstring)."""

    Options = DashboardOptions
    refs_required = ("inbox", "results", "dispatcher")
    #: The Admin does the bulk actions (purge, retry failed), the
    #: Workflows actor answers for workflows: without them those answer 503.
    refs_optional = ("admin", "workflows")

    def __init__(self, options: DashboardOptions, context: ActorContext) -> None:
        super().__init__(options, context)
        self.node = NodeInfo(name=context.node or "node", version=__version__,
                             started_at=time.time())
        self.token: str | None = None
        self.open_reads = True
        self.url = ""
        self._sample: Sample | None = None
        self._totals: tuple[float, Totals] | None = None
        self._series: deque[tuple[float, float, float, float]] = deque(maxlen=options.samples)
        self._snapshot_json = b""
        self._sampled = trio.Event()
        self._closing = trio.Event()
        self._server_done = trio.Event()
        self.watchers = 0
        #: The workflow page and actions (``dashboard.workflows``).
        self.workflows = WorkflowActions(self.name, functools.partial(
            self._call, "workflows") if "workflows" in self.refs else None)

    # -- the actor -------------------------------------------------------------

    async def setup(self, nursery: trio.Nursery) -> str | None:
        options = self.options
        if options.address == OFF:
            self._server_done.set()
            return "off"
        secret = load_secret(options.token, options.token_file)
        self.token = secret.decode() if secret is not None else None
        host, port = parse_address(options.address)
        self.open_reads = is_loopback(host)
        await self._take_sample()
        nursery.start_soon(self._sample_forever)
        from dashboard.app import create_app  # Litestar is imported only when serving

        try:
            # Bound here, so a port in use is a clear error and no socket leaks.
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            listener = socket.create_server((host, port), family=family, backlog=128)
        except OSError as error:
            raise ConfigError(
                f"cannot listen on {options.address} "
                f"({os.strerror(error.errno) if error.errno else error}); set "
                "FASTWORKER_DASHBOARD to another host:port, or to off") from None
        config = HypercornConfig()
        config.bind = [f"fd://{listener.detach()}"]  # hypercorn owns it from here
        config.accesslog = None
        config.errorlog = http_log
        config.graceful_timeout = 1.0
        config.keep_alive_timeout = 5.0
        binds = await nursery.start(partial(self._run_server, create_app(self), config))
        self.url = binds[0] if binds else f"http://{options.address}"
        await self._take_sample()  # the first one was taken before the url was known
        if self.token is None:
            access = "no token: actions open to anyone who can reach it"
        elif self.open_reads:
            access = "token required for actions"
        else:
            access = "token required"
        log.info("dashboard at %s (%s)", self.url, access)
        return f"{self.url}, {access}"

    async def _run_server(self, app: Any, config: HypercornConfig, *,
                     task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await serve(app, config, shutdown_trigger=self._closing.wait,
                        task_status=task_status)
        finally:
            self._server_done.set()

    def stopping(self) -> None:
        # Event streams end, so that the server can close at once.
        self._closing.set()
        self._sampled.set()

    async def drain(self) -> None:
        self.stopping()
        with trio.move_on_after(2.0):
            await self._server_done.wait()

    def stats_detail(self) -> DashboardStats:
        return DashboardStats(url=self.url, watchers=self.watchers, samples=len(self._series))

    async def handle(self, message: Any) -> Any:
        log.warning("%s: ignored %s (the dashboard takes no messages)", self.name,
                    type(message).__name__)
        return None

    # -- sampling -------------------------------------------------------------

    async def _sample_forever(self) -> None:
        while True:
            await trio.sleep(self.options.sample_interval)
            await self._take_sample()

    async def _take_sample(self) -> None:
        stats: dict[str, ActorStats] = {}
        old = self._sample.stats if self._sample is not None else {}

        async def ask(name: str, ref: Any) -> None:
            try:
                stats[name] = await ref.call(GetStats(), timeout=self.options.call_timeout)
            except (CallTimeout, trio.BrokenResourceError, trio.ClosedResourceError):
                if name in old:  # busy or stopping: its last snapshot stands
                    stats[name] = old[name]

        # Every actor at once: one that is busy delays the sample by at
        # most call_timeout, not by that much per busy actor.
        async with trio.open_nursery() as nursery:
            for name, ref in self.context.peers.items():
                if name == self.name:
                    stats[name] = self.stats()
                else:
                    nursery.start_soon(ask, name, ref)
        stats = {name: stats[name] for name in self.context.peers if name in stats}
        sample = Sample(at=time.time(), clock=trio.current_time(), stats=stats)
        totals = (sample.clock, Totals.of(sample))
        if self._totals is not None:
            self._series.append(views.rate_point(self._totals, totals, sample.at))
        self._totals = totals
        self._sample = sample
        self._snapshot_json = msgspec.json.encode(self.snapshot())
        self._sampled.set()
        self._sampled = trio.Event()

    @property
    def sample(self) -> Sample:
        assert self._sample is not None, "the first sample is taken in setup"
        return self._sample

    def overview(self) -> schema.Overview:
        return views.overview(self.sample, self.node, self._series, self.options.sample_interval)

    def workers(self) -> schema.Workers:
        return schema.Workers(workers=views.worker_views(self.sample, self.node))

    def actors(self) -> schema.Actors:
        return views.actor_views(self.sample, self.node)

    def snapshot(self) -> schema.Snapshot:
        return schema.Snapshot(overview=self.overview(), workers=self.workers(),
                              actors=self.actors())

    async def events(self) -> AsyncIterator[bytes]:
        """Each new sample's snapshot as JSON, until the dashboard stops."""
        self.watchers += 1
        try:
            yield self._snapshot_json
            while not self._closing.is_set():
                await self._sampled.wait()
                if self._closing.is_set():
                    return
                yield self._snapshot_json
        finally:
            self.watchers -= 1

    # -- tasks ----------------------------------------------------------------

    async def _call(self, ref: str, message: Any) -> Any:
        try:
            return await self.refs[ref].call(message, timeout=self.options.call_timeout)
        except CallTimeout:
            raise ActionError(503, f"the {ref} did not answer within "
                              f"{self.options.call_timeout:g} s; try again") from None

    async def list_tasks(self, *, state: str | None, task: str | None, id: str | None,
                         offset: int, limit: int) -> schema.TaskList:
        if state is not None and state not in views.STATES:
            raise ActionError(400, f"unknown state {state!r}; expected one of "
                              f"{', '.join(views.STATES)}")
        if offset < 0 or not 1 <= limit <= self.options.page_max:
            raise ActionError(400, f"offset must be >= 0 and limit between 1 and "
                              f"{self.options.page_max}")
        page: TaskPage = await self._call("results", ListTasks(
            state=state, task=task or None, id=id or None, offset=offset, limit=limit))
        return schema.TaskList(
            tasks=[views.summary(r) for r in page.records], total=page.total, offset=offset,
            limit=limit, states=list(views.STATES),
            task_names=views.task_names(self.sample, default_registry().names()))

    async def _detail(self, id: str) -> TaskDetail:
        detail: TaskDetail | None = await self._call("results", GetTask(id=id))
        if detail is None:
            raise ActionError(404, f"no task {id!r} is held (unknown, or its record expired)")
        return detail

    async def task(self, id: str) -> schema.TaskView:
        return views.task_view(await self._detail(id))

    async def cancel(self, id: str) -> schema.CancelResult:
        try:
            reply = await cancel_task(
                id, at_inbox=functools.partial(self._call, "inbox"),
                at_dispatcher=functools.partial(self._call, "dispatcher"),
                at_workflows=(functools.partial(self._call, "workflows")
                              if "workflows" in self.refs else None))
        except Unavailable as error:
            raise ActionError(503, f"{error}; try again") from None
        if reply.outcome not in ("not_queued", "unknown"):
            log.info("%s: task %s cancelled from the dashboard (%s)", self.name, id,
                     reply.outcome)
            return schema.CancelResult(id=id, outcome=reply.outcome)
        detail = await self._detail(id)  # 404 if the store does not know it either
        raise ActionError(409, f"task {id} is {detail.record.state}: only a queued, "
                          "scheduled or running task can be cancelled")

    async def retry(self, id: str) -> schema.RetryResult:
        detail = await self._detail(id)
        why = retry_refusal(detail)
        if why is not None:
            raise ActionError(409, f"task {id} cannot be retried: {why}")
        submit = retry_submit(detail, secrets.token_hex(4))
        [answer] = await self._call("inbox", Requests(messages=(submit,), peer="dashboard"))
        if isinstance(answer, Rejected):
            status = 503 if answer.error == "QueueFull" else 409
            raise ActionError(status, f"the retry of {id} was refused: {answer.message}")
        assert isinstance(answer, Accepted)
        log.info("%s: task %s retried from the dashboard as %s", self.name, id, submit.id)
        return schema.RetryResult(id=submit.id, retry_of=id)

    async def _admin(self, message: Any) -> Any:
        """The Admin's answer to a bulk action (400 if it refused it)."""
        if "admin" not in self.refs:
            raise ActionError(503, "no Admin actor is wired to the dashboard (its admin "
                              "ref): bulk actions are off")
        try:
            answer = await self.refs["admin"].call(message,
                                                   timeout=self.options.action_timeout)
        except CallTimeout:
            raise ActionError(503, f"the admin did not answer within "
                              f"{self.options.action_timeout:g} s; it may still finish") from None
        if isinstance(answer, Rejected):
            raise ActionError(400 if answer.error == "InvalidSubmission" else 503,
                              answer.message)
        return answer

    async def purge(self, *, priority: str | None, task: str | None, scheduled: bool,
                    confirm: bool) -> schema.PurgeResult:
        if not confirm:
            raise ActionError(400, "a purge cancels every queued task that matches: send "
                              "confirm=true to do it")
        purged: Purged = await self._admin(Purge(priority=priority, task=task,
                                                 scheduled=scheduled))
        log.info("%s: %d tasks purged from the dashboard", self.name, purged.count)
        return schema.PurgeResult(purged=purged.count)

    async def retry_failed(self, *, task: str | None, confirm: bool) -> schema.BulkRetryResult:
        if not confirm:
            raise ActionError(400, "this retries every failed task not yet retried that "
                              "matches: send confirm=true to do it")
        # One operation, up to BULK_ROUNDS requests: the same nonce, and only
        # tasks queued before the first, so its own failed retries are not taken.
        nonce, before, retried = secrets.token_hex(4), 0.0, 0
        refused: list[tuple[str, str]] = []
        for _ in range(BULK_ROUNDS):
            report: RetryReport = await self._admin(RetryTasks(
                failed=True, task=task, limit=MAX_BULK, before=before, nonce=nonce))
            before = report.before
            retried += len(report.retried)
            refused.extend(report.refused)
            if not report.remaining or not report.retried or report.refused:
                break
        return schema.BulkRetryResult(
            retried=retried, refused=len(refused), remaining=report.remaining,
            first_refusal=refused[0][1] if refused else None)

    async def drain_worker(self, worker: str, *, resume: bool) -> schema.DrainResult:
        known = await self._call("dispatcher", DrainWorker(worker=worker, resume=resume))
        if not known:
            listed = {w.id: w for w in views.worker_views(self.sample, self.node)}
            if worker in listed:
                raise ActionError(409, f"worker {worker} is {listed[worker].health}: "
                                  "nothing to drain")
            raise ActionError(404, f"no worker {worker!r}")
        return schema.DrainResult(worker=worker, draining=not resume)
