"""The Registry: which subworkers exist, and whether they are well.

Subworkers ``Register`` (id, host, pid, slots per kind, the tasks they can
run and the kind of slot each needs),
send a ``Heartbeat`` every ``heartbeat_interval`` seconds with their load,
and ``Deregister`` when they stop cleanly. They arrive through the workers
edge (port base+5) as ``Requests`` calls; each message is answered
(``Registered``, ``Ack`` or ``UnknownWorker``).

Health is judged by the silence since the last heartbeat, on trio's clock
(tests use ``MockClock``):

- ``alive``: heard from within 1.5 intervals;
- ``suspect``: a beat missed; gets no new work until it is heard again;
- ``lost``: ``missed_limit`` intervals of silence; its jobs are redelivered.

A worker that leaves (``Deregister``) or is lost stays listed for
``keep_gone`` seconds with when and why, for people looking at the fleet; a
heartbeat from a worker the Registry does not know (it was lost, or this
control plane restarted) is answered ``UnknownWorker``, and the worker
registers again. Every change is told to the Dispatcher (``WorkerJoined``,
``WorkerHealth``, ``WorkerLeft``), and a newcomer's task names to the
PriorityInbox (``KnownTasks``), so submissions of them are accepted.
"""

from __future__ import annotations

import logging
import reprlib
import time
from typing import Any, Literal, TypeAlias, Union

import attrs
import trio

from actors import Actor, ActorContext
from actors.requests import Requests
from fastworker.internal import KnownTasks, WorkerHealth, WorkerJoined, WorkerLeft
from fastworker.limits import check_register
from fastworker.messages import (
    Ack,
    Deregister,
    Heartbeat,
    Register,
    Registered,
    UnknownWorker,
    describe_slots,
)
from fastworker.stats import Health, RegistryStats, WorkerInfo

__all__ = ["Registry", "RegistryOptions", "RegistryStats", "WorkerInfo"]

log = logging.getLogger("fastworker.registry")
#: A name in a log line: a refused worker's may be of any length.
_short = reprlib.Repr()
_short.maxstring = 80

Accepts: TypeAlias = Union[Requests]


@attrs.frozen(kw_only=True)
class RegistryOptions:
    """How often subworkers beat, and how much silence is tolerated.

    Attributes:
        heartbeat_interval: seconds between a subworker's heartbeats (told to
            each at registration).
        missed_limit: intervals of silence after which a worker is lost.
        keep_gone: seconds a lost or departed worker stays listed.
        max_workers: registered workers at most; more are refused.
    """

    heartbeat_interval: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    missed_limit: int = attrs.field(default=3, validator=attrs.validators.ge(2))
    keep_gone: float = attrs.field(default=300.0, validator=attrs.validators.ge(0))
    max_workers: int = attrs.field(default=1000, validator=attrs.validators.ge(1))


@attrs.define(eq=False)
class _Listed:
    """A subworker the registry lists: its registration, health and last
    heartbeat (trio clock for decisions, wall clock for people)."""

    register: Register
    peer: str
    health: Health
    registered_at: float
    last_seen: float  # trio clock
    last_seen_at: float  # wall clock
    in_flight: int = 0
    succeeded_total: int = 0
    failed_total: int = 0
    gone: float = 0.0  # trio clock
    gone_at: float = 0.0
    reason: str = ""


