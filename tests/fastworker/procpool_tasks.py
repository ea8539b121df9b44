"""Tasks the process pool tests run, registered under ``procpool_tests.*``.

They run in pool processes, so they share nothing with the test but their
arguments: a task that must say "I have started" (and in which process)
connects to a TCP port the test listens on and sends its pid.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time

from fastworker.tasks import task


def _report(port: int) -> socket.socket:
    """Connect to the test on ``port`` and send this process's pid."""
    conn = socket.create_connection(("127.0.0.1", port))
    conn.sendall(f"{os.getpid()}\n".encode())
    return conn


@task(isolation="process", name="procpool_tests.pid")
def pid() -> int:
    return os.getpid()


@task(isolation="process", name="procpool_tests.add")
def add(x: int, y: int) -> int:
    return x + y


@task(isolation="process", name="procpool_tests.imported_here")
def imported_here() -> bool:
    """Whether this runs as its module's own function (imported in the
    process), not as a copy sent by value."""
    return globals() is vars(sys.modules[__name__])


@task(isolation="process", name="procpool_tests.spin")
def spin(port: int) -> None:
    """Report, then loop for ever, deaf to SIGTERM."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _report(port)
    while True:
        pass


@task(isolation="process", name="procpool_tests.sleep")
def sleep(port: int) -> None:
    """Report, then sleep for an hour."""
    _report(port)
    time.sleep(3600)


@task(isolation="process", name="procpool_tests.held")
def held(port: int) -> int:
    """Report, then return the pid once the test sends a byte (or closes)."""
    with _report(port) as conn:
        conn.recv(1)
    return os.getpid()


@task(isolation="process", name="procpool_tests.fail")
def fail(text: str) -> None:
    raise ValueError(text)


@task(isolation="process", name="procpool_tests.fail_no_retry", retry_on=(KeyError,))
def fail_no_retry(text: str) -> None:
    raise ValueError(text)


@task(isolation="process", name="procpool_tests.exit")
def exit_now(code: int) -> None:
    os._exit(code)


@task(isolation="process", name="procpool_tests.big")
def big(size: int) -> bytes:
    return b"x" * size


@task(isolation="process", name="procpool_tests.tagged")
def tagged(port: int, tag: int) -> int:
    """Send ``tag`` (not the pid) to the test on ``port``, then return it
    once the test sends a byte (or closes): which job began, in order."""
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(f"{tag}\n".encode())
        conn.recv(1)
    return tag
