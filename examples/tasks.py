"""Example tasks: ``make run`` loads them (``fastworker run control --tasks examples.tasks``).

Run the control plane (``make run``), then submit from another terminal::

    python examples/trio_client.py
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter

import trio

from fastworker import Backoff, task

log = logging.getLogger("examples.tasks")


@task
async def add(x: float, y: float) -> float:
    """An async task: runs in the executor's nursery."""
    return x + y


@task
async def total(numbers: list[float]) -> float:
    """The sum of a list: a workflow's fan-in (``group(...) | total.s()``)."""
    return sum(numbers)


@task
async def count(n: int) -> list[int]:
    """0 .. n-1: a list for a workflow's ``.map()`` to fan out over."""
    return list(range(n))


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


#: Runs of ``flaky`` per key (in the process that runs it).
_RUNS: Counter[str] = Counter()


@task(retries=3, backoff=Backoff(base=0.1, max=2.0), retry_on=ConnectionError)
def flaky(key: str, failures: int) -> int:
    """Fails its first ``failures`` runs for ``key`` with ConnectionError,
    which its ``retry_on`` retries (up to 3 times, after 0.1 s, 0.2 s, 0.4 s
    with jitter); returns how many runs it took."""
    _RUNS[key] += 1
    if _RUNS[key] <= failures:
        raise ConnectionError(f"run {_RUNS[key]} of {key} failed")
    return _RUNS.pop(key)


@task(isolation="process")
def spin(seconds: float) -> int:
    """CPU-bound sync work in a process of the executor's pool: a time
    limit (or a cancel) kills the process, which no thread allows."""
    end, loops = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        loops += 1
    return loops


@task(every=60.0)
async def heartbeat() -> float:
    """A periodic task: the control plane's scheduler runs it every minute
    (``every=60.0``; ``cron="*/5 * * * *"`` works too), with no arguments.
    Returns the wall-clock time it ran, as seen on the dashboard."""
    now = time.time()
    log.info("heartbeat at %s", time.strftime("%H:%M:%S", time.localtime(now)))
    return now
