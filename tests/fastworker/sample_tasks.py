"""Tasks the executor tests run, registered under ``tests.sample.*``.

Arguments travel pickled, so what a test must share with a running task
(an event to release it, a record of what ran where) lives here, at module
level, keyed by a name the test passes.
"""

from __future__ import annotations

import threading
from typing import Any

import trio

from fastworker.tasks import Backoff, task

#: threading.Event by key: a blocked sync task waits on its key's event.
GATES: dict[str, threading.Event] = {}
#: threading.Event by key: set by a sync task once it has started.
ENTERED: dict[str, threading.Event] = {}
#: trio.Event by key: ``tests.sample.async_wait`` waits on its key's event.
TRIO_GATES: dict[str, trio.Event] = {}
#: Thread idents that ran ``tests.sample.thread_ident``.
THREAD_IDENTS: set[int] = set()


class Concurrency:
    """How many ``tests.sample.overlap`` runs are inside at once, and the most seen."""

    now = 0
    peak = 0


class SampleError(Exception):
    """A task's own exception class."""


@task(name="tests.sample.add")
def add(x: int, y: int) -> int:
    return x + y


@task(name="tests.sample.async_add")
async def async_add(x: int, y: int) -> int:
    await trio.lowlevel.checkpoint()
    return x + y


@task(name="tests.sample.noop")
def noop() -> None:
    return None


@task(name="tests.sample.async_noop")
async def async_noop() -> None:
    return None


@task(name="tests.sample.fail")
def fail(value: int) -> None:
    raise ValueError(f"bad value {value}")


@task(name="tests.sample.async_fail")
async def async_fail(value: int) -> None:
    raise SampleError(f"async bad value {value}")


@task(name="tests.sample.async_sleep")
async def async_sleep(seconds: float) -> str:
    await trio.sleep(seconds)
    return "slept"


@task(name="tests.sample.async_slow", timeout=5.0)
async def async_slow() -> str:
    """Sleeps past its own task-level time limit."""
    await trio.sleep(60)
    return "never"


@task(name="tests.sample.async_wait")
async def async_wait(key: str) -> str:
    await TRIO_GATES[key].wait()
    return "released"


@task(name="tests.sample.overlap")
async def overlap(seconds: float) -> None:
    Concurrency.now += 1
    Concurrency.peak = max(Concurrency.peak, Concurrency.now)
    try:
        await trio.sleep(seconds)
    finally:
        Concurrency.now -= 1


@task(name="tests.sample.block")
def block(key: str) -> str:
    """Waits (in its thread) until the test sets ``GATES[key]``."""
    ENTERED[key].set()
    GATES[key].wait()
    return "late"


@task(name="tests.sample.thread_ident")
def thread_ident() -> int:
    ident = threading.get_ident()
    THREAD_IDENTS.add(ident)
    return ident


@task(name="tests.sample.unpicklable")
def unpicklable() -> Any:
    return threading.Lock()


@task(name="tests.sample.retried", retries=2, backoff=Backoff(base=1.0, factor=3.0, jitter=False))
def retried(value: int) -> None:
    raise ConnectionError(f"flaky {value}")


@task(name="tests.sample.async_retried", retries=1, backoff=0.5)
async def async_retried(value: int) -> None:
    raise ConnectionError(f"flaky {value}")


@task(name="tests.sample.picky", retries=3, retry_on=(ConnectionError, TimeoutError))
def picky(value: int) -> None:
    raise ValueError(f"not worth a retry: {value}")


@task(name="tests.sample.slow_retried", timeout=1.0, retries=1, backoff=0.1)
async def slow_retried() -> None:
    await trio.sleep_forever()


@task(name="tests.sample.pid")
def pid() -> int:
    import os

    return os.getpid()
