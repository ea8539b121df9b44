"""Tasks for the lifecycle tests (retries, unique keys), run by a control
plane in the test's own process: what they share with the test lives here."""

from __future__ import annotations

from collections import Counter

import trio

from fastworker import Backoff, task

#: Runs per key.
RUNS: Counter[str] = Counter()
#: trio.Event by key: ``held`` waits on its key's event.
GATES: dict[str, trio.Event] = {}


def gate(key: str) -> trio.Event:
    return GATES.setdefault(key, trio.Event())


@task(name="life.flaky", retries=3, backoff=Backoff(base=0.05, max=0.2))
def flaky(key: str, failures: int) -> int:
    """Fails its first ``failures`` runs with ConnectionError, then returns its run count."""
    RUNS[key] += 1
    if RUNS[key] <= failures:
        raise ConnectionError(f"run {RUNS[key]} of {key} failed")
    return RUNS[key]


@task(name="life.picky", retries=3, retry_on=ConnectionError, backoff=0.05)
def picky(key: str) -> None:
    RUNS[key] += 1
    raise ValueError(f"{key}: not worth a retry")


@task(name="life.held")
async def held(key: str) -> int:
    RUNS[key] += 1
    await gate(key).wait()
    return RUNS[key]


@task(name="life.stuck", isolation="process", timeout=0.5)
def stuck(pid_file: str) -> None:
    """Writes its process's pid, then ignores SIGTERM and spins forever."""
    import os
    import signal
    from pathlib import Path

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    Path(pid_file).write_text(str(os.getpid()))
    while True:
        pass