class Registry(Actor[Accepts]):
    """Keeps the list of subworkers and judges their health (see the module)."""

    Options = RegistryOptions
    refs_required = ("dispatcher", "inbox")

    def __init__(self, options: RegistryOptions, context: ActorContext) -> None:
        super().__init__(options, context)
        self._workers: dict[str, _Listed] = {}
        self._counts = {"registered": 0, "lost": 0, "left": 0}

    async def setup(self, nursery: trio.Nursery) -> str | None:
        nursery.start_soon(self._watch)
        options = self.options
        return (
            f"heartbeat every {options.heartbeat_interval:g} s, "
            f"lost after {options.missed_limit} missed"
        )

    async def handle(self, message: Accepts) -> Any:
        match message:
            case Requests(messages=messages, peer=peer):
                return [await self._on_item(item, peer) for item in messages]
            case _:
                log.warning("%s: ignored %s", self.name, type(message).__name__)
                return None

    def stats_detail(self) -> RegistryStats:
        now = trio.current_time()
        return RegistryStats(
            workers=tuple(self._info(entry, now) for entry in self._workers.values()),
            registered_total=self._counts["registered"],
            lost_total=self._counts["lost"],
            left_total=self._counts["left"],
        )

    async def _on_item(self, item: Any, peer: str) -> Any:
        match item:
            case Register():
                return await self._register(item, peer)
            case Heartbeat(worker=worker):
                entry = self._workers.get(worker)
                if entry is None or entry.health in ("lost", "left"):
                    return UnknownWorker(worker=worker)
                entry.last_seen, entry.last_seen_at = trio.current_time(), time.time()
                entry.in_flight = item.in_flight
                entry.succeeded_total, entry.failed_total = item.succeeded_total, item.failed_total
                if entry.health == "suspect":
                    entry.health = "alive"
                    log.info("%s: worker %s is heard from again", self.name, worker)
                    await self.refs["dispatcher"].send(WorkerHealth(worker=worker, health="alive"))
                return Ack()
            case Deregister(worker=worker):
                entry = self._workers.get(worker)
                if entry is not None and entry.health not in ("lost", "left"):
                    await self._gone(entry, "left", "deregistered (a clean stop)")
                return Ack()
            case _:
                log.warning("%s: ignored %s from %s", self.name, type(item).__name__, peer)
                return None

    async def _register(self, register: Register, peer: str) -> Registered | UnknownWorker:
        worker = register.worker
        problem = check_register(register)
        if problem is not None:
            # Answered as unknown, so it asks again (a fixed subworker gets in).
            log.warning("%s: refused worker %s from %s: %s", self.name,
                        _short.repr(worker), peer, problem)
            return UnknownWorker(worker=worker)
        entry = self._workers.get(worker)
        rejoined = entry is not None and entry.health in ("alive", "suspect")
        live = sum(1 for e in self._workers.values() if e.health in ("alive", "suspect"))
        if not rejoined and live >= self.options.max_workers:
            log.warning("%s: refused worker %s: %d workers are registered already",
                        self.name, worker, live)
            return UnknownWorker(worker=worker)
        now, wall = trio.current_time(), time.time()
        self._workers[worker] = _Listed(
            register=register, peer=peer, health="alive", last_seen=now, last_seen_at=wall,
            registered_at=entry.registered_at if rejoined and entry else wall,
        )
        if not rejoined:  # a resent Register of a worker already listed changes nothing
            self._counts["registered"] += 1
            log.info(
                "%s: worker %s registered from %s (pid %d on %s, %s slots, %d tasks)",
                self.name, worker, peer, register.pid, register.host,
                describe_slots(register.slots), len(register.tasks),
            )
            await self.refs["inbox"].send(KnownTasks(
                names=frozenset(register.tasks), at_most_once=frozenset(register.at_most_once)))
            tasks = frozenset(register.tasks)
            kinds: tuple[int, ...] = ()
            if register.kinds:  # in the order of sorted(tasks), whatever the worker's
                kind_of = dict(zip(register.tasks, register.kinds, strict=True))
                kinds = tuple(kind_of[name] for name in sorted(tasks))
            await self.refs["dispatcher"].send(
                WorkerJoined(worker=worker, tasks=tasks, kinds=kinds, slots=register.slots,
                             prefetch=register.prefetch,
                             at_most_once=frozenset(register.at_most_once),
                             holding=register.holding, pull_seq=register.pull_seq,
                             report_seq=register.report_seq,
                             max_frame_bytes=register.max_frame_bytes)
            )
        options = self.options
        return Registered(worker=worker, heartbeat_interval=options.heartbeat_interval,
                          missed_limit=options.missed_limit)

    async def _gone(self, entry: _Listed, health: Literal["lost", "left"], reason: str) -> None:
        entry.health, entry.reason = health, reason
        entry.gone, entry.gone_at = trio.current_time(), time.time()
        self._counts[health] += 1
        worker = entry.register.worker
        level = logging.WARNING if health == "lost" else logging.INFO
        log.log(level, "%s: worker %s %s: %s", self.name, worker, health, reason)
        await self.refs["dispatcher"].send(
            WorkerLeft(worker=worker, reason=reason, lost=health == "lost")
        )

    async def _watch(self) -> None:
        """Judge every worker's silence twice per heartbeat interval."""
        options = self.options
        interval = options.heartbeat_interval
        while True:
            await trio.sleep(interval / 2)
            now = trio.current_time()
            for worker, entry in list(self._workers.items()):
                silence = now - entry.last_seen
                if entry.health in ("lost", "left"):
                    if now - entry.gone >= options.keep_gone:
                        del self._workers[worker]
                elif silence >= options.missed_limit * interval:
                    await self._gone(
                        entry, "lost",
                        f"no heartbeat for {silence:.1f} s "
                        f"({options.missed_limit} intervals of {interval:g} s)",
                    )
                elif silence >= 1.5 * interval and entry.health == "alive":
                    entry.health = "suspect"
                    log.warning("%s: worker %s is suspect: no heartbeat for %.1f s",
                                self.name, worker, silence)
                    await self.refs["dispatcher"].send(
                        WorkerHealth(worker=worker, health="suspect"))

    def _info(self, entry: _Listed, now: float) -> WorkerInfo:
        register = entry.register
        return WorkerInfo(
            worker=register.worker, host=register.host, pid=register.pid,
            slots=register.slots, tasks=tuple(sorted(register.tasks)),
            peer=entry.peer, health=entry.health, registered_at=entry.registered_at,
            last_seen_at=entry.last_seen_at, silent_for=now - entry.last_seen,
            in_flight=entry.in_flight, succeeded_total=entry.succeeded_total,
            failed_total=entry.failed_total, gone_at=entry.gone_at, reason=entry.reason,
        )
