"""Tasks that kill the process running them, registered under
``tests.crash.*``: by ``os._exit``, by ``os.abort`` (SIGABRT), or by a
segmentation fault (reading address 0 through ctypes)."""

from __future__ import annotations

import ctypes
import os

from fastworker.tasks import task


def _crash(how: str) -> None:
    if how == "exit":
        os._exit(1)
    elif how == "abort":
        os.abort()
    elif how == "segfault":
        ctypes.string_at(0)
    raise ValueError(f"no such way to crash: {how!r}")


@task(name="tests.crash.once")
def crash(how: str) -> None:
    """Kill the process running it; no retries."""
    _crash(how)


@task(name="tests.crash.retried", retries=5)
def crash_retried(how: str) -> None:
    """Kill the process running it; five retries, were it not poison."""
    _crash(how)
