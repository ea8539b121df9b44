"""Nodes: one process running one topology.

``Node`` gives every actor a mailbox, wires the refs, and runs the actors
under a ``Supervisor`` in start order. ``Node.stop`` is the graceful stop:
actors are asked to stop in reverse start order (edges that take work in go
first), each handles what is queued for it and finishes its in-flight work,
and whatever is left at the deadline is cancelled.

``open_node`` runs a node inside an ``async with`` block (tests, Python
compositions); ``run_node`` runs one until a signal (the CLI): the first
SIGINT or SIGTERM stops it gracefully, a second stops it at once.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import trio

from actors.actor import ActorContext, ActorStats, GetStats
from actors.mailbox import Inbox, Ref, open_mailbox
from actors.errors import ActorError
from actors.supervisor import Child, Supervisor, unwrap
from actors.topology import ResolvedActor, Topology, kind_name

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found, unused-ignore]

log = logging.getLogger("actors.node")


class Node:
    """A running topology. Build it with ``open_node`` or ``run_node``."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.resolved: list[ResolvedActor] = topology.resolve()
        mailboxes: dict[str, tuple[Ref[Any], Inbox[Any]]] = {
            r.spec.name: open_mailbox(r.spec.mailbox, name=r.spec.name) for r in self.resolved
        }
        #: Every actor's ref, by name (what a test or the CLI talks to).
        self.refs: Mapping[str, Ref[Any]] = {name: pair[0] for name, pair in mailboxes.items()}
        children = []
        for item in self.resolved:
            spec = item.spec
            context = ActorContext(
                name=spec.name,
                kind=kind_name(spec.kind),
                inbox=mailboxes[spec.name][1],
                refs={ref: self.refs[target] for ref, target in spec.refs.items()},
                node=topology.name,
                peers=self.refs,
            )
            children.append(
                Child(make=_maker(item), context=context, ref=self.refs[spec.name])
            )
        self.supervisor = Supervisor(children, topology.node.supervision)
        self.stopped = trio.Event()

    @property
    def ready(self) -> Mapping[str, str | None]:
        """What each actor reported when it became ready, by name."""
        return {child.name: child.ready for child in self.supervisor.children}

    async def run(self, *, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every actor; report ready once all are; return once stopped.

        Raises:
            StartError, Escalation: see ``Supervisor.run``.
        """
        name = self.topology.name
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.supervisor.run)
                log.info("node %s ready with %d actors", name, len(self.resolved))
                task_status.started(self)
        except BaseExceptionGroup as group:
            _raise_runtime_error(group)
            raise
        finally:
            self.stopped.set()

    async def stop(self, deadline: float | None = None) -> None:
        """Stop gracefully: reverse start order, each actor finishing what it
        holds, all within ``deadline`` seconds (the topology's
        ``shutdown_deadline`` by default)."""
        if deadline is None:
            deadline = self.topology.node.shutdown_deadline
        log.info("node %s stopping (deadline %g s)", self.topology.name, deadline)
        await self.supervisor.stop(deadline)
        await self.stopped.wait()
        log.info("node %s stopped", self.topology.name)

    async def stats(self, timeout: float = 5.0) -> dict[str, ActorStats]:
        """Every actor's snapshot, asked for by message."""
        result: dict[str, ActorStats] = {}
        for name, ref in self.refs.items():
            result[name] = await ref.call(GetStats(), timeout=timeout)
        return result


def _raise_runtime_error(group: BaseExceptionGroup[Any]) -> None:
    """Raise the runtime's own error (StartError, Escalation) bare when it is
    the only thing a group holds, so callers can catch it by type."""
    error = unwrap(group)
    if isinstance(error, ActorError):
        raise error from None


def _maker(item: ResolvedActor) -> Any:
    def make(context: ActorContext) -> Any:
        return item.cls(item.options, context, **item.spec.params)

    return make


@asynccontextmanager
async def open_node(topology: Topology) -> AsyncIterator[Node]:
    """Run ``topology`` for the duration of the block; it is ready on entry
    and stopped gracefully on exit (cancelled at once if the block raised)."""
    node = Node(topology)
    body_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            try:
                yield node
            except BaseException as error:
                body_error = error
                nursery.cancel_scope.cancel()
                raise
            await node.stop()
    except BaseExceptionGroup as group:
        # Raise what happened bare: the block's own error, or the node's.
        failure = unwrap(group)
        if failure is body_error or isinstance(failure, ActorError):
            raise failure from None
        raise


async def run_node(
    topology: Topology, *, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED
) -> int:
    """Run ``topology`` until SIGINT or SIGTERM.

    Returns:
        0 after a graceful stop; 128 + the signal number when a second
        signal stopped it at once.
    """
    node = Node(topology)
    forced: int | None = None
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            task_status.started(node)

            async def watch_signals() -> None:
                nonlocal forced
                stopping = False
                async for signum in signals:
                    if stopping:
                        log.warning("second %s: stopping at once", signal.Signals(signum).name)
                        forced = signum
                        nursery.cancel_scope.cancel()
                        return
                    stopping = True
                    log.info("%s received: stopping gracefully", signal.Signals(signum).name)
                    nursery.start_soon(node.stop)

            nursery.start_soon(watch_signals)
            await node.stopped.wait()
            nursery.cancel_scope.cancel()
    return 0 if forced is None else 128 + forced
