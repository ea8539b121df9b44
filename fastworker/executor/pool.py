"""A pool of worker processes for ``isolation="process"`` tasks, which can
be killed: a time limit or a cancel really stops the task.

``ProcessPool.run(task, payload, limit)`` runs a sync task function in one
of at most ``size`` processes, started when a job finds none idle and kept
for the next jobs, and killed (with their process group) at the limit.
See docs/executor.md.
"""

from __future__ import annotations

import hashlib
import logging
import math
import pickle
import sys
import weakref
from types import TracebackType
from typing import Any

import attrs
import trio

from fastworker.calls import Called, timeout_error, type_name
from fastworker.executor.pipe import READY, Spec
from fastworker.executor.process import PoolProcess, Reason
from fastworker.messages import RemoteError
from fastworker.payload import pack_value
from fastworker.tasks import Task

__all__ = ["ProcessPool", "ProcessPoolStats"]

log = logging.getLogger("fastworker.executor.pool")

#: Seconds a new process may take to import the project and say it is ready.
DEFAULT_START_TIMEOUT = 60.0
#: Seconds ``aclose`` lets idle processes exit on their own before killing them.
STOP_GRACE = 5.0
#: Seconds a process that closed its socket has to exit before it is killed.
_EXIT_GRACE = 1.0


@attrs.frozen(kw_only=True)
class ProcessPoolStats:
    """A pool's snapshot. ``processes`` counts those alive (idle, busy or
    starting); ``killed_total`` those the pool killed (time limit, cancel,
    close), ``died_total`` those that died on their own."""

    size: int
    processes: int
    busy: int
    started_total: int
    killed_total: int
    died_total: int


@attrs.frozen
class _Shipment:
    """A task ready to send: a key naming this version of it, and how to load it."""

    key: str
    spec: Spec


