"""Tasks the subworker tests load (``FASTWORKER_TASKS=tests.process.worker_tasks``).

``hold`` and ``hold_once`` tell the test that they started (a line on a TCP
connection to the test's gate) and wait for the gate to open (a byte back),
so a test knows which worker holds which task without polling.
"""

from __future__ import annotations

import os
import signal

import trio

from fastworker import task


@task(name="tests.pid")
async def pid() -> int:
    """The pid of the process that ran it."""
    return os.getpid()


@task(name="tests.hold")
async def hold(port: int, label: str) -> int:
    """Says "<pid> <label>" to the gate on ``port``, waits for it to open,
    returns the pid that ran it."""
    return await _hold(port, label)


@task(name="tests.hold_once", at_most_once=True)
async def hold_once(port: int, label: str) -> int:
    """``hold``, for a task that must never run twice."""
    return await _hold(port, label)


@task(name="tests.kill_worker")
def kill_worker() -> None:
    """Kills the process running it: a poison task."""
    os.kill(os.getpid(), signal.SIGKILL)


async def _hold(port: int, label: str) -> int:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"{os.getpid()} {label}\n".encode())
        await stream.receive_some(1)
    return os.getpid()


@task(name="tests.hold_thread", isolation="thread")
def hold_thread(port: int, label: str) -> int:
    """``hold`` as a sync task on a worker thread."""
    return _hold_blocking(port, label)


@task(name="tests.hold_sync")
def hold_sync(port: int, label: str) -> int:
    """``hold`` as a sync task that does not choose where it runs: the
    executor's ``isolation`` option decides."""
    return _hold_blocking(port, label)


@task(name="tests.hold_process", isolation="process")
def hold_process(port: int, label: str) -> int:
    """``hold`` as a sync task in a process of the executor's pool."""
    return _hold_blocking(port, label)


def _hold_blocking(port: int, label: str) -> int:
    import socket

    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.sendall(f"{os.getpid()} {label}\n".encode())
        connection.recv(1)
    return os.getpid()
