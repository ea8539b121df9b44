"""Example tasks, loaded by config/control.toml (``[node] imports``).

Run the control plane (``make run``), then submit from another terminal::

    python examples/trio_client.py
"""

from __future__ import annotations

import hashlib
import time

import trio

from fastworker import task


@task
async def add(x: float, y: float) -> float:
    """An async task: runs in the executor's nursery."""
    return x + y


@task
def checksum(data: bytes) -> str:
    """A sync task: runs on one of the executor's worker threads."""
    return hashlib.sha256(data).hexdigest()


@task(priority="high")
async def nap(seconds: float) -> float:
    """Sleeps, without blocking anything else; returns how long it slept."""
    start = trio.current_time()
    await trio.sleep(seconds)
    return trio.current_time() - start


@task(timeout=2.0)
def busy(seconds: float) -> float:
    """A sync task that blocks its thread (a stand-in for real work)."""
    time.sleep(seconds)
    return seconds


@task
def fail(message: str) -> None:
    """Always raises: the client gets a TaskError with this message."""
    raise ValueError(message)


@task(name="examples.noop")
async def noop() -> None:
    """Does nothing; for measuring the queue itself."""


@task(name="examples.noop_sync")
def noop_sync() -> None:
    """Does nothing, on a worker thread."""