class ProcessPool:
    """At most ``size`` worker processes, started when needed and reused.

    A job waits for a free process when all ``size`` are busy; that wait
    does not count toward its limit, and neither does a new process's
    start-up. Each task goes to a process once, by reference (module and
    name) when it is importable, otherwise by value (cloudpickle).

    ``start_timeout``: seconds a new process may take to be ready (``None``:
    no limit). Every wait here is on the trio clock: under an autojump
    ``MockClock`` it would pass while a real process works, so use the
    real clock with a pool.
    """

    def __init__(
        self,
        size: int,
        *,
        name: str = "pool",
        start_timeout: float | None = DEFAULT_START_TIMEOUT,
    ) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"process pool size must be a whole number >= 1, got {size!r}")
        if start_timeout is not None and not start_timeout > 0:
            raise ValueError(
                f"start_timeout must be a positive number of seconds or None, "
                f"got {start_timeout!r}"
            )
        self.size = size
        self.name = name
        self._start_timeout = start_timeout
        self._slots = trio.Semaphore(size)
        self._idle: list[PoolProcess] = []
        self._processes: set[PoolProcess] = set()
        self._shipments: weakref.WeakKeyDictionary[Task[Any, Any], _Shipment] = (
            weakref.WeakKeyDictionary()
        )
        self._busy = 0
        self._drained = trio.Event()
        self._closed = False
        self._started_total = 0
        self._killed_total = 0
        self._died_total = 0

    async def __aenter__(self) -> ProcessPool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def stats(self) -> ProcessPoolStats:
        """The pool now (idle processes that died are noticed here)."""
        self._prune_idle()
        return ProcessPoolStats(
            size=self.size,
            processes=len(self._processes),
            busy=self._busy,
            started_total=self._started_total,
            killed_total=self._killed_total,
            died_total=self._died_total,
        )

    async def run(self, task: Task[Any, Any], payload: bytes, limit: float | None) -> Called:
        """Run ``task`` on the pickled call ``payload`` in a pool process.

        Returns what ``call_sync(task, payload)`` returns there; a timeout
        error past ``limit`` seconds (the process is killed); a
        ``WorkerProcessDied`` error if the process died on its own (worth
        a retry, as any error is to a task without ``retry_on``, if it died
        running the task; not if it died before, starting up). The
        limit counts from when the process got the job: not the wait for
        a free process, nor a new process's start-up.

        Raises:
            trio.ClosedResourceError: the pool is closed, or was closed
                while the job ran (its process was killed).
            ValueError: ``limit`` is not a positive number of seconds.
        """
        if limit is not None and not limit > 0:
            raise ValueError(f"limit must be a positive number of seconds or None, got {limit!r}")
        if task.is_async:
            message = f"task {task.name} is async: a process pool runs sync functions"
            return None, RemoteError(type="TypeError", message=message), False
        try:
            shipment = self._shipment(task)
        except (TypeError, ValueError) as error:
            message = f"task {task.name} cannot be sent to a worker process: {error}"
            return None, RemoteError(type=type_name(error), message=message), False
        async with self._slots:
            if self._closed:
                raise trio.ClosedResourceError(f"process pool {self.name!r} is closed")
            process = self._take_idle() or self._start()
            self._busy += 1
            try:
                return await self._run_on(process, task, shipment, payload, limit)
            finally:
                self._busy -= 1
                if process.usable and not self._closed:
                    self._idle.append(process)
                else:
                    with trio.CancelScope(shield=True):
                        await self._stop(process, "cancelled")
                if self._closed and not self._busy:
                    self._drained.set()

    async def aclose(self) -> None:
        """Stop every process and reap it: idle ones are asked to exit
        (their socket closes), busy ones are killed (their ``run`` raises
        ``trio.ClosedResourceError``)."""
        self._closed = True
        idle, self._idle = self._idle, []
        try:
            for process in self._processes:
                if process in idle:
                    process.pipe.shutdown()  # the child reads EOF and exits
                else:
                    self._kill(process, "closed")
            with trio.move_on_after(STOP_GRACE):
                for process in idle:
                    await trio.lowlevel.wait_readable(process.exit_fd)
            for process in idle:
                await self._stop(process, "closed")
            if self._busy:
                await self._drained.wait()
        finally:
            for process in self._processes:  # cancelled: kill what is left, reap later
                process.kill()

    def kill_idle(self) -> None:
        """Close the pool at once, without waiting (its owner is being
        cancelled): kill the idle processes and free their resources; a
        busy one is killed and reaped by its own ``run``, which is being
        cancelled too."""
        self._closed = True
        idle, self._idle = self._idle, []
        for process in idle:
            self._kill(process, "closed")
            process.close()  # no task waits on its fds: it is idle
            self._processes.discard(process)

    async def _run_on(
        self,
        process: PoolProcess,
        task: Task[Any, Any],
        shipment: _Shipment,
        payload: bytes,
        limit: float | None,
    ) -> Called:
        process.usable = False
        if not process.ready:
            start_timeout = math.inf if self._start_timeout is None else self._start_timeout
            with trio.move_on_after(start_timeout) as starting:
                hello = await process.pipe.receive()
            if starting.cancelled_caught:
                self._kill(process, "start timeout")
                return await self._lost(
                    process, task, f"did not start within {start_timeout:g} s, "
                    f"before task {task.name} ran"
                )
            if hello != READY:
                return await self._lost(
                    process, task, f"died starting, before task {task.name} ran")
            process.ready = True
        spec = None if shipment.key in process.tasks else shipment.spec
        job = (shipment.key, task.name, spec, payload)
        message = pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
        pipe = process.pipe
        with trio.move_on_after(math.inf if limit is None else limit) as running:
            answer = await pipe.receive() if await pipe.send(message) else None
        if running.cancelled_caught:
            assert limit is not None
            await self._stop(process, "timeout")
            return None, timeout_error(task, limit), task.retries_on_timeout
        if answer is None:
            # The task's doing, most likely: worth a retry like any error
            # (the executor counts these deaths toward poison).
            _, error, _ = await self._lost(process, task, f"died running task {task.name}")
            return None, error, error is not None and task.retry_on is None
        process.tasks.add(shipment.key)
        value, error, retryable = pickle.loads(answer)
        process.usable = True
        return value, error, retryable

    async def _lost(self, process: PoolProcess, task: Task[Any, Any], what: str) -> Called:
        """The process ended before answering: reap it and say how (``what``
        happened, then its exit code or signal)."""
        if process.killed is None:
            # Its socket closes a moment before it is gone; should it close
            # the socket and live on, finish it (still a death, not a kill).
            with trio.move_on_after(_EXIT_GRACE):
                await trio.lowlevel.wait_readable(process.exit_fd)
            process.kill()
        await self._reap(process)
        if process.killed == "closed":
            raise trio.ClosedResourceError(
                f"process pool {self.name!r} was closed while running task {task.name}"
            )
        message = f"worker process {process.pid} {what}: {process.how_it_ended()}"
        if process.killed is None:
            self._died_total += 1
            log.warning("%s", message)
        return None, RemoteError(type="WorkerProcessDied", message=message), False

    def _take_idle(self) -> PoolProcess | None:
        self._prune_idle()
        return self._idle.pop() if self._idle else None

    def _prune_idle(self) -> None:
        """Forget idle processes that died (killed from outside)."""
        for process in [process for process in self._idle if process.exited()]:
            log.warning("idle worker process %d died: %s", process.pid, process.how_it_ended())
            self._idle.remove(process)
            self._processes.discard(process)
            self._died_total += 1
            process.close()

    def _start(self) -> PoolProcess:
        process = PoolProcess.start(f"{self.name}-{self._started_total + 1}")
        self._processes.add(process)
        self._started_total += 1
        log.debug("started worker process %d for pool %s", process.pid, self.name)
        return process

    def _kill(self, process: PoolProcess, reason: Reason) -> None:
        if process.killed is None and not process.exited():
            process.killed = reason
            self._killed_total += 1
            log.debug("killing worker process %d (%s)", process.pid, reason)
        process.kill()

    async def _stop(self, process: PoolProcess, reason: Reason) -> None:
        """Kill the process unless it is gone, then reap it."""
        if not process.closed:
            self._kill(process, reason)
            await self._reap(process)

    async def _reap(self, process: PoolProcess) -> None:
        await process.reap()
        self._processes.discard(process)

    def _shipment(self, task: Task[Any, Any]) -> _Shipment:
        """How ``task`` goes to a process (computed once per task).

        Raises:
            TypeError: it is not importable and cannot be pickled.
            ValueError: it pickles to more than ``pack_value`` accepts.
        """
        found = self._shipments.get(task)
        if found is None:
            reference = _reference(task)
            if reference is not None:
                module, qualname = reference
                found = _Shipment(f"{task.name}@{module}:{qualname}", ("ref", module, qualname))
            else:
                data = pack_value(task)
                digest = hashlib.blake2b(data, digest_size=8).hexdigest()
                found = _Shipment(f"{task.name}@{digest}", ("value", data))
            self._shipments[task] = found
        return found


def _reference(task: Task[Any, Any]) -> tuple[str, str] | None:
    """(module, qualname) when importing that gives back this very task."""
    module_name = getattr(task.fn, "__module__", None)
    qualname = getattr(task.fn, "__qualname__", None)
    if not module_name or not qualname or module_name == "__main__" or "<" in qualname:
        return None
    found: Any = sys.modules.get(module_name)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return (module_name, qualname) if found is task else None
