"""One process of a pool, as the parent sees it: started with
``multiprocessing``'s ``spawn`` (the parent is a threaded trio process, so
no fork), its pipe, its pidfd, how it is killed and reaped, and how it
ended. At interpreter exit any process still alive is killed.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import weakref
from multiprocessing.process import BaseProcess
from typing import Literal

import trio

from actors.log import configured
from fastworker.executor import child
from fastworker.executor.pipe import Pipe

log = logging.getLogger("fastworker.executor.pool")

#: Why the pool killed a process.
Reason = Literal["timeout", "cancelled", "start timeout", "closed"]

#: Seconds to wait for a killed process to be gone before giving up on it.
REAP_TIMEOUT = 10.0

_SPAWN = multiprocessing.get_context("spawn")


class PoolProcess:
    """One started process and the parent's end of its socket.

    The pool sets ``ready`` (it said so), ``usable`` (after each clean job:
    it may go back to the idle list), ``killed`` (why the pool killed it)
    and ``tasks`` (the keys of the tasks it has loaded).
    """

    def __init__(self, process: BaseProcess, sock: socket.socket) -> None:
        assert process.pid is not None
        self._process = process
        self.pid: int = process.pid
        self._pidfd: int | None = _pidfd_open(self.pid)
        #: Readable once the process has exited.
        self.exit_fd: int = self._pidfd if self._pidfd is not None else process.sentinel
        self.pipe = Pipe(sock, self.exit_fd, self.exited)
        self.tasks: set[str] = set()
        self.ready = False
        self.usable = False
        self.killed: Reason | None = None
        self.exitcode: int | None = None
        self.closed = False
        _LIVE.add(self)
        _register_atexit()

    @classmethod
    def start(cls, name: str) -> PoolProcess:
        """Spawn a process that runs ``child.main`` on its end of a new
        socket pair (fork+exec, then a few KB written: ~1 ms)."""
        parent_end, child_end = socket.socketpair()
        # The node's log level and format: a task's own log lines come out
        # as the node's do (one JSON object per line with --log-format json).
        process = _SPAWN.Process(target=child.main, args=(child_end, configured()), name=name)
        try:
            process.start()
        except BaseException:
            parent_end.close()
            raise
        finally:
            child_end.close()
        return cls(process, parent_end)

    def exited(self) -> bool:
        """Whether the process is gone (this reaps it if it just exited)."""
        if self.exitcode is None and not self.closed:
            self.exitcode = self._process.exitcode
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

    async def reap(self) -> None:
        """Wait for the process to be gone (it must be exiting), collect its
        exit status and free the parent's resources."""
        if self.closed:
            return
        with trio.move_on_after(REAP_TIMEOUT):
            await trio.lowlevel.wait_readable(self.exit_fd)
            if not self.exited():  # the sentinel closes a moment before the exit status
                await trio.to_thread.run_sync(self._process.join)
        if not self.exited():
            log.error("worker process %d did not exit within %g s; left unreaped",
                      self.pid, REAP_TIMEOUT)
        self.close()

    def close(self) -> None:
        """Free the parent's resources (the process should be reaped)."""
        if self.closed:
            return
        if self.exited():
            self._process.close()
        self.closed = True
        self.pipe.close()
        if self._pidfd is not None:
            os.close(self._pidfd)

    def how_it_ended(self) -> str:
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


def _pidfd_open(pid: int) -> int | None:
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return None
    try:
        fd: int = pidfd_open(pid)
    except OSError:  # kernel before 5.3, or a sandbox without it
        return None
    return fd


#: Processes of every pool not yet reaped, killed at interpreter exit.
_LIVE: weakref.WeakSet[PoolProcess] = weakref.WeakSet()
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
    for process in list(_LIVE):
        if not process.closed:
            process.kill()
