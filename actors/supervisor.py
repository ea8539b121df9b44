"""Supervision: start actors in order, restart the ones that crash, stop them
in reverse.

A ``Supervisor`` owns its children's trio tasks. When one crashes, the
``RestartPolicy`` decides what is restarted (OTP's strategies):

- ``one_for_one``: only the crashed actor;
- ``one_for_all``: every actor, stopped in reverse and restarted in order;
- ``rest_for_one``: the crashed actor and those started after it.

A restarted actor is a fresh instance on the same inbox, so its refs stay
valid and the messages queued for it wait. Restarts are paced by an
exponential backoff, and more than ``max_restarts`` of them within
``within`` seconds escalate: the supervisor stops everything and raises
``Escalation``, which makes the node exit with a clear error.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any, Literal

import attrs
import trio

from actors.actor import STOP, Actor, ActorContext
from actors.errors import Escalation, StartError
from actors.mailbox import Ref

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found, unused-ignore]

log = logging.getLogger("actors.supervisor")

Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]


@attrs.frozen(kw_only=True)
class RestartPolicy:
    """How a supervisor answers a crash.

    Attributes:
        strategy: which actors a crash restarts.
        max_restarts: restarts allowed within ``within`` seconds; one more
            escalates.
        within: the sliding window, in seconds.
        backoff_initial: the delay before the first restart in a window;
            it doubles for each further restart in the window.
        backoff_max: the longest delay.
    """

    strategy: Strategy = "one_for_one"
    max_restarts: int = attrs.field(default=5, validator=attrs.validators.ge(0))
    within: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))
    backoff_initial: float = attrs.field(default=0.1, validator=attrs.validators.ge(0))
    backoff_max: float = attrs.field(default=5.0, validator=attrs.validators.ge(0))

    def backoff(self, recent_restarts: int) -> float:
        """The delay before a restart, given the restarts already in the window."""
        return min(self.backoff_max, self.backoff_initial * 2.0 ** recent_restarts)


@attrs.define(eq=False, kw_only=True)
class Child:
    """One supervised actor: how to build it, and its current run."""

    make: Callable[[ActorContext], Actor[Any]]
    context: ActorContext
    ref: Ref[Any]
    instance: Actor[Any] | None = None
    ready: str | None = None
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    finished: trio.Event = attrs.field(factory=trio.Event)

    @property
    def name(self) -> str:
        return self.context.name


def unwrap(error: BaseException) -> BaseException:
    """The error inside nested single-error groups (trio's nurseries wrap)."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


def describe(error: BaseException) -> str:
    """``Type: message`` of an error, looking through single-error groups."""
    error = unwrap(error)
    return f"{type(error).__name__}: {error}"


class _Status:
    """Passes ``started`` through, remembering that it was called."""

    def __init__(self, inner: trio.TaskStatus[Any]) -> None:
        self.inner = inner
        self.started_ = False

    def started(self, value: Any = None) -> None:
        self.started_ = True
        self.inner.started(value)


class Supervisor:
    """Runs children in start order under a ``RestartPolicy``."""

    def __init__(self, children: Sequence[Child], policy: RestartPolicy) -> None:
        self.children = list(children)
        self.policy = policy
        self._stopping = False
        self._restart_times: list[float] = []
        self._failure: BaseException | None = None
        # One report per run of a child at most, so the number of children
        # bounds what can be queued here.
        self._crash_tx, self._crash_rx = trio.open_memory_channel[
            tuple[Child, Actor[Any], BaseException]
        ](math.inf)
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start every child in order, report ready, then supervise until
        ``stop`` is called.

        Raises:
            StartError: a child failed before it was ready.
            Escalation: restarts exceeded the policy's limit.
        """
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for child in self.children:
                try:
                    await self._start(child)
                except Exception as error:
                    self._failure = StartError(
                        f"actor {child.name} failed to start: {describe(error)}"
                    )
                    self._failure.__cause__ = error
                    nursery.cancel_scope.cancel()
                    break
            else:
                task_status.started()
                await self._watch()
        if self._failure is not None:
            raise self._failure

    async def stop(self, deadline: float) -> None:
        """Stop children in reverse start order, each after it has handled
        what is queued for it and finished its in-flight work; whatever is
        still running at ``deadline`` seconds is cancelled."""
        self._stopping = True
        for child in self.children:
            if child.instance is not None and not child.finished.is_set():
                try:
                    child.instance.stopping()
                except Exception:  # one actor's hook must not spoil the others' stop
                    log.exception("%s: stopping() raised", child.name)
        with trio.move_on_after(deadline) as scope:
            for child in reversed(self.children):
                if not child.finished.is_set():
                    try:
                        await child.ref.send(STOP)
                    except trio.BrokenResourceError:
                        pass
                    await child.finished.wait()
        if scope.cancelled_caught:
            running = [c.name for c in self.children if not c.finished.is_set()]
            log.warning(
                "shutdown deadline of %s s passed; cancelling %s", deadline, ", ".join(running)
            )
            for child in self.children:
                child.scope.cancel()
            for child in self.children:
                await child.finished.wait()
        # Inboxes close only once nothing runs: an actor still finishing its
        # work may send to one that has already stopped (a cycle: the
        # executor returns credit to the dispatcher), and that must not crash it.
        for child in self.children:
            self._close(child)
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def _close(self, child: Child) -> None:
        left = child.context.inbox.stats().current_depth + len(child.context.pending)
        if left:
            log.warning(
                "actor %s stopped with %d message%s left in its inbox",
                child.name,
                left,
                "" if left == 1 else "s",
            )
        child.context.inbox.close()

    async def _start(self, child: Child) -> None:
        assert self._nursery is not None
        child.instance = child.make(child.context)
        child.scope = trio.CancelScope()
        child.finished = trio.Event()
        child.ready = await self._nursery.start(self._child_main, child, child.instance)
        suffix = f": {child.ready}" if child.ready else ""
        log.info("started %s (%s)%s", child.name, child.context.kind, suffix)

    async def _child_main(
        self, child: Child, instance: Actor[Any], *, task_status: trio.TaskStatus[Any]
    ) -> None:
        status = _Status(task_status)
        try:
            with child.scope:
                await instance.run(task_status=status)
        except Exception as error:
            if not status.started_:
                raise
            self._crash_tx.send_nowait((child, instance, error))
        finally:
            child.finished.set()

    async def _watch(self) -> None:
        async for child, instance, error in self._crash_rx:
            if self._stopping:
                log.warning("actor %s crashed while stopping: %s", child.name, describe(error))
                continue
            if child.instance is not instance:
                continue  # a run that was already replaced
            await self._restart(child, error)

    async def _restart(self, crashed: Child, error: BaseException) -> None:
        policy = self.policy
        now = trio.current_time()
        self._restart_times = [t for t in self._restart_times if now - t < policy.within]
        if len(self._restart_times) >= policy.max_restarts:
            self._failure = Escalation(
                f"actor {crashed.name} crashed and the restart limit is reached "
                f"({policy.max_restarts} restarts within {policy.within:g} s); "
                f"last error: {describe(error)}"
            )
            self._failure.__cause__ = error
            assert self._nursery is not None
            self._nursery.cancel_scope.cancel()
            return
        delay = policy.backoff(len(self._restart_times))
        self._restart_times.append(now)
        index = self.children.index(crashed)
        if policy.strategy == "one_for_all":
            affected = self.children
        elif policy.strategy == "rest_for_one":
            affected = self.children[index:]
        else:
            affected = [crashed]
        log.warning(
            "actor %s crashed: %s; restarting %s in %.3g s (%s, restart %d of %d within %g s)",
            crashed.name,
            describe(error),
            ", ".join(c.name for c in affected),
            delay,
            policy.strategy,
            len(self._restart_times),
            policy.max_restarts,
            policy.within,
            exc_info=unwrap(error),
        )
        for child in reversed(affected):
            if child is not crashed:
                child.scope.cancel()
                await child.finished.wait()
        await trio.sleep(delay)
        for child in affected:
            child.context.restarts += 1
            try:
                await self._start(child)
            except Exception as start_error:
                # A failed restart is one more crash of the same actor.
                self._crash_tx.send_nowait((child, child.instance, start_error))  # type: ignore[arg-type]
                return
