"""Tasks of the journal's state test (tests/process/test_journal_state.py),
loaded into a real control plane with
``FASTWORKER_TASKS=examples.tasks,tests.process.journal_state_tasks``.

Each run appends one line to a file, "<label> <wall-clock time>", so the
test can tell when each run happened, and how many there were, across a
SIGKILL of the control plane. Only that test loads this module: its
periodic task would run in any control plane that did.
"""

from __future__ import annotations

import os
import time

from fastworker import Backoff, task

#: ``beat`` runs every this many seconds.
EVERY = 5.0
#: ``flaky`` waits this long before its retry (no jitter: the test knows when).
BACKOFF = 8.0
#: The file ``beat`` appends its runs to (a periodic task takes no arguments).
BEATS_ENV = "JOURNAL_STATE_BEATS"


def _append(path: str, label: str) -> float:
    """Append "<label> <time>" to ``path`` in one write; return the time."""
    now = time.time()
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, f"{label} {now!r}\n".encode())
    finally:
        os.close(descriptor)
    return now


def _runs(path: str) -> int:
    try:
        with open(path) as file:
            return sum(1 for _ in file)
    except FileNotFoundError:
        return 0


@task(name="tests.journal_state.later")
async def later(label: str, path: str) -> str:
    """Record a run of a delayed task; return its label."""
    _append(path, label)
    return label


@task(name="tests.journal_state.flaky", retries=2, retry_on=ConnectionError,
      backoff=Backoff(base=BACKOFF, jitter=False))
async def flaky(path: str, failures: int) -> int:
    """Record this attempt in ``path``; fail the first ``failures`` attempts
    (counted in the file, which outlives the control plane) with
    ConnectionError, then return the attempt's number."""
    attempt = _runs(path) + 1
    _append(path, f"attempt{attempt}")
    if attempt <= failures:
        raise ConnectionError(f"attempt {attempt} failed on purpose")
    return attempt


@task(name="tests.journal_state.beat", every=EVERY)
async def beat() -> None:
    """Record a run of the periodic task in the file $JOURNAL_STATE_BEATS."""
    _append(os.environ[BEATS_ENV], "beat")
