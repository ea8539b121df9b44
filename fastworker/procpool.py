"""A pool of worker processes for ``isolation="process"`` tasks, which can be
killed: a time limit or a cancel really stops the task.

``ProcessPool.run(task, payload, limit)`` runs a sync task function in one
of at most ``size`` processes and returns what ``fastworker.calls.call_sync``
returns there. Processes are started (``multiprocessing``'s ``spawn``: the
parent is a threaded trio process, so no fork) when a job finds none idle,
and are kept for the next jobs. A job waits for a free process when all
``size`` are busy; that wait does not count toward its limit, and neither
does a new process's start-up (importing the project takes ~0.4 s), which
ends with a ready message before the job is sent.

Each process has a socket pair to the parent carrying length-prefixed
pickles. The parent's end is non-blocking and read with
``trio.lowlevel.wait_readable``, so a large message never blocks the trio
thread; the child's end is plain blocking. While waiting for an answer the
parent also waits on the process's pidfd (its ``sentinel`` where there is
no pidfd), so a death is seen even if a grandchild holds the socket open.

The task goes to a process once: by reference (module and name, imported
there) when it is its module's attribute of that name, otherwise by value
through ``fastworker.payload`` (cloudpickle). The parent remembers which
tasks each process holds.

At the limit, or when the caller is cancelled, the process is sent SIGKILL
at once (a SIGTERM grace would buy nothing: Python's default SIGTERM does
not run ``finally`` blocks either) and reaped; the next job starts a new
one. Each process leads its own process group, and the kill goes to the
group, so whatever the task itself started dies with it. A process that
dies on its own (``os._exit``, a crash, a kill from outside) fails its job
with ``WorkerProcessDied``. Children ignore SIGINT: Ctrl-C is the parent's
to handle, and it stops them. ``aclose`` lets idle processes exit (their
socket closes) and kills busy ones; at interpreter exit any process still
alive is killed, so a pool left open cannot hang the exit.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib
import logging
import math
import multiprocessing
import os
import pickle
import signal
import socket
import struct
import sys
import weakref
from collections.abc import Awaitable, Callable
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any, Literal

import attrs
import trio

from fastworker.calls import Called, call_sync, remote_error, timeout_error, type_name
from fastworker.messages import RemoteError
from fastworker.payload import pack_value, unpack_value
from fastworker.tasks import Task

__all__ = ["ProcessPool", "ProcessPoolStats"]

log = logging.getLogger("fastworker.procpool")

#: Seconds a new process may take to import the project and say it is ready.
DEFAULT_START_TIMEOUT = 60.0
#: Seconds ``aclose`` lets idle processes exit on their own before killing them.
STOP_GRACE = 5.0
#: Seconds to wait for a killed process to be gone before giving up on it.
_REAP_TIMEOUT = 10.0
#: Seconds a process that closed its socket has to exit before it is killed.
_EXIT_GRACE = 1.0

#: Every message is its length (8 bytes, big-endian), then that many bytes.
_HEADER = struct.Struct("!Q")
_CHUNK = 256 * 1024
_READY = b"ready"

#: How a task travels: ("ref", module, qualname) or ("value", cloudpickle bytes).
_Spec = tuple[Literal["ref"], str, str] | tuple[Literal["value"], bytes]
#: Why the pool killed a process.
_Reason = Literal["timeout", "cancelled", "start timeout", "closed"]


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
    spec: _Spec


class _Worker:
    """One process and the parent's end of its socket."""

    def __init__(self, process: BaseProcess, sock: socket.socket) -> None:
        assert process.pid is not None
        self.process = process
        self.pid: int = process.pid
        self.sock = sock
        sock.setblocking(False)
        self.pidfd: int | None = _pidfd_open(self.pid)
        self.exit_fd: int = self.pidfd if self.pidfd is not None else process.sentinel
        self.inbox = bytearray()
        self.tasks: set[str] = set()  # keys of the tasks it has loaded
        self.ready = False
        self.usable = False  # set after each clean job: may go back to the idle list
        self.killed: _Reason | None = None
        self.exitcode: int | None = None
        self.closed = False

    def exited(self) -> bool:
        """Whether the process is gone (this reaps it if it just exited)."""
        if self.exitcode is None and not self.closed:
            self.exitcode = self.process.exitcode
        return self.exitcode is not None

    def kill(self) -> None:
        """SIGKILL the process and its process group, if it is still running."""
        if self.closed or self.exited():
            return
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:  # not yet its own group leader
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    async def send(self, message: bytes) -> bool:
        """Send one message; ``False`` if the process is gone."""
        view = memoryview(_HEADER.pack(len(message)) + message)
        while view:
            try:
                sent = self.sock.send(view)
            except BlockingIOError:
                await _first_of(
                    lambda: trio.lowlevel.wait_writable(self.sock.fileno()),
                    lambda: trio.lowlevel.wait_readable(self.exit_fd),
                )
                if self.exited():
                    return False
                continue
            except OSError:  # EPIPE, ECONNRESET: the child end is closed
                return False
            view = view[sent:]
        return True

    async def receive(self) -> bytes | None:
        """The next message; ``None`` if the process is gone first."""
        while True:
            is_open = self._fill()
            message = self._take()
            if message is not None:
                return message
            if not is_open or self.exited():
                return None
            await _first_of(
                lambda: trio.lowlevel.wait_readable(self.sock.fileno()),
                lambda: trio.lowlevel.wait_readable(self.exit_fd),
            )

    def _fill(self) -> bool:
        """Read what the socket holds now; ``False`` once it is closed."""
        while True:
            try:
                chunk = self.sock.recv(_CHUNK)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not chunk:
                return False
            self.inbox += chunk

    def _take(self) -> bytes | None:
        if len(self.inbox) < _HEADER.size:
            return None
        (length,) = _HEADER.unpack_from(self.inbox)
        end = _HEADER.size + length
        if len(self.inbox) < end:
            return None
        message = bytes(self.inbox[_HEADER.size : end])
        del self.inbox[:end]
        return message

    def close(self) -> None:
        """Free the parent's resources (the process should be reaped)."""
        if self.closed:
            return
        if self.exited():
            self.process.close()
        self.closed = True
        self.sock.close()
        if self.pidfd is not None:
            os.close(self.pidfd)

    def end(self) -> str:
        """How the process ended, for messages."""
        code = self.exitcode
        if code is None:
            return "still running"
        if code < 0:
            try:
                return f"killed by signal {signal.Signals(-code).name} ({-code})"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit code {code}"


class ProcessPool:
    """At most ``size`` worker processes, started when needed and reused;
    see the module.

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
        self._context = multiprocessing.get_context("spawn")
        self._slots = trio.Semaphore(size)
        self._idle: list[_Worker] = []
        self._workers: set[_Worker] = set()
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
            processes=len(self._workers),
            busy=self._busy,
            started_total=self._started_total,
            killed_total=self._killed_total,
            died_total=self._died_total,
        )

    async def run(self, task: Task[Any, Any], payload: bytes, limit: float | None) -> Called:
        """Run ``task`` on the pickled call ``payload`` in a pool process.

        Returns what ``call_sync(task, payload)`` returns there; a timeout
        error past ``limit`` seconds (the process is killed); a
        ``WorkerProcessDied`` error if the process died on its own. The
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
            worker = self._take_idle() or self._start()
            self._busy += 1
            try:
                return await self._run_on(worker, task, shipment, payload, limit)
            finally:
                self._busy -= 1
                if worker.usable and not self._closed:
                    self._idle.append(worker)
                else:
                    with trio.CancelScope(shield=True):
                        await self._stop(worker, "cancelled")
                if self._closed and not self._busy:
                    self._drained.set()

    async def aclose(self) -> None:
        """Stop every process and reap it: idle ones are asked to exit
        (their socket closes), busy ones are killed (their ``run`` raises
        ``trio.ClosedResourceError``)."""
        self._closed = True
        idle, self._idle = self._idle, []
        try:
            for worker in self._workers:
                if worker in idle:
                    with contextlib.suppress(OSError):  # the child reads EOF and exits
                        worker.sock.shutdown(socket.SHUT_RDWR)
                else:
                    self._kill(worker, "closed")
            with trio.move_on_after(STOP_GRACE):
                for worker in idle:
                    await trio.lowlevel.wait_readable(worker.exit_fd)
            for worker in idle:
                await self._stop(worker, "closed")
            if self._busy:
                await self._drained.wait()
        finally:
            for worker in self._workers:  # cancelled: kill what is left, reap later
                worker.kill()

    async def _run_on(
        self,
        worker: _Worker,
        task: Task[Any, Any],
        shipment: _Shipment,
        payload: bytes,
        limit: float | None,
    ) -> Called:
        worker.usable = False
        if not worker.ready:
            start_timeout = math.inf if self._start_timeout is None else self._start_timeout
            with trio.move_on_after(start_timeout) as starting:
                hello = await worker.receive()
            if starting.cancelled_caught:
                self._kill(worker, "start timeout")
                return await self._lost(
                    worker, task, f"did not start within {start_timeout:g} s, "
                    f"before task {task.name} ran"
                )
            if hello != _READY:
                return await self._lost(worker, task, f"died starting, before task {task.name} ran")
            worker.ready = True
        spec = None if shipment.key in worker.tasks else shipment.spec
        job = (shipment.key, task.name, spec, payload)
        message = pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
        with trio.move_on_after(math.inf if limit is None else limit) as running:
            answer = await worker.receive() if await worker.send(message) else None
        if running.cancelled_caught:
            assert limit is not None
            await self._stop(worker, "timeout")
            return None, timeout_error(task, limit), task.retries_on_timeout
        if answer is None:
            return await self._lost(worker, task, f"died running task {task.name}")
        worker.tasks.add(shipment.key)
        value, error, retryable = pickle.loads(answer)
        worker.usable = True
        return value, error, retryable

    async def _lost(self, worker: _Worker, task: Task[Any, Any], what: str) -> Called:
        """The process ended before answering: reap it and say how (``what``
        happened, then its exit code or signal)."""
        if worker.killed is None:
            # Its socket closes a moment before it is gone; should it close
            # the socket and live on, finish it (still a death, not a kill).
            with trio.move_on_after(_EXIT_GRACE):
                await trio.lowlevel.wait_readable(worker.exit_fd)
            worker.kill()
        await self._reap(worker)
        if worker.killed == "closed":
            raise trio.ClosedResourceError(
                f"process pool {self.name!r} was closed while running task {task.name}"
            )
        message = f"worker process {worker.pid} {what}: {worker.end()}"
        if worker.killed is None:
            self._died_total += 1
            log.warning("%s", message)
        return None, RemoteError(type="WorkerProcessDied", message=message), False

    def _take_idle(self) -> _Worker | None:
        self._prune_idle()
        return self._idle.pop() if self._idle else None

    def _prune_idle(self) -> None:
        """Forget idle processes that died (killed from outside)."""
        for worker in [w for w in self._idle if w.exited()]:
            log.warning("idle worker process %d died: %s", worker.pid, worker.end())
            self._idle.remove(worker)
            self._workers.discard(worker)
            self._died_total += 1
            worker.close()

    def _start(self) -> _Worker:
        parent, child = socket.socketpair()
        process = self._context.Process(
            target=_child_main,
            args=(child,),
            name=f"{self.name}-{self._started_total + 1}",
        )
        try:
            process.start()  # fork+exec, then writes a few KB: ~1 ms
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        worker = _Worker(process, parent)
        _LIVE.add(worker)
        _register_atexit()
        self._workers.add(worker)
        self._started_total += 1
        log.debug("started worker process %d for pool %s", worker.pid, self.name)
        return worker

    def _kill(self, worker: _Worker, reason: _Reason) -> None:
        if worker.killed is None and not worker.exited():
            worker.killed = reason
            self._killed_total += 1
            log.debug("killing worker process %d (%s)", worker.pid, reason)
        worker.kill()

    async def _stop(self, worker: _Worker, reason: _Reason) -> None:
        """Kill the process unless it is gone, then reap it."""
        if not worker.closed:
            self._kill(worker, reason)
            await self._reap(worker)

    async def _reap(self, worker: _Worker) -> None:
        """Wait for the process to be gone (it must be exiting), collect its
        exit status and free its resources."""
        if worker.closed:
            return
        with trio.move_on_after(_REAP_TIMEOUT):
            await trio.lowlevel.wait_readable(worker.exit_fd)
            if not worker.exited():  # the sentinel closes a moment before the exit status
                await trio.to_thread.run_sync(worker.process.join)
        if not worker.exited():
            log.error("worker process %d did not exit within %g s; left unreaped",
                      worker.pid, _REAP_TIMEOUT)
        worker.close()
        self._workers.discard(worker)

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


def _pidfd_open(pid: int) -> int | None:
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return None
    try:
        fd: int = pidfd_open(pid)
    except OSError:  # kernel before 5.3, or a sandbox without it
        return None
    return fd


async def _first_of(*waits: Callable[[], Awaitable[None]]) -> None:
    """Return as soon as any of ``waits`` returns."""
    async with trio.open_nursery() as nursery:
        for wait in waits:
            nursery.start_soon(_then_cancel, wait, nursery.cancel_scope)


async def _then_cancel(wait: Callable[[], Awaitable[None]], scope: trio.CancelScope) -> None:
    await wait()
    scope.cancel()


#: Processes of every pool not yet reaped, killed at interpreter exit.
_LIVE: weakref.WeakSet[_Worker] = weakref.WeakSet()
_atexit_registered = False


def _register_atexit() -> None:
    # Registered after multiprocessing's own exit handler (multiprocessing.util
    # is imported by the first start at the latest), so it runs first: that
    # one joins every non-daemon child, and an idle process of a pool left
    # open would wait for a job for ever.
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(_kill_live)
        _atexit_registered = True


def _kill_live() -> None:
    for worker in list(_LIVE):
        if not worker.closed:
            worker.kill()


# The child's side. ------------------------------------------------------------------


def _child_main(sock: socket.socket) -> None:
    """A pool process: load tasks, run jobs, answer, until the socket closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.setpgrp()  # so a kill reaches whatever the task starts
    loaded: dict[str, Task[Any, Any]] = {}
    _send_blocking(sock, _READY)
    while True:
        message = _receive_blocking(sock)
        if message is None:
            return
        key, name, spec, payload = pickle.loads(message)
        answer = _call(loaded, key, name, spec, payload)
        _send_blocking(sock, pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))


def _call(
    loaded: dict[str, Task[Any, Any]], key: str, name: str, spec: _Spec | None, payload: bytes
) -> Called:
    """Load the task if it is new here, then call it."""
    found = loaded.get(key)
    if found is None:
        if spec is None:
            message = f"task {name} was never sent to worker process {os.getpid()}"
            return None, RemoteError(type="TaskLoadError", message=message), False
        try:
            found = loaded[key] = _load(spec)
        except Exception as error:
            failure = remote_error(error)
            message = (
                f"worker process {os.getpid()} cannot load task {name}: "
                f"{failure.type}: {failure.message}"
            )
            return None, attrs.evolve(failure, type="TaskLoadError", message=message), False
    return call_sync(found, payload)


def _load(spec: _Spec) -> Task[Any, Any]:
    if spec[0] == "ref":
        found: Any = importlib.import_module(spec[1])
        for part in spec[2].split("."):
            found = getattr(found, part)
    else:
        found = unpack_value(spec[1])
    if not isinstance(found, Task):
        raise TypeError(f"expected a Task, got {type(found).__name__}")
    return found


def _send_blocking(sock: socket.socket, message: bytes) -> None:
    sock.sendall(_HEADER.pack(len(message)) + message)


def _receive_blocking(sock: socket.socket) -> bytes | None:
    header = _read_exactly(sock, _HEADER.size)
    if header is None:
        return None
    (length,) = _HEADER.unpack(header)
    return _read_exactly(sock, length)


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    """``size`` bytes, or ``None`` at EOF."""
    data = bytearray(size)
    view = memoryview(data)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            return None
        got += n
    return bytes(data)
